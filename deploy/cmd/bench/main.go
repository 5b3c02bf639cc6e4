// Command bench measures the figures docs/performance.md reports, each
// beside its reference in one run, and prints them as one table. It
// starts everything it needs from this checkout: two throwaway PostgreSQL
// clusters with production durability settings (one for the core
// database, one for the tenant databases), an embedded NATS with
// JetStream, and both services built and run as child processes; the
// reference handlers run as child processes of the bench itself.
//
//	go run ./deploy/cmd/bench                 # every scenario (make bench)
//	go run ./deploy/cmd/bench -only p5 -tenants 1000   # make load TENANTS=1000
//
// Nothing here asserts: a goal not met is printed as such, and the exit
// status only says whether the bench could run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type options struct {
	only     map[string]bool
	planeEnv []string
	// controlPlaneEnv is added to the control plane's environment.
	controlPlaneEnv []string
	tenants         int
	budget          int
	clients         int
	duration        time.Duration
	rounds          int
	maxConnections  int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "bare" {
		if err := runBare(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench bare:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	only := flag.String("only", "", "comma-separated scenarios to run (p1,p2a,p2,p3,p5,p6,outbox); empty: all")
	flag.IntVar(&o.tenants, "tenants", 1000, "tenants of the P5 fleet")
	flag.IntVar(&o.budget, "budget", 40, "the tenant plane's POOL_BUDGET")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients of the load runs")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured load run")
	flag.IntVar(&o.rounds, "rounds", 3, "alternating rounds of P1 (the median is reported)")
	flag.IntVar(&o.maxConnections, "max-connections", 1200, "max_connections of the tenant server (the naive design needs many)")
	envFlag := func(name, plane string, env *[]string) {
		flag.Func(name, "KEY=VALUE added to the "+plane+"'s environment (repeatable), to compare settings", func(s string) error {
			if !strings.Contains(s, "=") {
				return fmt.Errorf("want KEY=VALUE, got %q", s)
			}
			*env = append(*env, s)
			return nil
		})
	}
	envFlag("plane-env", "tenant plane", &o.planeEnv)
	envFlag("control-plane-env", "control plane", &o.controlPlaneEnv)
	flag.Parse()
	if *only != "" {
		o.only = map[string]bool{}
		for _, s := range strings.Split(*only, ",") {
			o.only[strings.TrimSpace(s)] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (o options) wants(s string) bool { return o.only == nil || o.only[s] }

func run(ctx context.Context, o options) error {
	began := time.Now()
	s, err := startStack(ctx, o)
	defer s.close()
	if err != nil {
		return err
	}
	b := &bench{stack: s, o: o}
	defer func() {
		if b.events != nil {
			b.events.close()
		}
	}()
	steps := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"p3", b.provisioning},
		{"p1", b.oneTenant},
		{"p2a", b.workingSetFits},
		{"p2", b.manyTenants},
		{"p5", b.thousandTenants},
		{"p6", b.logins},
		{"outbox", b.outboxLag},
	}
	for _, st := range steps {
		if !o.wants(st.name) {
			continue
		}
		say("scenario %s", st.name)
		if err := st.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", st.name, err)
		}
	}
	b.print(os.Stdout, time.Since(began))
	return nil
}

// bench holds the stack, the tenants made so far and the table's rows.
type bench struct {
	stack   *stack
	o       options
	events  *createdEvents
	tenants []tenant
	rows    []row
	notes   []string
	// planeOne is P1's tenant-plane figure, P2a's reference.
	planeOne result
}

// row is one line of the table: a figure of the project beside its
// reference, and the goal the ratio is held to.
type row struct {
	scenario, figure  string
	project, baseline string
	ratio             string
	goal              string
	met               string
}

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// fleet returns n ready, prepared tenants, provisioning the missing ones.
func (b *bench) fleet(ctx context.Context, n int) ([]tenant, error) {
	if len(b.tenants) >= n {
		return b.tenants[:n], nil
	}
	if b.events == nil {
		ev, err := b.stack.followCreated()
		if err != nil {
			return nil, err
		}
		b.events = ev
	}
	missing := n - len(b.tenants)
	say("provisioning %d tenants", missing)
	began := time.Now()
	ids, err := b.stack.provision(ctx, b.events, missing, 16, "Fleet")
	if err != nil {
		return nil, err
	}
	if missing >= 100 {
		b.note("%d tenants provisioned through the API, 16 requests at a time, in %s (%.0f organizations/min)",
			missing, time.Since(began).Round(time.Second), float64(missing)/time.Since(began).Minutes())
	}
	ready, err := b.stack.prepare(ctx, ids, 8)
	if err != nil {
		return nil, err
	}
	b.tenants = append(b.tenants, ready...)
	return b.tenants[:n], nil
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func (b *bench) print(w *os.File, took time.Duration) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "\ntenantbase bench: %d CPUs (%s/%s), %s, %d clients, %s per load run; took %s\n\n",
		runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, host, b.o.clients, b.o.duration, took.Round(time.Second))
	cols := []string{"scenario", "figure", "tenantbase", "reference", "ratio", "goal", "met"}
	cells := [][]string{cols}
	for _, r := range b.rows {
		cells = append(cells, []string{r.scenario, r.figure, r.project, r.baseline, r.ratio, r.goal, r.met})
	}
	width := make([]int, len(cols))
	for _, c := range cells {
		for i, v := range c {
			width[i] = max(width[i], len(v))
		}
	}
	for j, c := range cells {
		var line strings.Builder
		for i, v := range c {
			fmt.Fprintf(&line, "| %-*s ", width[i], v)
		}
		fmt.Fprintln(w, line.String()+"|")
		if j == 0 {
			var sep strings.Builder
			for i := range cols {
				sep.WriteString("|" + strings.Repeat("-", width[i]+2))
			}
			fmt.Fprintln(w, sep.String()+"|")
		}
	}
	if len(b.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range b.notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
}

func us(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }
