//go:build unix

package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// TestIngressEndToEnd runs nginx with deploy/nginx/nginx.conf, unchanged, in
// front of two control-plane and two tenant-plane processes built from this
// repository, and takes a user through the whole product over the one
// public port: sign-up, verification by the mailed link, an organization
// provisioned in the background, a tenant user, and what the ingress itself
// must do (routing on X-TENANT, refusing internal endpoints, request ids,
// the body limit, spreading load over replicas).
func TestIngressEndToEnd(t *testing.T) {
	began := time.Now()
	s := e2eStartStack(t)
	t.Logf("stack up in %s: build %s, processes %s", time.Since(began).Round(time.Millisecond),
		s.buildTime.Round(time.Millisecond), s.startTime.Round(time.Millisecond))

	const password = "correct-horse-battery-staple"
	ownerEmail := "owner-" + e2eRandomHex(t, 4) + "@example.com"
	memberEmail := "member-" + e2eRandomHex(t, 4) + "@example.com"
	var coreToken, tenantToken, tenant string
	var orgID int64

	e2eStep(t, "owner registers", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/auth/register",
			map[string]any{"email": ownerEmail, "password": password, "is_owner": true})
		r.Expect(t, http.StatusCreated)
		var u struct {
			ID    int64  `json:"id"`
			Email string `json:"email"`
		}
		r.Decode(t, &u)
		if u.ID == 0 || u.Email != ownerEmail {
			t.Fatalf("registered user %+v, want an id and email %s", u, ownerEmail)
		}
	})

	e2eStep(t, "owner follows the mailed verification link", func(t *testing.T) {
		m := s.smtp.WaitForMail(t, 30*time.Second, func(m testenv.Mail) bool {
			return len(m.To) == 1 && m.To[0] == ownerEmail
		})
		link := e2eVerificationLink(t, m, s.url)
		s.do(t, http.MethodGet, strings.TrimPrefix(link, s.url), nil).Expect(t, http.StatusOK)
	})

	e2eStep(t, "owner logs in", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/auth/login", map[string]any{"email": ownerEmail, "password": password})
		r.Expect(t, http.StatusOK)
		coreToken = e2eTokens(t, r)
	})

	e2eStep(t, "owner creates an organization", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/organizations", map[string]any{"name": "Acme"}, "Authorization", "Bearer "+coreToken)
		r.Expect(t, http.StatusAccepted)
		var org struct {
			ID     int64  `json:"id"`
			Status string `json:"status"`
		}
		r.Decode(t, &org)
		if org.ID < s.firstOrgID || org.Status != "provisioning" {
			t.Fatalf("created organization %+v, want an id from %d on and status provisioning", org, s.firstOrgID)
		}
		if loc, want := r.Header.Get("Location"), "/organizations/"+strconv.FormatInt(org.ID, 10); loc != want {
			t.Fatalf("Location %q, want %q", loc, want)
		}
		orgID, tenant = org.ID, strconv.FormatInt(org.ID, 10)
	})

	e2eStep(t, "provisioning reaches ready", func(t *testing.T) {
		start := time.Now()
		deadline := start.Add(60 * time.Second)
		for {
			r := s.do(t, http.MethodGet, "/organizations/"+tenant, nil, "Authorization", "Bearer "+coreToken)
			r.Expect(t, http.StatusOK)
			var org struct {
				Status       string  `json:"status"`
				StatusDetail *string `json:"status_detail"`
			}
			r.Decode(t, &org)
			switch {
			case org.Status == "ready":
				t.Logf("organization %d ready %s after creation", orgID, time.Since(start).Round(time.Millisecond))
				return
			case org.Status != "provisioning":
				t.Fatalf("organization %d is %s: %s", orgID, org.Status, r.Body)
			case time.Now().After(deadline):
				t.Fatalf("organization %d still provisioning after 60s", orgID)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	e2eStep(t, "tenant user registers, logs in and reads the profile", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/auth/register", map[string]any{"email": memberEmail, "password": password}, "X-TENANT", tenant)
		r.Expect(t, http.StatusCreated)
		var u struct {
			Email string `json:"email"`
		}
		r.Decode(t, &u)
		if u.Email != memberEmail {
			t.Fatalf("registered tenant user %s, want %s", r.Body, memberEmail)
		}

		r = s.do(t, http.MethodPost, "/auth/login", map[string]any{"email": memberEmail, "password": password}, "X-TENANT", tenant)
		r.Expect(t, http.StatusOK)
		tenantToken = e2eTokens(t, r)
		if aud := e2eAudience(t, tenantToken); !slices.Contains(aud, "tenant:"+tenant) {
			t.Fatalf("tenant token audience %q, want tenant:%s", aud, tenant)
		}

		profile := s.profile(t, tenantToken, tenant)
		if profile.Email != memberEmail {
			t.Fatalf("profile email %q, want %q", profile.Email, memberEmail)
		}
	})

	e2eStep(t, "owner logs in to the tenant as its admin", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/auth/login", map[string]any{"email": ownerEmail, "password": password}, "X-TENANT", tenant)
		r.Expect(t, http.StatusOK)
		profile := s.profile(t, e2eTokens(t, r), tenant)
		if profile.Email != ownerEmail || profile.Role != "admin" {
			t.Fatalf("owner's tenant profile %+v, want email %s and role admin", profile, ownerEmail)
		}
	})

	e2eStep(t, "X-TENANT chooses the plane", func(t *testing.T) {
		cases := []struct {
			name    string
			path    string
			token   string
			headers []string
			status  int
		}{
			{name: "core token on the control plane", path: "/auth/me", token: coreToken, status: http.StatusOK},
			{name: "tenant token on the tenant plane", path: "/profile", token: tenantToken, headers: []string{"X-TENANT", tenant}, status: http.StatusOK},
			{name: "core token with X-TENANT", path: "/profile", token: coreToken, headers: []string{"X-TENANT", tenant}, status: http.StatusUnauthorized},
			{name: "tenant token without X-TENANT", path: "/auth/me", token: tenantToken, status: http.StatusUnauthorized},
			{name: "empty X-TENANT counts as none", path: "/auth/me", token: coreToken, headers: []string{"X-TENANT", ""}, status: http.StatusOK},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				headers := append([]string{"Authorization", "Bearer " + tc.token}, tc.headers...)
				s.do(t, http.MethodGet, tc.path, nil, headers...).Expect(t, tc.status)
			})
		}
	})

	e2eStep(t, "internal endpoints are not routed", func(t *testing.T) {
		// The same paths answer on the control plane's internal listener, so a
		// 404 through the ingress is the ingress refusing them.
		direct := s.direct(t, "http://"+s.controlPlanes[0].internalAddr+"/internal/tenants/"+tenant, "Authorization", "Bearer "+s.serviceToken)
		direct.Expect(t, http.StatusOK)
		s.direct(t, "http://"+s.controlPlanes[0].internalAddr+"/metrics").Expect(t, http.StatusOK)

		paths := []struct{ name, path string }{
			{"tenant lookup", "/internal/tenants/" + tenant},
			{"internal root", "/internal"},
			{"metrics", "/metrics"},
			{"metrics in capitals", "/Metrics"},
			{"internal in capitals", "/INTERNAL/tenants/" + tenant},
			{"percent-encoded", "/%69nternal/tenants/" + tenant},
			{"dot segments", "/organizations/../internal/tenants/" + tenant},
			{"double slash", "//internal/tenants/" + tenant},
		}
		variants := []struct {
			name    string
			headers []string
		}{
			{name: "no X-TENANT", headers: nil},
			{name: "no X-TENANT, service token", headers: []string{"Authorization", "Bearer " + s.serviceToken}},
			{name: "X-TENANT", headers: []string{"X-TENANT", tenant}},
			{name: "X-TENANT, service token", headers: []string{"X-TENANT", tenant, "Authorization", "Bearer " + s.serviceToken}},
		}
		n := 0
		for _, p := range paths {
			for _, v := range variants {
				n++
				id := fmt.Sprintf("e2e-internal-%d", n)
				t.Run(p.name+", "+v.name, func(t *testing.T) {
					r := s.do(t, http.MethodGet, p.path, nil, append([]string{"X-Request-ID", id}, v.headers...)...)
					r.ExpectProblem(t, http.StatusNotFound, "not_found")
				})
			}
		}
	})

	e2eStep(t, "request ids", func(t *testing.T) {
		generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
		cases := []struct {
			name   string
			tenant bool
			sent   string
			want   string
		}{
			{name: "kept, control plane", sent: "abc-123", want: "abc-123"},
			{name: "kept, tenant plane", tenant: true, sent: "tp-abc-123", want: "tp-abc-123"},
			{name: "generated when absent, control plane"},
			{name: "generated when absent, tenant plane", tenant: true},
			{name: "replaced when malformed", sent: "not an id!"},
			{name: "replaced when too long", tenant: true, sent: strings.Repeat("a", 129)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				path, plane, headers := "/auth/me", s.controlPlanes, []string{"Authorization", "Bearer " + coreToken}
				if tc.tenant {
					path, plane, headers = "/profile", s.tenantPlanes, []string{"Authorization", "Bearer " + tenantToken, "X-TENANT", tenant}
				}
				if tc.sent != "" {
					headers = append(headers, "X-Request-ID", tc.sent)
				}
				r := s.do(t, http.MethodGet, path, nil, headers...)
				r.Expect(t, http.StatusOK)
				got := r.Header.Values("X-Request-ID")
				if len(got) != 1 {
					t.Fatalf("X-Request-ID values %q, want exactly one", got)
				}
				if tc.want != "" && got[0] != tc.want {
					t.Fatalf("X-Request-ID %q, want %q", got[0], tc.want)
				}
				if tc.want == "" && !generated.MatchString(got[0]) {
					t.Fatalf("X-Request-ID %q, want one generated by the ingress", got[0])
				}
				testenv.Eventually(t, 5*time.Second, func() bool {
					return slices.ContainsFunc(plane, func(p *e2eProc) bool {
						return slices.Contains(p.requestIDs(t), got[0])
					})
				}, "the plane logging request id "+got[0])
			})
		}
	})

	e2eStep(t, "body size limit", func(t *testing.T) {
		cases := []struct {
			name   string
			size   int
			tenant bool
			id     string
			status int
			code   string
		}{
			{name: "over 1 MiB, control plane", size: 2 << 20, id: "e2e-big-cp", status: http.StatusRequestEntityTooLarge, code: "body_too_large"},
			{name: "over 1 MiB, tenant plane", size: 2 << 20, tenant: true, id: "e2e-big-tp", status: http.StatusRequestEntityTooLarge, code: "body_too_large"},
			// Larger than nginx keeps in memory, so it is buffered to a file
			// under the prefix and still reaches the plane, which judges it.
			{name: "under 1 MiB, control plane", size: 900 << 10, id: "e2e-body-cp", status: http.StatusBadRequest, code: "malformed_json"},
			{name: "under 1 MiB, tenant plane", size: 900 << 10, tenant: true, id: "e2e-body-tp", status: http.StatusBadRequest, code: "malformed_json"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				headers, plane := []string{"X-Request-ID", tc.id}, s.controlPlanes
				if tc.tenant {
					headers, plane = append(headers, "X-TENANT", tenant), s.tenantPlanes
				}
				r := s.do(t, http.MethodPost, "/auth/register", bytes.Repeat([]byte("a"), tc.size), headers...)
				r.ExpectProblem(t, tc.status, tc.code)
				if tc.status == http.StatusRequestEntityTooLarge {
					return
				}
				testenv.Eventually(t, 5*time.Second, func() bool {
					return slices.ContainsFunc(plane, func(p *e2eProc) bool { return slices.Contains(p.requestIDs(t), tc.id) })
				}, "the plane logging request "+tc.id)
			})
		}
	})

	e2eStep(t, "every replica serves", func(t *testing.T) {
		const rounds = 12
		for i := range rounds {
			s.do(t, http.MethodGet, "/auth/me", nil, "X-Request-ID", fmt.Sprintf("e2e-spread-cp-%d", i),
				"Authorization", "Bearer "+coreToken).Expect(t, http.StatusOK)
			s.do(t, http.MethodGet, "/profile", nil, "X-Request-ID", fmt.Sprintf("e2e-spread-tp-%d", i),
				"Authorization", "Bearer "+tenantToken, "X-TENANT", tenant).Expect(t, http.StatusOK)
		}
		for _, group := range []struct {
			prefix string
			procs  []*e2eProc
		}{{"e2e-spread-cp-", s.controlPlanes}, {"e2e-spread-tp-", s.tenantPlanes}} {
			for _, p := range group.procs {
				served := func() int {
					return len(slices.DeleteFunc(p.requestIDs(t), func(id string) bool { return !strings.HasPrefix(id, group.prefix) }))
				}
				testenv.Eventually(t, 5*time.Second, func() bool { return served() > 0 }, p.name+" serving some of the requests")
				t.Logf("%s served %d of %d requests", p.name, served(), rounds)
			}
		}
	})

	e2eStep(t, "refused requests never reached a plane", func(t *testing.T) {
		for _, p := range append(slices.Clone(s.controlPlanes), s.tenantPlanes...) {
			for _, id := range p.requestIDs(t) {
				if strings.HasPrefix(id, "e2e-internal-") || strings.HasPrefix(id, "e2e-big-") {
					t.Errorf("%s logged request %s, which the ingress must answer itself", p.name, id)
				}
			}
		}
	})

	for _, p := range s.procs {
		select {
		case <-p.done:
			t.Errorf("%s exited during the test: %v", p.name, p.err)
		default:
		}
	}
	t.Logf("journey done in %s", time.Since(began).Round(time.Millisecond))
}

// The platform admin every stack starts with.
const (
	e2eAdminEmail    = "admin@tenantbase.test"
	e2eAdminPassword = "admin-password-1"
)

// e2eStep runs one step of the journey; the steps after a failed one
// would only fail for its reason, so the test stops there.
func e2eStep(t *testing.T, name string, step func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, step) {
		t.FailNow()
	}
}

// e2eStack is the running system: nginx in front of the four processes.
type e2eStack struct {
	url string
	dir string
	// coreDB is the control planes' core database.
	coreDB        string
	serviceToken  string
	firstOrgID    int64
	smtp          *testenv.SMTPServer
	client        *http.Client
	controlPlanes []*e2eProc
	tenantPlanes  []*e2eProc
	nginx         *e2eProc
	// procs are all started processes, in start order.
	procs     []*e2eProc
	buildTime time.Duration
	startTime time.Duration
}

func e2eStartStack(t *testing.T) *e2eStack {
	t.Helper()
	nginxBin := e2eNginx(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	s := &e2eStack{
		dir:          t.TempDir(),
		serviceToken: e2eRandomHex(t, 24),
		smtp:         testenv.SMTP(t),
		client: &http.Client{
			Transport:     &http.Transport{MaxIdleConnsPerHost: 4},
			Timeout:       30 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	// Runs after every process is stopped (cleanups run last-in first-out),
	// so the tails include how each one shut down.
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range s.procs {
				t.Logf("--- %s (%s), last lines:\n%s", p.name, p.logPath, e2eTail(p.logPath, 40))
			}
		}
	})

	began := time.Now()
	bins := e2eBuild(t, root, s.dir, "control-plane", "tenant-plane")
	s.buildTime = time.Since(began)

	began = time.Now()
	ingressPort := testenv.FreePort(t)
	s.url = "http://127.0.0.1:" + strconv.Itoa(ingressPort)
	nats := testenv.NATS(t)
	server := testenv.PostgresURL(t)
	coreDB := testenv.NewDatabase(t)
	s.coreDB = coreDB
	base := []string{"PATH=" + os.Getenv("PATH"), "ENV=test", "BCRYPT_COST=4", "SHUTDOWN_TIMEOUT=5s", "NATS_URL=" + nats.URL()}

	cpEnv := append(slices.Clone(base),
		"DATABASE_URL="+coreDB,
		"JWT_SIGNING_KEY="+e2eRandomKey(t),
		"CREDENTIALS_KEY="+e2eRandomKey(t),
		"SERVICE_TOKEN="+s.serviceToken,
		"SMTP_ADDR="+s.smtp.Addr(),
		"SMTP_REQUIRE_TLS=false",
		"KEYS_DIR="+filepath.Join(s.dir, "control-plane-keys"),
		"PUBLIC_URL="+s.url,
		"BOOTSTRAP_ADMIN_EMAIL="+e2eAdminEmail,
		"BOOTSTRAP_ADMIN_PASSWORD="+e2eAdminPassword,
	)
	migrate := exec.Command(bins["control-plane"], "migrate")
	migrate.Env = cpEnv
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("control-plane migrate: %v\n%s", err, out)
	}
	// Tenant databases are named after org ids on the shared server, and ids
	// start at 1 in every fresh core database: starting this one far away
	// keeps the test's tenants apart from any other test's.
	s.firstOrgID = 1_000_000 + mathrand.Int64N(999_000_000)
	testenv.Exec(t, coreDB, "ALTER SEQUENCE organization_id_seq RESTART WITH "+strconv.FormatInt(s.firstOrgID, 10))
	// Registered before the processes start, so it runs after they stop.
	t.Cleanup(func() { e2eDropTenants(t, server, coreDB) })

	for i := range 2 {
		s.controlPlanes = append(s.controlPlanes, s.startService(t, fmt.Sprintf("control-plane-%d", i+1), bins["control-plane"], cpEnv))
	}
	for _, p := range s.controlPlanes {
		e2eWaitHealthy(t, p, "http://"+p.publicAddr+"/health")
	}

	tpEnv := append(slices.Clone(base),
		"CONTROL_PLANE_URL=http://"+s.controlPlanes[0].internalAddr,
		"SERVICE_TOKEN="+s.serviceToken,
		"JWT_SIGNING_KEY="+e2eRandomKey(t),
		"KEYS_DIR="+filepath.Join(s.dir, "tenant-plane-keys"),
	)
	for i := range 2 {
		s.tenantPlanes = append(s.tenantPlanes, s.startService(t, fmt.Sprintf("tenant-plane-%d", i+1), bins["tenant-plane"], tpEnv))
	}
	for _, p := range s.tenantPlanes {
		e2eWaitHealthy(t, p, "http://"+p.publicAddr+"/health")
	}

	s.nginx = s.startNginx(t, nginxBin, root, ingressPort)
	e2eWaitHealthy(t, s.nginx, s.url+"/healthz")
	s.startTime = time.Since(began)
	return s
}

// e2eNginx finds nginx as libs/cmd/ensurenginx does, which `make test`
// runs first and whose answer it exports as NGINX_BIN: NGINX_BIN, then
// PATH, then /usr/sbin/nginx, where Debian puts it.
func e2eNginx(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("NGINX_BIN"); bin != "" {
		return bin
	}
	if bin, err := exec.LookPath("nginx"); err == nil {
		return bin
	}
	if bin, err := exec.LookPath("/usr/sbin/nginx"); err == nil {
		return bin
	}
	t.Fatal("nginx not found (NGINX_BIN, PATH, /usr/sbin/nginx): `make test` installs it where it can, see libs/cmd/ensurenginx")
	return ""
}

// startService starts one replica on free loopback ports.
func (s *e2eStack) startService(t *testing.T, name, bin string, env []string) *e2eProc {
	t.Helper()
	public := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	internal := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	p := s.start(t, name, bin, nil, append(slices.Clone(env), "HTTP_ADDR="+public, "INTERNAL_ADDR="+internal))
	p.publicAddr, p.internalAddr = public, internal
	return p
}

// startNginx runs deploy/nginx/nginx.conf byte for byte; only the two files
// it includes for what differs between environments are written here.
func (s *e2eStack) startNginx(t *testing.T, bin, root string, port int) *e2eProc {
	t.Helper()
	prefix := filepath.Join(s.dir, "nginx") + string(filepath.Separator)
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, "deploy", "nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	upstream := func(name string, procs []*e2eProc) string {
		var b strings.Builder
		fmt.Fprintf(&b, "upstream %s {\n", name)
		for _, p := range procs {
			fmt.Fprintf(&b, "    server %s max_fails=3 fail_timeout=10s;\n", p.publicAddr)
		}
		b.WriteString("    keepalive 16;\n}\n")
		return b.String()
	}
	files := map[string]string{
		"nginx.conf":     string(conf),
		"upstreams.conf": upstream("control_plane", s.controlPlanes) + upstream("tenant_plane", s.tenantPlanes),
		"listen.conf":    fmt.Sprintf("listen 127.0.0.1:%d;\n", port),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(prefix, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Deployed, nginx runs as an unprivileged user throughout. A root test
	// process keeps its workers as root too: by default they would drop to
	// nobody, which cannot enter the test's private temporary directory to
	// buffer large bodies.
	global := "daemon off;"
	if os.Geteuid() == 0 {
		global += " user root;"
	}
	return s.start(t, "nginx", bin, []string{"-p", prefix, "-e", "stderr", "-c", filepath.Join(prefix, "nginx.conf"), "-g", global},
		[]string{"PATH=" + os.Getenv("PATH")})
}

// e2eProc is a process the test started, with its output in a file.
type e2eProc struct {
	name         string
	cmd          *exec.Cmd
	logPath      string
	publicAddr   string
	internalAddr string
	done         chan struct{}
	// err is the result of Wait, set before done is closed.
	err error
}

func (s *e2eStack) start(t *testing.T, name, bin string, args, env []string) *e2eProc {
	t.Helper()
	p := &e2eProc{name: name, logPath: filepath.Join(s.dir, name+".log"), done: make(chan struct{})}
	// Appending keeps nginx's access log and error log from overwriting each
	// other: it reopens /dev/stdout, a second file offset into this file.
	out, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = e2eSysProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	s.procs = append(s.procs, p)
	t.Cleanup(p.stop)
	return p
}

// stop asks for a graceful shutdown and kills the process group when it
// takes too long.
func (p *e2eProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// requestIDs lists the request_id of every access log line ("request")
// the process wrote so far.
func (p *e2eProc) requestIDs(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "request" {
			ids = append(ids, line.RequestID)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", p.logPath, err)
	}
	return ids
}

// e2eWaitHealthy polls url until it answers 200, failing early when the
// process exits.
func e2eWaitHealthy(t *testing.T, p *e2eProc, url string) {
	t.Helper()
	client := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was healthy: %v\n%s", p.name, p.err, e2eTail(p.logPath, 40))
		default:
		}
		if res, err := client.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not healthy within 60s\n%s", p.name, url, e2eTail(p.logPath, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// e2eBuild builds the named services once, from the repository root so the
// workspace resolves the local modules.
func e2eBuild(t *testing.T, root, dir string, names ...string) map[string]string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the services: %v", err)
	}
	bins := map[string]string{}
	for _, name := range names {
		bin := filepath.Join(dir, "bin", name)
		cmd := exec.Command(goBin, "build", "-o", bin, "./services/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./services/%s: %v\n%s", name, err, out)
		}
		bins[name] = bin
	}
	return bins
}

// do sends a request to the ingress. body is sent as is when it is a
// []byte, as JSON otherwise; headers are name, value pairs.
func (s *e2eStack) do(t *testing.T, method, path string, body any, headers ...string) *testenv.Response {
	t.Helper()
	return s.send(t, method, s.url+path, body, headers...)
}

// direct sends a GET to a process's own listener, bypassing the ingress.
func (s *e2eStack) direct(t *testing.T, url string, headers ...string) *testenv.Response {
	t.Helper()
	return s.send(t, http.MethodGet, url, nil, headers...)
}

// send sends the path as written: net/http neither decodes nor cleans it,
// so encoded and dot-segment variants reach nginx as a client sent them.
func (s *e2eStack) send(t *testing.T, method, target string, body any, headers ...string) *testenv.Response {
	t.Helper()
	req := testenv.JSONRequest(t, method, target, body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return testenv.Send(t, s.client, req, nil)
}

// e2eTokens checks a login answer and returns its access token.
func e2eTokens(t *testing.T, r *testenv.Response) string {
	t.Helper()
	var tok struct {
		AccessToken  string `json:"access_token"`
		TokenType    string `json:"token_type"`
		ExpiresIn    int    `json:"expires_in"`
		RefreshToken string `json:"refresh_token"`
	}
	r.Decode(t, &tok)
	if tok.AccessToken == "" || !strings.EqualFold(tok.TokenType, "bearer") || tok.ExpiresIn <= 0 || tok.RefreshToken == "" {
		t.Fatalf("%s %s: login answer %s, want access_token, token_type bearer, expires_in and refresh_token", r.Method, r.Path, r.Body)
	}
	return tok.AccessToken
}

type e2eProfile struct {
	Email string `json:"email"`
	Role  string `json:"role"`
}

func (s *e2eStack) profile(t *testing.T, token, tenant string) e2eProfile {
	t.Helper()
	r := s.do(t, http.MethodGet, "/profile", nil, "Authorization", "Bearer "+token, "X-TENANT", tenant)
	r.Expect(t, http.StatusOK)
	var p e2eProfile
	r.Decode(t, &p)
	return p
}

// e2eAudience reads a JWT's aud claim without checking the signature: the
// planes check tokens, this only tells which plane issued one.
func e2eAudience(t *testing.T, token string) []string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("access token %q is not a JWT", token)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("access token payload: %v", err)
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatalf("access token claims %s: %v", raw, err)
	}
	var one string
	if json.Unmarshal(claims.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	if err := json.Unmarshal(claims.Aud, &many); err != nil {
		t.Fatalf("access token aud %s: %v", claims.Aud, err)
	}
	return many
}

// e2eVerificationLink reads a mail as a client would and returns the
// verification link in it, which must point at the ingress.
func e2eVerificationLink(t *testing.T, m testenv.Mail, publicURL string) string {
	t.Helper()
	link := testenv.LinkIn(t, m.Text(t), publicURL+"/auth/verify?")
	if link.Query().Get("token") == "" {
		t.Fatalf("verification link %q has no token", link)
	}
	return link.String()
}

// e2eDropTenants removes the databases and roles the control planes made
// for this core database's deployment: they live on the shared server,
// outside the core database that testenv drops.
func e2eDropTenants(t *testing.T, server, coreDB string) {
	var dep string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	core, err := pgx.Connect(ctx, coreDB)
	if err != nil {
		t.Errorf("drop tenants: %v", err)
		return
	}
	defer core.Close(context.Background())
	if err := core.QueryRow(ctx, `SELECT id FROM deployment`).Scan(&dep); err != nil {
		// No control plane ever started: nothing to drop.
		return
	}
	cptest.DropDeployment(t, server, dep)
}

// e2eTail returns the last n lines of a file.
func e2eTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func e2eRandomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// e2eRandomKey is 32 random bytes in base64, the form of the services' key
// settings.
func e2eRandomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}
