package provisioning_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/tenantdb"
	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
)

// TestTemplateDatabase checks the template new tenant databases are
// copied from: built on first use at the newest version, with every table
// of a copy handed to the tenant role; moved forward by a release with a
// newer migration (whose tenants then start at it); never rolled back by
// an older release, which provisions without it meanwhile; and left
// alone, with provisioning still working, when a database of its name is
// someone else's.
func TestTemplateDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	template := provisioning.TemplateName(f.dep)
	latest := tenantdb.LatestVersion()
	ready := func(prov *provisioning.Provisioner) (organizations.Organization, string) {
		t.Helper()
		org := f.create(t)
		if err := prov.Provision(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		org, err := f.store.Get(ctx, org.ID)
		if err != nil {
			t.Fatal(err)
		}
		if org.Status != organizations.StatusReady {
			t.Fatalf("organization %+v, want ready", org)
		}
		name := org.Database.Name
		// Everything in the copy belongs to the tenant role, and the
		// template role keeps no right in it.
		var foreign int
		var templateCreate bool
		testenv.QueryRow(t, testenv.OnDatabase(t, f.server, name), `SELECT
				(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
					WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) <> $1),
				coalesce((SELECT has_schema_privilege(r.oid, 'public', 'CREATE') FROM pg_roles r WHERE r.rolname = $2), false)`,
			[]any{name, template}, &foreign, &templateCreate)
		if foreign != 0 || templateCreate {
			t.Fatalf("tenant database %s: %d relations not owned by its role, template role may create: %v", name, foreign, templateCreate)
		}
		if v, dirty, err := tenantdb.Version(ctx, testenv.OnDatabase(t, f.server, name)); err != nil || dirty || int(v) != org.SchemaVersion {
			t.Fatalf("tenant database at version %d (dirty %v, %v), recorded %d", v, dirty, err, org.SchemaVersion)
		}
		return org, name
	}

	org, _ := ready(f.prov)
	f.assertReady(t, org.ID)
	db, role := f.database(t, template), f.role(t, template)
	if !db.exists || db.comment != provisioning.TemplateTag(f.dep, latest) || db.owner == template || db.publicConnect {
		t.Fatalf("template database %+v, want tagged at version %d, owned by the admin, closed to PUBLIC", db, latest)
	}
	if !role.exists || role.comment != provisioning.TemplateTag(f.dep, 0) || role.verifier != "" {
		t.Fatalf("template role %+v, want tagged, without a password", role)
	}

	// The next release carries a migration more: its first tenant moves
	// the template forward and starts at the new version.
	next := tenantdbtest.NextRelease(t, "nickname",
		"BEGIN;\nALTER TABLE tenantuser ADD COLUMN nickname TEXT;\nCOMMIT;\n",
		"BEGIN;\nALTER TABLE tenantuser DROP COLUMN nickname;\nCOMMIT;\n")
	newer := f.provisioner(t, provisioning.Options{Migrations: &next})
	org, name := ready(newer)
	if org.SchemaVersion != int(next.Latest()) || !hasColumn(t, testenv.OnDatabase(t, f.server, name), "tenantuser", "nickname") {
		t.Fatalf("tenant of the next release at %d, want %d with its column", org.SchemaVersion, next.Latest())
	}
	if got := f.database(t, template).comment; got != provisioning.TemplateTag(f.dep, next.Latest()) {
		t.Fatalf("template after the next release: %q", got)
	}

	// The release before, still running during a rolling deploy, does
	// not roll the template back: it migrates its tenant itself.
	org, name = ready(f.prov)
	if org.SchemaVersion != int(latest) || hasColumn(t, testenv.OnDatabase(t, f.server, name), "tenantuser", "nickname") {
		t.Fatalf("tenant of the release before at %d, want %d without the new column", org.SchemaVersion, latest)
	}
	if got := f.database(t, template).comment; got != provisioning.TemplateTag(f.dep, next.Latest()) {
		t.Fatalf("the release before changed the template: %q", got)
	}
}

// TestTemplateNameTakenBySomeoneElse finds a database of the template's
// name that is not the deployment's template: it is left alone and new
// tenants are created empty and migrated.
func TestTemplateNameTakenBySomeoneElse(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	template := provisioning.TemplateName(f.dep)
	f.stranger(t, template, "", true)
	org := f.create(t)
	if err := f.prov.Provision(context.Background(), org.ID); err != nil {
		t.Fatal(err)
	}
	f.assertReady(t, org.ID)
	if got := f.database(t, template); got.comment != "" || got.owner != template {
		t.Fatalf("the stranger's database was changed: %+v", got)
	}
}

// TestTemplateBuildCrashedBeforeItsTag finds what a build killed between
// the template's CREATE DATABASE and its tag leaves: the tagged template
// role and an untagged database it owns. The next provisioning recognises
// the database as the deployment's, finishes the template and hands it to
// the admin.
func TestTemplateBuildCrashedBeforeItsTag(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	template := provisioning.TemplateName(f.dep)
	f.stranger(t, template, provisioning.TemplateTag(f.dep, 0), false)
	id := pgx.Identifier{template}.Sanitize()
	testenv.Exec(t, f.server, "CREATE DATABASE "+id+" OWNER "+id)
	t.Cleanup(func() { testenv.Exec(t, f.server, "DROP DATABASE IF EXISTS "+id+" WITH (FORCE)") })

	org := f.create(t)
	if err := f.prov.Provision(context.Background(), org.ID); err != nil {
		t.Fatal(err)
	}
	f.assertReady(t, org.ID)
	latest := tenantdb.LatestVersion()
	if db := f.database(t, template); db.comment != provisioning.TemplateTag(f.dep, latest) || db.owner == template || db.publicConnect {
		t.Fatalf("template database %+v, want tagged at version %d, owned by the admin, closed to PUBLIC", db, latest)
	}
}

// provisioner is another provisioner on f's deployment and servers, with
// o's other options (its tenant migrations, its spares).
func (f *fixture) provisioner(t *testing.T, o provisioning.Options) *provisioning.Provisioner {
	t.Helper()
	jobs, err := provisioning.NewJobs(f.pool, 3)
	if err != nil {
		t.Fatal(err)
	}
	o.Deployment, o.CoreDSN, o.ConnectionLimit = f.dep, f.core, 20
	p, err := provisioning.New(f.pool, f.store, f.servers, jobs, f.box, o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func hasColumn(t *testing.T, dsn, table, column string) bool {
	t.Helper()
	var n int
	testenv.QueryRow(t, dsn, `SELECT count(*) FROM information_schema.columns WHERE table_name = $1 AND column_name = $2`,
		[]any{table, column}, &n)
	return n == 1
}
