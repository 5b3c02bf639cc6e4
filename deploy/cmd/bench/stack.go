package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"tenantbase/libs/natsembed"
	"tenantbase/libs/pgcluster"
)

// stack is what every scenario runs on: a Postgres cluster for the core
// database, another for the tenant databases (so that the tenant server's
// connections are the tenant plane's alone), NATS with JetStream, and the
// two services as child processes built from this checkout.
type stack struct {
	dir          string
	core, tenant *pgcluster.Cluster
	tenantPort   int
	nats         *server.Server
	bins         map[string]string
	serviceToken string

	cp, tp *proc
	// cpEnv and tpEnv are the services' environments; a scenario may start
	// a plane again with other settings.
	cpEnv, tpEnv []string

	admin adminSession
}

// adminSession is the bootstrap platform admin, who owns every bench
// organization.
type adminSession struct {
	email, password, token string
}

// proc is a service running as a child process, its output in a log file.
type proc struct {
	name     string
	cmd      *exec.Cmd
	log      string
	public   string
	internal string
	done     chan struct{}
	err      error
}

// productionLike are the Postgres settings of a server that keeps its
// data: pgcluster's defaults turn durability off for tests.
var productionLike = map[string]string{
	"fsync":              "on",
	"synchronous_commit": "on",
	"full_page_writes":   "on",
	"shared_buffers":     "256MB",
}

func startStack(ctx context.Context, o options) (*stack, error) {
	dir, err := os.MkdirTemp("", "tenantbase-bench-")
	if err != nil {
		return nil, err
	}
	s := &stack{dir: dir, serviceToken: randomHex(24)}
	say("building the services")
	if s.bins, err = build(dir, "control-plane", "tenant-plane"); err != nil {
		return s, err
	}
	say("starting two PostgreSQL clusters and NATS in %s", dir)
	corePort, err := pgcluster.FreePort()
	if err != nil {
		return s, err
	}
	if s.core, err = pgcluster.StartWith(ctx, filepath.Join(dir, "pg-core"), corePort, productionLike); err != nil {
		return s, err
	}
	if err := s.core.StopOnExit(false); err != nil {
		return s, err
	}
	if err := pgcluster.EnsureDatabase(ctx, s.core.DSN("postgres"), "core"); err != nil {
		return s, err
	}
	if s.tenantPort, err = pgcluster.FreePort(); err != nil {
		return s, err
	}
	if err := s.startTenantServer(ctx, o.maxConnections); err != nil {
		return s, err
	}
	if s.nats, err = natsembed.Start(natsembed.Options{StoreDir: filepath.Join(dir, "nats")}); err != nil {
		return s, err
	}

	s.admin = adminSession{email: "admin@bench.test", password: "bench-admin-password"}
	base := []string{"PATH=" + os.Getenv("PATH"), "ENV=local", "NATS_URL=" + s.nats.ClientURL(), "SHUTDOWN_TIMEOUT=10s"}
	s.cpEnv = append(append([]string{}, base...),
		"DATABASE_URL="+s.core.DSN("core"),
		"TENANT_DB_ADMIN_URL="+s.tenant.DSN("postgres"),
		"SERVICE_TOKEN="+s.serviceToken,
		"KEYS_DIR="+filepath.Join(dir, "control-plane-keys"),
		"PUBLIC_URL=http://bench.test",
		"BOOTSTRAP_ADMIN_EMAIL="+s.admin.email,
		"BOOTSTRAP_ADMIN_PASSWORD="+s.admin.password,
		// The owner's hash is what tenant logins check: cheap, so that
		// logging into a thousand tenants takes seconds. P6 measures the
		// tenant plane's own, configured cost.
		"BCRYPT_COST=4",
		"OWNER_MAX_ORGANIZATIONS=1000000",
		"LOG_LEVEL=warn",
	)
	s.tpEnv = append(append([]string{}, base...),
		"CONTROL_PLANE_URL=", // set once the control plane listens
		"SERVICE_TOKEN="+s.serviceToken,
		"KEYS_DIR="+filepath.Join(dir, "tenant-plane-keys"),
		"POOL_BUDGET="+strconv.Itoa(o.budget),
	)
	s.tpEnv = append(s.tpEnv, o.planeEnv...)
	s.cpEnv = append(s.cpEnv, o.controlPlaneEnv...)
	if out, err := command(s.bins["control-plane"], s.cpEnv, "migrate"); err != nil {
		return s, fmt.Errorf("control-plane migrate: %v\n%s", err, out)
	}
	if s.cp, err = s.start("control-plane", s.cpEnv); err != nil {
		return s, err
	}
	setEnv(s.tpEnv, "CONTROL_PLANE_URL", "http://"+s.cp.internal)
	if s.tp, err = s.start("tenant-plane", s.tpEnv); err != nil {
		return s, err
	}
	var tok tokens
	if err := call(ctx, http.MethodPost, "http://"+s.cp.public+"/auth/login", "", 0,
		map[string]string{"email": s.admin.email, "password": s.admin.password}, http.StatusOK, &tok); err != nil {
		return s, fmt.Errorf("admin login: %w", err)
	}
	s.admin.token = tok.AccessToken
	return s, nil
}

// startTenantServer starts the tenant databases' cluster with room for
// maxConnections sessions.
func (s *stack) startTenantServer(ctx context.Context, maxConnections int) error {
	settings := map[string]string{"max_connections": strconv.Itoa(maxConnections)}
	for k, v := range productionLike {
		settings[k] = v
	}
	if maxConnections < 14 {
		settings["max_wal_senders"] = "0"
	}
	c, err := pgcluster.StartWith(ctx, filepath.Join(s.dir, "pg-tenants"), s.tenantPort, settings)
	if err != nil {
		return err
	}
	if err := c.StopOnExit(false); err != nil {
		return err
	}
	s.tenant = c
	return nil
}

// restartTenantServer stops the tenant server and starts it again with
// room for maxConnections sessions; every open session is cut.
func (s *stack) restartTenantServer(ctx context.Context, maxConnections int) error {
	if err := s.tenant.Stop(); err != nil {
		return err
	}
	return s.startTenantServer(ctx, maxConnections)
}

func (s *stack) close() {
	for _, p := range []*proc{s.tp, s.cp} {
		if p != nil {
			p.stop()
		}
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats.WaitForShutdown()
	}
	for _, c := range []*pgcluster.Cluster{s.tenant, s.core} {
		if c != nil {
			c.Stop()
		}
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// start runs a service binary on free ports with env and waits until its
// /health answers.
func (s *stack) start(name string, env []string) (*proc, error) {
	public, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	internal, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	p := &proc{
		name:     name,
		log:      filepath.Join(s.dir, name+".log"),
		public:   "127.0.0.1:" + strconv.Itoa(public),
		internal: "127.0.0.1:" + strconv.Itoa(internal),
		done:     make(chan struct{}),
	}
	out, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	p.cmd = exec.Command(s.bins[name])
	p.cmd.Env = append(append([]string{}, env...), "HTTP_ADDR="+p.public, "INTERNAL_ADDR="+p.internal)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	client := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited before it was healthy: %v\n%s", name, p.err, tail(p.log, 20))
		default:
		}
		if res, err := client.Get("http://" + p.public + "/health"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not healthy within a minute\n%s", name, tail(p.log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// cpuSeconds is the CPU time (user and system) the process used so far.
func (p *proc) cpuSeconds() float64 { return cpuSecondsOf(p.cmd.Process.Pid) }

// rssMB reads the process's resident set now and at its peak, in MiB.
func (p *proc) rssMB() (now, peak float64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			now = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return now, peak
}

// cpuSecondsOf reads utime and stime of pid from /proc (clock ticks of
// 1/100 s on Linux).
func cpuSecondsOf(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may hold spaces: fields count from after its ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// build builds the named services from the workspace root.
func build(dir string, names ...string) (map[string]string, error) {
	root, err := workspaceRoot()
	if err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for _, name := range names {
		bin := filepath.Join(dir, "bin", name)
		cmd := exec.Command("go", "build", "-o", bin, "./services/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./services/%s: %v\n%s", name, err, out)
		}
		bins[name] = bin
	}
	return bins, nil
}

func workspaceRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the bench from inside the repository (no go.work found above the working directory)")
		}
		dir = parent
	}
}

func command(bin string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return cmd.CombinedOutput()
}

func setEnv(env []string, key, value string) {
	for i, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			env[i] = key + "=" + value
			return
		}
	}
	panic("setEnv: no " + key)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// tokens is a login's answer.
type tokens struct {
	AccessToken string `json:"access_token"`
}

var apiClient = &http.Client{Timeout: time.Minute}

// call sends body as JSON (nil: none) to url with token as bearer and
// tenant as X-TENANT (0: none), expects status, and decodes the answer
// into out (nil: discarded).
func call(ctx context.Context, method, url, token string, tenant int64, body any, status int, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if tenant != 0 {
		req.Header.Set("X-TENANT", strconv.FormatInt(tenant, 10))
	}
	res, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != status {
		return fmt.Errorf("%s %s: %d %s", method, url, res.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
