package accounts_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/internal/accounts"
)

// sentMail records what the service hands to its mailer.
type sentMail struct {
	mu sync.Mutex
	to []string
}

func (m *sentMail) Send(_ context.Context, to, _, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.to = append(m.to, to)
	return nil
}

func newService(t *testing.T) (*accounts.Service, *pgxpool.Pool, *sentMail) {
	t.Helper()
	dsn := testenv.MigratedDatabase(t, "core", migrations.Core, func(dsn string) error {
		_, err := pgutil.Migrate(dsn, migrations.Core, "core")
		return err
	})
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	pw, err := auth.NewPasswords(4, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	mail := &sentMail{}
	svc := accounts.New(pool, pw, auth.NewKeys("test", priv), mail, accounts.Options{
		PublicURL: "http://tenantbase.test", OpenOwnerSignup: true,
		AccessTokenTTL: time.Minute, RefreshTokenTTL: time.Hour,
		Throttle: auth.Throttle{MaxFailures: 3, Lockout: time.Minute},
	})
	t.Cleanup(svc.Close)
	return svc, pool, mail
}

// Concurrent resends for one account must leave exactly one live link,
// or a link the user was told is void would still work.
func TestResendVerificationConcurrent(t *testing.T) {
	t.Parallel()
	svc, pool, mail := newService(t)
	ctx := context.Background()
	u, err := svc.Register(ctx, accounts.Registration{Email: "user@example.com", Password: "correct-horse-1"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := svc.ResendVerification(ctx, "user@example.com"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var live int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM verification_token WHERE user_id = $1 AND used_at IS NULL`, u.ID).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 1 {
		t.Fatalf("%d live verification tokens, want 1", live)
	}
	svc.Close()
	if len(mail.to) != 9 {
		t.Fatalf("%d mails sent, want 9 (registration and 8 resends)", len(mail.to))
	}
}

func TestEnsureAdminConcurrent(t *testing.T) {
	t.Parallel()
	svc, pool, _ := newService(t)
	ctx := context.Background()
	created := make([]bool, 4)
	var wg sync.WaitGroup
	for i := range created {
		wg.Go(func() {
			var err error
			if created[i], err = svc.EnsureAdmin(ctx, "Root@Example.com", "root-password-1"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	n := 0
	for _, c := range created {
		if c {
			n++
		}
	}
	var admins int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM coreuser WHERE email = 'root@example.com' AND is_admin AND is_owner AND is_verified`).Scan(&admins); err != nil {
		t.Fatal(err)
	}
	if n != 1 || admins != 1 {
		t.Fatalf("%d calls reported creating the admin, %d admins exist; want 1 and 1", n, admins)
	}
}

// TestParallelGuessesAreBounded sends 20 wrong passwords at once against a
// limit of 3: exactly 3 are compared, the rest refused as locked, and the
// right password is refused too while the lock lasts.
func TestParallelGuessesAreBounded(t *testing.T) {
	t.Parallel()
	svc, pool, _ := newService(t)
	ctx := context.Background()
	u, err := svc.Register(ctx, accounts.Registration{Email: "user@example.com", Password: "correct-horse-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE coreuser SET is_verified = TRUE WHERE id = $1`, u.ID); err != nil {
		t.Fatal(err)
	}
	const guesses = 20
	errs := make([]error, guesses)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { _, errs[i] = svc.Login(ctx, "user@example.com", "wrong-password-1") })
	}
	wg.Wait()
	var compared, locked int
	for _, err := range errs {
		switch {
		case errors.Is(err, auth.ErrInvalidCredentials):
			compared++
		case apperr.IsLocked(err):
			locked++
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if compared != 3 || locked != guesses-3 {
		t.Fatalf("%d guesses compared, %d refused as locked; want 3 and %d", compared, locked, guesses-3)
	}
	if _, err := svc.Login(ctx, "user@example.com", "correct-horse-1"); !apperr.IsLocked(err) {
		t.Fatalf("the right password during the lock: %v, want locked", err)
	}
}
