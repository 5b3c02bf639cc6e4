package app_test

import (
	"context"
	"io/fs"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/pgutil"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
)

// TestMigrationsUpDownUp applies every migration, reverts them all, and
// applies them again: the down files must undo the up files completely.
func TestMigrationsUpDownUp(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dir    string
		files  fs.FS
		tables []string
	}{
		{"core", migrations.Core, []string{"coreuser", "organization", "event_outbox", "deployment", "db_server", "migration_run", "migration_run_tenant",
			"river_job", "river_migration", "river_leader", "river_queue", "audit_log", "invitation_token", "provisioning_attempt"}},
		{"tenant", migrations.Tenant, []string{"tenantuser", "refresh_token", "audit_log"}},
	}
	for _, tc := range cases {
		t.Run(tc.dir, func(t *testing.T) {
			dsn := testenv.NewDatabase(t)
			latest, err := pgutil.LatestVersion(tc.files, tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			tables := func() []string {
				ctx := context.Background()
				conn, err := pgx.Connect(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(ctx)
				rows, err := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public'
					AND tablename <> 'schema_migrations' ORDER BY tablename`)
				if err != nil {
					t.Fatal(err)
				}
				names, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					t.Fatal(err)
				}
				return names
			}
			for round := 1; round <= 2; round++ {
				v, err := pgutil.Migrate(dsn, tc.files, tc.dir)
				if err != nil || v != latest {
					t.Fatalf("round %d: up = %d, %v; want version %d", round, v, err, latest)
				}
				got := tables()
				for _, want := range tc.tables {
					if !slices.Contains(got, want) {
						t.Fatalf("round %d: table %s missing after up; have %v", round, want, got)
					}
				}
				if err := pgutil.MigrateDown(dsn, tc.files, tc.dir); err != nil {
					t.Fatalf("round %d: down: %v", round, err)
				}
				if left := tables(); len(left) != 0 {
					t.Fatalf("round %d: tables left after down: %v", round, left)
				}
			}
		})
	}
}
