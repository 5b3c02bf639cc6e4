package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/auth"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
)

func refreshDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	dsn := testenv.MigratedDatabase(t, "tenant", migrations.Tenant, func(dsn string) error {
		_, err := tenantdb.Migrate(dsn)
		return err
	})
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestRefreshTokensArePurged leaves a user with a live, a used, a revoked
// and an expired token: the purge removes the two that can never be used
// again, and the used one still revokes its family when presented again.
func TestRefreshTokensArePurged(t *testing.T) {
	t.Parallel()
	db := refreshDB(t)
	ctx := context.Background()
	var userID int64
	if err := db.QueryRow(ctx, `INSERT INTO tenantuser (email, password_hash) VALUES ('ada@example.com', 'x') RETURNING id`).Scan(&userID); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM refresh_token`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	used, err := auth.IssueRefresh(ctx, db, userID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, live, err := auth.RotateRefresh(ctx, db, used, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := auth.IssueRefresh(ctx, db, userID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := auth.IssueRefresh(ctx, db, userID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.RevokeRefresh(ctx, db, revoked); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE refresh_token SET expires_at = now() - interval '1 second' WHERE token_hash = $1`, auth.HashToken(expired)); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 4 {
		t.Fatalf("%d tokens before the purge, want 4", n)
	}
	if n, err := auth.PurgeRefresh(ctx, db); err != nil || n != 2 {
		t.Fatalf("PurgeRefresh = %d, %v; want the revoked and the expired token", n, err)
	}
	if _, _, err := auth.RotateRefresh(ctx, db, used, time.Hour); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("reusing the rotated token: %v, want ErrInvalidRefresh", err)
	}
	if _, _, err := auth.RotateRefresh(ctx, db, live, time.Hour); !errors.Is(err, auth.ErrInvalidRefresh) {
		t.Fatalf("the family survived the reuse of its rotated token: %v", err)
	}

	// A login clears the user's dead tokens by itself.
	if _, err := auth.IssueRefresh(ctx, db, userID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d tokens after a login, want only the new one", n)
	}
}
