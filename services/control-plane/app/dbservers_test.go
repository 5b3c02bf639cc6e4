package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// hasDatabase reports whether database name exists on the server at dsn.
func hasDatabase(t *testing.T, dsn, name string) bool {
	t.Helper()
	var n int
	testenv.QueryRow(t, dsn, `SELECT count(*) FROM pg_database WHERE datname = $1`, []any{name}, &n)
	return n == 1
}

// hasDatabaseOrRole says whether the server at dsn has a database or a
// role called name (a tenant's are dropped database first).
func hasDatabaseOrRole(t *testing.T, dsn, name string) bool {
	t.Helper()
	var n int
	testenv.QueryRow(t, dsn, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1)
		+ (SELECT count(*) FROM pg_roles WHERE rolname = $1)`, []any{name}, &n)
	return n > 0
}

// adminView fetches an organization as a platform admin sees it.
func adminView(t *testing.T, cp *cptest.ControlPlane, admin string, id int64) cptest.Organization {
	t.Helper()
	org := cp.Organization(t, admin, id)
	if org.DBServerID == nil && org.Status == "ready" {
		t.Fatalf("organization %d: a platform admin sees no db_server_id", id)
	}
	return org
}

func TestDBServerRegistry(t *testing.T) {
	t.Parallel()
	second := testenv.Cluster(t)
	cp := cptest.Start(t, cptest.Options{})
	admin := cp.LoginAdmin(t)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)

	servers := cp.Servers(t, admin)
	if len(servers) != 1 {
		t.Fatalf("servers on the first start: %+v, want only the default one", servers)
	}
	var def cptest.DBServer
	for _, s := range servers {
		def = s
	}
	if def.Name != "default" || def.Host != "127.0.0.1" || def.Port != testenv.PostgresPort(t) || def.State != "active" ||
		def.MaxTenants != 2000 || def.Tenants != 0 {
		t.Fatalf("default server %+v, want the core database's server, active, 2000 places, empty", def)
	}

	t.Run("platform admins only", func(t *testing.T) {
		cp.Do(t, http.MethodGet, "/admin/db-servers", owner.AccessToken, nil).ExpectProblem(t, http.StatusForbidden, "admin_required")
		cp.Do(t, http.MethodPost, "/admin/db-servers", owner.AccessToken, map[string]any{"name": "x", "admin_url": second.DSN("postgres")}).
			ExpectProblem(t, http.StatusForbidden, "admin_required")
		cp.Do(t, http.MethodPost, "/admin/db-servers/1/drain", owner.AccessToken, nil).ExpectProblem(t, http.StatusForbidden, "admin_required")
	})

	const secret = "s3cret-marker-9f2"
	t.Run("a server that cannot be used is refused with the cause", func(t *testing.T) {
		down := "postgres://postgres:" + secret + "@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) + "/postgres?sslmode=disable"
		p := cp.Do(t, http.MethodPost, "/admin/db-servers", admin, map[string]any{"name": "down", "admin_url": down}).
			ExpectProblem(t, http.StatusUnprocessableEntity, "db_server_unreachable").Problem(t)
		if !strings.Contains(p.Detail, "connect") || strings.Contains(p.Detail, secret) {
			t.Fatalf("detail %q: want the cause, without the password", p.Detail)
		}

		testenv.Exec(t, second.DSN("postgres"), `CREATE ROLE weak LOGIN`)
		weak, err := url.Parse(second.DSN("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		weak.User = url.UserPassword("weak", secret)
		p = cp.Do(t, http.MethodPost, "/admin/db-servers", admin, map[string]any{"name": "weak", "admin_url": weak.String()}).
			ExpectProblem(t, http.StatusUnprocessableEntity, "db_server_unreachable").Problem(t)
		if !strings.Contains(p.Detail, "create a database") || !strings.Contains(p.Detail, "permission denied") || strings.Contains(p.Detail, secret) {
			t.Fatalf("detail %q: want the refused CREATE DATABASE, without the password", p.Detail)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct {
			body  map[string]any
			field string
		}{
			{map[string]any{"name": "Bad Name", "admin_url": second.DSN("postgres")}, "name"},
			{map[string]any{"name": "b", "admin_url": "mysql://root@localhost/x"}, "admin_url"},
			{map[string]any{"name": "b", "admin_url": second.DSN("postgres"), "port": 70000}, "port"},
			{map[string]any{"name": "b", "admin_url": second.DSN("postgres"), "max_tenants": -1}, "max_tenants"},
			{map[string]any{"name": "b", "admin_url": second.DSN("postgres"), "state": "active"}, "state"},
		} {
			p := cp.Do(t, http.MethodPost, "/admin/db-servers", admin, tc.body).ExpectProblem(t, http.StatusUnprocessableEntity, "validation_failed").Problem(t)
			if len(p.Errors) == 0 || p.Errors[0].Field != tc.field {
				t.Errorf("%v: errors %+v, want one on %s", tc.body, p.Errors, tc.field)
			}
		}
	})

	var b cptest.DBServer
	t.Run("register", func(t *testing.T) {
		res := cp.Do(t, http.MethodPost, "/admin/db-servers", admin, map[string]any{
			"name": "b", "admin_url": testenv.WithPassword(t, second.DSN("postgres"), secret), "max_tenants": 7,
		}).Expect(t, http.StatusCreated)
		res.Decode(t, &b)
		if b.Name != "b" || b.Host != "127.0.0.1" || b.Port != second.Port() || b.MaxTenants != 7 || b.Tenants != 0 || b.State != "active" {
			t.Fatalf("registered %+v", b)
		}
		if bytes.Contains(res.Body, []byte("admin_url")) || bytes.Contains(res.Body, []byte(secret)) {
			t.Fatalf("the answer shows the admin DSN: %s", res.Body)
		}
		cp.Do(t, http.MethodPost, "/admin/db-servers", admin, map[string]any{"name": "b", "admin_url": second.DSN("postgres")}).
			ExpectProblem(t, http.StatusConflict, "db_server_exists")
		cp.Do(t, http.MethodPost, "/admin/db-servers", admin, map[string]any{"name": "b2", "admin_url": second.DSN("postgres")}).
			ExpectProblem(t, http.StatusConflict, "db_server_exists")
	})

	t.Run("drain and activate", func(t *testing.T) {
		var s cptest.DBServer
		cp.Do(t, http.MethodPost, "/admin/db-servers/"+strconv.FormatInt(b.ID, 10)+"/drain", admin, nil).Expect(t, http.StatusOK).Decode(t, &s)
		if s.State != "draining" || s.ID != b.ID {
			t.Fatalf("drained %+v", s)
		}
		cp.Do(t, http.MethodPost, "/admin/db-servers/"+strconv.FormatInt(b.ID, 10)+"/drain", admin, nil).Expect(t, http.StatusOK)
		cp.Do(t, http.MethodPost, "/admin/db-servers/"+strconv.FormatInt(b.ID, 10)+"/activate", admin, nil).Expect(t, http.StatusOK).Decode(t, &s)
		if s.State != "active" {
			t.Fatalf("activated %+v", s)
		}
		cp.Do(t, http.MethodPost, "/admin/db-servers/999999/drain", admin, nil).ExpectProblem(t, http.StatusNotFound, "db_server_not_found")
		if got := cp.Servers(t, admin); len(got) != 2 || got[b.ID].State != "active" {
			t.Fatalf("list %+v", got)
		}
	})

	t.Run("the admin DSN is never shown, logged or stored in the clear", func(t *testing.T) {
		if strings.Contains(cp.Logs(), secret) {
			t.Fatal("the control plane logged the admin DSN's password")
		}
		var sealed []byte
		testenv.QueryRow(t, cp.DatabaseURL, `SELECT admin_url_enc FROM db_server WHERE id = $1`, []any{b.ID}, &sealed)
		if bytes.Contains(sealed, []byte(secret)) || bytes.Contains(sealed, []byte("postgres://")) {
			t.Fatal("the admin DSN is stored in the clear")
		}
	})
}

// TestPlacementAcrossServers fills two servers: new organizations go to
// the active server with the most room, none anywhere fails them until a
// server is added, draining one sends new ones to the other, and deletion
// removes the database from the server it is on.
func TestPlacementAcrossServers(t *testing.T) {
	t.Parallel()
	second := testenv.Cluster(t)
	cp := cptest.Start(t, cptest.Options{Configure: func(c *app.Config) { c.TenantDBMaxTenants = 2 }})
	shared := testenv.PostgresURL(t)
	admin := cp.LoginAdmin(t)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	const defaultID = 1
	servers := map[int64]string{defaultID: shared}

	// placed checks that org lives on server: recorded, advertised to the
	// tenant plane, and its database there and only there.
	placed := func(t *testing.T, org cptest.Organization, server int64) {
		t.Helper()
		got := adminView(t, cp, admin, org.ID)
		if got.DBServerID == nil || *got.DBServerID != server {
			t.Fatalf("organization %d on server %v, want %d", org.ID, got.DBServerID, server)
		}
		name := cp.DatabaseName(t, org.ID)
		for id, dsn := range servers {
			if hasDatabase(t, dsn, name) != (id == server) {
				t.Fatalf("organization %d: database %s on server %d: %v, want it on server %d only", org.ID, name, id, !(id == server), server)
			}
		}
		tenant := cp.Tenant(t, org.ID)
		var n int
		testenv.QueryRow(t, cptest.DSN(tenant.Database), `SELECT count(*) FROM tenantuser WHERE role = 'admin'`, nil, &n)
		if n != 1 {
			t.Fatalf("organization %d: %d admins in its database", org.ID, n)
		}
	}

	a := cp.CreateReadyOrganization(t, owner, "A")
	b := cp.CreateReadyOrganization(t, owner, "B")
	placed(t, a, defaultID)
	placed(t, b, defaultID)
	if org := cp.Organization(t, owner.AccessToken, a.ID); org.DBServerID != nil {
		t.Fatalf("an owner sees db_server_id %d", *org.DBServerID)
	}

	c := cp.CreateOrganization(t, owner.AccessToken, "C")
	failed := cp.WaitStatus(t, owner.AccessToken, c.ID, "failed", readyTimeout)
	if failed.StatusDetail == nil || !strings.Contains(*failed.StatusDetail, "after 1 attempt") ||
		!strings.Contains(*failed.StatusDetail, "no database server has room for a new tenant") {
		t.Fatalf("status_detail %v, want no room, at once", failed.StatusDetail)
	}
	if org := adminView(t, cp, admin, c.ID); org.DBServerID != nil {
		t.Fatalf("a tenant without room was placed on %d", *org.DBServerID)
	}

	s := cp.RegisterServer(t, admin, "second", second.DSN("postgres"), 2)
	servers[s.ID] = second.DSN("postgres")
	cp.Do(t, http.MethodPost, "/organizations/"+strconv.FormatInt(c.ID, 10)+"/retry", owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, c.ID, "ready", readyTimeout)
	placed(t, c, s.ID)
	if got := cp.Servers(t, admin); got[defaultID].Tenants != 2 || got[s.ID].Tenants != 1 {
		t.Fatalf("tenant counts %+v, want 2 and 1", got)
	}

	cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(a.ID, 10), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, a.ID, "deleted", readyTimeout)
	assertTenantDropped(t, cp, shared, a.ID, cp.DatabaseName(t, a.ID))
	placed(t, b, defaultID)
	placed(t, c, s.ID)

	// One place left on each: the lowest id would win a tie, unless it drains.
	cp.Do(t, http.MethodPost, "/admin/db-servers/1/drain", admin, nil).Expect(t, http.StatusOK)
	d := cp.CreateReadyOrganization(t, owner, "D")
	placed(t, d, s.ID)
	cp.Do(t, http.MethodPost, "/admin/db-servers/1/activate", admin, nil).Expect(t, http.StatusOK)
	cp.Do(t, http.MethodPost, "/admin/db-servers/"+strconv.FormatInt(s.ID, 10)+"/drain", admin, nil).Expect(t, http.StatusOK)
	e := cp.CreateReadyOrganization(t, owner, "E")
	placed(t, e, defaultID)

	name := cp.DatabaseName(t, d.ID)
	cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(d.ID, 10), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, d.ID, "deleted", readyTimeout)
	if hasDatabase(t, second.DSN("postgres"), name) {
		t.Fatalf("database %s of a deleted organization is still on its server", name)
	}
	var roles int
	testenv.QueryRow(t, second.DSN("postgres"), `SELECT count(*) FROM pg_roles WHERE rolname = $1`, []any{name}, &roles)
	if roles != 0 {
		t.Fatalf("role %s of a deleted organization is still on its server", name)
	}
	placed(t, c, s.ID)
	if got := cp.Servers(t, admin); got[defaultID].Tenants != 2 || got[s.ID].Tenants != 1 {
		t.Fatalf("tenant counts %+v, want 2 and 1", got)
	}
}

// connLimit is the CONNECTION LIMIT of role on the server at dsn.
func connLimit(t *testing.T, dsn, role string) int {
	t.Helper()
	var n int
	testenv.QueryRow(t, dsn, `SELECT rolconnlimit FROM pg_roles WHERE rolname = $1`, []any{role}, &n)
	return n
}

// tenantWrite tries a write as the tenant role on database name of the
// server at server, with the tenant's current password.
func tenantWrite(t *testing.T, cp *cptest.ControlPlane, server string, id int64) error {
	t.Helper()
	db := cp.Tenant(t, id).Database
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(db.User, db.Password.Reveal())
	u.Path = "/" + db.Name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `UPDATE tenantuser SET bio = 'written' WHERE role = 'admin'`)
	return err
}

// seed adds n members to a tenant's database, as the tenant role.
func seed(t *testing.T, cp *cptest.ControlPlane, id int64, n int) {
	t.Helper()
	testenv.Exec(t, cptest.DSN(cp.Tenant(t, id).Database), `INSERT INTO tenantuser (email, password_hash)
		SELECT 'user' || i || '@example.com', 'hash-' || i FROM generate_series(1, $1) i`, n)
}

// fingerprint sums up a tenant's users, to compare a database before and after a move.
func fingerprint(t *testing.T, cp *cptest.ControlPlane, id int64) string {
	t.Helper()
	var sum string
	testenv.QueryRow(t, cptest.DSN(cp.Tenant(t, id).Database), `SELECT count(*) || ':' || md5(string_agg(id || email || password_hash, ',' ORDER BY id))
		FROM tenantuser`, nil, &sum)
	return sum
}

func TestMoveBetweenServers(t *testing.T) {
	t.Parallel()
	second := testenv.Cluster(t)
	steps := newStepCounter()
	steps.failing = func(context.Context, int64) (string, error) { return "", nil }
	cp := cptest.Start(t, cptest.Options{
		Configure:  func(c *app.Config) { c.MoveGracePeriod = time.Second },
		RunOptions: []app.Option{app.WithBeforeProvisionStep(steps.before)},
	})
	shared := testenv.PostgresURL(t)
	admin := cp.LoginAdmin(t)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	log := cptest.Subscribe(t, cp.NATS.URL(), "tenant.updated")
	b := cp.RegisterServer(t, admin, "b", second.DSN("postgres"), 0)
	org := cp.CreateReadyOrganization(t, owner, "Movers")
	name := cp.DatabaseName(t, org.ID)
	if got := adminView(t, cp, admin, org.ID); *got.DBServerID != 1 {
		t.Fatalf("placed on %d, want the default server (a tie goes to the lowest id)", *got.DBServerID)
	}
	if n := connLimit(t, shared, name); n != 20 {
		t.Fatalf("CONNECTION LIMIT %d on the tenant role, want 20", n)
	}
	seed(t, cp, org.ID, 500)
	before := fingerprint(t, cp, org.ID)
	path := "/admin/organizations/" + strconv.FormatInt(org.ID, 10)

	t.Run("refused moves", func(t *testing.T) {
		cp.Do(t, http.MethodPost, path+"/move", owner.AccessToken, map[string]int64{"db_server_id": b.ID}).
			ExpectProblem(t, http.StatusForbidden, "admin_required")
		for _, tc := range []struct {
			body any
			want string
		}{
			{map[string]int64{"db_server_id": 1}, "already"},
			{map[string]int64{"db_server_id": 999999}, "no such"},
			{map[string]any{}, "required"},
		} {
			p := cp.Do(t, http.MethodPost, path+"/move", admin, tc.body).ExpectProblem(t, http.StatusUnprocessableEntity, "validation_failed").Problem(t)
			if len(p.Errors) != 1 || p.Errors[0].Field != "db_server_id" || !strings.Contains(p.Errors[0].Message, tc.want) {
				t.Errorf("%v: %+v, want %q on db_server_id", tc.body, p.Errors, tc.want)
			}
		}
		cp.Do(t, http.MethodPost, "/admin/db-servers/"+strconv.FormatInt(b.ID, 10)+"/drain", admin, nil).Expect(t, http.StatusOK)
		p := cp.Do(t, http.MethodPost, path+"/move", admin, map[string]int64{"db_server_id": b.ID}).ExpectProblem(t, http.StatusUnprocessableEntity, "validation_failed").Problem(t)
		if !strings.Contains(p.Errors[0].Message, "draining") {
			t.Errorf("move to a draining server: %+v", p.Errors)
		}
		cp.Do(t, http.MethodPost, "/admin/db-servers/"+strconv.FormatInt(b.ID, 10)+"/activate", admin, nil).Expect(t, http.StatusOK)
		cp.Do(t, http.MethodPost, path+"/suspend", admin, nil).Expect(t, http.StatusOK)
		cp.Do(t, http.MethodPost, path+"/move", admin, map[string]int64{"db_server_id": b.ID}).ExpectProblem(t, http.StatusConflict, "invalid_status")
		cp.Do(t, http.MethodPost, path+"/resume", admin, nil).Expect(t, http.StatusOK)
	})

	t.Run("there and back", func(t *testing.T) {
		moving := cp.Move(t, admin, org.ID, b.ID)
		if moving.Status != "moving" || moving.DBServerID == nil || *moving.DBServerID != 1 {
			t.Fatalf("move answered %+v, want moving, still on server 1", moving)
		}
		cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(org.ID, 10), owner.AccessToken, nil).
			ExpectProblem(t, http.StatusConflict, "invalid_status")
		moved := cp.WaitStatus(t, admin, org.ID, "ready", readyTimeout)
		if *moved.DBServerID != b.ID || moved.StatusDetail != nil {
			t.Fatalf("after the move %+v, want ready on %d", moved, b.ID)
		}
		tenant := cp.Tenant(t, org.ID)
		if tenant.Database.Port != second.Port() || tenant.Database.Name != name {
			t.Fatalf("internal API %+v, want the same database on port %d", tenant.Database, second.Port())
		}
		if got := fingerprint(t, cp, org.ID); got != before {
			t.Fatalf("users after the move %s, before %s", got, before)
		}
		if err := tenantWrite(t, cp, second.DSN("postgres"), org.ID); err != nil {
			t.Fatalf("write on the new server: %v", err)
		}
		if n := connLimit(t, second.DSN("postgres"), name); n != 20 {
			t.Fatalf("CONNECTION LIMIT %d on the moved role, want 20", n)
		}
		// The old copy refuses writes at once and is gone after the grace period.
		if err := tenantWrite(t, cp, shared, org.ID); err == nil || !strings.Contains(err.Error(), "read-only transaction") {
			t.Fatalf("write on the old copy: %v, want it refused as read-only", err)
		}
		testenv.Eventually(t, 30*time.Second, func() bool { return !hasDatabaseOrRole(t, shared, name) }, "old copy dropped")
		assertTenantDropped(t, cp, shared, org.ID, name)
		if got := cp.Servers(t, admin); got[1].Tenants != 0 || got[b.ID].Tenants != 1 {
			t.Fatalf("tenant counts %+v", got)
		}

		cp.Move(t, admin, org.ID, 1)
		back := cp.WaitStatus(t, admin, org.ID, "ready", readyTimeout)
		if *back.DBServerID != 1 || fingerprint(t, cp, org.ID) != before {
			t.Fatalf("after moving back: %+v", back)
		}
		if err := tenantWrite(t, cp, shared, org.ID); err != nil {
			t.Fatalf("write after moving back: %v", err)
		}
		testenv.Eventually(t, 30*time.Second, func() bool { return !hasDatabaseOrRole(t, second.DSN("postgres"), name) }, "second copy dropped")

		got := log.WaitUntil(t, 30*time.Second, "four tenant.updated", func(got []cptest.Received) bool {
			return len(cptest.OfTenant(got, org.ID)) >= 4
		})
		var statuses []string
		for _, e := range cptest.OfTenant(got, org.ID) {
			statuses = append(statuses, e.Envelope.Data.Status)
		}
		if want := []string{"moving", "ready", "moving", "ready"}; !slices.Equal(statuses, want) {
			t.Fatalf("tenant.updated statuses %v, want %v", statuses, want)
		}
	})

	t.Run("a failed move stays on the source", func(t *testing.T) {
		seen := len(cptest.OfTenant(log.Received(), org.ID))
		steps.mu.Lock()
		steps.fails[org.ID] = "move_verify"
		steps.mu.Unlock()
		cp.Move(t, admin, org.ID, b.ID)
		var back cptest.Organization
		testenv.Eventually(t, readyTimeout, func() bool {
			back = cp.Organization(t, admin, org.ID)
			return back.Status == "ready"
		}, "the failed move rolled back")
		if *back.DBServerID != 1 || back.StatusDetail == nil ||
			!strings.Contains(*back.StatusDetail, "moving to database server b (id "+strconv.FormatInt(b.ID, 10)+") failed") ||
			!strings.Contains(*back.StatusDetail, "move_verify: injected: disk full") {
			t.Fatalf("after the failed move: %+v (detail %v)", back, back.StatusDetail)
		}
		if n := steps.count(org.ID, "move_switch"); n != 2 {
			t.Fatalf("the switch ran %d times, want 2 (the two moves before)", n)
		}
		if err := tenantWrite(t, cp, shared, org.ID); err != nil {
			t.Fatalf("write on the source after the rollback: %v", err)
		}
		if fingerprint(t, cp, org.ID) != before {
			t.Fatal("users changed by the failed move")
		}
		testenv.Eventually(t, 30*time.Second, func() bool { return !hasDatabaseOrRole(t, second.DSN("postgres"), name) }, "copy on the target dropped")
		got := log.WaitUntil(t, 30*time.Second, "two more tenant.updated", func(got []cptest.Received) bool {
			return len(cptest.OfTenant(got, org.ID)) >= seen+2
		})
		last := cptest.OfTenant(got, org.ID)[seen:]
		if last[0].Envelope.Data.Status != "moving" || last[1].Envelope.Data.Status != "ready" || last[1].Envelope.Data.Detail != *back.StatusDetail {
			t.Fatalf("events of the failed move: %+v", last)
		}
		steps.heal(org.ID)
	})

	// Each move asked for, and how it ended, is in the audit log.
	var moves []string
	for _, e := range adminAudit(t, cp, admin, "target_type=organization&target_id="+strconv.FormatInt(org.ID, 10)) {
		if strings.HasPrefix(e.Action, "organization.move") {
			moves = append(moves, e.Action+"/"+e.ActorType+"/"+e.Outcome)
		}
	}
	if want := []string{"organization.move/user/success", "organization.moved/system/success",
		"organization.move/user/success", "organization.moved/system/success",
		"organization.move/user/success", "organization.moved/system/failure"}; !slices.Equal(moves, want) {
		t.Fatalf("audit of the moves: %v, want %v", moves, want)
	}
}

// TestRotateCredentials rotates the password of a tenant on a server that
// checks passwords: the old one is refused from then on.
func TestRotateCredentials(t *testing.T) {
	t.Parallel()
	checking := testenv.PasswordCluster(t)
	server := checking.DSN("postgres")
	cp := cptest.Start(t, cptest.Options{})
	admin := cp.LoginAdmin(t)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	log := cptest.Subscribe(t, cp.NATS.URL(), "tenant.updated")
	s := cp.RegisterServer(t, admin, "checking", server, 0)
	cp.Do(t, http.MethodPost, "/admin/db-servers/1/drain", admin, nil).Expect(t, http.StatusOK)
	org := cp.CreateReadyOrganization(t, owner, "Rotating")
	if got := adminView(t, cp, admin, org.ID); *got.DBServerID != s.ID {
		t.Fatalf("placed on %d, want %d", *got.DBServerID, s.ID)
	}
	path := "/admin/organizations/" + strconv.FormatInt(org.ID, 10) + "/rotate-credentials"
	old := cp.Tenant(t, org.ID).Database
	testenv.Exec(t, server, "ALTER ROLE "+pgx.Identifier{old.User}.Sanitize()+" CONNECTION LIMIT -1")
	held, err := pgx.Connect(context.Background(), cptest.DSN(old))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())

	cp.Do(t, http.MethodPost, path, owner.AccessToken, nil).ExpectProblem(t, http.StatusForbidden, "admin_required")
	var answer cptest.Organization
	cp.Do(t, http.MethodPost, path, admin, nil).Expect(t, http.StatusAccepted).Decode(t, &answer)
	if answer.Status != "ready" {
		t.Fatalf("rotation answered %+v", answer)
	}
	got := log.WaitUntil(t, 30*time.Second, "tenant.updated", func(got []cptest.Received) bool { return len(cptest.OfTenant(got, org.ID)) == 1 })
	if e := cptest.OfTenant(got, org.ID)[0]; e.Envelope.Data.Status != "ready" || strings.Contains(string(asJSON(t, e.Raw)), old.Password.Reveal()) {
		t.Fatalf("event %+v", e.Envelope)
	}
	fresh := cp.Tenant(t, org.ID).Database
	if fresh.Password.Reveal() == old.Password.Reveal() || fresh.Name != old.Name || fresh.User != old.User {
		t.Fatalf("after the rotation: same password %v, name %s, user %s", fresh.Password.Reveal() == old.Password.Reveal(), fresh.Name, fresh.User)
	}
	var n int
	testenv.QueryRow(t, cptest.DSN(fresh), `SELECT count(*) FROM tenantuser`, nil, &n)
	conn, err := pgx.Connect(context.Background(), cptest.DSN(old))
	if err == nil {
		conn.Close(context.Background())
		t.Fatal("the old password still logs in")
	}
	if !strings.Contains(err.Error(), "password authentication failed") {
		t.Fatalf("old password: %v", err)
	}
	// Postgres checks passwords at login only: sessions open before go on.
	if err := held.QueryRow(context.Background(), `SELECT count(*) FROM tenantuser`).Scan(&n); err != nil {
		t.Fatalf("a session opened before the rotation: %v", err)
	}
	if limit := connLimit(t, server, old.User); limit != 20 {
		t.Fatalf("CONNECTION LIMIT %d after the rotation, want 20", limit)
	}

	cp.Do(t, http.MethodPost, "/admin/organizations/"+strconv.FormatInt(org.ID, 10)+"/suspend", admin, nil).Expect(t, http.StatusOK)
	cp.Do(t, http.MethodPost, path, admin, nil).Expect(t, http.StatusAccepted)
	log.WaitUntil(t, 30*time.Second, "tenant.updated", func(got []cptest.Received) bool { return len(cptest.OfTenant(got, org.ID)) == 2 })
	cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(org.ID, 10), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, org.ID, "deleted", readyTimeout)
	cp.Do(t, http.MethodPost, path, admin, nil).ExpectProblem(t, http.StatusConflict, "invalid_status")
	var rotations []string
	for _, e := range adminAudit(t, cp, admin, "target_type=organization&target_id="+strconv.FormatInt(org.ID, 10)) {
		if strings.Contains(e.Action, "rotate") {
			rotations = append(rotations, e.Action+"/"+e.ActorType)
		}
	}
	if want := []string{"organization.rotate_credentials/user", "organization.credentials_rotated/system",
		"organization.rotate_credentials/user", "organization.credentials_rotated/system"}; !slices.Equal(rotations, want) {
		t.Fatalf("audit of the rotations: %v, want %v", rotations, want)
	}
}

func asJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
