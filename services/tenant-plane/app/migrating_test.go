package app_test

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/openapitest"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/tenant-plane/app"
)

// TestTenantBelowMinimumSchemaIsMigrating plays a release whose contract
// step needs schema version 2 while a tenant was rolled back to 1: that
// tenant answers 503 tenant_migrating with Retry-After, and is served
// again as soon as a migration run brings it to 2 (tenant.migrated drops
// the cached version). A plane of the release before (minimum 1) serves
// the tenant at 1 all along, and logins are recorded only where the
// schema has last_login_at.
func TestTenantBelowMinimumSchemaIsMigrating(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner-password-1")
	org := cp.CreateReadyOrganization(t, owner, "Acme")
	admin := cp.LoginAdmin(t)
	const contract = tenantdb.LastLoginVersion

	start := func(opts ...app.Option) (string, *openapitest.Validator) {
		cfg := app.DefaultConfig()
		cfg.Env = "test"
		cfg.HTTPAddr, cfg.InternalAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.ControlPlaneURL = cp.InternalURL
		cfg.ServiceToken = cptest.ServiceToken
		cfg.NATSURL = cp.NATS.URL()
		cfg.KeysDir = t.TempDir()
		cfg.BcryptCost = bcrypt.MinCost
		cfg.ShutdownTimeout = 10 * time.Second
		_, addrs := testenv.StartService(t, "tenant plane", slog.LevelInfo, func(ctx context.Context, log *slog.Logger, ready func(app.Addrs)) error {
			return app.Run(ctx, cfg, log, append(opts, app.WithReady(ready))...)
		})
		return "http://" + addrs.Public, openapitest.New(t, app.OpenAPI)
	}
	login := func(base string, spec *openapitest.Validator) *testenv.Response {
		req := testenv.JSONRequest(t, http.MethodPost, base+"/auth/login",
			map[string]string{"email": owner.Email, "password": owner.Password})
		req.Header.Set("X-TENANT", strconv.FormatInt(org.ID, 10))
		return testenv.Send(t, http.DefaultClient, req, spec.Check)
	}
	lastLogin := func() *time.Time {
		var last *time.Time
		testenv.QueryRow(t, cptest.DSN(cp.Tenant(t, org.ID).Database), `SELECT last_login_at FROM tenantuser WHERE email = $1`,
			[]any{owner.Email}, &last)
		return last
	}
	migrate := func(target int) {
		var run struct {
			ID     int64  `json:"id"`
			Status string `json:"status"`
		}
		cp.Do(t, http.MethodPost, "/admin/migrations", admin, map[string]any{"target_version": target}).
			Expect(t, http.StatusAccepted).Decode(t, &run)
		testenv.Eventually(t, time.Minute, func() bool {
			cp.Do(t, http.MethodGet, "/admin/migrations/"+strconv.FormatInt(run.ID, 10), admin, nil).
				Expect(t, http.StatusOK).Decode(t, &run)
			return run.Status == "completed"
		}, "migration run completed")
	}

	next, nextSpec := start(app.WithMinSchemaVersion(contract))
	current, currentSpec := start()

	// At the newest version both serve, and the login is recorded.
	login(next, nextSpec).Expect(t, http.StatusOK)
	if lastLogin() == nil {
		t.Fatal("a login at the newest version left last_login_at empty")
	}

	migrate(contract - 1)
	testenv.Eventually(t, 30*time.Second, func() bool {
		return login(next, nextSpec).Status == http.StatusServiceUnavailable
	}, "the tenant below the minimum refused")
	res := login(next, nextSpec).ExpectProblem(t, http.StatusServiceUnavailable, "tenant_migrating")
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", res.Header.Get("Retry-After"))
	}
	// The release before still serves it: an expand step below its minimum.
	login(current, currentSpec).Expect(t, http.StatusOK)

	migrate(contract)
	testenv.Eventually(t, 30*time.Second, func() bool {
		return login(next, nextSpec).Status == http.StatusOK
	}, "the migrated tenant served again")
	if last := lastLogin(); last == nil || time.Since(*last) > time.Minute {
		t.Fatalf("last_login_at = %v after a login at version %d", last, contract)
	}
}
