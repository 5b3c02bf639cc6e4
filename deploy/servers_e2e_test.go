package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/auth"
	"tenantbase/libs/events"
	"tenantbase/libs/openapitest"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	tenantplane "tenantbase/services/tenant-plane/app"
)

// srvPlane is one tenant plane running in this process.
type srvPlane struct {
	url  string
	spec *openapitest.Validator
	http *http.Client
}

// srvStartPlane runs a tenant plane against the control plane's internal
// API at directoryURL, following the events on natsURL, until the test
// ends. Replicas given the same keysDir share their signing key.
func srvStartPlane(t *testing.T, directoryURL, natsURL, keysDir string) *srvPlane {
	t.Helper()
	cfg := tenantplane.DefaultConfig()
	cfg.Env = "test"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.InternalAddr = "127.0.0.1:0"
	cfg.ControlPlaneURL = directoryURL
	cfg.ServiceToken = cptest.ServiceToken
	cfg.NATSURL = natsURL
	cfg.KeysDir = keysDir
	cfg.BcryptCost = 4
	cfg.LogLevel = "info"
	cfg.ShutdownTimeout = 10 * time.Second
	_, addrs := testenv.StartService(t, "tenant plane", slog.LevelInfo, func(ctx context.Context, log *slog.Logger, ready func(tenantplane.Addrs)) error {
		return tenantplane.Run(ctx, cfg, log, tenantplane.WithReady(ready))
	})
	return &srvPlane{url: "http://" + addrs.Public, spec: openapitest.New(t, tenantplane.OpenAPI),
		http: &http.Client{Timeout: 30 * time.Second}}
}

// srvAnswer is one answer of the tenant plane, read to the end.
type srvAnswer struct {
	status     int
	code       string
	retryAfter string
	body       []byte
	at         time.Time
	err        error
}

// call sends a request for tenant with token ("" for none) and body as
// JSON (nil for none). It may run on any goroutine: it fails no test
// itself, and an answer the OpenAPI document does not allow comes back as
// err.
func (p *srvPlane) call(method, path string, tenant int64, token string, body any) srvAnswer {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, p.url+path, rd)
	if err != nil {
		return srvAnswer{err: err, at: time.Now()}
	}
	req.Header.Set("X-TENANT", strconv.FormatInt(tenant, 10))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := p.http.Do(req)
	if err != nil {
		return srvAnswer{err: err, at: time.Now()}
	}
	defer res.Body.Close()
	if err := p.spec.Validate(req, res); err != nil {
		return srvAnswer{status: res.StatusCode, err: fmt.Errorf("undocumented answer: %w", err), at: time.Now()}
	}
	a := srvAnswer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), at: time.Now()}
	a.body, a.err = io.ReadAll(res.Body)
	var pr struct {
		Code string `json:"code"`
	}
	if res.StatusCode >= 400 && json.Unmarshal(a.body, &pr) == nil {
		a.code = pr.Code
	}
	return a
}

func (a srvAnswer) String() string {
	if a.err != nil {
		return fmt.Sprintf("%d %v", a.status, a.err)
	}
	return fmt.Sprintf("%d %s %s", a.status, a.code, a.body)
}

// must fails the test unless the answer has status want.
func (a srvAnswer) must(t *testing.T, want int) srvAnswer {
	t.Helper()
	if a.err != nil || a.status != want {
		t.Fatalf("answer %s, want %d", a, want)
	}
	return a
}

func (p *srvPlane) login(t *testing.T, tenant int64, email, password string) string {
	t.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	a := p.call(http.MethodPost, "/auth/login", tenant, "", map[string]string{"email": email, "password": password}).must(t, http.StatusOK)
	if err := json.Unmarshal(a.body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("login answer %s", a.body)
	}
	return tok.AccessToken
}

// srvServed checks that tenant is served through the plane: a new member
// registers, logs in and reads their profile, and the owner logs in as admin.
func srvServed(t *testing.T, p *srvPlane, tenant int64, owner cptest.User) {
	t.Helper()
	email := fmt.Sprintf("member-%d-%d@example.com", tenant, time.Now().UnixNano())
	p.call(http.MethodPost, "/auth/register", tenant, "", map[string]string{"email": email, "password": srvPassword}).must(t, http.StatusCreated)
	tok := p.login(t, tenant, email, srvPassword)
	p.call(http.MethodGet, "/profile", tenant, tok, nil).must(t, http.StatusOK)
	var me struct {
		Role string `json:"role"`
	}
	a := p.call(http.MethodGet, "/profile", tenant, p.login(t, tenant, owner.Email, owner.Password), nil).must(t, http.StatusOK)
	if json.Unmarshal(a.body, &me); me.Role != "admin" {
		t.Fatalf("owner's profile in tenant %d: %s", tenant, a.body)
	}
}

const srvPassword = "member-password-1"

// TestTenantsOnTwoServersEndToEnd runs a control plane with two database
// servers, the second a cluster of the test's own that checks passwords,
// and tenant planes in front: tenants on both are served; a tenant with
// 10,000 users moves between them under concurrent reads and writes, and
// keeps every row and login; its credentials rotate under steady load
// without a failed request.
func TestTenantsOnTwoServersEndToEnd(t *testing.T) {
	t.Parallel()
	second := testenv.PasswordCluster(t)
	cp := cptest.Start(t, cptest.Options{Configure: func(c *app.Config) { c.MoveGracePeriod = 2 * time.Second }})
	keys := t.TempDir()
	tp := srvStartPlane(t, cp.InternalURL, cp.NATS.URL(), keys)
	admin := cp.LoginAdmin(t)
	owner := cp.SignUpOwner(t, "owner@example.com", "owner-password-1")
	b := cp.RegisterServer(t, admin, "b", second.DSN("postgres"), 0)
	updated := cptest.Subscribe(t, cp.NATS.URL(), events.TenantUpdated)

	// A tie goes to the lowest id, then the emptier server.
	onDefault := cp.CreateReadyOrganization(t, owner, "On default")
	onB := cp.CreateReadyOrganization(t, owner, "On b")
	for org, want := range map[int64]int64{onDefault.ID: 1, onB.ID: b.ID} {
		if got := cp.Organization(t, admin, org); got.DBServerID == nil || *got.DBServerID != want {
			t.Fatalf("organization %d on server %v, want %d", org, got.DBServerID, want)
		}
	}

	t.Run("tenants on both servers are served", func(t *testing.T) {
		srvServed(t, tp, onDefault.ID, owner)
		srvServed(t, tp, onB.ID, owner)
	})

	t.Run("a move of 10,000 users keeps every row and login", func(t *testing.T) {
		srvMove(t, cp, tp, admin, owner, onDefault.ID, b.ID, updated)
	})

	t.Run("rotation under steady load fails no request", func(t *testing.T) {
		srvRotate(t, cp, tp, keys, admin, onB.ID, updated)
	})
}

func srvMove(t *testing.T, cp *cptest.ControlPlane, tp *srvPlane, admin string, owner cptest.User, org, target int64, updated *cptest.EventLog) {
	const users = 10_000
	const userPassword = "user-password-12"
	pw, err := auth.NewPasswords(4, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := pw.Hash(context.Background(), userPassword)
	if err != nil {
		t.Fatal(err)
	}
	dsn := cptest.DSN(cp.Tenant(t, org).Database)
	testenv.Exec(t, dsn, `INSERT INTO tenantuser (email, password_hash)
		SELECT 'user' || i || '@example.com', $1 FROM generate_series(1, $2) i`, hash, users)
	var lastSeeded int64
	var before string
	testenv.QueryRow(t, dsn, `SELECT max(id), md5(string_agg(id || email || password_hash || role || is_active, ',' ORDER BY id))
		FROM tenantuser`, nil, &lastSeeded, &before)
	reader := tp.login(t, org, "user1@example.com", userPassword)

	// Writers register users one after another; readers read a profile.
	// Every answer is a success, or, for writes, tenant_moving.
	type write struct {
		email string
		a     srvAnswer
	}
	var (
		mu       sync.Mutex
		writes   []write
		badReads []srvAnswer
		reads    atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				email := fmt.Sprintf("writer%d-%d@example.com", w, i)
				a := tp.call(http.MethodPost, "/auth/register", org, "", map[string]string{"email": email, "password": srvPassword})
				mu.Lock()
				writes = append(writes, write{email, a})
				mu.Unlock()
				if a.status == http.StatusServiceUnavailable {
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				a := tp.call(http.MethodGet, "/profile", org, reader, nil)
				reads.Add(1)
				if a.err != nil || a.status != http.StatusOK {
					mu.Lock()
					badReads = append(badReads, a)
					mu.Unlock()
				}
			}
		})
	}
	succeeded := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, w := range writes {
			if w.a.status == http.StatusCreated && w.a.at.After(after) {
				n++
			}
		}
		return n
	}
	testenv.Eventually(t, time.Minute, func() bool { return succeeded(time.Time{}) >= 20 }, "writes before the move")

	asked := time.Now()
	cp.Move(t, admin, org, target)
	moved := cp.WaitStatus(t, admin, org, "ready", 2*time.Minute)
	readyAt := time.Now()
	if moved.DBServerID == nil || *moved.DBServerID != target || moved.StatusDetail != nil {
		t.Fatalf("after the move: %+v", moved)
	}
	testenv.Eventually(t, time.Minute, func() bool { return succeeded(readyAt) >= 20 }, "writes after the move")
	close(stop)
	wg.Wait()

	// Classify every write, and measure how long writes were refused.
	var acked, refused []string
	var firstRefused, lastRefused, firstAfter time.Time
	for _, w := range writes {
		switch {
		case w.a.err == nil && w.a.status == http.StatusCreated:
			acked = append(acked, w.email)
		case w.a.err == nil && w.a.status == http.StatusServiceUnavailable && w.a.code == "tenant_moving" && w.a.retryAfter != "":
			refused = append(refused, w.email)
			if firstRefused.IsZero() {
				firstRefused = w.a.at
			}
			lastRefused = w.a.at
		default:
			t.Errorf("write %s answered %s, want 201 or 503 tenant_moving with Retry-After", w.email, w.a)
		}
	}
	for _, w := range writes {
		if w.a.status == http.StatusCreated && w.a.at.After(lastRefused) && (firstAfter.IsZero() || w.a.at.Before(firstAfter)) {
			firstAfter = w.a.at
		}
	}
	if len(refused) == 0 {
		t.Fatal("no write was refused during the move")
	}
	for _, a := range badReads {
		t.Errorf("read during the move answered %s, want 200", a)
	}

	// Every acknowledged write is on the new server, no refused one is, and
	// the 10,000 users are as they were.
	dsn = cptest.DSN(cp.Tenant(t, org).Database)
	var after string
	testenv.QueryRow(t, dsn, `SELECT md5(string_agg(id || email || password_hash || role || is_active, ',' ORDER BY id))
		FROM tenantuser WHERE id <= $1`, []any{lastSeeded}, &after)
	if after != before {
		t.Fatal("the users seeded before the move changed")
	}
	var found []string
	testenv.QueryRow(t, dsn, `SELECT coalesce(array_agg(email), '{}') FROM tenantuser WHERE email LIKE 'writer%'`, nil, &found)
	slices.Sort(found)
	slices.Sort(acked)
	if !slices.Equal(found, acked) {
		missing, extra := 0, 0
		for _, e := range acked {
			if !slices.Contains(found, e) {
				missing++
			}
		}
		for _, e := range found {
			if !slices.Contains(acked, e) {
				extra++
			}
		}
		t.Fatalf("%d acknowledged writes lost, %d writes stored though refused or failed", missing, extra)
	}
	for i := 1; i <= users; i += 100 {
		tp.login(t, org, "user"+strconv.Itoa(i)+"@example.com", userPassword)
	}
	tp.login(t, org, owner.Email, owner.Password)
	tp.call(http.MethodGet, "/profile", org, reader, nil).must(t, http.StatusOK)

	got := updated.WaitUntil(t, 30*time.Second, "tenant.updated of the move", func(got []cptest.Received) bool {
		return len(cptest.OfTenant(got, org)) >= 2
	})
	if e := cptest.OfTenant(got, org); e[0].Envelope.Data.Status != "moving" || e[1].Envelope.Data.Status != "ready" {
		t.Fatalf("events of the move: %s, %s", e[0].Envelope.Data.Status, e[1].Envelope.Data.Status)
	}
	t.Logf("move of %d users: %d writes acknowledged, %d refused with tenant_moving, %d reads all answered 200",
		users, len(acked), len(refused), reads.Load())
	t.Logf("FIGURE move total (POST to ready seen by polling): %s", readyAt.Sub(asked).Round(time.Millisecond))
	t.Logf("FIGURE write-unavailable window (first tenant_moving to first write acknowledged after the last): %s",
		firstAfter.Sub(firstRefused).Round(time.Millisecond))
}

func srvRotate(t *testing.T, cp *cptest.ControlPlane, tp *srvPlane, keys, admin string, org int64, updated *cptest.EventLog) {
	// A second replica that hears no events: it keeps its pool until a new
	// connection is refused for the old password.
	deaf := srvStartPlane(t, cp.InternalURL, "nats://127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)), keys)
	email := fmt.Sprintf("rotating-%d@example.com", time.Now().UnixNano())
	tp.call(http.MethodPost, "/auth/register", org, "", map[string]string{"email": email, "password": srvPassword}).must(t, http.StatusCreated)
	token := tp.login(t, org, email, srvPassword)
	old := cp.Tenant(t, org).Database.Password.Reveal()

	var (
		mu       sync.Mutex
		failures []string
		answered atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	load := func(p *srvPlane, i int) {
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			a := p.call(http.MethodGet, "/profile", org, token, nil)
			if a.err == nil && a.status == http.StatusOK && n%2 == 0 {
				a = p.call(http.MethodPatch, "/profile", org, token, map[string]string{"display_name": fmt.Sprintf("client %d call %d", i, n)})
			}
			answered.Add(1)
			if a.err != nil || a.status != http.StatusOK {
				mu.Lock()
				failures = append(failures, a.String())
				mu.Unlock()
			}
		}
	}
	// Steady load on the plane that follows events; one client on the deaf one.
	for i := range 4 {
		wg.Add(1)
		go load(tp, i)
	}
	wg.Add(1)
	go load(deaf, 100)
	testenv.Eventually(t, time.Minute, func() bool { return answered.Load() > 50 }, "load running")

	seen := len(cptest.OfTenant(updated.Received(), org))
	const rotations = 3
	for r := 1; r <= rotations; r++ {
		cp.Do(t, http.MethodPost, "/admin/organizations/"+strconv.FormatInt(org, 10)+"/rotate-credentials", admin, nil).
			Expect(t, http.StatusAccepted)
		updated.WaitUntil(t, 30*time.Second, "tenant.updated of the rotation", func(got []cptest.Received) bool {
			return len(cptest.OfTenant(got, org)) >= seen+r
		})
		mark := answered.Load()
		testenv.Eventually(t, time.Minute, func() bool { return answered.Load() > mark+20 }, "load after a rotation")
	}
	// More clients on the deaf replica: its pool must open connections,
	// which the server refuses for the old password.
	for i := range 4 {
		wg.Add(1)
		go load(deaf, 101+i)
	}
	mark := answered.Load()
	testenv.Eventually(t, time.Minute, func() bool { return answered.Load() > mark+200 }, "load on the deaf replica")
	close(stop)
	wg.Wait()

	if fresh := cp.Tenant(t, org).Database.Password.Reveal(); fresh == old {
		t.Fatal("the password did not change")
	}
	if err := srvConnect(t, cp, org, old); err == nil || !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("the old password: %v, want it refused", err)
	}
	for _, f := range failures {
		t.Errorf("request failed during the rotations: %s", f)
	}
	t.Logf("%d rotations under load: %d requests, %d failed", rotations, answered.Load(), len(failures))
}

// srvConnect logs in to org's database with password.
func srvConnect(t *testing.T, cp *cptest.ControlPlane, org int64, password string) error {
	t.Helper()
	db := *cp.Tenant(t, org).Database
	db.Password = tenantapi.Password(password)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, cptest.DSN(&db))
	if err != nil {
		return err
	}
	return conn.Close(context.Background())
}
