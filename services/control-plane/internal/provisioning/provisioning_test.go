package provisioning_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"

	"tenantbase/libs/pgutil"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/provisioning"
	"tenantbase/services/control-plane/internal/secretbox"
)

const ownerHash = "$2a$04$abcdefghijklmnopqrstuu5P4S6k3FvMQG0Cyyc8GD1vs7Z7.S2Nq"

type fixture struct {
	core    string
	dep     string
	server  string
	pool    *pgxpool.Pool
	box     *secretbox.Box
	store   *organizations.Store
	servers *dbservers.Registry
	prov    *provisioning.Provisioner
	ownerID int64

	mu         sync.Mutex
	beforeStep func(ctx context.Context, orgID int64, step string) error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{core: cptest.CoreDatabase(t), server: testenv.PostgresURL(t)}
	f.dep = cptest.Deployment(t, f.core)
	var err error
	if f.pool, err = pgxpool.New(ctx, f.core); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.pool.Close)
	key := make([]byte, secretbox.KeySize)
	rand.Read(key)
	f.box, _ = secretbox.New(key)
	jobs, err := provisioning.NewJobs(f.pool, 3)
	if err != nil {
		t.Fatal(err)
	}
	f.store = organizations.NewStore(f.pool, jobs, f.dep)
	f.servers = dbservers.New(f.pool, f.box, f.store)
	if _, _, err := f.servers.EnsureDefault(ctx, dbservers.Registration{AdminURL: f.core}); err != nil {
		t.Fatal(err)
	}
	f.prov, err = provisioning.New(f.pool, f.store, f.servers, jobs, f.box, provisioning.Options{
		Deployment: f.dep, CoreDSN: f.core, ConnectionLimit: 20,
		BeforeStep: func(ctx context.Context, orgID int64, step string) error {
			f.mu.Lock()
			hook := f.beforeStep
			f.mu.Unlock()
			if hook != nil {
				return hook(ctx, orgID, step)
			}
			return nil
		},
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.prov.Close)
	err = f.pool.QueryRow(ctx, `INSERT INTO coreuser (email, password_hash, is_verified, is_owner)
		VALUES ('owner@example.com', $1, TRUE, TRUE) RETURNING id`, ownerHash).Scan(&f.ownerID)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) setHook(h func(ctx context.Context, orgID int64, step string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.beforeStep = h
}

// failAt makes provisioning stop before step.
func (f *fixture) failAt(step string) {
	f.setHook(func(_ context.Context, _ int64, s string) error {
		if s == step {
			return errors.New("stopped for the test")
		}
		return nil
	})
}

func (f *fixture) create(t *testing.T) organizations.Organization {
	t.Helper()
	org, err := f.store.Create(context.Background(), "Acme", f.ownerID)
	if err != nil {
		t.Fatal(err)
	}
	return org
}

// assertReady checks everything a finished provisioning promises.
func (f *fixture) assertReady(t *testing.T, orgID int64) provisioning.Credentials {
	t.Helper()
	ctx := context.Background()
	org, err := f.store.Get(ctx, orgID)
	if err != nil {
		t.Fatal(err)
	}
	latest, _ := pgutil.LatestVersion(migrations.Tenant, "tenant")
	if org.Status != organizations.StatusReady || org.SchemaVersion != int(latest) || org.ReadyAt == nil {
		t.Fatalf("organization %+v, want ready at schema version %d", org, latest)
	}
	var events int
	testenv.QueryRow(t, f.core, `SELECT count(*) FROM event_outbox WHERE subject = 'tenant.created'
		AND payload->'data'->>'tenant_id' = $1`, []any{strconv.FormatInt(orgID, 10)}, &events)
	if events != 1 {
		t.Fatalf("%d tenant.created events, want 1", events)
	}
	creds, err := provisioning.OpenCredentials(f.box, org)
	if err != nil {
		t.Fatal(err)
	}
	name := creds.Name
	if !strings.HasPrefix(name, "tenant_"+f.dep+"_"+strconv.FormatInt(orgID, 10)+"_") || creds.User != name {
		t.Fatalf("database %s, role %s: want tenant_<deployment>_<id>_<random> for both", name, creds.User)
	}
	var dbOwner, verifier, dbTag, roleTag string
	var publicConnect, super, createDB, createRole bool
	testenv.QueryRow(t, f.server, `SELECT pg_get_userbyid(d.datdba), has_database_privilege('public', d.datname, 'CONNECT'),
			a.rolpassword, a.rolsuper, a.rolcreatedb, a.rolcreaterole,
			shobj_description(d.oid, 'pg_database'), shobj_description(a.oid, 'pg_authid')
		FROM pg_database d, pg_authid a WHERE d.datname = $1 AND a.rolname = $1`, []any{name},
		&dbOwner, &publicConnect, &verifier, &super, &createDB, &createRole, &dbTag, &roleTag)
	if dbOwner != name || publicConnect || super || createDB || createRole {
		t.Fatalf("database owner %s, PUBLIC CONNECT %v, role super/createdb/createrole %v/%v/%v",
			dbOwner, publicConnect, super, createDB, createRole)
	}
	if want := provisioning.Tag(f.dep, orgID); dbTag != want || roleTag != want {
		t.Fatalf("tags: database %q, role %q; want %q on both", dbTag, roleTag, want)
	}
	if !verifierMatches(t, verifier, creds.Password) {
		t.Fatal("the role's password is not the stored one")
	}
	var role, hash string
	testenv.QueryRow(t, testenv.OnDatabase(t, f.server, name), `SELECT role, password_hash FROM tenantuser WHERE email = 'owner@example.com'`, nil, &role, &hash)
	var coreHash string
	testenv.QueryRow(t, f.core, `SELECT password_hash FROM coreuser WHERE id = $1`, []any{f.ownerID}, &coreHash)
	if role != "admin" || hash != coreHash {
		t.Fatalf("owner in tenant: role %s, same hash %v; want admin with the core hash", role, hash == coreHash)
	}
	return creds
}

// verifierMatches recomputes a SCRAM verifier stored by Postgres for password.
func verifierMatches(t *testing.T, stored, password string) bool {
	t.Helper()
	// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
	head, _, ok := strings.Cut(strings.TrimPrefix(stored, "SCRAM-SHA-256$"), "$")
	if !ok {
		t.Fatalf("not a SCRAM verifier: %q", stored)
	}
	iter, saltB64, _ := strings.Cut(head, ":")
	n, _ := strconv.Atoi(iter)
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		t.Fatal(err)
	}
	got, err := provisioning.ScramVerifier(password, salt, n)
	if err != nil {
		t.Fatal(err)
	}
	return got == stored
}

func TestScramVerifierMatchesPostgres(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	role := "scram_check_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	quoted := pgx.Identifier{role}.Sanitize()
	testenv.Exec(t, f.server, "SET password_encryption = 'scram-sha-256'; CREATE ROLE "+quoted+" PASSWORD 'correct horse'")
	t.Cleanup(func() { testenv.Exec(t, f.server, "DROP ROLE IF EXISTS "+quoted) })
	var stored string
	testenv.QueryRow(t, f.server, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, []any{role}, &stored)
	if !verifierMatches(t, stored, "correct horse") {
		t.Fatalf("our verifier differs from Postgres's %q", stored)
	}
	if verifierMatches(t, stored, "correct horsE") {
		t.Fatal("a wrong password matched")
	}
}

// TestProvisionConverges starts provisioning from the states a crash can
// leave behind: every run ends ready, with one event and the stored
// credentials in force, adopting only what an earlier run of the same
// organization created.
func TestProvisionConverges(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// stopBefore runs provisioning of org up to step and returns the
	// recorded name of its database and role.
	stopBefore := func(t *testing.T, org organizations.Organization, step string) string {
		t.Helper()
		f.failAt(step)
		if err := f.prov.Provision(ctx, org.ID); err == nil {
			t.Fatal("the stopped run succeeded")
		}
		f.setHook(nil)
		got, err := f.store.Get(ctx, org.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Database.Name
	}
	cases := []struct {
		name    string
		prepare func(t *testing.T, org organizations.Organization)
		check   func(t *testing.T, org organizations.Organization, creds provisioning.Credentials)
	}{
		{name: "nothing done yet"},
		{
			name: "own role exists with another password",
			prepare: func(t *testing.T, org organizations.Organization) {
				name := stopBefore(t, org, provisioning.StepCreateDatabase)
				testenv.Exec(t, f.server, "ALTER ROLE "+pgx.Identifier{name}.Sanitize()+" PASSWORD 'left-over'")
			},
		},
		{
			name: "credentials stored, role not created",
			prepare: func(t *testing.T, org organizations.Organization) {
				name := provisioning.ObjectName(f.dep, org.ID)
				sealed := f.box.Seal([]byte("chosen-by-an-earlier-run"), []byte("organization:"+strconv.FormatInt(org.ID, 10)))
				if _, err := f.store.SetPlacement(ctx, org.ID, organizations.Placement{
					Host: "127.0.0.1", Port: 5432, Name: name, User: name, SealedPassword: sealed,
				}); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, _ organizations.Organization, creds provisioning.Credentials) {
				if creds.Password != "chosen-by-an-earlier-run" {
					t.Fatal("a re-run replaced the stored password")
				}
			},
		},
		{
			name: "database created, crash before the next step",
			prepare: func(t *testing.T, org organizations.Organization) {
				stopBefore(t, org, provisioning.StepMigrate)
			},
		},
		{
			// CREATE DATABASE cannot share a transaction with its COMMENT.
			name: "database created, crash before its tag",
			prepare: func(t *testing.T, org organizations.Organization) {
				name := stopBefore(t, org, provisioning.StepMigrate)
				testenv.Exec(t, f.server, "COMMENT ON DATABASE "+pgx.Identifier{name}.Sanitize()+" IS NULL")
			},
		},
		{
			name: "migration interrupted half-way",
			prepare: func(t *testing.T, org organizations.Organization) {
				name := stopBefore(t, org, provisioning.StepMigrate)
				// What golang-migrate leaves when the process dies between
				// marking version 1 dirty and finishing it (an older
				// release migrated new databases with it).
				testenv.Exec(t, testenv.OnDatabase(t, f.server, name),
					`DELETE FROM schema_migrations; INSERT INTO schema_migrations VALUES (1, true)`)
			},
		},
		{
			// The copy of the template gets its owner with the migrate step.
			name: "owner row present as a member with an old hash",
			prepare: func(t *testing.T, org organizations.Organization) {
				name := stopBefore(t, org, provisioning.StepMigrate)
				testenv.Exec(t, testenv.OnDatabase(t, f.server, name),
					`INSERT INTO tenantuser (email, password_hash, role) VALUES ('owner@example.com', 'old-hash', 'member')`)
			},
		},
		{
			name: "crash before sync_owner",
			prepare: func(t *testing.T, org organizations.Organization) {
				stopBefore(t, org, provisioning.StepSyncOwner)
			},
		},
		{
			name: "already ready",
			prepare: func(t *testing.T, org organizations.Organization) {
				if err := f.prov.Provision(ctx, org.ID); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			org := f.create(t)
			if tc.prepare != nil {
				tc.prepare(t, org)
			}
			if err := f.prov.Provision(ctx, org.ID); err != nil {
				t.Fatalf("Provision: %v", err)
			}
			creds := f.assertReady(t, org.ID)
			if tc.check != nil {
				tc.check(t, org, creds)
			}
		})
	}

	t.Run("concurrent runs", func(t *testing.T) {
		org := f.create(t)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = f.prov.Provision(ctx, org.ID) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		f.assertReady(t, org.ID)
	})

	t.Run("deleted before it ran", func(t *testing.T) {
		org := f.create(t)
		if _, err := f.store.Delete(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.prov.Provision(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		var dbs, roles int
		testenv.QueryRow(t, f.server, `SELECT (SELECT count(*) FROM pg_database WHERE shobj_description(oid, 'pg_database') = $1),
			(SELECT count(*) FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1)`, []any{provisioning.Tag(f.dep, org.ID)}, &dbs, &roles)
		if dbs != 0 || roles != 0 {
			t.Fatalf("provisioning of a deleting organization created %d databases and %d roles", dbs, roles)
		}
	})
}

func TestDeleteIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	org := f.create(t)
	if err := f.prov.Provision(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	creds := f.assertReady(t, org.ID)
	// A connection to the tenant is still open: deletion must not wait for it.
	conn, err := pgx.Connect(ctx, testenv.OnDatabase(t, f.server, creds.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := f.store.Delete(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := f.prov.Delete(ctx, org.ID); err != nil {
			t.Fatalf("Delete run %d: %v", i+1, err)
		}
	}
	got, err := f.store.Get(ctx, org.ID)
	if err != nil {
		t.Fatal(err)
	}
	var dbs, roles, events int
	testenv.QueryRow(t, f.server, `SELECT (SELECT count(*) FROM pg_database WHERE datname = $1),
		(SELECT count(*) FROM pg_roles WHERE rolname = $1)`, []any{creds.Name}, &dbs, &roles)
	testenv.QueryRow(t, f.core, `SELECT count(*) FROM event_outbox WHERE subject = 'tenant.deleted'`, nil, &events)
	if got.Status != organizations.StatusDeleted || got.Database.SealedPassword != nil || dbs != 0 || roles != 0 || events != 1 {
		t.Fatalf("status %s, credentials kept %v, %d databases, %d roles, %d tenant.deleted; want deleted, none, 0, 0, 1",
			got.Status, got.Database.SealedPassword != nil, dbs, roles, events)
	}
}

func TestSyncOwnerPassword(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	var tenants []provisioning.Credentials
	for range 2 {
		org := f.create(t)
		if err := f.prov.Provision(ctx, org.ID); err != nil {
			t.Fatal(err)
		}
		tenants = append(tenants, f.assertReady(t, org.ID))
	}
	// A live refresh token in the first tenant, to see it revoked.
	testenv.Exec(t, testenv.OnDatabase(t, f.server, tenants[0].Name), `INSERT INTO refresh_token (family_id, user_id, token_hash, expires_at)
		SELECT gen_random_uuid(), id, 'hash', now() + interval '1 day' FROM tenantuser WHERE email = 'owner@example.com'`)

	const newHash = "$2a$04$zyxwvutsrqponmlkjihgfeuA3pYdK0vuQpyVj8n2Kw3c0uO2mH1e6"
	testenv.Exec(t, f.core, `UPDATE coreuser SET password_hash = $2 WHERE id = $1`, f.ownerID, newHash)
	for run := 1; run <= 2; run++ {
		if err := f.prov.SyncOwnerPassword(ctx, f.ownerID); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		for i, c := range tenants {
			var hash string
			var version int
			testenv.QueryRow(t, testenv.OnDatabase(t, f.server, c.Name), `SELECT password_hash, token_version FROM tenantuser
				WHERE email = 'owner@example.com'`, nil, &hash, &version)
			if hash != newHash || version != 1 {
				t.Fatalf("run %d, tenant %d: hash updated %v, token_version %d; want the new hash and exactly one bump", run, i, hash == newHash, version)
			}
		}
	}
	var live int
	testenv.QueryRow(t, testenv.OnDatabase(t, f.server, tenants[0].Name), `SELECT count(*) FROM refresh_token WHERE revoked_at IS NULL`, nil, &live)
	if live != 0 {
		t.Fatalf("%d refresh tokens survive the password change", live)
	}
}

// TestMarkReadyResyncsAChangedPassword changes the owner's password between
// the owner sync and the end of provisioning: a sync job is enqueued with
// the organization becoming ready, so the tenant does not keep the old hash.
func TestMarkReadyResyncsAChangedPassword(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.setHook(func(_ context.Context, _ int64, step string) error {
		if step == provisioning.StepMarkReady {
			_, err := f.pool.Exec(ctx, `UPDATE coreuser SET password_hash = 'changed' WHERE id = $1`, f.ownerID)
			return err
		}
		return nil
	})
	org := f.create(t)
	if err := f.prov.Provision(ctx, org.ID); err != nil {
		t.Fatal(err)
	}
	job := rivertest.RequireInserted(ctx, t, riverpgxv5.New(f.pool), &provisioning.SyncOwnerPasswordArgs{}, nil)
	if job.Args.OwnerID != f.ownerID {
		t.Fatalf("password sync job for owner %d, want %d", job.Args.OwnerID, f.ownerID)
	}
}
