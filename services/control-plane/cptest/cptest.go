// Package cptest starts a whole control plane for tests of this module and
// of other services (the tenant plane, end-to-end tests): app.Run on
// 127.0.0.1:0 against a fresh core database, with embedded NATS and SMTP
// servers, and functions to sign up owners and create organizations through
// the public API.
package cptest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/config"
	"tenantbase/libs/openapitest"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/internal/provisioning"
)

// Bootstrap admin of every control plane started here.
const (
	AdminEmail    = "admin@tenantbase.test"
	AdminPassword = "admin-password-1"
)

// ServiceToken authenticates callers of the internal API.
const ServiceToken = "cptest-service-token"

// Options adjust one control plane.
type Options struct {
	// DatabaseURL is the core database; empty means a fresh one from CoreDatabase.
	DatabaseURL string
	// NATSURL points at a NATS server the test runs itself; empty means an
	// embedded server started for this control plane.
	NATSURL string
	// KeysDir holds the generated signing and credentials keys; control
	// planes sharing a core database must share it. Empty means a fresh
	// temporary directory.
	KeysDir string
	// Configure changes the configuration after the test defaults are set.
	Configure func(*app.Config)
	// RunOptions are passed to app.Run (test hooks).
	RunOptions []app.Option
}

// ControlPlane is one running control plane.
type ControlPlane struct {
	*Client
	Config      app.Config
	DatabaseURL string
	// Deployment is the deployment id of the core database.
	Deployment string
	// NATS is the embedded server, nil when Options.NATSURL was given.
	NATS *testenv.NATSServer

	svc *testenv.Service
}

// Start runs a control plane until the test ends (or Stop). The test fails
// if it does not start, or does not stop cleanly.
func Start(tb testing.TB, opts Options) *ControlPlane {
	tb.Helper()
	cp := &ControlPlane{
		Client:      &Client{spec: openapitest.New(tb, app.OpenAPI), http: &http.Client{Timeout: 30 * time.Second}},
		DatabaseURL: opts.DatabaseURL,
	}
	if cp.DatabaseURL == "" {
		cp.DatabaseURL = CoreDatabase(tb)
	}
	natsURL := opts.NATSURL
	if natsURL == "" {
		cp.NATS = testenv.NATS(tb)
		natsURL = cp.NATS.URL()
	}
	cp.SMTP = testenv.SMTP(tb)

	cfg := app.DefaultConfig()
	cfg.Env = "test"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.InternalAddr = "127.0.0.1:0"
	cfg.PublicURL = "http://tenantbase.test"
	cfg.DatabaseURL = config.Secret(cp.DatabaseURL)
	cfg.TenantDBAdminURL = ""
	cfg.NATSURL = natsURL
	cfg.KeysDir = opts.KeysDir
	if cfg.KeysDir == "" {
		cfg.KeysDir = tb.TempDir()
	}
	cfg.BcryptCost = 4
	cfg.LogLevel = "debug"
	cfg.BootstrapAdminEmail = AdminEmail
	cfg.BootstrapAdminPassword = AdminPassword
	cfg.ServiceToken = ServiceToken
	cfg.SMTPAddr = cp.SMTP.Addr()
	cfg.SMTPRequireTLS = false // the test server offers no STARTTLS
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.ProvisionRetryBackoff = 50 * time.Millisecond
	// Tests create many organizations for one owner; the quota test sets
	// its own limit.
	cfg.OwnerMaxOrganizations = 1000
	// Spares would add two CREATE DATABASE to every test's start; the
	// tests of spares turn them on.
	cfg.TenantSpareDatabases = 0
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	cp.Config = cfg

	var addrs app.Addrs
	cp.svc, addrs = testenv.StartService(tb, "control plane", slog.LevelDebug, func(ctx context.Context, log *slog.Logger, ready func(app.Addrs)) error {
		return app.Run(ctx, cfg, log, append(opts.RunOptions, app.WithReady(ready))...)
	})
	cp.PublicURL = "http://" + addrs.Public
	cp.InternalURL = "http://" + addrs.Internal
	cp.Deployment = Deployment(tb, cp.DatabaseURL)
	return cp
}

// DatabaseName is the database name recorded for organization id ("" when
// none was placed yet); it stays recorded after deletion.
func (cp *ControlPlane) DatabaseName(tb testing.TB, id int64) string {
	tb.Helper()
	var name string
	testenv.QueryRow(tb, cp.DatabaseURL, `SELECT coalesce(db_name, '') FROM organization WHERE id = $1`, []any{id}, &name)
	return name
}

// Stop shuts the control plane down gracefully and waits for it; later
// calls return the first result.
func (cp *ControlPlane) Stop() error { return cp.svc.Stop() }

// Logs returns what the control plane logged so far (JSON lines).
func (cp *ControlPlane) Logs() string { return cp.svc.Logs.String() }

// LogLines returns every line the control plane logged so far, decoded.
func (cp *ControlPlane) LogLines(tb testing.TB) []map[string]any { return cp.svc.Logs.JSONLines(tb) }

// CoreDatabase creates a fresh, migrated core database of a deployment
// with a random id and returns its DSN. Tests share one Postgres server,
// where tenant databases and roles are server-wide; their names and tags
// carry the deployment. When the test ends, the databases and roles tagged
// with the deployment are dropped (after every control plane started
// later has stopped), then the core database.
func CoreDatabase(tb testing.TB) string {
	tb.Helper()
	dsn := testenv.NewDatabase(tb)
	cfg := app.Config{DatabaseURL: config.Secret(dsn)}
	if _, err := app.Migrate(context.Background(), cfg); err != nil {
		tb.Fatalf("cptest: migrate core database: %v", err)
	}
	dep := "t" + strconv.FormatUint(rand.Uint64N(1<<50), 36)
	testenv.Exec(tb, dsn, `INSERT INTO deployment (id) VALUES ($1)`, dep)
	server := testenv.PostgresURL(tb)
	tb.Cleanup(func() { DropDeployment(tb, server, dep) })
	return dsn
}

// Deployment returns the deployment id stored in the core database at dsn.
func Deployment(tb testing.TB, dsn string) string {
	tb.Helper()
	var id string
	testenv.QueryRow(tb, dsn, `SELECT id FROM deployment`, nil, &id)
	return id
}

// TaggedObject is a database or role carrying a control plane's tag.
type TaggedObject struct {
	Kind string // "database" or "role"
	Name string
	Tag  string
}

// TaggedObjects lists the databases and roles on server tagged by
// deployment dep, databases first, by name.
func TaggedObjects(tb testing.TB, server, dep string) []TaggedObject {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		tb.Fatalf("cptest: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT 'database', datname, shobj_description(oid, 'pg_database') FROM pg_database
			WHERE starts_with(shobj_description(oid, 'pg_database'), $1)
		UNION ALL SELECT 'role', rolname, shobj_description(oid, 'pg_authid') FROM pg_roles
			WHERE starts_with(shobj_description(oid, 'pg_authid'), $1)
		ORDER BY 1, 2`, provisioning.TagPrefix(dep))
	if err != nil {
		tb.Fatalf("cptest: list tagged objects: %v", err)
	}
	objs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[TaggedObject])
	if err != nil {
		tb.Fatalf("cptest: list tagged objects: %v", err)
	}
	return objs
}

// Tag is the tag of organization id's database and role in deployment dep.
func Tag(dep string, id int64) string { return provisioning.Tag(dep, id) }

// DropDeployment removes the databases and roles on server that carry the
// tag of deployment dep. Each statement gets a minute: a test with dozens
// of tenants on a busy server may need longer than that in all.
func DropDeployment(tb testing.TB, server, dep string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		tb.Errorf("cptest: drop tenants: %v", err)
		return
	}
	defer conn.Close(context.Background())
	prefix := provisioning.TagPrefix(dep)
	for _, q := range []struct{ list, drop string }{
		// The template and spares are also dropped by name: a build killed
		// between its CREATE DATABASE and its tag leaves the database untagged.
		{`SELECT datname FROM pg_database WHERE starts_with(shobj_description(oid, 'pg_database'), $1) OR datname = $2 OR starts_with(datname, $3)`, "DROP DATABASE IF EXISTS %s WITH (FORCE)"},
		{`SELECT rolname FROM pg_roles WHERE starts_with(shobj_description(oid, 'pg_authid'), $1) OR rolname = $2 OR starts_with(rolname, $3)`, "DROP ROLE IF EXISTS %s"},
	} {
		lctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		rows, err := conn.Query(lctx, q.list, prefix, provisioning.TemplateName(dep), provisioning.SparePrefix(dep))
		if err != nil {
			cancel()
			tb.Errorf("cptest: list tenants: %v", err)
			return
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		cancel()
		if err != nil {
			tb.Errorf("cptest: list tenants: %v", err)
			return
		}
		for _, n := range names {
			dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			_, err := conn.Exec(dctx, fmt.Sprintf(q.drop, pgx.Identifier{n}.Sanitize()))
			cancel()
			if err != nil {
				tb.Errorf("cptest: drop %s: %v", n, err)
			}
		}
	}
}

// Client calls a control plane's API, whether it runs in this process or
// not, and checks public answers against the OpenAPI document.
type Client struct {
	// PublicURL and InternalURL are the base URLs of the two listeners.
	PublicURL   string
	InternalURL string
	// SMTP receives the control plane's mail.
	SMTP *testenv.SMTPServer

	spec *openapitest.Validator
	http *http.Client
}

// NewClient returns a Client for a control plane running elsewhere (a
// child process, say) that sends its mail to smtp.
func NewClient(tb testing.TB, publicURL, internalURL string, smtp *testenv.SMTPServer) *Client {
	tb.Helper()
	return &Client{
		PublicURL: publicURL, InternalURL: internalURL, SMTP: smtp,
		spec: openapitest.New(tb, app.OpenAPI), http: &http.Client{Timeout: 30 * time.Second},
	}
}

// Response is an answer read to the end.
type Response = testenv.Response

// Do calls the public API with body as JSON (nil for none) and token as
// bearer ("" for none), and checks the answer against the OpenAPI document.
func (c *Client) Do(tb testing.TB, method, path, token string, body any) *Response {
	tb.Helper()
	return c.send(tb, c.PublicURL, method, path, token, body)
}

// DoRaw calls the public API with body as it is, declared as contentType,
// and checks the answer against the OpenAPI document.
func (c *Client) DoRaw(tb testing.TB, method, path, token, contentType string, body []byte) *Response {
	tb.Helper()
	req, err := http.NewRequest(method, c.PublicURL+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("cptest: %v", err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return testenv.Send(tb, c.http, req, c.spec.Check)
}

// Internal calls the internal API with the service token.
func (c *Client) Internal(tb testing.TB, method, path string) *Response {
	tb.Helper()
	return c.send(tb, c.InternalURL, method, path, ServiceToken, nil)
}

func (c *Client) send(tb testing.TB, base, method, path, token string, body any) *Response {
	tb.Helper()
	req := testenv.JSONRequest(tb, method, base+path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	var check func(testing.TB, *http.Request, *http.Response)
	if base == c.PublicURL {
		check = c.spec.Check
	}
	return testenv.Send(tb, c.http, req, check)
}

// User is a signed-up, verified and logged-in core user.
type User struct {
	ID          int64
	Email       string
	Password    string
	AccessToken string
}

// Login returns an access token for email.
func (c *Client) Login(tb testing.TB, email, password string) string {
	tb.Helper()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	c.Do(tb, http.MethodPost, "/auth/login", "", map[string]string{"email": email, "password": password}).
		Expect(tb, http.StatusOK).Decode(tb, &tok)
	return tok.AccessToken
}

// LoginAdmin returns an access token of the bootstrap admin.
func (c *Client) LoginAdmin(tb testing.TB) string {
	tb.Helper()
	return c.Login(tb, AdminEmail, AdminPassword)
}

// SignUp registers email (as an owner when owner is true), follows the
// verification link mailed to it and logs in.
func (c *Client) SignUp(tb testing.TB, email, password string, owner bool) User {
	tb.Helper()
	var u struct {
		ID int64 `json:"id"`
	}
	c.Do(tb, http.MethodPost, "/auth/register", "", map[string]any{"email": email, "password": password, "is_owner": owner}).
		Expect(tb, http.StatusCreated).Decode(tb, &u)
	token := c.VerificationToken(tb, email)
	c.Do(tb, http.MethodPost, "/auth/verify", "", map[string]string{"token": token}).Expect(tb, http.StatusOK)
	return User{ID: u.ID, Email: email, Password: password, AccessToken: c.Login(tb, email, password)}
}

// SignUpOwner is SignUp of a verified owner.
func (c *Client) SignUpOwner(tb testing.TB, email, password string) User {
	tb.Helper()
	return c.SignUp(tb, email, password, true)
}

var tokenParam = regexp.MustCompile(`[?&]token=([A-Za-z0-9_-]+)`)

// VerificationToken waits for the verification mail to email and returns
// the token of its link.
func (c *Client) VerificationToken(tb testing.TB, email string) string {
	tb.Helper()
	m := c.SMTP.WaitForMail(tb, 15*time.Second, func(m testenv.Mail) bool {
		return len(m.To) == 1 && strings.EqualFold(m.To[0], email)
	})
	text := m.Text(tb)
	match := tokenParam.FindStringSubmatch(text)
	if match == nil {
		tb.Fatalf("cptest: no verification link in mail to %s:\n%s", email, text)
	}
	return match[1]
}

// Organization is an organization as the public API shows it.
type Organization struct {
	ID            int64      `json:"id"`
	Name          string     `json:"name"`
	OwnerID       int64      `json:"owner_id"`
	Status        string     `json:"status"`
	StatusDetail  *string    `json:"status_detail"`
	SchemaVersion int        `json:"schema_version"`
	CreatedAt     time.Time  `json:"created_at"`
	ReadyAt       *time.Time `json:"ready_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	// DBServerID is shown to platform admins only.
	DBServerID *int64 `json:"db_server_id"`
}

// FleetOrganization is an organization as the platform admins' fleet view
// shows it (GET /admin/organizations/{id}), every field.
type FleetOrganization struct {
	Organization
	Owner struct {
		ID    int64  `json:"id"`
		Email string `json:"email"`
	} `json:"owner"`
	// DatabaseServer is null until provisioning placed the tenant.
	DatabaseServer *struct {
		ID       int64  `json:"id"`
		Name     string `json:"name"`
		Host     string `json:"host"`
		Port     int    `json:"port"`
		Database string `json:"database"`
	} `json:"database_server"`
	ProvisioningAttempts []struct {
		Attempt int       `json:"attempt"`
		Step    *string   `json:"step"`
		Error   *string   `json:"error"`
		At      time.Time `json:"at"`
	} `json:"provisioning_attempts"`
}

// AuditEntry is an entry of the audit log as the API shows it
// (/admin/audit), every field.
type AuditEntry struct {
	ID         int64          `json:"id"`
	At         time.Time      `json:"at"`
	ActorType  string         `json:"actor_type"`
	ActorID    *int64         `json:"actor_id"`
	Action     string         `json:"action"`
	TargetType string         `json:"target_type"`
	TargetID   string         `json:"target_id"`
	RequestID  *string        `json:"request_id"`
	ClientIP   *string        `json:"client_ip"`
	Outcome    string         `json:"outcome"`
	Detail     map[string]any `json:"detail"`
}

// MigrationRun is a migration run as the platform admins' API shows it
// (/admin/migrations), every field.
type MigrationRun struct {
	ID            int64      `json:"id"`
	Status        string     `json:"status"`
	TargetVersion int        `json:"target_version"`
	Canary        int        `json:"canary"`
	Concurrency   int        `json:"concurrency"`
	OnError       string     `json:"on_error"`
	StartedAt     time.Time  `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
	Counts        struct {
		Pending int `json:"pending"`
		Running int `json:"running"`
		Done    int `json:"done"`
		Skipped int `json:"skipped"`
		Failed  int `json:"failed"`
	} `json:"counts"`
	// Failed are the first 100 parked tenants.
	Failed []struct {
		TenantID    int64  `json:"tenant_id"`
		FromVersion int    `json:"from_version"`
		Error       string `json:"error"`
	} `json:"failed"`
}

// CreateOrganization asks for a new organization and returns it as the
// 202 answer shows it (provisioning).
func (c *Client) CreateOrganization(tb testing.TB, token, name string) Organization {
	tb.Helper()
	var org Organization
	c.Do(tb, http.MethodPost, "/organizations", token, map[string]string{"name": name}).
		Expect(tb, http.StatusAccepted).Decode(tb, &org)
	return org
}

// Organization fetches one organization.
func (c *Client) Organization(tb testing.TB, token string, id int64) Organization {
	tb.Helper()
	var org Organization
	c.Do(tb, http.MethodGet, "/organizations/"+strconv.FormatInt(id, 10), token, nil).
		Expect(tb, http.StatusOK).Decode(tb, &org)
	return org
}

// WaitStatus polls the organization until it has status, failing the test
// after timeout or when it reaches "failed" while another status is awaited.
func (c *Client) WaitStatus(tb testing.TB, token string, id int64, status string, timeout time.Duration) Organization {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		org := c.Organization(tb, token, id)
		if org.Status == status {
			return org
		}
		if org.Status == "failed" {
			detail := ""
			if org.StatusDetail != nil {
				detail = *org.StatusDetail
			}
			tb.Fatalf("cptest: organization %d failed while waiting for %s: %s", id, status, detail)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cptest: organization %d is %s, not %s, after %s", id, org.Status, status, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CreateReadyOrganization creates an organization for owner and waits
// until it is ready.
func (c *Client) CreateReadyOrganization(tb testing.TB, owner User, name string) Organization {
	tb.Helper()
	org := c.CreateOrganization(tb, owner.AccessToken, name)
	return c.WaitStatus(tb, owner.AccessToken, org.ID, "ready", 2*time.Minute)
}

// DSN is a postgres:// URL for a tenant database as its own role.
func DSN(db *tenantapi.Database) string { return tenantdbtest.DSN(*db) }

// Tenant fetches a tenant through the internal API.
func (c *Client) Tenant(tb testing.TB, id int64) tenantapi.Tenant {
	tb.Helper()
	var t tenantapi.Tenant
	c.Internal(tb, http.MethodGet, tenantapi.Path(id)).Expect(tb, http.StatusOK).Decode(tb, &t)
	return t
}

// DBServer is a tenant database server as the admin API shows it.
type DBServer struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	MaxTenants int    `json:"max_tenants"`
	Tenants    int    `json:"tenants"`
	State      string `json:"state"`
}

// RegisterServer registers the server of adminURL as name (max_tenants 0:
// the default) with a platform admin's token.
func (c *Client) RegisterServer(tb testing.TB, adminToken, name, adminURL string, maxTenants int) DBServer {
	tb.Helper()
	body := map[string]any{"name": name, "admin_url": adminURL}
	if maxTenants > 0 {
		body["max_tenants"] = maxTenants
	}
	var s DBServer
	c.Do(tb, http.MethodPost, "/admin/db-servers", adminToken, body).Expect(tb, http.StatusCreated).Decode(tb, &s)
	return s
}

// Servers lists the registered servers by id.
func (c *Client) Servers(tb testing.TB, adminToken string) map[int64]DBServer {
	tb.Helper()
	var page struct {
		Items []DBServer `json:"items"`
	}
	c.Do(tb, http.MethodGet, "/admin/db-servers?limit=200", adminToken, nil).Expect(tb, http.StatusOK).Decode(tb, &page)
	out := map[int64]DBServer{}
	for _, s := range page.Items {
		out[s.ID] = s
	}
	return out
}

// Move asks for organization id to move to server (202) and returns the answer.
func (c *Client) Move(tb testing.TB, adminToken string, id, server int64) Organization {
	tb.Helper()
	var org Organization
	c.Do(tb, http.MethodPost, "/admin/organizations/"+strconv.FormatInt(id, 10)+"/move", adminToken,
		map[string]int64{"db_server_id": server}).Expect(tb, http.StatusAccepted).Decode(tb, &org)
	return org
}
