package app_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/pgcluster"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/testenv"
	"tenantbase/migrations"
	"tenantbase/services/control-plane/app"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.Version = "1.2.3-test" }})

	t.Run("process", func(t *testing.T) {
		res := h.do(t, http.MethodGet, "/health", nil)
		res.expect(t, http.StatusOK, "")
		var body struct {
			Status    string    `json:"status"`
			Timestamp time.Time `json:"timestamp"`
			Version   string    `json:"version"`
		}
		res.Decode(t, &body)
		if body.Status != "ok" || body.Version != "1.2.3-test" || time.Since(body.Timestamp).Abs() > time.Minute {
			t.Fatalf("health %s", res.Body)
		}
	})

	t.Run("database", func(t *testing.T) {
		res := h.do(t, http.MethodGet, "/health/db", nil)
		res.expect(t, http.StatusOK, "")
		if !strings.Contains(string(res.Body), `"database":"ok"`) {
			t.Fatalf("health/db %s", res.Body)
		}
	})

	t.Run("openapi document", func(t *testing.T) {
		res := h.do(t, http.MethodGet, "/openapi.yaml", nil)
		res.expect(t, http.StatusOK, "")
		if string(res.Body) != string(app.OpenAPI) || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/yaml") {
			t.Fatalf("openapi.yaml served as %q, %d bytes", res.Header.Get("Content-Type"), len(res.Body))
		}
	})

	t.Run("metrics on the internal listener only", func(t *testing.T) {
		res := h.send(t, h.InternalURL, http.MethodGet, "/metrics", nil)
		if res.Status != http.StatusOK || !strings.Contains(string(res.Body), `http_request_duration_seconds_count{method="GET",route="/health",status="200"}`) {
			t.Fatalf("internal /metrics answered %d:\n%.2000s", res.Status, res.Body)
		}
		h.do(t, http.MethodGet, "/metrics", nil, undocumented()).expect(t, http.StatusNotFound, "not_found")
	})

	t.Run("core migrations applied", func(t *testing.T) {
		latest, err := pgutil.LatestVersion(migrations.Core, "core")
		if err != nil {
			t.Fatal(err)
		}
		var version int64
		var dirty bool
		if err := h.db(t).QueryRow(context.Background(), `SELECT version, dirty FROM schema_migrations`).Scan(&version, &dirty); err != nil {
			t.Fatal(err)
		}
		if uint(version) != latest || dirty {
			t.Fatalf("schema at version %d (dirty %v), want %d", version, dirty, latest)
		}
	})
}

// TestHealthDBDownAndBack points the control plane at a Postgres cluster
// the test owns, stops it and starts it again on the same port: /health/db
// follows without a restart of the service.
func TestHealthDBDownAndBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "pg")
	port := testenv.FreePort(t)
	cluster, err := pgcluster.Start(ctx, dir, port)
	if err != nil {
		t.Fatalf("start a throwaway cluster: %v", err)
	}
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if cluster != nil {
			cluster.Stop()
		}
	})
	if err := pgcluster.EnsureDatabase(ctx, cluster.DSN("postgres"), "core"); err != nil {
		t.Fatal(err)
	}
	h := startControlPlane(t, harnessOptions{DatabaseURL: cluster.DSN("core")})
	_, tok := h.signUp(t, "user@example.com", password, false)

	h.do(t, http.MethodGet, "/health/db", nil).expect(t, http.StatusOK, "")

	mu.Lock()
	if err := cluster.Stop(); err != nil {
		mu.Unlock()
		t.Fatalf("stop the cluster: %v", err)
	}
	cluster = nil
	mu.Unlock()

	h.do(t, http.MethodGet, "/health/db", nil).expect(t, http.StatusServiceUnavailable, "database_unavailable")
	h.do(t, http.MethodGet, "/health", nil).expect(t, http.StatusOK, "")
	// Requests that need the database say why they fail meanwhile.
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).expect(t, http.StatusServiceUnavailable, "database_unavailable")
	h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "user@example.com", "password": password}).
		expect(t, http.StatusServiceUnavailable, "database_unavailable")

	restarted, err := pgcluster.Start(ctx, dir, port)
	if err != nil {
		t.Fatalf("restart the cluster: %v", err)
	}
	mu.Lock()
	cluster = restarted
	mu.Unlock()

	testenv.Eventually(t, 30*time.Second, func() bool {
		res, err := http.Get(h.PublicURL + "/health/db")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, "/health/db back to 200")
	h.do(t, http.MethodGet, "/health/db", nil).expect(t, http.StatusOK, "")
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).expect(t, http.StatusOK, "")
}

// TestHealthConcurrentStartup starts two instances on one empty database
// at the same moment: the migrations and the bootstrap admin happen once,
// and both instances serve.
func TestHealthConcurrentStartup(t *testing.T) {
	t.Parallel()
	dsn := testenv.NewDatabase(t)
	instances := make([]*harness, 2)
	var wg sync.WaitGroup
	for i := range instances {
		wg.Go(func() { instances[i] = startControlPlane(t, harnessOptions{DatabaseURL: dsn}) })
	}
	wg.Wait()
	for _, h := range instances {
		if h == nil {
			t.FailNow()
		}
		h.do(t, http.MethodGet, "/health/db", nil).expect(t, http.StatusOK, "")
		h.loginAdmin(t)
	}
	var admins int
	if err := instances[0].db(t).QueryRow(context.Background(), `SELECT count(*) FROM coreuser WHERE is_admin`).Scan(&admins); err != nil {
		t.Fatal(err)
	}
	if admins != 1 {
		t.Fatalf("%d bootstrap admins, want 1", admins)
	}
}
