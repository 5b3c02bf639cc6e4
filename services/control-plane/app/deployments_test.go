package app_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/tenantapi"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/provisioning"
)

// tenantState is what must not change of a tenant when another deployment
// (or another incarnation of this one) works on the same server.
type tenantState struct {
	verifier string
	dbTag    string
	roleTag  string
	users    []string
}

func stateOf(t *testing.T, server string, db tenantapi.Database) tenantState {
	t.Helper()
	var s tenantState
	testenv.QueryRow(t, server, `SELECT a.rolpassword, coalesce(shobj_description(d.oid, 'pg_database'), ''),
			coalesce(shobj_description(a.oid, 'pg_authid'), '')
		FROM pg_authid a, pg_database d WHERE a.rolname = $1 AND d.datname = $2`, []any{db.User, db.Name}, &s.verifier, &s.dbTag, &s.roleTag)
	var users string
	testenv.QueryRow(t, cptest.DSN(&db), `SELECT string_agg(email, ',' ORDER BY email) FROM tenantuser`, nil, &users)
	s.users = strings.Split(users, ",")
	return s
}

func (s tenantState) equal(o tenantState) bool {
	return s.verifier == o.verifier && s.dbTag == o.dbTag && s.roleTag == o.roleTag && strings.Join(s.users, ",") == strings.Join(o.users, ",")
}

func deleteOrganization(t *testing.T, cp *cptest.ControlPlane, owner cptest.User, id int64) {
	t.Helper()
	cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(id, 10), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, id, "deleted", readyTimeout)
}

// TestDeploymentsShareATenantServer runs two control planes with separate
// core databases against one Postgres server, their organization ids
// colliding: each tenant keeps its own database, role and users, and
// deleting a tenant of one deployment leaves the other's untouched.
func TestDeploymentsShareATenantServer(t *testing.T) {
	t.Parallel()
	server := testenv.PostgresURL(t)
	a := cptest.Start(t, cptest.Options{})
	b := cptest.Start(t, cptest.Options{})
	for _, cp := range []*cptest.ControlPlane{a, b} {
		testenv.Exec(t, cp.DatabaseURL, `SELECT setval('organization_id_seq', 40)`)
	}
	ownerA := a.SignUpOwner(t, "owner@a.example", ownerPassword)
	ownerB := b.SignUpOwner(t, "owner@b.example", ownerPassword)

	orgsA := []cptest.Organization{a.CreateReadyOrganization(t, ownerA, "A1"), a.CreateReadyOrganization(t, ownerA, "A2")}
	before := stateOf(t, server, *a.Tenant(t, orgsA[0].ID).Database)
	orgsB := []cptest.Organization{b.CreateReadyOrganization(t, ownerB, "B1"), b.CreateReadyOrganization(t, ownerB, "B2")}
	for i := range orgsA {
		if orgsA[i].ID != orgsB[i].ID {
			t.Fatalf("ids %d and %d: the test needs colliding ids", orgsA[i].ID, orgsB[i].ID)
		}
	}
	if a.Deployment == b.Deployment {
		t.Fatal("both control planes got one deployment id")
	}

	dbA, dbB := *a.Tenant(t, orgsA[0].ID).Database, *b.Tenant(t, orgsB[0].ID).Database
	if dbA.Name == dbB.Name || dbA.User == dbB.User || !strings.Contains(dbA.Name, a.Deployment) || !strings.Contains(dbB.Name, b.Deployment) {
		t.Fatalf("tenant %d: A uses %s/%s, B %s/%s; want separate names carrying each deployment",
			orgsA[0].ID, dbA.Name, dbA.User, dbB.Name, dbB.User)
	}
	// Provisioning B's tenant with the same id changed nothing of A's.
	if got := stateOf(t, server, dbA); !got.equal(before) {
		t.Fatalf("A's tenant changed while B provisioned: %+v, was %+v", got, before)
	}
	// A user of A's tenant exists in A's database only.
	testenv.Exec(t, cptest.DSN(&dbA), `INSERT INTO tenantuser (email, password_hash) VALUES ('alice@a.example', 'x')`)
	if got := stateOf(t, server, dbB); strings.Join(got.users, ",") != ownerB.Email {
		t.Fatalf("B's tenant users: %v, want only B's owner", got.users)
	}

	// Each deletes one tenant; the other deployment's tenant of that id stays.
	survivors := []struct {
		cp *cptest.ControlPlane
		id int64
		db tenantapi.Database
	}{{b, orgsB[0].ID, dbB}, {a, orgsA[1].ID, *a.Tenant(t, orgsA[1].ID).Database}}
	states := []tenantState{stateOf(t, server, survivors[0].db), stateOf(t, server, survivors[1].db)}
	deleteOrganization(t, a, ownerA, orgsA[0].ID)
	deleteOrganization(t, b, ownerB, orgsB[1].ID)
	for i, s := range survivors {
		if got := stateOf(t, server, s.db); !got.equal(states[i]) {
			t.Fatalf("tenant %s changed when the other deployment deleted its own: %+v, was %+v", s.db.Name, got, states[i])
		}
		if s.cp.Tenant(t, s.id).Status != "ready" {
			t.Fatalf("tenant %s is no longer ready", s.db.Name)
		}
	}
	assertTenantDropped(t, a, server, orgsA[0].ID, dbA.Name)
}

// TestRestoredCoreDatabase restores the core database from a backup taken
// before an organization existed, while its tenant database lives on: the
// organization that gets the same id again is provisioned afresh, and the
// old tenant database is never touched.
func TestRestoredCoreDatabase(t *testing.T) {
	t.Parallel()
	server := testenv.PostgresURL(t)
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	old := cp.CreateReadyOrganization(t, owner, "Before the backup was restored")
	oldDB := *cp.Tenant(t, old.ID).Database
	testenv.Exec(t, cptest.DSN(&oldDB), `INSERT INTO tenantuser (email, password_hash) VALUES ('alice@example.com', 'x')`)
	before := stateOf(t, server, oldDB)
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}

	// The backup: the owner existed, the organization did not.
	testenv.Exec(t, cp.DatabaseURL, `DELETE FROM organization; DELETE FROM event_outbox; DELETE FROM river_job;
		SELECT setval('organization_id_seq', `+strconv.FormatInt(old.ID, 10)+`, false)`)
	restored := cptest.Start(t, cptest.Options{DatabaseURL: cp.DatabaseURL, KeysDir: cp.Config.KeysDir})
	owner.AccessToken = restored.Login(t, owner.Email, owner.Password)
	again := restored.CreateReadyOrganization(t, owner, "After the restore")
	if again.ID != old.ID {
		t.Fatalf("id %d after the restore, want %d again", again.ID, old.ID)
	}
	newDB := *restored.Tenant(t, again.ID).Database
	if newDB.Name == oldDB.Name {
		t.Fatalf("the restored deployment reuses %s", oldDB.Name)
	}
	if got := stateOf(t, server, oldDB); !got.equal(before) {
		t.Fatalf("the old tenant database changed: %+v, was %+v", got, before)
	}
	if got := stateOf(t, server, newDB); strings.Join(got.users, ",") != owner.Email {
		t.Fatalf("new tenant users %v, want only the owner", got.users)
	}
	deleteOrganization(t, restored, owner, again.ID)
	if got := stateOf(t, server, oldDB); !got.equal(before) {
		t.Fatalf("deleting the new organization changed the old tenant database: %+v, was %+v", got, before)
	}
}

// TestLegacyTenantsTaggedOnStart starts a control plane on a core database
// whose tenant was provisioned before names carried the deployment: it
// keeps its name, is tagged at start, keeps serving, and can be deleted.
func TestLegacyTenantsTaggedOnStart(t *testing.T) {
	t.Parallel()
	server := testenv.PostgresURL(t)
	cp := cptest.Start(t, cptest.Options{})
	// Legacy names are server-wide: pick an id no one on this server uses.
	var first int64
	testenv.QueryRow(t, server, `SELECT coalesce(max(substr(datname, 8)::numeric), 0)::bigint + 1000
		FROM pg_database WHERE datname ~ '^tenant_[0-9]+$'`, nil, &first)
	testenv.Exec(t, cp.DatabaseURL, "SELECT setval('organization_id_seq', $1)", first)
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	org := cp.CreateReadyOrganization(t, owner, "Provisioned long ago")
	current := *cp.Tenant(t, org.ID).Database
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}

	// What a release before tags left: tenant_<id>, no comments.
	legacy := "tenant_" + strconv.FormatInt(org.ID, 10)
	l, c := pgx.Identifier{legacy}.Sanitize(), pgx.Identifier{current.Name}.Sanitize()
	testenv.Exec(t, server, "ALTER DATABASE "+c+" RENAME TO "+l)
	testenv.Exec(t, server, "ALTER ROLE "+c+" RENAME TO "+l)
	testenv.Exec(t, server, "COMMENT ON DATABASE "+l+" IS NULL")
	testenv.Exec(t, server, "COMMENT ON ROLE "+l+" IS NULL")
	testenv.Exec(t, cp.DatabaseURL, `UPDATE organization SET db_name = $2, db_user = $2 WHERE id = $1`, org.ID, legacy)
	t.Cleanup(func() {
		testenv.Exec(t, server, "DROP DATABASE IF EXISTS "+l+" WITH (FORCE)")
		testenv.Exec(t, server, "DROP ROLE IF EXISTS "+l)
	})

	upgraded := cptest.Start(t, cptest.Options{DatabaseURL: cp.DatabaseURL, KeysDir: cp.Config.KeysDir})
	want := cptest.Tag(upgraded.Deployment, org.ID)
	testenv.Eventually(t, 30*time.Second, func() bool {
		tags := map[string]bool{}
		for _, o := range cptest.TaggedObjects(t, server, upgraded.Deployment) {
			tags[o.Kind+" "+o.Name+" "+o.Tag] = true
		}
		return tags["database "+legacy+" "+want] && tags["role "+legacy+" "+want]
	}, "the legacy tenant's database and role tagged")
	db := *upgraded.Tenant(t, org.ID).Database
	if db.Name != legacy {
		t.Fatalf("the legacy tenant is served as %s, want its old name %s", db.Name, legacy)
	}
	stateOf(t, server, db) // its role still logs in
	owner.AccessToken = upgraded.Login(t, owner.Email, owner.Password)
	deleteOrganization(t, upgraded, owner, org.ID)
	assertTenantDropped(t, upgraded, server, org.ID, legacy)
}

// TestForeignDatabaseFailsAtOnce puts someone else's database under the
// name provisioning recorded: the organization fails on the first attempt
// with a reason saying so, the database is untouched, and a retry after it
// is removed succeeds.
func TestForeignDatabaseFailsAtOnce(t *testing.T) {
	t.Parallel()
	server := testenv.PostgresURL(t)
	var core string
	var strangers []string
	var mu sync.Mutex
	cp := cptest.Start(t, cptest.Options{Configure: func(c *app.Config) { c.ProvisionMaxAttempts = 5 },
		RunOptions: []app.Option{app.WithBeforeProvisionStep(func(ctx context.Context, orgID int64, step string) error {
			mu.Lock()
			defer mu.Unlock()
			if step != provisioning.StepCreateDatabase || len(strangers) > 0 {
				return nil
			}
			conn, err := pgx.Connect(ctx, core)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var name string
			if err := conn.QueryRow(ctx, `SELECT db_name FROM organization WHERE id = $1`, orgID).Scan(&name); err != nil {
				return err
			}
			strangers = append(strangers, name)
			_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
			return err
		})},
	})
	core = cp.DatabaseURL
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	org := cp.CreateOrganization(t, owner.AccessToken, "Collides")
	failed := cp.WaitStatus(t, owner.AccessToken, org.ID, "failed", readyTimeout)
	mu.Lock()
	name := strangers[0]
	mu.Unlock()
	id := pgx.Identifier{name}.Sanitize()
	t.Cleanup(func() { testenv.Exec(t, server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)") })
	if failed.StatusDetail == nil || !strings.Contains(*failed.StatusDetail, "after 1 attempt: step create_database failed: a database named "+name) ||
		!strings.Contains(*failed.StatusDetail, "left untouched") {
		t.Fatalf("status_detail %v, want the foreign database after the first attempt", failed.StatusDetail)
	}
	var comment, owner2 string
	testenv.QueryRow(t, server, `SELECT coalesce(shobj_description(oid, 'pg_database'), ''), pg_get_userbyid(datdba)
		FROM pg_database WHERE datname = $1`, []any{name}, &comment, &owner2)
	if comment != "" || owner2 == name {
		t.Fatalf("the stranger's database was changed: comment %q, owner %s", comment, owner2)
	}

	testenv.Exec(t, server, "DROP DATABASE "+id)
	cp.Do(t, http.MethodPost, "/organizations/"+strconv.FormatInt(org.ID, 10)+"/retry", owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, org.ID, "ready", readyTimeout)
}
