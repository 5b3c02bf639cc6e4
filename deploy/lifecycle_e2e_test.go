package deploy_test

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

	"tenantbase/libs/events"
	"tenantbase/libs/natsembed"
	"tenantbase/libs/openapitest"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/testenv"
	cpapp "tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	tpapp "tenantbase/services/tenant-plane/app"
)

// These tests run real control planes (cptest) and a real tenant plane
// (app.Run) in this process, wired as deployed: the plane looks tenants up
// on the control plane's internal API and follows its events on JetStream.
// The tenant plane's own tests (services/tenant-plane/app) serve the same
// contract from tenantapitest instead; TestIngressEndToEnd covers sign-up,
// provisioning and routing through nginx.

// lcEventDeadline bounds how long a control plane action may take to reach
// the plane: generous for a loaded machine, far below the cache TTL
// (minutes), so a change seen within it came through the event.
const lcEventDeadline = 20 * time.Second

// TestTenantLifecycleEndToEnd takes an owner's tenants through the journey
// a user sees: the owner's core credentials open each provisioned tenant as
// its admin, a platform admin's suspension refuses the tenant promptly,
// resumption serves it again, and deletion makes it unknown, while the
// other tenant is undisturbed. That core and tenant tokens are refused on
// the other plane is TestIngressEndToEnd's "X-TENANT chooses the plane".
func TestTenantLifecycleEndToEnd(t *testing.T) {
	t.Parallel()
	const password = "owner-password-1"
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", password)
	orgA := cp.CreateReadyOrganization(t, owner, "Alpha")
	orgB := cp.CreateReadyOrganization(t, owner, "Beta")
	tp := lcStartPlane(t, cp.InternalURL, cp.NATS.URL())
	a, b := orgA.ID, orgB.ID

	// Provisioning synced the owner into each tenant database as its admin.
	tokens := map[int64]string{}
	for _, id := range []int64{a, b} {
		tokens[id] = tp.login(t, id, owner.Email, password)
		var p struct {
			Email string `json:"email"`
			Role  string `json:"role"`
		}
		tp.call(t, http.MethodGet, "/profile", id, tokens[id], nil).Expect(t, http.StatusOK).Decode(t, &p)
		if p.Email != owner.Email || p.Role != "admin" {
			t.Fatalf("tenant %d: owner's profile = %+v, want %s as admin", id, p, owner.Email)
		}
	}
	tok, tokB := tokens[a], tokens[b]

	admin := cp.LoginAdmin(t)
	profile := func() *testenv.Response { return tp.call(t, http.MethodGet, "/profile", a, tok, nil) }
	otherUndisturbed := func() { tp.call(t, http.MethodGet, "/profile", b, tokB, nil).Expect(t, http.StatusOK) }

	cp.Do(t, http.MethodPost, fmt.Sprintf("/admin/organizations/%d/suspend", a), admin, nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, lcEventDeadline, func() bool { return profile().Status == http.StatusForbidden }, "suspension takes effect")
	profile().ExpectProblem(t, http.StatusForbidden, "tenant_suspended")
	otherUndisturbed()

	cp.Do(t, http.MethodPost, fmt.Sprintf("/admin/organizations/%d/resume", a), admin, nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, lcEventDeadline, func() bool { return profile().Status == http.StatusOK }, "resumption takes effect")

	cp.Do(t, http.MethodDelete, fmt.Sprintf("/organizations/%d", a), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, a, "deleted", time.Minute)
	testenv.Eventually(t, lcEventDeadline, func() bool { return profile().Status == http.StatusNotFound }, "deletion takes effect")
	profile().ExpectProblem(t, http.StatusNotFound, "tenant_not_found")
	tp.call(t, http.MethodPost, "/auth/login", a, "", map[string]string{"email": owner.Email, "password": password}).
		ExpectProblem(t, http.StatusNotFound, "tenant_not_found")
	otherUndisturbed()
	if n := tp.metric(t, "tenant_cache_invalidations_total"); n < 3 {
		t.Errorf("cache invalidations = %v, want at least 3", n)
	}
}

// TestOtherDeploymentSharingNATS shares one NATS stream between two
// deployments whose tenant ids collide: the other deployment suspending
// its tenant of the same id leaves this plane's cached tenant alone, while
// this deployment's own events still apply.
func TestOtherDeploymentSharingNATS(t *testing.T) {
	t.Parallel()
	const password = "owner-password-1"
	a := cptest.Start(t, cptest.Options{})
	b := cptest.Start(t, cptest.Options{NATSURL: a.NATS.URL()})
	for _, cp := range []*cptest.ControlPlane{a, b} {
		testenv.Exec(t, cp.DatabaseURL, `SELECT setval('organization_id_seq', 70)`)
	}
	ownerA := a.SignUpOwner(t, "owner@a.example", password)
	ownerB := b.SignUpOwner(t, "owner@b.example", password)
	same := a.CreateReadyOrganization(t, ownerA, "A1")
	other := a.CreateReadyOrganization(t, ownerA, "A2")
	if theirs := b.CreateReadyOrganization(t, ownerB, "B1"); theirs.ID != same.ID {
		t.Fatalf("ids %d and %d: the test needs colliding ids", same.ID, theirs.ID)
	}
	dir := lcCountLookups(t, a.InternalURL)
	tp := lcStartPlane(t, dir.URL, a.NATS.URL())
	tokSame := tp.login(t, same.ID, ownerA.Email, password)
	tokOther := tp.login(t, other.ID, ownerA.Email, password)
	tp.call(t, http.MethodGet, "/profile", same.ID, tokSame, nil).Expect(t, http.StatusOK)
	lookups := dir.lookups(same.ID)

	b.Do(t, http.MethodPost, fmt.Sprintf("/admin/organizations/%d/suspend", same.ID), b.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	// The stream is ordered: once A's later event has applied, B's was seen.
	a.Do(t, http.MethodPost, fmt.Sprintf("/admin/organizations/%d/suspend", other.ID), a.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, lcEventDeadline, func() bool {
		return tp.call(t, http.MethodGet, "/profile", other.ID, tokOther, nil).Status == http.StatusForbidden
	}, "this deployment's suspension applies")
	tp.call(t, http.MethodGet, "/profile", same.ID, tokSame, nil).Expect(t, http.StatusOK)
	if n := dir.lookups(same.ID); n != lookups {
		t.Fatalf("tenant %d looked up %d times after the other deployment's event, want %d (no invalidation)", same.ID, n, lookups)
	}
}

// lcPlane is a tenant plane running in this process.
type lcPlane struct {
	publicURL, internalURL string
	spec                   *openapitest.Validator
	http                   *http.Client
	svc                    *testenv.Service
}

// lcStartPlane runs the tenant plane against the internal API at
// directoryURL and the NATS server at natsURL until the test ends.
func lcStartPlane(t *testing.T, directoryURL, natsURL string, configure ...func(*tpapp.Config)) *lcPlane {
	t.Helper()
	cfg := tpapp.DefaultConfig()
	cfg.Env = "test"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.InternalAddr = "127.0.0.1:0"
	cfg.ControlPlaneURL = directoryURL
	cfg.ServiceToken = cptest.ServiceToken
	cfg.NATSURL = natsURL
	cfg.KeysDir = t.TempDir()
	cfg.BcryptCost = 4
	cfg.LogLevel = "debug"
	cfg.ShutdownTimeout = 10 * time.Second
	for _, c := range configure {
		c(&cfg)
	}
	svc, addrs := testenv.StartService(t, "tenant plane", slog.LevelDebug, func(ctx context.Context, log *slog.Logger, ready func(tpapp.Addrs)) error {
		return tpapp.Run(ctx, cfg, log, tpapp.WithReady(ready))
	})
	return &lcPlane{
		svc:         svc,
		publicURL:   "http://" + addrs.Public,
		internalURL: "http://" + addrs.Internal,
		spec:        openapitest.New(t, tpapp.OpenAPI),
		http:        &http.Client{Timeout: 30 * time.Second},
	}
}

// call sends a request for tenant with token as bearer ("" for none) and
// body as JSON (nil for none), and checks the answer against the plane's
// OpenAPI document.
func (p *lcPlane) call(t *testing.T, method, path string, tenant int64, token string, body any) *testenv.Response {
	t.Helper()
	req := testenv.JSONRequest(t, method, p.publicURL+path, body)
	req.Header.Set("X-TENANT", strconv.FormatInt(tenant, 10))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return testenv.Send(t, p.http, req, p.spec.Check)
}

// login returns an access token of email in tenant.
func (p *lcPlane) login(t *testing.T, tenant int64, email, password string) string {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	p.call(t, http.MethodPost, "/auth/login", tenant, "", map[string]string{"email": email, "password": password}).
		Expect(t, http.StatusOK).Decode(t, &tok)
	return tok.AccessToken
}

// metric reads one series from the internal listener; 0 when absent.
func (p *lcPlane) metric(t *testing.T, series string) float64 {
	t.Helper()
	res, err := p.http.Get(p.internalURL + "/metrics")
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

// lcLookups is a reverse proxy in front of a control plane's internal API
// that counts the tenant lookups passing through; the real API answers
// every one.
type lcLookups struct {
	URL string
	mu  sync.Mutex
	n   map[string]int
}

func lcCountLookups(t *testing.T, internalURL string) *lcLookups {
	t.Helper()
	target, err := url.Parse(internalURL)
	if err != nil {
		t.Fatal(err)
	}
	d := &lcLookups{n: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, tenantapi.PathPrefix); ok {
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

func (d *lcLookups) lookups(id int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[strconv.FormatInt(id, 10)]
}

// TestEventsFlowBetweenLeastPrivilegeUsers runs both planes against a NATS
// server that lets each log in only with the permissions of its role, as
// the shipped configurations do: the control plane's events reach the
// tenant plane, and neither is refused anything it needs.
func TestEventsFlowBetweenLeastPrivilegeUsers(t *testing.T) {
	t.Parallel()
	pub, follow := events.DefaultChannel.PublisherPermissions(), events.DefaultChannel.FollowerPermissions()
	srv := testenv.NATSWithUsers(t,
		natsembed.User{Name: "control-plane", Password: "cp-password", Publish: pub.Publish, Subscribe: pub.Subscribe},
		natsembed.User{Name: "tenant-plane", Password: "tp-password", Publish: follow.Publish, Subscribe: follow.Subscribe},
	)
	cp := cptest.Start(t, cptest.Options{NATSURL: srv.URL(), Configure: func(c *cpapp.Config) {
		c.NATSUser, c.NATSPassword = "control-plane", "cp-password"
	}})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner-password-1")
	org := cp.CreateReadyOrganization(t, owner, "Alpha")
	tp := lcStartPlane(t, cp.InternalURL, srv.URL(), func(c *tpapp.Config) {
		c.NATSUser, c.NATSPassword = "tenant-plane", "tp-password"
	})
	tok := tp.login(t, org.ID, owner.Email, "owner-password-1")
	tp.call(t, http.MethodGet, "/profile", org.ID, tok, nil).Expect(t, http.StatusOK)

	// The cache holds the tenant for minutes: only the event makes this quick.
	cp.Do(t, http.MethodPost, fmt.Sprintf("/admin/organizations/%d/suspend", org.ID), cp.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, lcEventDeadline, func() bool {
		return tp.call(t, http.MethodGet, "/profile", org.ID, tok, nil).Status == http.StatusForbidden
	}, "the suspension arrives through NATS")
	for name, logs := range map[string]string{"control plane": cp.Logs(), "tenant plane": tp.svc.Logs.String()} {
		if strings.Contains(logs, "Permissions Violation") {
			t.Errorf("the %s was refused something:\n%s", name, logs)
		}
	}
}
