package app_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/openapitest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/tenant-plane/app"
)

// plane is one tenant plane running in this process.
type plane struct {
	PublicURL   string
	InternalURL string
	Config      app.Config

	svc  *testenv.Service
	spec *openapitest.Validator
	http *http.Client
}

// startPlane runs app.Run on 127.0.0.1:0 against a control plane's
// internal API at directoryURL and the NATS server at natsURL, until the
// test ends.
func startPlane(t testing.TB, directoryURL, natsURL string, configure func(*app.Config)) *plane {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Env = "test"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.InternalAddr = "127.0.0.1:0"
	cfg.ControlPlaneURL = directoryURL
	cfg.ServiceToken = cptest.ServiceToken
	cfg.NATSURL = natsURL
	cfg.KeysDir = t.TempDir()
	cfg.BcryptCost = bcrypt.MinCost
	cfg.LogLevel = "debug"
	cfg.ShutdownTimeout = 10 * time.Second
	if configure != nil {
		configure(&cfg)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		t.Fatal(err)
	}
	p := &plane{
		Config: cfg,
		spec:   openapitest.New(t, app.OpenAPI),
		http:   &http.Client{Timeout: 30 * time.Second},
	}
	var addrs app.Addrs
	p.svc, addrs = testenv.StartService(t, "tenant plane", level, func(ctx context.Context, log *slog.Logger, ready func(app.Addrs)) error {
		return app.Run(ctx, cfg, log, app.WithReady(ready))
	})
	p.PublicURL = "http://" + addrs.Public
	p.InternalURL = "http://" + addrs.Internal
	return p
}

// call sends a request to the public API for tenant (0: no X-TENANT) with
// token as bearer ("" for none) and body as JSON (nil for none).
func (p *plane) call(t testing.TB, method, path string, tenant int64, token string, body any) *testenv.Response {
	t.Helper()
	req := testenv.JSONRequest(t, method, p.PublicURL+path, body)
	if tenant != 0 {
		req.Header.Set("X-TENANT", strconv.FormatInt(tenant, 10))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return p.send(t, req)
}

// send sends req to the public API and checks the answer against the
// OpenAPI document.
func (p *plane) send(t testing.TB, req *http.Request) *testenv.Response {
	t.Helper()
	return testenv.Send(t, p.http, req, p.spec.Check)
}

// metric reads one series (name with its labels, as /metrics prints it)
// from the internal listener; 0 when absent.
func (p *plane) metric(t testing.TB, series string) float64 {
	t.Helper()
	res, err := p.http.Get(p.InternalURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

type tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

type user struct {
	ID          int64   `json:"id"`
	Email       string  `json:"email"`
	Role        string  `json:"role"`
	IsActive    bool    `json:"is_active"`
	DisplayName *string `json:"display_name"`
}

func (p *plane) register(t testing.TB, tenant int64, email, password string) user {
	t.Helper()
	var u user
	p.call(t, http.MethodPost, "/auth/register", tenant, "", map[string]string{"email": email, "password": password}).
		Expect(t, http.StatusCreated).Decode(t, &u)
	return u
}

func (p *plane) login(t testing.TB, tenant int64, email, password string) tokens {
	t.Helper()
	var tok tokens
	p.call(t, http.MethodPost, "/auth/login", tenant, "", map[string]string{"email": email, "password": password}).
		Expect(t, http.StatusOK).Decode(t, &tok)
	return tok
}

// directory is a reverse proxy in front of a control plane's internal
// API that counts the tenant lookups passing through; the real API
// answers every one.
type directory struct {
	URL string
	mu  sync.Mutex
	n   map[string]int
}

func newDirectory(t testing.TB, internalURL string) *directory {
	t.Helper()
	target, err := url.Parse(internalURL)
	if err != nil {
		t.Fatal(err)
	}
	d := &directory{n: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/internal/tenants/"); ok {
			d.mu.Lock()
			d.n[id]++
			d.mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	d.URL = srv.URL
	return d
}

func (d *directory) lookups(id int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[strconv.FormatInt(id, 10)]
}

// world is a control plane with an owner, two ready organizations and a
// tenant plane in front of them.
type world struct {
	cp    *cptest.ControlPlane
	dir   *directory
	tp    *plane
	owner cptest.User
	a, b  cptest.Organization
}

const ownerPassword = "owner-password-1"

func newWorld(t *testing.T, configure func(*app.Config)) *world {
	t.Helper()
	w := &world{cp: cptest.Start(t, cptest.Options{})}
	w.owner = w.cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	w.a = w.cp.CreateReadyOrganization(t, w.owner, "Alpha")
	w.b = w.cp.CreateReadyOrganization(t, w.owner, "Beta")
	w.dir = newDirectory(t, w.cp.InternalURL)
	w.tp = startPlane(t, w.dir.URL, w.cp.NATS.URL(), configure)
	return w
}

// ownerLogin logs the organization owner in to tenant id.
func (w *world) ownerLogin(t testing.TB, id int64) tokens {
	t.Helper()
	return w.tp.login(t, id, w.owner.Email, ownerPassword)
}

func path(format string, args ...any) string { return fmt.Sprintf(format, args...) }
