package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// binary is tenantctl as `make build` builds it; every test runs it.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tenantctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "tenantctl")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tenantctl:", err)
		return 1
	}
	return m.Run()
}

// cli runs tenantctl as one person at one machine: a config directory of
// its own and the control plane's URL in TENANTCTL_URL.
type cli struct {
	home string
	env  []string
}

// newCLI returns a cli for the control plane at url ("" for none); env
// adds variables (KEY=value).
func newCLI(t *testing.T, url string, env ...string) *cli {
	t.Helper()
	c := &cli{home: t.TempDir()}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", k == "XDG_CONFIG_HOME", strings.HasPrefix(k, "TENANTCTL_"),
			strings.HasPrefix(k, "NATS_"), strings.HasPrefix(k, "EVENTS_"):
		default:
			c.env = append(c.env, kv)
		}
	}
	c.env = append(c.env, "HOME="+c.home, "XDG_CONFIG_HOME="+filepath.Join(c.home, "config"))
	if url != "" {
		c.env = append(c.env, "TENANTCTL_URL="+url)
	}
	c.env = append(c.env, env...)
	return c
}

// sessionFile is where this cli keeps its session.
func (c *cli) sessionFile() string {
	return filepath.Join(c.home, "config", "tenantctl", "session.json")
}

// command is tenantctl with args, set up to run as this cli.
func (c *cli) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs tenantctl with stdin and args to the end.
func (c *cli) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("tenantctl %s: %v", strings.Join(args, " "), err)
	}
	if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("tenantctl %s printed a stack trace:\n%s", strings.Join(args, " "), r)
	}
	return r
}

// expect runs tenantctl without stdin and fails the test unless it exits
// with code.
func (c *cli) expect(t *testing.T, code int, args ...string) result {
	t.Helper()
	r := c.run(t, "", args...)
	if r.code != code {
		t.Fatalf("tenantctl %s: want exit %d, got %s", strings.Join(args, " "), code, r)
	}
	return r
}

// json runs tenantctl with -o json, expects success and decodes stdout.
func (c *cli) json(t *testing.T, v any, args ...string) result {
	t.Helper()
	r := c.expect(t, 0, append(args, "-o", "json")...)
	decode(t, r.stdout, v)
	return r
}

func decode(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, s, err)
	}
}

// login logs in with --password-stdin and expects success.
func (c *cli) login(t *testing.T, email, password string) {
	t.Helper()
	if r := c.run(t, password+"\n", "login", "--email", email, "--password-stdin"); r.code != 0 {
		t.Fatalf("login as %s: %s", email, r)
	}
}

// loginAdmin logs in as the bootstrap admin of cptest's control planes.
func (c *cli) loginAdmin(t *testing.T) { c.login(t, cptest.AdminEmail, cptest.AdminPassword) }

// expectProblem checks that r failed with code and that stderr names the
// problem's code.
func expectProblem(t *testing.T, r result, code int, problem string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stderr, "("+problem+")") {
		t.Fatalf("want exit %d with problem %s on stderr, got %s", code, problem, r)
	}
}

// Shapes of the API's objects, decoded strictly: tenantctl's JSON is the
// API's, field for field.
type user struct {
	ID         int64  `json:"id"`
	Email      string `json:"email"`
	IsVerified bool   `json:"is_verified"`
	IsOwner    bool   `json:"is_owner"`
	IsAdmin    bool   `json:"is_admin"`
	// MaxOrganizations is the user's own quota; nil: the default.
	MaxOrganizations *int      `json:"max_organizations"`
	CreatedAt        time.Time `json:"created_at"`
}

type userList struct {
	Items      []user  `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

type orgList struct {
	Items      []cptest.Organization `json:"items"`
	NextCursor *string               `json:"next_cursor"`
}

type serverList struct {
	Items      []cptest.DBServer `json:"items"`
	NextCursor *string           `json:"next_cursor"`
}

type auditList struct {
	Items      []cptest.AuditEntry `json:"items"`
	NextCursor *string             `json:"next_cursor"`
}

// TestUsageErrors: what the command line itself refuses exits 2 with a
// hint, before any request; a control plane that does not answer is a
// failure (1), and no session is exit 4.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	for _, args := range [][]string{
		{"bogus"},
		{"orgs", "bogus"},
		{"orgs", "list", "--bogus"},
		{"orgs", "get"},
		{"orgs", "get", "twelve"},
		{"orgs", "get", "0"},
		{"orgs", "list", "--chunk-size", "500"},
		{"users", "promote", "-3"},
		{"whoami", "--output", "yaml"},
		{"whoami", "--url", "ftp://example.com"},
		{"login", "--email", "a@example.com"}, // no terminal to ask the password on
		{"events", "tail", "--type", "tenant.*"},
		// Refused before any request: there is neither a session nor a
		// control plane to ask.
		{"migrations", "start", "--on-error", "stop"},
		{"migrations", "start", "--canary", "many"},
		{"migrations", "start", "ahead"},
		{"migrations", "list", "--chunk-size", "0"},
		{"migrations", "status", "first"},
		{"migrations", "resume"},
		{"migrations", "pause", "1", "--wait"},
		{"orgs", "list", "--owner", "none"},
		{"orgs", "create", "Acme", "--owner-id", "0"},
		{"orgs", "create", "Acme", "--owner", "a@example.com", "--owner-id", "2"},
		{"orgs", "rotate-credentials", "1", "--wait"},
		{"orgs", "move", "1"},
		{"orgs", "move", "1", "--server", "0"},
		{"servers", "add", "b"}, // no terminal to ask the admin URL on
		{"servers", "add", "b", "--admin-url", "postgres://x", "--admin-url-stdin"},
		{"servers", "add", "b", "--port", "high", "--admin-url-stdin"},
		{"servers", "drain", "first"},
		{"servers", "activate"},
		{"users", "set-quota", "1"},
		{"users", "set-quota", "1", "many"},
		{"users", "set-quota", "1", "-1"},
		{"users", "set-quota", "1", "3", "--default"},
		{"audit", "list", "--actor", "me"},
		{"audit", "list", "--target", "organization"},
		{"audit", "list", "--target", "org:12"},
		{"audit", "list", "--target", "user:"},
		{"audit", "list", "--target", ":7"},
	} {
		r := c.expect(t, 2, args...)
		if !strings.HasPrefix(r.stderr, "tenantctl: ") || !strings.Contains(r.stderr, "--help' for usage") || r.stdout != "" {
			t.Errorf("tenantctl %s: want one error line and a hint on stderr, nothing on stdout; got %s", strings.Join(args, " "), r)
		}
	}

	r := c.expect(t, 4, "whoami")
	expectProblem(t, r, 4, "not_logged_in")

	r = c.expect(t, 1, "login", "--url", "http://127.0.0.1:1", "--email", "a@example.com", "--password-stdin")
	if !strings.Contains(r.stderr, "cannot reach the control plane at http://127.0.0.1:1") {
		t.Fatalf("unreachable control plane: %s", r)
	}

	if r := c.expect(t, 0, "orgs"); !strings.Contains(r.stdout, "Available Commands") {
		t.Fatalf("a group alone prints its help: %s", r)
	}
}

// proc is tenantctl running in the background.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *testenv.LogBuffer
	done           chan struct{}
	err            error
}

// start runs tenantctl with args in the background until the test ends
// or stop.
func (c *cli) start(t *testing.T, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{cmd: c.command(ctx, args...), stdout: &testenv.LogBuffer{}, stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// waitFor waits until stream holds text.
func (p *proc) waitFor(t *testing.T, stream *testenv.LogBuffer, text string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() bool {
		select {
		case <-p.done:
			t.Fatalf("tenantctl ended (%v) before printing %q\nstdout:\n%s\nstderr:\n%s", p.err, text, p.stdout, p.stderr)
		default:
		}
		return strings.Contains(stream.String(), text)
	}, "tenantctl printed "+text)
}

// interrupt sends SIGINT, as Ctrl-C does, and returns the exit code.
func (p *proc) interrupt(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	return p.exit(t)
}

// exit waits for tenantctl to end and returns the exit code.
func (p *proc) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("tenantctl did not end\nstdout:\n%s\nstderr:\n%s", p.stdout, p.stderr)
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}
