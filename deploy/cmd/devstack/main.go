// Command devstack runs the whole system in one process for local work
// (`make run`): NATS with JetStream (embedded unless NATS_URL is set), a
// Postgres (the server of DATABASE_URL when reachable, else a cluster kept in
// .local/pg), both services, and an ingress on 127.0.0.1:8000 that routes on
// X-TENANT the way the production ingress does. Ctrl-C stops all of it;
// data stays in .local for the next run.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"tenantbase/deploy/internal/ingress"
	"tenantbase/libs/config"
	"tenantbase/libs/natsembed"
	"tenantbase/libs/pgcluster"
	cpapp "tenantbase/services/control-plane/app"
	tpapp "tenantbase/services/tenant-plane/app"
)

const (
	// clusterPort differs from the test cluster's (55432) so both can run.
	clusterPort   = 55433
	defaultCoreDB = "tenantbase"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// Config is what the local runner itself reads from the environment; each
// plane reads its own Config too.
type Config struct {
	// IngressAddr is the one entry point, routing on X-TENANT.
	IngressAddr string `envconfig:"INGRESS_ADDR" default:"127.0.0.1:8000"`
	// NATSURL is a NATS server to use; empty means one embedded here.
	NATSURL string `envconfig:"NATS_URL"`
	// PublicURL is where verification links point; empty means the ingress.
	PublicURL string `envconfig:"PUBLIC_URL"`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info"`
	// The ingress's rate limits; zero keeps nginx.conf's (ingress.DefaultLimits).
	AuthRate    float64 `envconfig:"INGRESS_AUTH_RATE"`
	AuthBurst   int     `envconfig:"INGRESS_AUTH_BURST"`
	TenantRate  float64 `envconfig:"INGRESS_TENANT_RATE"`
	TenantBurst int     `envconfig:"INGRESS_TENANT_BURST"`
}

// limits are the ingress's limits: nginx.conf's unless overridden.
func (c Config) limits() ingress.Limits {
	l := ingress.DefaultLimits
	if c.AuthRate > 0 {
		l.AuthRate = c.AuthRate
	}
	if c.AuthBurst > 0 {
		l.AuthBurst = c.AuthBurst
	}
	if c.TenantRate > 0 {
		l.TenantRate = c.TenantRate
	}
	if c.TenantBurst > 0 {
		l.TenantBurst = c.TenantBurst
	}
	return l
}

func run() error {
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	var cfg Config
	if err := config.Load(&cfg); err != nil {
		return err
	}
	level, err := config.ParseLogLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	local, err := pgcluster.LocalDir()
	if err != nil {
		return err
	}
	cpCfg, err := cpapp.LoadConfig()
	if err != nil {
		return fmt.Errorf("control plane config: %w", err)
	}
	tpCfg, err := tpapp.LoadConfig()
	if err != nil {
		return fmt.Errorf("tenant plane config: %w", err)
	}
	log := newLogger(level)

	natsURL, natsNote := cfg.NATSURL, "from NATS_URL"
	if natsURL == "" {
		storeDir := filepath.Join(local, "nats")
		ns, err := natsembed.Start(natsembed.Options{Host: "127.0.0.1", StoreDir: storeDir})
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
			log.Info("embedded NATS stopped")
		}()
		natsURL, natsNote = ns.ClientURL(), "embedded, JetStream data in "+storeDir
	}

	pg, err := ensurePostgres(ctx, cpCfg.DatabaseURL.Reveal(), filepath.Join(local, "pg"))
	if err != nil {
		return err
	}
	if pg.started != nil {
		defer func() {
			if err := pg.started.Stop(); err != nil {
				log.Error("stopping PostgreSQL", "error", err.Error())
				return
			}
			log.Info("PostgreSQL stopped", "dir", pg.started.Dir())
		}()
	}

	ingressAddr := cfg.IngressAddr
	keysDir := filepath.Join(local, "keys")
	cpCfg.DatabaseURL = config.Secret(pg.coreURL)
	cpCfg.NATSURL, tpCfg.NATSURL = natsURL, natsURL
	cpCfg.KeysDir, tpCfg.KeysDir = keysDir, keysDir
	if cfg.PublicURL == "" {
		cpCfg.PublicURL = "http://" + ingressAddr
	}

	// The apps get their own context so that on Ctrl-C the ingress stops
	// taking requests before the apps behind it shut down.
	appCtx, cancelApps := context.WithCancel(context.Background())
	defer cancelApps()
	cp, cpAddrs, err := startService(ctx, appCtx, "control plane", func(ctx context.Context, ready func(addrs)) error {
		return cpapp.Run(ctx, cpCfg, log.With("service", "control-plane"), cpapp.WithReady(func(a cpapp.Addrs) { ready(addrs{a.Public, a.Internal}) }))
	})
	// Registered after the NATS and Postgres cleanups, so it runs before them.
	defer cp.stop(cancelApps)
	if err != nil {
		return ignoreCancel(ctx, err)
	}

	tpCfg.ControlPlaneURL = "http://" + cpAddrs.internal
	tp, tpAddrs, err := startService(ctx, appCtx, "tenant plane", func(ctx context.Context, ready func(addrs)) error {
		return tpapp.Run(ctx, tpCfg, log.With("service", "tenant-plane"), tpapp.WithReady(func(a tpapp.Addrs) { ready(addrs{a.Public, a.Internal}) }))
	})
	defer tp.stop(cancelApps)
	if err != nil {
		return ignoreCancel(ctx, err)
	}

	ln, err := net.Listen("tcp", ingressAddr)
	if err != nil {
		return fmt.Errorf("ingress: %w (set INGRESS_ADDR to use another address)", err)
	}
	srv := &http.Server{
		Handler: ingress.New(
			&url.URL{Scheme: "http", Host: cpAddrs.public},
			&url.URL{Scheme: "http", Host: tpAddrs.public},
			cfg.limits(),
			log.With("service", "ingress")),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ingressDone := make(chan error, 1)
	go func() { ingressDone <- srv.Serve(ln) }()

	printBanner(ln.Addr().String(), cpAddrs, tpAddrs, pg, natsURL, natsNote)

	var failure error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-cp.done:
		failure = errors.New("control plane exited unexpectedly")
	case <-tp.done:
		failure = errors.New("tenant plane exited unexpectedly")
	case err := <-ingressDone:
		failure = fmt.Errorf("ingress: %w", err)
	}
	// A second Ctrl-C ends the process at once.
	stopSignals()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	cancelApps()
	<-cp.done
	<-tp.done
	return errors.Join(failure, cp.err, tp.err)
}

type addrs struct{ public, internal string }

// service is one app running in a goroutine of this process.
type service struct {
	name string
	done chan struct{}
	err  error
}

// startService runs an app on appCtx and returns once it reports its bound
// addresses, it fails, or ctx (the signal context) ends. The returned service
// is never nil, so the caller can always stop it.
func startService(ctx, appCtx context.Context, name string, run func(context.Context, func(addrs)) error) (*service, addrs, error) {
	s := &service{name: name, done: make(chan struct{})}
	ready := make(chan addrs, 1)
	go func() {
		defer close(s.done)
		s.err = run(appCtx, func(a addrs) { ready <- a })
	}()
	select {
	case a := <-ready:
		return s, a, nil
	case <-ctx.Done():
		return s, addrs{}, ctx.Err()
	case <-s.done:
		err := s.err
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return s, addrs{}, fmt.Errorf("%s: %w", name, err)
	}
}

// stop cancels the apps and waits for this one to return.
func (s *service) stop(cancel context.CancelFunc) {
	cancel()
	<-s.done
}

// ignoreCancel turns a start-up interrupted by Ctrl-C into a clean exit.
func ignoreCancel(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type postgres struct {
	coreURL string
	// started is the cluster this run started, stopped on exit; nil when the
	// server was already running.
	started *pgcluster.Cluster
}

// ensurePostgres checks the server of coreURL rather than coreURL itself:
// on a first run the core database does not exist yet.
func ensurePostgres(ctx context.Context, coreURL, dir string) (postgres, error) {
	coreDB, err := pgcluster.DatabaseName(coreURL)
	if err != nil {
		return postgres{}, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if coreDB == "" {
		coreDB = defaultCoreDB
	}
	serverURL, err := pgcluster.WithDatabase(coreURL, "postgres")
	if err != nil {
		return postgres{}, fmt.Errorf("DATABASE_URL: %w", err)
	}
	serverURL, started, err := pgcluster.Ensure(ctx, serverURL, dir, clusterPort)
	if err != nil {
		return postgres{}, err
	}
	if err := pgcluster.EnsureDatabase(ctx, serverURL, coreDB); err != nil {
		if started != nil {
			started.Stop()
		}
		return postgres{}, err
	}
	core, err := pgcluster.WithDatabase(serverURL, coreDB)
	if err != nil {
		return postgres{}, err
	}
	return postgres{coreURL: core, started: started}, nil
}

func printBanner(ingressAddr string, cp, tp addrs, pg postgres, natsURL, natsNote string) {
	pgNote := "already running"
	if pg.started != nil {
		pgNote = "started in " + pg.started.Dir() + ", stopped on exit"
	}
	base := "http://" + ingressAddr
	fmt.Printf(`
tenantbase is running
  ingress         %s   (requests with X-TENANT go to the tenant plane)
  control plane   http://%s   internal http://%s
  tenant plane    http://%s   internal http://%s
  postgres        %s   (%s)
  nats            %s   (%s)

Try:
  curl -s %s/health
  curl -s -X POST %s/auth/register -H 'Content-Type: application/json' \
    -d '{"email":"owner@example.com","password":"correct-horse-battery-staple"}'

Ctrl-C stops everything.

`, base, cp.public, cp.internal, tp.public, tp.internal, pgcluster.Redact(pg.coreURL), pgNote, natsURL, natsNote, base, base)
}

func newLogger(level slog.Level) *slog.Logger {
	// Text, not JSON: this runner is read by people at a terminal.
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
