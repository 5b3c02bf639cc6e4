package app_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/events"
	"tenantbase/libs/openapitest"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/tenantapi/tenantapitest"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
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

// startPlane runs app.Run on 127.0.0.1:0 against the internal tenant API
// at directoryURL (a tenantapitest.Directory) and the NATS server at
// natsURL, with opts, until the test ends.
func startPlane(t testing.TB, directoryURL, natsURL string, configure func(*app.Config), opts ...app.Option) *plane {
	t.Helper()
	cfg := app.DefaultConfig()
	cfg.Env = "test"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.InternalAddr = "127.0.0.1:0"
	cfg.ControlPlaneURL = directoryURL
	cfg.ServiceToken = tenantapitest.ServiceToken
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
		return app.Run(ctx, cfg, log, append(opts, app.WithReady(ready))...)
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

// tenant is a tenant database served through the directory.
type tenant struct {
	ID int64
	DB tenantapi.Database
}

const (
	ownerEmail    = "owner@example.com"
	ownerPassword = "owner-password-1"
)

// world is what the control plane would give a tenant plane: a directory
// answering the internal tenant API, holding two ready tenants A and B
// whose databases each have the owner as admin, and the event stream on
// NATS; and a tenant plane in front of them.
type world struct {
	nats   *testenv.NATSServer
	dir    *tenantapitest.Directory
	events *tenantapitest.Publisher
	tp     *plane
	a, b   tenant
}

// newWorld builds a world and starts its plane with configure applied.
func newWorld(t testing.TB, configure func(*app.Config)) *world {
	t.Helper()
	w := newTenants(t)
	w.tp = startPlane(t, w.dir.URL, w.nats.URL(), configure)
	return w
}

// newTenants builds a world without starting a plane. The stream exists
// before any plane starts, as the control plane creates it at start.
func newTenants(t testing.TB) *world {
	t.Helper()
	w := &world{nats: testenv.NATS(t), dir: tenantapitest.NewDirectory(t)}
	w.events = tenantapitest.NewPublisher(t, w.nats.URL(), events.DefaultChannel)
	w.a = addTenant(t, w.dir, 1)
	w.b = addTenant(t, w.dir, 2)
	return w
}

// addTenant creates a tenant database holding the owner as its admin, as
// provisioning leaves it, and puts it into dir as ready tenant id.
func addTenant(t testing.TB, dir *tenantapitest.Directory, id int64) tenant {
	t.Helper()
	db := tenantdbtest.New(t)
	tenantdbtest.AddUser(t, db, ownerEmail, ownerPassword, tenantdb.RoleAdmin)
	dir.Put(readyTenant(t, id, db))
	return tenant{ID: id, DB: db}
}

// readyTenant is the directory's answer for a ready tenant on db.
func readyTenant(t testing.TB, id int64, db tenantapi.Database) tenantapi.Tenant {
	t.Helper()
	return tenantapi.Tenant{ID: id, Status: tenantapi.StatusReady, SchemaVersion: int(tenantdb.LatestVersion()), Database: &db}
}

// setStatus changes tenant id's status in the directory and then publishes
// the event of type typ, in the control plane's order: the change is
// committed before the event announces it.
func (w *world) setStatus(t testing.TB, id int64, status tenantapi.Status, typ string) {
	t.Helper()
	w.dir.SetStatus(id, status)
	w.events.Publish(t, w.dir.Event(typ, id))
}

// ownerLogin logs the owner in to tenant id.
func (w *world) ownerLogin(t testing.TB, id int64) tokens {
	t.Helper()
	return w.tp.login(t, id, ownerEmail, ownerPassword)
}

// eventDeadline bounds how long an event may take to reach the plane. It
// is generous for a loaded machine, yet far below the cache TTL (minutes):
// a change seen within it came through the event.
const eventDeadline = 15 * time.Second

func path(format string, args ...any) string { return fmt.Sprintf(format, args...) }
