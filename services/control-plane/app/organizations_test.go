package app_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/events"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/problem"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/cptest"
)

const ownerPassword = "owner-password-1"

// readyTimeout bounds the wait for provisioning in tests.
const readyTimeout = 2 * time.Minute

func expectProblem(t *testing.T, res *cptest.Response, status int, code string) {
	t.Helper()
	if res.Status != status {
		t.Fatalf("status %d, want %d; body %s", res.Status, status, res.Body)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, problem.ContentType) {
		t.Fatalf("Content-Type %q, want %s", ct, problem.ContentType)
	}
	var p problem.Problem
	res.Decode(t, &p)
	if p.Code != code {
		t.Fatalf("problem code %q, want %q; body %s", p.Code, code, res.Body)
	}
}

// assertTenantDropped fails unless no database or role of organization id
// of cp (by its tag) or named name is left on server.
func assertTenantDropped(t *testing.T, cp *cptest.ControlPlane, server string, id int64, name string) {
	t.Helper()
	tag := cptest.Tag(cp.Deployment, id)
	for _, o := range cptest.TaggedObjects(t, server, cp.Deployment) {
		if o.Tag == tag {
			t.Fatalf("%s %s of organization %d remains", o.Kind, o.Name, id)
		}
	}
	var dbs, roles int
	testenv.QueryRow(t, server, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_roles WHERE rolname = $1)`, []any{name}, &dbs, &roles)
	if dbs != 0 || roles != 0 {
		t.Fatalf("%d databases and %d roles named %s remain", dbs, roles, name)
	}
}

// assertTenantName fails unless name is a tenant object name of cp for organization id.
func assertTenantName(t *testing.T, cp *cptest.ControlPlane, id int64, name string) {
	t.Helper()
	want := regexp.MustCompile("^tenant_" + cp.Deployment + "_" + strconv.FormatInt(id, 10) + "_[a-z0-9]{6}$")
	if !want.MatchString(name) {
		t.Fatalf("tenant database name %q, want tenant_<deployment>_<id>_<random>", name)
	}
}

// connectError is the SQLSTATE of connecting to dsn ("" when it works).
func connectError(t *testing.T, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		if code := pgutil.Code(err); code != "" {
			return code
		}
		t.Fatalf("connect failed without a SQLSTATE: %v", err)
	}
	conn.Close(context.Background())
	return ""
}

// databaseName is the database a DSN (a URL) names.
func databaseName(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

func TestOrganizationProvisionedToReady(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	created := cptest.Subscribe(t, cp.NATS.URL(), events.TenantCreated)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	other := cp.SignUpOwner(t, "other@example.com", ownerPassword)

	res := cp.Do(t, http.MethodPost, "/organizations", owner.AccessToken, map[string]string{"name": "  Acme Corp  "}).Expect(t, http.StatusAccepted)
	var org cptest.Organization
	res.Decode(t, &org)
	if org.Status != "provisioning" || org.Name != "Acme Corp" || org.OwnerID != owner.ID || org.CreatedAt.IsZero() || org.ReadyAt != nil {
		t.Fatalf("202 body = %+v, want a provisioning organization named Acme Corp of owner %d", org, owner.ID)
	}
	if loc := res.Header.Get("Location"); loc != "/organizations/"+strconv.FormatInt(org.ID, 10) {
		t.Fatalf("Location = %q", loc)
	}
	otherOrg := cp.CreateReadyOrganization(t, other, "Globex")

	ready := cp.WaitStatus(t, owner.AccessToken, org.ID, "ready", readyTimeout)
	latest, err := pgutil.LatestVersion(migrations.Tenant, "tenant")
	if err != nil {
		t.Fatal(err)
	}
	if ready.SchemaVersion != int(latest) || ready.ReadyAt == nil || ready.StatusDetail != nil {
		t.Fatalf("ready organization = %+v, want schema_version %d, ready_at set, no status_detail", ready, latest)
	}

	tenant := cp.Tenant(t, org.ID)
	name := cp.DatabaseName(t, org.ID)
	assertTenantName(t, cp, org.ID, name)
	if tenant.Database == nil || tenant.Database.Name != name || tenant.Database.User != name || tenant.Database.Password == "" {
		t.Fatalf("internal tenant = %+v, want database %s with its own role", tenant, name)
	}
	server := testenv.PostgresURL(t)

	t.Run("database owned by the tenant role and closed to PUBLIC", func(t *testing.T) {
		var owner string
		var publicConnect, publicTemp bool
		testenv.QueryRow(t, server, `SELECT pg_get_userbyid(datdba), has_database_privilege('public', datname, 'CONNECT'),
			has_database_privilege('public', datname, 'TEMP') FROM pg_database WHERE datname = $1`,
			[]any{name}, &owner, &publicConnect, &publicTemp)
		if owner != name || publicConnect || publicTemp {
			t.Fatalf("owner %s, PUBLIC CONNECT %v, TEMP %v; want owner %s and no PUBLIC access", owner, publicConnect, publicTemp, name)
		}
	})

	t.Run("the tenant role reads its owner row", func(t *testing.T) {
		var email, role, hash, tableOwner string
		testenv.QueryRow(t, tenant.Database.DSN(), `SELECT u.email, u.role, u.password_hash, t.tableowner
			FROM tenantuser u, pg_tables t WHERE t.tablename = 'tenantuser'`, nil, &email, &role, &hash, &tableOwner)
		var coreHash string
		testenv.QueryRow(t, cp.DatabaseURL, `SELECT password_hash FROM coreuser WHERE id = $1`, []any{owner.ID}, &coreHash)
		if email != owner.Email || role != "admin" || hash != coreHash || tableOwner != name {
			t.Fatalf("tenant row %s/%s (table owner %s), hash equal %v; want the owner as admin with the core hash",
				email, role, tableOwner, hash == coreHash)
		}
	})

	t.Run("the tenant role cannot reach other databases", func(t *testing.T) {
		cases := []struct {
			name, database string
		}{
			{"another tenant's database", cp.DatabaseName(t, otherOrg.ID)},
			{"the core database", databaseName(t, cp.DatabaseURL)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				if code := connectError(t, testenv.OnDatabase(t, tenant.Database.DSN(), tc.database)); code != "42501" {
					t.Fatalf("connecting to %s as %s: SQLSTATE %q, want 42501 (no CONNECT privilege)", tc.database, name, code)
				}
			})
		}
	})

	t.Run("tenant.created reaches a durable consumer", func(t *testing.T) {
		got := cptest.OfTenant(created.WaitFor(t, 2, 30*time.Second), org.ID)
		if len(got) != 1 {
			t.Fatalf("%d tenant.created events for %d, want 1", len(got), org.ID)
		}
		e := got[0]
		for _, field := range []string{"specversion", "id", "source", "type", "subject", "deployment", "time", "datacontenttype", "data"} {
			if _, ok := e.Raw[field]; !ok {
				t.Errorf("envelope lacks %q: %v", field, e.Raw)
			}
		}
		env := e.Envelope
		want := events.TenantData{TenantID: org.ID, Name: "Acme Corp", OwnerID: owner.ID, Status: "ready", SchemaVersion: int(latest)}
		if env.SpecVersion != "1.0" || env.Source != events.Source(cp.Deployment) || env.Deployment != cp.Deployment || env.Type != events.TenantCreated ||
			env.Subject != strconv.FormatInt(org.ID, 10) || env.DataContentType != "application/json" ||
			env.Time.IsZero() || env.Data != want {
			t.Fatalf("envelope = %+v, want data %+v", env, want)
		}
		if e.Subject != events.TenantCreated || e.MsgID != env.ID {
			t.Fatalf("subject %q, Nats-Msg-Id %q; want %s and the event id %s", e.Subject, e.MsgID, events.TenantCreated, env.ID)
		}
		if strings.Contains(fmt.Sprint(e.Raw), tenant.Database.Password) {
			t.Fatal("the event carries the tenant database password")
		}
	})
}

func TestOrganizationAccessRules(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	alice := cp.SignUpOwner(t, "alice@example.com", ownerPassword)
	bob := cp.SignUpOwner(t, "bob@example.com", ownerPassword)
	member := cp.SignUp(t, "member@example.com", ownerPassword, false)
	unverified := cp.SignUpOwner(t, "unverified@example.com", ownerPassword)
	admin := cp.LoginAdmin(t)
	// An admin withdraws the verification after login: the token still
	// says nothing about it, the core database does.
	cp.Do(t, http.MethodPatch, "/admin/users/"+strconv.FormatInt(unverified.ID, 10), admin, map[string]bool{"is_verified": false}).Expect(t, http.StatusOK)

	aliceOrg := cp.CreateReadyOrganization(t, alice, "Alice Inc")
	path := "/organizations/" + strconv.FormatInt(aliceOrg.ID, 10)
	long := strings.Repeat("é", 101)

	cases := []struct {
		name   string
		method string
		path   string
		token  string
		body   any
		status int
		code   string
	}{
		{"no token", http.MethodPost, "/organizations", "", map[string]string{"name": "X"}, http.StatusUnauthorized, "unauthorized"},
		{"not an owner", http.MethodPost, "/organizations", member.AccessToken, map[string]string{"name": "X"}, http.StatusForbidden, "owner_required"},
		{"unverified owner", http.MethodPost, "/organizations", unverified.AccessToken, map[string]string{"name": "X"}, http.StatusForbidden, "email_not_verified"},
		{"empty name", http.MethodPost, "/organizations", alice.AccessToken, map[string]string{"name": ""}, http.StatusUnprocessableEntity, "validation_failed"},
		{"blank name", http.MethodPost, "/organizations", alice.AccessToken, map[string]string{"name": "   "}, http.StatusUnprocessableEntity, "validation_failed"},
		{"name of 101 characters", http.MethodPost, "/organizations", alice.AccessToken, map[string]string{"name": long}, http.StatusUnprocessableEntity, "validation_failed"},
		{"name with a control character", http.MethodPost, "/organizations", alice.AccessToken, map[string]string{"name": "a\x00b"}, http.StatusUnprocessableEntity, "validation_failed"},
		{"unknown field", http.MethodPost, "/organizations", alice.AccessToken, map[string]any{"name": "X", "plan": "gold"}, http.StatusUnprocessableEntity, "validation_failed"},
		{"owner_id of someone else, not an admin", http.MethodPost, "/organizations", alice.AccessToken, map[string]any{"name": "X", "owner_id": bob.ID}, http.StatusForbidden, "admin_required"},
		{"admin names a non-owner", http.MethodPost, "/organizations", admin, map[string]any{"name": "X", "owner_id": member.ID}, http.StatusUnprocessableEntity, "validation_failed"},
		{"admin names an unknown user", http.MethodPost, "/organizations", admin, map[string]any{"name": "X", "owner_id": 999999}, http.StatusUnprocessableEntity, "validation_failed"},
		{"another owner reads it", http.MethodGet, path, bob.AccessToken, nil, http.StatusNotFound, "organization_not_found"},
		{"a member reads it", http.MethodGet, path, member.AccessToken, nil, http.StatusNotFound, "organization_not_found"},
		{"another owner deletes it", http.MethodDelete, path, bob.AccessToken, nil, http.StatusNotFound, "organization_not_found"},
		{"another owner retries it", http.MethodPost, path + "/retry", bob.AccessToken, nil, http.StatusNotFound, "organization_not_found"},
		{"unknown id", http.MethodGet, "/organizations/999999999", alice.AccessToken, nil, http.StatusNotFound, "organization_not_found"},
		{"retry of a ready organization", http.MethodPost, path + "/retry", alice.AccessToken, nil, http.StatusConflict, "invalid_status"},
		{"owner suspends", http.MethodPost, "/admin" + path + "/suspend", alice.AccessToken, nil, http.StatusForbidden, "admin_required"},
		{"resume of a ready organization", http.MethodPost, "/admin" + path + "/resume", admin, nil, http.StatusConflict, "invalid_status"},
		{"list with an unknown status", http.MethodGet, "/organizations?status=archived", alice.AccessToken, nil, http.StatusUnprocessableEntity, "validation_failed"},
		{"list with a bad limit", http.MethodGet, "/organizations?limit=0", alice.AccessToken, nil, http.StatusUnprocessableEntity, "validation_failed"},
		{"list with a bad cursor", http.MethodGet, "/organizations?cursor=abc", alice.AccessToken, nil, http.StatusUnprocessableEntity, "validation_failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectProblem(t, cp.Do(t, tc.method, tc.path, tc.token, tc.body), tc.status, tc.code)
		})
	}

	t.Run("nothing was created by refused requests", func(t *testing.T) {
		var n int
		testenv.QueryRow(t, cp.DatabaseURL, `SELECT count(*) FROM organization`, nil, &n)
		if n != 1 {
			t.Fatalf("%d organizations, want only Alice's", n)
		}
	})

	t.Run("owner and admin read it", func(t *testing.T) {
		for _, token := range []string{alice.AccessToken, admin} {
			if got := cp.Organization(t, token, aliceOrg.ID); got.ID != aliceOrg.ID || got.Status != "ready" {
				t.Fatalf("GET = %+v", got)
			}
		}
	})

	t.Run("admin creates for an owner", func(t *testing.T) {
		var org cptest.Organization
		cp.Do(t, http.MethodPost, "/organizations", admin, map[string]any{"name": "For Bob", "owner_id": bob.ID}).
			Expect(t, http.StatusAccepted).Decode(t, &org)
		if org.OwnerID != bob.ID {
			t.Fatalf("owner_id = %d, want Bob %d", org.OwnerID, bob.ID)
		}
		cp.WaitStatus(t, bob.AccessToken, org.ID, "ready", readyTimeout)
	})

	t.Run("lists", func(t *testing.T) {
		bobSecond := cp.CreateOrganization(t, bob.AccessToken, "Bob Two")
		cp.WaitStatus(t, bob.AccessToken, bobSecond.ID, "ready", readyTimeout)
		cp.Do(t, http.MethodPost, "/admin/organizations/"+strconv.FormatInt(bobSecond.ID, 10)+"/suspend", admin, nil).Expect(t, http.StatusOK)

		type page struct {
			Items      []cptest.Organization `json:"items"`
			NextCursor *string               `json:"next_cursor"`
		}
		list := func(token, query string) page {
			var p page
			cp.Do(t, http.MethodGet, "/organizations"+query, token, nil).Expect(t, http.StatusOK).Decode(t, &p)
			return p
		}
		ids := func(p page) []int64 {
			var out []int64
			for _, o := range p.Items {
				out = append(out, o.ID)
			}
			return out
		}
		if got := ids(list(alice.AccessToken, "")); len(got) != 1 || got[0] != aliceOrg.ID {
			t.Fatalf("Alice lists %v, want only %d", got, aliceOrg.ID)
		}
		if got := list(member.AccessToken, ""); len(got.Items) != 0 || got.NextCursor != nil {
			t.Fatalf("a member lists %+v, want an empty last page", got)
		}
		all := ids(list(admin, ""))
		if len(all) != 3 || !(all[0] > all[1] && all[1] > all[2]) {
			t.Fatalf("admin lists %v, want all 3, newest first", all)
		}
		if got := ids(list(admin, "?status=suspended")); len(got) != 1 || got[0] != bobSecond.ID {
			t.Fatalf("admin lists suspended %v, want %d", got, bobSecond.ID)
		}
		first := list(admin, "?limit=2")
		if len(first.Items) != 2 || first.NextCursor == nil {
			t.Fatalf("first page %+v, want 2 items and a cursor", first)
		}
		second := list(admin, "?limit=2&cursor="+*first.NextCursor)
		if got := ids(second); len(got) != 1 || got[0] != all[2] || second.NextCursor != nil {
			t.Fatalf("second page %v (cursor %v), want [%d] and no cursor", got, second.NextCursor, all[2])
		}
	})
}

func TestOrganizationDelete(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	deleted := cptest.Subscribe(t, cp.NATS.URL(), events.TenantDeleted)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	admin := cp.LoginAdmin(t)
	server := testenv.PostgresURL(t)

	cases := []struct {
		name  string
		token string
	}{
		{"by its owner", owner.AccessToken},
		{"by a platform admin", admin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			org := cp.CreateReadyOrganization(t, owner, "Doomed")
			name := cp.DatabaseName(t, org.ID)
			path := "/organizations/" + strconv.FormatInt(org.ID, 10)

			var got cptest.Organization
			cp.Do(t, http.MethodDelete, path, tc.token, nil).Expect(t, http.StatusAccepted).Decode(t, &got)
			if got.Status != "deleting" && got.Status != "deleted" {
				t.Fatalf("DELETE answered %s, want deleting", got.Status)
			}
			cp.WaitStatus(t, owner.AccessToken, org.ID, "deleted", readyTimeout)

			assertTenantDropped(t, cp, server, org.ID, name)
			var sealed []byte
			testenv.QueryRow(t, cp.DatabaseURL, `SELECT db_password_enc FROM organization WHERE id = $1`, []any{org.ID}, &sealed)
			if sealed != nil {
				t.Fatal("the deleted tenant's credentials are still stored")
			}
			if tenant := cp.Tenant(t, org.ID); tenant.Status != "deleted" || tenant.Database != nil {
				t.Fatalf("internal API says %+v, want deleted without database", tenant)
			}
			e := cptest.OfTenant(deleted.WaitUntil(t, 30*time.Second, "tenant.deleted", func(got []cptest.Received) bool {
				return len(cptest.OfTenant(got, org.ID)) > 0
			}), org.ID)
			if len(e) != 1 || e[0].Envelope.Data.Status != "deleted" {
				t.Fatalf("tenant.deleted events for %d: %+v, want one with status deleted", org.ID, e)
			}
			expectProblem(t, cp.Do(t, http.MethodDelete, path, tc.token, nil), http.StatusConflict, "invalid_status")
		})
	}

	t.Run("while provisioning", func(t *testing.T) {
		org := cp.CreateOrganization(t, owner.AccessToken, "Short-lived")
		cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(org.ID, 10), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
		cp.WaitStatus(t, owner.AccessToken, org.ID, "deleted", readyTimeout)
		assertTenantDropped(t, cp, server, org.ID, cp.DatabaseName(t, org.ID))
	})
}

func TestOrganizationSuspendResume(t *testing.T) {
	cp := cptest.Start(t, cptest.Options{})
	log := cptest.Subscribe(t, cp.NATS.URL(), events.DefaultChannel.All())
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	admin := cp.LoginAdmin(t)
	org := cp.CreateReadyOrganization(t, owner, "Pausable")
	base := "/admin/organizations/" + strconv.FormatInt(org.ID, 10)

	steps := []struct {
		action string
		status int
		code   string
		after  string
		event  string
	}{
		{"suspend", http.StatusOK, "", "suspended", events.TenantSuspended},
		{"suspend", http.StatusConflict, "invalid_status", "suspended", ""},
		{"resume", http.StatusOK, "", "ready", events.TenantResumed},
		{"resume", http.StatusConflict, "invalid_status", "ready", ""},
	}
	wantEvents := []string{events.TenantCreated}
	for i, s := range steps {
		t.Run(fmt.Sprintf("%d %s", i+1, s.action), func(t *testing.T) {
			res := cp.Do(t, http.MethodPost, base+"/"+s.action, admin, nil)
			if s.code != "" {
				expectProblem(t, res, s.status, s.code)
			} else {
				var got cptest.Organization
				res.Expect(t, s.status).Decode(t, &got)
				if got.Status != s.after {
					t.Fatalf("answered status %s, want %s", got.Status, s.after)
				}
			}
			if got := cp.Organization(t, owner.AccessToken, org.ID).Status; got != s.after {
				t.Fatalf("status %s, want %s", got, s.after)
			}
			if s.event != "" {
				wantEvents = append(wantEvents, s.event)
			}
		})
	}
	log.WaitFor(t, len(wantEvents), 30*time.Second)
	got := log.Settle(t, 500*time.Millisecond)
	var types []string
	for _, e := range cptest.OfTenant(got, org.ID) {
		types = append(types, e.Envelope.Type)
		if e.Envelope.Type == events.TenantSuspended && e.Envelope.Data.Status != "suspended" {
			t.Errorf("tenant.suspended carries status %s", e.Envelope.Data.Status)
		}
	}
	if strings.Join(types, ",") != strings.Join(wantEvents, ",") {
		t.Fatalf("events %v, want %v in order", types, wantEvents)
	}
}
