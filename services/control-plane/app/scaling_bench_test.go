package app_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/pgcluster"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
)

// BenchmarkServerDensity fills a throwaway cluster with migrated tenant
// databases and reports, at each step, how fast databases are created,
// what one costs on disk, and how long the server takes to start after a
// clean stop and after a crash. The cluster runs with fsync off (it is for
// tests), so crash recovery here skips the fsync of every file that makes
// it slow on real servers with thousands of databases; see docs/scaling.md.
//
//	go test ./app -run '^$' -bench ServerDensity -benchtime 1x -v
//
// TENANTBASE_DENSITY_STEPS (default "200,600") sets the database counts.
func BenchmarkServerDensity(b *testing.B) {
	steps := []int{200, 600}
	if v := os.Getenv("TENANTBASE_DENSITY_STEPS"); v != "" {
		steps = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				b.Fatal(err)
			}
			steps = append(steps, n)
		}
	}
	for range b.N {
		c := testenv.Cluster(b)
		ctx := context.Background()
		testenv.Exec(b, c.DSN("postgres"), `CREATE DATABASE tenant_template`)
		if _, err := tenantdb.Migrate(c.DSN("tenant_template")); err != nil {
			b.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		if err != nil {
			b.Fatal(err)
		}
		bindir, err := pgcluster.BinDir()
		if err != nil {
			b.Fatal(err)
		}
		// pg_ctl restart starts the server with the options it last ran
		// with (postmaster.opts), after a crash too.
		pgctl := func(args ...string) {
			cmd := exec.Command(filepath.Join(bindir, "pg_ctl"), append([]string{"-D", c.Dir()}, args...)...)
			if os.Geteuid() == 0 {
				cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--"}, cmd.Args...)...)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("pg_ctl %v: %v\n%s", args, err, out)
			}
		}
		restart := func(crash bool) time.Duration {
			conn.Close(ctx)
			if crash {
				pidFile, err := os.ReadFile(filepath.Join(c.Dir(), "postmaster.pid"))
				if err != nil {
					b.Fatal(err)
				}
				pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidFile), "\n", 2)[0]))
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					b.Fatal(err)
				}
				testenv.Eventually(b, time.Minute, func() bool { return syscall.Kill(pid, 0) != nil }, "postmaster gone")
			} else {
				pgctl("stop", "-m", "fast", "-w")
			}
			began := time.Now()
			// -l: the server writes its log there, not into our pipe.
			pgctl("restart", "-m", "fast", "-w", "-t", "300", "-l", filepath.Join(c.Dir(), "restart.log"))
			took := time.Since(began)
			if conn, err = pgx.Connect(ctx, c.DSN("postgres")); err != nil {
				b.Fatal(err)
			}
			return took
		}
		have := 0
		for _, n := range steps {
			began, from := time.Now(), have
			for ; have < n; have++ {
				name := pgx.Identifier{"tenant_density_" + strconv.Itoa(have)}.Sanitize()
				if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE tenant_template"); err != nil {
					b.Fatal(err)
				}
			}
			rate := float64(n-from) / time.Since(began).Seconds()
			var total int64
			if err := conn.QueryRow(ctx, `SELECT sum(pg_database_size(datname)) FROM pg_database WHERE datname LIKE 'tenant_density_%'`).Scan(&total); err != nil {
				b.Fatal(err)
			}
			clean, crash := restart(false), restart(true)
			b.Logf("FIGURE %d tenant databases: created at %.0f/s, %.1f MB each, start after a clean stop %s, after a crash %s",
				n, rate, float64(total)/float64(n)/1e6, clean.Round(time.Millisecond), crash.Round(time.Millisecond))
		}
		conn.Close(ctx)
	}
}
