package provisioning_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
)

// serverObject is what a test checks of a database or role on the server.
type serverObject struct {
	exists        bool
	comment       string
	owner         string // databases
	verifier      string // roles
	publicConnect bool   // databases
}

func (f *fixture) database(t *testing.T, name string) serverObject {
	t.Helper()
	var o serverObject
	testenv.QueryRow(t, f.server, `SELECT count(*) > 0, coalesce(max(shobj_description(oid, 'pg_database')), ''),
			coalesce(max(pg_get_userbyid(datdba)), ''), coalesce(bool_or(has_database_privilege('public', datname, 'CONNECT')), false)
		FROM pg_database WHERE datname = $1`, []any{name}, &o.exists, &o.comment, &o.owner, &o.publicConnect)
	return o
}

func (f *fixture) role(t *testing.T, name string) serverObject {
	t.Helper()
	var o serverObject
	testenv.QueryRow(t, f.server, `SELECT count(*) > 0, coalesce(max(shobj_description(oid, 'pg_authid')), ''), coalesce(max(rolpassword), '')
		FROM pg_authid WHERE rolname = $1`, []any{name}, &o.exists, &o.comment, &o.verifier)
	return o
}

// stranger creates a role (and, with db, a database it owns) named name,
// as another deployment or an operator would, tagged with tag ("" for
// none), and drops them when the test ends.
func (f *fixture) stranger(t *testing.T, name, tag string, db bool) {
	t.Helper()
	id := pgx.Identifier{name}.Sanitize()
	testenv.Exec(t, f.server, "CREATE ROLE "+id+" LOGIN PASSWORD 'strangers-password'")
	t.Cleanup(func() { testenv.Exec(t, f.server, "DROP ROLE IF EXISTS "+id) })
	if tag != "" {
		testenv.Exec(t, f.server, "COMMENT ON ROLE "+id+" IS '"+tag+"'")
	}
	if db {
		testenv.Exec(t, f.server, "CREATE DATABASE "+id+" OWNER "+id)
		t.Cleanup(func() { testenv.Exec(t, f.server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)") })
		if tag != "" {
			testenv.Exec(t, f.server, "COMMENT ON DATABASE "+id+" IS '"+tag+"'")
		}
	}
}

// place records name as org's database and role, as the first run does.
func (f *fixture) place(t *testing.T, org organizations.Organization, name string) {
	t.Helper()
	sealed := f.box.Seal([]byte("our-password"), []byte("organization:"+strconv.FormatInt(org.ID, 10)))
	if _, err := f.store.SetPlacement(context.Background(), org.ID, organizations.Placement{
		Host: "127.0.0.1", Port: 5432, Name: name, User: name, SealedPassword: sealed,
	}); err != nil {
		t.Fatal(err)
	}
}

// TestForeignObjectsAreLeftAlone finds a role or database of the recorded
// name that another deployment or an operator made: provisioning refuses
// it with ErrForeignObject and changes nothing of it.
func TestForeignObjectsAreLeftAlone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cases := []struct {
		name string
		// prepare makes the stranger's objects under name.
		prepare  func(t *testing.T, org organizations.Organization, name string)
		kind     string
		ownsRole bool
	}{
		{
			name:    "untagged role",
			prepare: func(t *testing.T, _ organizations.Organization, name string) { f.stranger(t, name, "", false) },
			kind:    "role",
		},
		{
			name: "role of another deployment",
			prepare: func(t *testing.T, org organizations.Organization, name string) {
				f.stranger(t, name, provisioning.Tag("other", org.ID), false)
			},
			kind: "role",
		},
		{
			name: "role of another organization",
			prepare: func(t *testing.T, org organizations.Organization, name string) {
				f.stranger(t, name, provisioning.Tag(f.dep, org.ID+1), false)
			},
			kind: "role",
		},
		{
			name: "database of another deployment, owned by someone else",
			prepare: func(t *testing.T, org organizations.Organization, name string) {
				other := name + "_owner"
				f.stranger(t, other, "", false)
				id, owner := pgx.Identifier{name}.Sanitize(), pgx.Identifier{other}.Sanitize()
				testenv.Exec(t, f.server, "CREATE DATABASE "+id+" OWNER "+owner)
				t.Cleanup(func() { testenv.Exec(t, f.server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)") })
				testenv.Exec(t, f.server, "COMMENT ON DATABASE "+id+" IS '"+provisioning.Tag("other", org.ID)+"'")
			},
			kind:     "database",
			ownsRole: true,
		},
		{
			name: "untagged database owned by someone else",
			prepare: func(t *testing.T, _ organizations.Organization, name string) {
				id := pgx.Identifier{name}.Sanitize()
				testenv.Exec(t, f.server, "CREATE DATABASE "+id)
				t.Cleanup(func() { testenv.Exec(t, f.server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)") })
			},
			kind:     "database",
			ownsRole: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			org := f.create(t)
			name := provisioning.ObjectName(f.dep, org.ID)
			f.place(t, org, name)
			tc.prepare(t, org, name)
			db, role := f.database(t, name), f.role(t, name)

			err := f.prov.Provision(ctx, org.ID)
			var foreign *provisioning.ForeignObjectError
			if !errors.Is(err, provisioning.ErrForeignObject) || !errors.As(err, &foreign) || foreign.Kind != tc.kind || foreign.Name != name {
				t.Fatalf("Provision = %v, want a foreign %s %s", err, tc.kind, name)
			}
			if got := f.database(t, name); got != db {
				t.Fatalf("the stranger's database changed: %+v, was %+v", got, db)
			}
			if got := f.role(t, name); tc.ownsRole != (got.comment == provisioning.Tag(f.dep, org.ID)) || (!tc.ownsRole && got != role) {
				t.Fatalf("role after the refusal: %+v (was %+v); the organization's own role: %v", got, role, tc.ownsRole)
			}
			got, err := f.store.Get(ctx, org.ID)
			if err != nil || got.Status != organizations.StatusProvisioning {
				t.Fatalf("organization %+v, %v: the worker decides about failing, Provision must not mark it ready", got, err)
			}
		})
	}
}

// TestDeleteLeavesForeignObjects deletes an organization whose recorded
// database was replaced by someone else's: only the organization's own
// role goes.
func TestDeleteLeavesForeignObjects(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	org := f.create(t)
	if err := f.prov.Provision(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	creds := f.assertReady(t, org.ID)
	id := pgx.Identifier{creds.Name}.Sanitize()
	testenv.Exec(t, f.server, "DROP DATABASE "+id+" WITH (FORCE)")
	other := creds.Name + "_x"
	f.stranger(t, other, "", false)
	testenv.Exec(t, f.server, "CREATE DATABASE "+id+" OWNER "+pgx.Identifier{other}.Sanitize())
	t.Cleanup(func() { testenv.Exec(t, f.server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)") })
	testenv.Exec(t, f.server, "COMMENT ON DATABASE "+id+" IS '"+provisioning.Tag("other", org.ID)+"'")
	before := f.database(t, creds.Name)

	if _, err := f.store.Delete(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.prov.Delete(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	if got := f.database(t, creds.Name); got != before {
		t.Fatalf("the stranger's database changed: %+v, was %+v", got, before)
	}
	if f.role(t, creds.User).exists {
		t.Fatal("the organization's own role survived the deletion")
	}
	if got, _ := f.store.Get(ctx, org.ID); got.Status != organizations.StatusDeleted {
		t.Fatalf("status %s, want deleted", got.Status)
	}
}

// TestTagLegacy upgrades organizations provisioned before tags (named
// tenant_<id>): their own objects get tagged and can be deleted; an object
// tagged by someone else is left alone.
func TestTagLegacy(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// Legacy names are server-wide: pick ids no one on this server uses.
	var first int64
	testenv.QueryRow(t, f.server, `SELECT coalesce(max(substr(datname, 8)::numeric), 0)::bigint + 1000
		FROM pg_database WHERE datname ~ '^tenant_[0-9]+$'`, nil, &first)
	testenv.Exec(t, f.core, "SELECT setval('organization_id_seq', $1)", first)

	ours := f.create(t)
	oursName := "tenant_" + strconv.FormatInt(ours.ID, 10)
	f.place(t, ours, oursName)
	f.stranger(t, oursName, "", true)
	if _, err := f.pool.Exec(ctx, `UPDATE organization SET status = 'ready' WHERE id = $1`, ours.ID); err != nil {
		t.Fatal(err)
	}

	claimed := f.create(t)
	claimedName := "tenant_" + strconv.FormatInt(claimed.ID, 10)
	f.place(t, claimed, claimedName)
	f.stranger(t, claimedName, provisioning.Tag("other", claimed.ID), true)
	claimedBefore := [2]serverObject{f.database(t, claimedName), f.role(t, claimedName)}

	for run := 1; run <= 2; run++ {
		if err := f.prov.TagLegacy(ctx); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
	}
	want := provisioning.Tag(f.dep, ours.ID)
	if db, role := f.database(t, oursName), f.role(t, oursName); db.comment != want || role.comment != want {
		t.Fatalf("legacy tenant tags: database %q, role %q; want %q", db.comment, role.comment, want)
	}
	if got := [2]serverObject{f.database(t, claimedName), f.role(t, claimedName)}; got != claimedBefore {
		t.Fatalf("objects tagged by another deployment changed: %+v, were %+v", got, claimedBefore)
	}

	if _, err := f.store.Delete(ctx, ours.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.prov.Delete(ctx, ours.ID); err != nil {
		t.Fatal(err)
	}
	if f.database(t, oursName).exists || f.role(t, oursName).exists {
		t.Fatal("the tagged legacy tenant was not dropped")
	}
}

// TestLockConnectionsProbeForDeadHosts opens a connection the way the
// organization locks are held: its server session probes the client with
// TCP keepalives, so a holder that vanished loses its lock in seconds.
func TestLockConnectionsProbeForDeadHosts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	cfg, err := provisioning.LockPoolConfig(f.core)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var idle, interval, count string
	if err := conn.QueryRow(ctx, `SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'),
		current_setting('tcp_keepalives_count')`).Scan(&idle, &interval, &count); err != nil {
		t.Fatal(err)
	}
	if idle != "15" || interval != "5" || count != "3" {
		t.Fatalf("lock connection keepalives idle %s, interval %s, count %s; want 15, 5, 3", idle, interval, count)
	}
}
