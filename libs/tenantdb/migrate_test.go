package tenantdb_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5"

	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
)

// schema describes the tables, columns and indexes of a database, to
// compare what the files leave at each version.
func schema(t *testing.T, dsn string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `
		SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
			FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> 'schema_migrations'
		UNION ALL
		SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'schema_migrations'
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

func versionOf(t *testing.T, dsn string) (uint, bool) {
	t.Helper()
	v, dirty, err := tenantdb.Version(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return v, dirty
}

func migrateTo(t *testing.T, m tenantdb.Migrations, dsn string, target uint) tenantdb.Result {
	t.Helper()
	res, err := m.MigrateTo(context.Background(), dsn, target, tenantdb.MigrateOptions{})
	if err != nil {
		t.Fatalf("migrate to %d: %v", target, err)
	}
	if res.To != target {
		t.Fatalf("migrate to %d reached %d", target, res.To)
	}
	return res
}

// TestEmbeddedMigrations checks the files every tenant database gets: each
// version has both files, each file is one transaction, and the declared
// versions exist.
func TestEmbeddedMigrations(t *testing.T) {
	t.Parallel()
	m, err := tenantdb.NewMigrations(migrations.Tenant, "tenant")
	if err != nil {
		t.Fatal(err)
	}
	if m.Latest() != tenantdb.Embedded().Latest() || m.Latest() != tenantdb.LatestVersion() {
		t.Fatalf("latest %d, embedded %d", m.Latest(), tenantdb.Embedded().Latest())
	}
	for _, v := range []uint{tenantdb.MinSchemaVersion, tenantdb.LastLoginVersion} {
		if !m.Has(v) {
			t.Errorf("version %d is declared in the code but has no migration", v)
		}
	}
	if tenantdb.MinSchemaVersion > tenantdb.LastLoginVersion {
		t.Errorf("MinSchemaVersion %d is above the newest version the code reads", tenantdb.MinSchemaVersion)
	}
}

// TestMigrateToEveryVersionAndBack walks the embedded files up one version
// at a time, then down again: each down file must give back exactly the
// schema of the version before, down to an empty database, and up works
// again after.
func TestMigrateToEveryVersionAndBack(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	m := tenantdb.Embedded()
	var versions []uint
	for v := uint(1); v <= m.Latest(); v++ {
		if m.Has(v) {
			versions = append(versions, v)
		}
	}
	at := map[uint]string{0: schema(t, dsn)}
	for _, v := range versions {
		migrateTo(t, m, dsn, v)
		at[v] = schema(t, dsn)
		if got, dirty := versionOf(t, dsn); got != v || dirty {
			t.Fatalf("version %d (dirty %v) after migrating to %d", got, dirty, v)
		}
	}
	for i := len(versions) - 1; i >= 0; i-- {
		prev := uint(0)
		if i > 0 {
			prev = versions[i-1]
		}
		res := migrateTo(t, m, dsn, prev)
		if res.From != versions[i] {
			t.Fatalf("rolled back from %d, want %d", res.From, versions[i])
		}
		if got := schema(t, dsn); got != at[prev] {
			t.Fatalf("after the down file of %d the schema is\n%s\nwant that of version %d:\n%s", versions[i], got, prev, at[prev])
		}
	}
	if got, dirty := versionOf(t, dsn); got != 0 || dirty {
		t.Fatalf("version %d (dirty %v) after migrating down to 0", got, dirty)
	}
	migrateTo(t, m, dsn, m.Latest())
	if got := schema(t, dsn); got != at[m.Latest()] {
		t.Fatalf("up again gave another schema:\n%s", got)
	}
	// Several versions down at once, then up at once.
	if res := migrateTo(t, m, dsn, versions[0]); res.From != m.Latest() {
		t.Fatalf("from %d", res.From)
	}
	migrateTo(t, m, dsn, m.Latest())
	if _, err := tenantdb.Migrate(dsn); err != nil {
		t.Fatalf("Migrate on an up to date database: %v", err)
	}
}

// files is a migration set of name/body pairs in directory "m".
func files(t *testing.T, pairs ...string) tenantdb.Migrations {
	t.Helper()
	m, err := tenantdb.NewMigrations(mapFS(pairs...), "m")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mapFS(pairs ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i := 0; i < len(pairs); i += 2 {
		fsys["m/"+pairs[i]] = &fstest.MapFile{Data: []byte(pairs[i+1])}
	}
	return fsys
}

var twoVersions = []string{
	"1_t.up.sql", "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n",
	"1_t.down.sql", "BEGIN;\nDROP TABLE t;\nCOMMIT;\n",
	"2_bad.up.sql", "BEGIN;\nALTER TABLE t ADD COLUMN a int;\nSELECT 1/0;\nCOMMIT;\n",
	"2_bad.down.sql", "BEGIN;\nALTER TABLE t DROP COLUMN a;\nCOMMIT;\n",
}

// TestMigrateToFailingFileLeavesTheVersionBefore runs a file that fails
// half-way: its transaction is rolled back, the version is the one before,
// clean, and the error names the file and the server's reason.
func TestMigrateToFailingFileLeavesTheVersionBefore(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	m := files(t, twoVersions...)
	res, err := m.MigrateTo(context.Background(), dsn, 2, tenantdb.MigrateOptions{})
	var step *tenantdb.StepError
	if !errors.As(err, &step) || step.File != "2_bad.up.sql" {
		t.Fatalf("err = %v, want a StepError of 2_bad.up.sql", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "2_bad.up.sql: ERROR: division by zero (SQLSTATE 22012)") {
		t.Fatalf("error %q does not name the file and the reason", msg)
	}
	if res.From != 0 || res.To != 1 {
		t.Fatalf("result %+v, want from 0 to 1", res)
	}
	if v, dirty := versionOf(t, dsn); v != 1 || dirty {
		t.Fatalf("version %d dirty %v, want 1 clean", v, dirty)
	}
	var columns int
	testenv.QueryRow(t, dsn, `SELECT count(*) FROM information_schema.columns WHERE table_name = 't' AND column_name = 'a'`, nil, &columns)
	if columns != 0 {
		t.Fatal("the failed file's first statement was kept")
	}
}

// TestMigrateToInterruptedStepLeavesNoTrace stops a step after its file
// ran, before the commit (what a crash does): nothing of it stays, and the
// version is clean, so the next run simply runs it again.
func TestMigrateToInterruptedStepLeavesNoTrace(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	m := tenantdb.Embedded()
	migrateTo(t, m, dsn, 1)
	before := schema(t, dsn)
	crash := errors.New("killed")
	_, err := m.MigrateTo(context.Background(), dsn, 2, tenantdb.MigrateOptions{
		BeforeCommit: func(context.Context, uint) error { return crash },
	})
	if !errors.Is(err, crash) {
		t.Fatalf("err = %v", err)
	}
	if v, dirty := versionOf(t, dsn); v != 1 || dirty {
		t.Fatalf("version %d dirty %v, want 1 clean", v, dirty)
	}
	if schema(t, dsn) != before {
		t.Fatal("the interrupted step left changes")
	}
	migrateTo(t, m, dsn, 2)
}

// TestMigrateToRefusesDirtyDatabases finds a version golang-migrate left
// dirty: nothing runs, the error names the version and its file, and the
// flag stays as it was.
func TestMigrateToRefusesDirtyDatabases(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	m := tenantdb.Embedded()
	migrateTo(t, m, dsn, 1)
	testenv.Exec(t, dsn, `UPDATE schema_migrations SET version = 2, dirty = TRUE`)
	for _, target := range []uint{2, 1} {
		res, err := m.MigrateTo(context.Background(), dsn, target, tenantdb.MigrateOptions{})
		var dirty *tenantdb.DirtyError
		if !errors.As(err, &dirty) || dirty.Version != 2 || dirty.File != m.File(2, true) {
			t.Fatalf("to %d: err = %v, want a DirtyError at 2 naming %s", target, err, m.File(2, true))
		}
		if !strings.Contains(err.Error(), "dirty at version 2 ("+m.File(2, true)+")") {
			t.Fatalf("error %q", err)
		}
		if res.From != 2 || res.To != 2 {
			t.Fatalf("result %+v", res)
		}
	}
	if v, dirty := versionOf(t, dsn); v != 2 || !dirty {
		t.Fatalf("version %d dirty %v: the flag was changed", v, dirty)
	}
}

// TestMigrateToUnknownVersion refuses a database migrated by a newer binary
// beyond the files this one carries, and a target that is not a version.
func TestMigrateToUnknownVersion(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	m := tenantdb.Embedded()
	migrateTo(t, m, dsn, m.Latest())
	testenv.Exec(t, dsn, `UPDATE schema_migrations SET version = $1`, int64(m.Latest()+7))
	if _, err := m.MigrateTo(context.Background(), dsn, m.Latest(), tenantdb.MigrateOptions{}); err == nil ||
		!strings.Contains(err.Error(), "does not carry") {
		t.Fatalf("err = %v, want the unknown version refused", err)
	}
	if _, err := m.MigrateTo(context.Background(), dsn, m.Latest()+1, tenantdb.MigrateOptions{}); err == nil {
		t.Fatal("a target without a file was accepted")
	}
}

// TestMigrateToWaitsForGolangMigratesLock holds the advisory lock
// golang-migrate takes on a database: MigrateTo waits for it (here until
// its context ends), then runs once it is released.
func TestMigrateToWaitsForGolangMigratesLock(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	ctx := context.Background()
	holder, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	var db, schema string
	if err := holder.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err != nil {
		t.Fatal(err)
	}
	key, err := database.GenerateAdvisoryLockId(db, schema, "schema_migrations")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_lock($1::text::bigint)`, key); err != nil {
		t.Fatal(err)
	}
	wait, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := tenantdb.Embedded().MigrateTo(wait, dsn, 1, tenantdb.MigrateOptions{}); err == nil {
		t.Fatal("migrated while golang-migrate's lock was held")
	}
	if v, _ := versionOf(t, dsn); v != 0 {
		t.Fatalf("version %d while locked", v)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_unlock($1::text::bigint)`, key); err != nil {
		t.Fatal(err)
	}
	migrateTo(t, tenantdb.Embedded(), dsn, 1)
}

// TestNewMigrationsChecksTheFiles refuses sets a step could not run as one
// transaction, or could not roll back.
func TestNewMigrationsChecksTheFiles(t *testing.T) {
	t.Parallel()
	ok := "BEGIN;\nSELECT 1;\nCOMMIT;\n"
	cases := []struct {
		name  string
		files []string
		want  string
	}{
		{"no transaction", []string{"1_a.up.sql", "SELECT 1;", "1_a.down.sql", ok}, "must be one transaction"},
		{"two transactions", []string{"1_a.up.sql", "BEGIN;\nSELECT 1;\nCOMMIT;\nBEGIN;\nSELECT 2;\nCOMMIT;", "1_a.down.sql", ok}, "may not begin, commit"},
		{"statement after the commit", []string{"1_a.up.sql", ok + "SELECT 2;", "1_a.down.sql", ok}, "must be one transaction"},
		{"no down file", []string{"1_a.up.sql", ok}, "has no down file"},
		{"no up file", []string{"1_a.up.sql", ok, "1_a.down.sql", ok, "2_b.down.sql", ok}, "has no up file"},
		{"bad name", []string{"a.up.sql", ok}, "is not named"},
		{"version zero", []string{"0_a.up.sql", ok, "0_a.down.sql", ok}, "start at 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tenantdb.NewMigrations(mapFS(tc.files...), "m"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Comments before BEGIN, lower case and a PL/pgSQL block are fine.
	plpgsql := "-- a comment\nbegin;\nDO $$\nBEGIN\n  PERFORM 1;\nEND;\n$$;\ncommit;\n"
	if _, err := tenantdb.NewMigrations(mapFS("1_a.up.sql", plpgsql, "1_a.down.sql", ok), "m"); err != nil {
		t.Fatal(err)
	}
}

// TestRecordLogin writes last_login_at from the version that has the
// column, and nothing (and no error) below it.
func TestRecordLogin(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	m := tenantdb.Embedded()
	migrateTo(t, m, dsn, tenantdb.LastLoginVersion-1)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	u, err := tenantdb.InsertUser(ctx, conn, "ada@example.com", "x", tenantdb.RoleMember)
	if err != nil {
		t.Fatal(err)
	}
	if err := tenantdb.RecordLogin(ctx, conn, tenantdb.LastLoginVersion-1, u.ID); err != nil {
		t.Fatalf("below the column's version: %v", err)
	}
	// A caller that still believes the newer version after a rollback.
	if err := tenantdb.RecordLogin(ctx, conn, tenantdb.LastLoginVersion, u.ID); err != nil {
		t.Fatalf("without the column: %v", err)
	}
	migrateTo(t, m, dsn, tenantdb.LastLoginVersion)
	var last *time.Time
	testenv.QueryRow(t, dsn, `SELECT last_login_at FROM tenantuser WHERE id = $1`, []any{u.ID}, &last)
	if last != nil {
		t.Fatalf("last_login_at = %v before any recorded login", last)
	}
	if err := tenantdb.RecordLogin(ctx, conn, tenantdb.LastLoginVersion, u.ID); err != nil {
		t.Fatal(err)
	}
	testenv.QueryRow(t, dsn, `SELECT last_login_at FROM tenantuser WHERE id = $1`, []any{u.ID}, &last)
	if last == nil || time.Since(*last) > time.Hour {
		t.Fatalf("last_login_at = %v, want now", last)
	}
}
