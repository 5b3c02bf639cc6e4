package provisioning_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/provisioning"
)

// spareDB is a spare database as a test sees it on the server.
type spareDB struct {
	OID   uint32
	Name  string
	Tag   string
	Owner string
}

// spareDatabases lists the databases on f's server named as f's spares.
func (f *fixture) spareDatabases(t *testing.T) []spareDB {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, f.server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT oid, datname, coalesce(shobj_description(oid, 'pg_database'), ''), pg_get_userbyid(datdba)
		FROM pg_database WHERE starts_with(datname, $1) ORDER BY oid`, provisioning.SparePrefix(f.dep))
	if err != nil {
		t.Fatal(err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[spareDB])
	if err != nil {
		t.Fatal(err)
	}
	return dbs
}

// readySpares are the spare databases a claim may take.
func (f *fixture) readySpares(t *testing.T) []spareDB {
	t.Helper()
	var ready []spareDB
	for _, s := range f.spareDatabases(t) {
		if s.Tag == provisioning.SpareTag(f.dep, tenantdb.LatestVersion()) && s.Owner == s.Name && f.role(t, s.Name).comment == provisioning.SpareTag(f.dep, 0) {
			ready = append(ready, s)
		}
	}
	return ready
}

func (f *fixture) databaseOID(t *testing.T, name string) uint32 {
	t.Helper()
	var oid uint32
	testenv.QueryRow(t, f.server, `SELECT oid FROM pg_database WHERE datname = $1`, []any{name}, &oid)
	return oid
}

// TestSpareDatabases refills a server's spares, provisions a tenant from
// one (its database is the spare, renamed, and everything a provisioning
// promises holds), sees a refill asked for in the same transaction that
// made the tenant ready, refills again, and provisions without spares
// once they are all taken.
func TestSpareDatabases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	prov := f.provisioner(t, provisioning.Options{Spares: 2})
	if err := prov.RefillSpares(ctx, 0); err != nil {
		t.Fatal(err)
	}
	spares := f.readySpares(t)
	if len(spares) != 2 {
		t.Fatalf("after a refill: %+v, want 2 ready spares", f.spareDatabases(t))
	}
	for _, s := range spares {
		// Closed to PUBLIC, every table already the spare role's.
		var foreign int
		testenv.QueryRow(t, testenv.OnDatabase(t, f.server, s.Name), `SELECT count(*) FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> $1`,
			[]any{s.Name}, &foreign)
		if db := f.database(t, s.Name); db.publicConnect || foreign != 0 {
			t.Fatalf("spare %s: PUBLIC may connect %v, %d relations not its role's", s.Name, db.publicConnect, foreign)
		}
		if r := f.role(t, s.Name); r.verifier != "" {
			t.Fatalf("spare role %s has a password", s.Name)
		}
	}

	org := f.create(t)
	if err := prov.Provision(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	creds := f.assertReady(t, org.ID)
	if oid := f.databaseOID(t, creds.Name); oid != spares[0].OID {
		t.Fatalf("tenant database %s has oid %d, want the first spare's %d", creds.Name, oid, spares[0].OID)
	}
	if left := f.readySpares(t); len(left) != 1 || left[0].OID != spares[1].OID {
		t.Fatalf("spares after one claim: %+v, want the second one", left)
	}
	var refills int
	testenv.QueryRow(t, f.core, `SELECT count(*) FROM river_job WHERE kind = 'refill_spare_databases' AND state = 'available'`, nil, &refills)
	if refills != 1 {
		t.Fatalf("%d refill jobs waiting after a claim, want 1", refills)
	}
	if err := prov.RefillSpares(ctx, org.ServerID); err != nil {
		t.Fatal(err)
	}
	if n := len(f.readySpares(t)); n != 2 {
		t.Fatalf("%d spares after the refill, want 2", n)
	}

	// A burst takes them all; the tenants after it are copies of the
	// template, as without spares.
	for range 3 {
		o := f.create(t)
		if err := prov.Provision(ctx, o.ID); err != nil {
			t.Fatal(err)
		}
		f.assertReady(t, o.ID)
	}
	if n := len(f.spareDatabases(t)); n != 0 {
		t.Fatalf("%d spares left after three tenants, want 0", n)
	}
}

// TestSpareClaimSurvivesACrash stops provisioning right after a spare was
// claimed, as a crash would: the next run finds the claimed role and
// database under the tenant's names and finishes on them, without taking
// another spare.
func TestSpareClaimSurvivesACrash(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	prov := f.provisioner(t, provisioning.Options{Spares: 2, BeforeStep: func(_ context.Context, _ int64, step string) error {
		if step == provisioning.StepCreateDatabase {
			return errors.New("stopped for the test")
		}
		return nil
	}})
	if err := prov.RefillSpares(ctx, 0); err != nil {
		t.Fatal(err)
	}
	spares := f.readySpares(t)
	org := f.create(t)
	if err := prov.Provision(ctx, org.ID); err == nil {
		t.Fatal("provisioning went past the stop")
	}
	again := f.provisioner(t, provisioning.Options{Spares: 2})
	if err := again.Provision(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	creds := f.assertReady(t, org.ID)
	if oid := f.databaseOID(t, creds.Name); oid != spares[0].OID {
		t.Fatalf("tenant database oid %d, want the claimed spare's %d", oid, spares[0].OID)
	}
	if left := f.readySpares(t); len(left) != 1 || left[0].OID != spares[1].OID {
		t.Fatalf("spares after the rerun: %+v, want the second one untouched", left)
	}
}

// TestSpareRefillCleansUp leaves on the server what crashes and releases
// leave: a spare role without its database, an untagged database of a
// spare role (killed between CREATE DATABASE and its tag), a spare of an
// older version, one of a newer release, and a database named like a
// spare that is someone else's. A refill drops the first three, leaves the
// last two alone, and builds the spares wanted; on a draining server it
// drops every spare of this release.
func TestSpareRefillCleansUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	prov := f.provisioner(t, provisioning.Options{Spares: 1})
	latest := tenantdb.LatestVersion()
	pre := provisioning.SparePrefix(f.dep)
	spareRole := func(name string) {
		id := pgx.Identifier{name}.Sanitize()
		testenv.Exec(t, f.server, "CREATE ROLE "+id+" NOLOGIN")
		testenv.Exec(t, f.server, "COMMENT ON ROLE "+id+" IS '"+provisioning.SpareTag(f.dep, 0)+"'")
	}
	spareDB := func(name string, version uint) {
		id := pgx.Identifier{name}.Sanitize()
		testenv.Exec(t, f.server, "CREATE DATABASE "+id+" OWNER "+id)
		if version > 0 {
			testenv.Exec(t, f.server, "COMMENT ON DATABASE "+id+" IS '"+provisioning.SpareTag(f.dep, version)+"'")
		}
	}
	spareRole(pre + "noddbase")
	spareRole(pre + "untagged")
	spareDB(pre+"untagged", 0)
	spareRole(pre + "oldvers1")
	spareDB(pre+"oldvers1", latest-1)
	spareRole(pre + "newvers1")
	spareDB(pre+"newvers1", latest+1)
	f.stranger(t, pre+"stranger", "", true)

	if err := prov.RefillSpares(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"noddbase", "untagged", "oldvers1"} {
		if f.role(t, pre+gone).exists || f.database(t, pre+gone).exists {
			t.Errorf("%s is still there", pre+gone)
		}
	}
	for _, kept := range []string{"newvers1", "stranger"} {
		if !f.role(t, pre+kept).exists || !f.database(t, pre+kept).exists {
			t.Errorf("%s was dropped", pre+kept)
		}
	}
	if n := len(f.readySpares(t)); n != 1 {
		t.Fatalf("%d ready spares, want 1", n)
	}

	server, err := f.servers.Default(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.servers.SetState(ctx, server.ID, dbservers.StateDraining); err != nil {
		t.Fatal(err)
	}
	if err := prov.RefillSpares(ctx, server.ID); err != nil {
		t.Fatal(err)
	}
	if n := len(f.readySpares(t)); n != 0 {
		t.Fatalf("%d ready spares on a draining server, want 0", n)
	}
	if !f.database(t, pre+"newvers1").exists || !f.database(t, pre+"stranger").exists {
		t.Fatal("draining dropped what is not this release's")
	}
}
