package app_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"tenantbase/libs/problem"
	"tenantbase/libs/tenantapi"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

func TestInternalTenantAPI(t *testing.T) {
	t.Parallel()
	// Provisioning of the second organization is held at its first step
	// until released, to see a tenant that is not ready yet.
	var held atomic.Int64
	release := make(chan struct{})
	cp := cptest.Start(t, cptest.Options{
		RunOptions: []app.Option{app.WithBeforeProvisionStep(func(ctx context.Context, orgID int64, step string) error {
			if orgID == held.Load() {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})},
	})
	releaseAll := sync.OnceFunc(func() { close(release) })
	defer releaseAll()
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	admin := cp.LoginAdmin(t)
	ready := cp.CreateReadyOrganization(t, owner, "Ready")
	suspended := cp.CreateReadyOrganization(t, owner, "Suspended")
	cp.Do(t, http.MethodPost, "/admin/organizations/"+strconv.FormatInt(suspended.ID, 10)+"/suspend", admin, nil).Expect(t, http.StatusOK)
	var provisioningID int64
	testenv.QueryRow(t, cp.DatabaseURL, `SELECT last_value + 1 FROM organization_id_seq`, nil, &provisioningID)
	held.Store(provisioningID)
	provisioning := cp.CreateOrganization(t, owner.AccessToken, "Provisioning")
	if provisioning.ID != provisioningID {
		t.Fatalf("created %d, expected %d", provisioning.ID, provisioningID)
	}

	get := func(t *testing.T, path, authorization string) (int, []byte, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, cp.InternalURL+path, nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b, res.Header
	}
	tenantPath := func(id int64) string { return "/internal/tenants/" + strconv.FormatInt(id, 10) }
	good := "Bearer " + cptest.ServiceToken

	auth := []struct {
		name          string
		authorization string
	}{
		{"no credential", ""},
		{"wrong token", "Bearer not-the-service-token"},
		{"token prefix", "Bearer " + cptest.ServiceToken[:len(cptest.ServiceToken)-1]},
		{"token with a suffix", good + "x"},
		{"basic scheme", "Basic " + cptest.ServiceToken},
		{"an owner's access token", "Bearer " + owner.AccessToken},
	}
	for _, tc := range auth {
		t.Run("401 with "+tc.name, func(t *testing.T) {
			status, body, header := get(t, tenantPath(ready.ID), tc.authorization)
			if status != http.StatusUnauthorized || !strings.Contains(string(body), `"code":"unauthorized"`) ||
				!strings.HasPrefix(header.Get("Content-Type"), problem.ContentType) {
				t.Fatalf("status %d, body %s; want a 401 unauthorized problem", status, body)
			}
			if strings.Contains(string(body), "tenant_") {
				t.Fatalf("401 reveals tenant details: %s", body)
			}
		})
	}

	lookups := []struct {
		name     string
		path     string
		status   int
		code     string
		want     tenantapi.Status
		database bool
	}{
		{"ready", tenantPath(ready.ID), http.StatusOK, "", "ready", true},
		{"suspended", tenantPath(suspended.ID), http.StatusOK, "", "suspended", false},
		{"provisioning", tenantPath(provisioning.ID), http.StatusOK, "", "provisioning", false},
		{"unknown", tenantPath(ready.ID + 1_000), http.StatusNotFound, "tenant_not_found", "", false},
		{"not a number", "/internal/tenants/abc", http.StatusNotFound, "tenant_not_found", "", false},
		{"zero", "/internal/tenants/0", http.StatusNotFound, "tenant_not_found", "", false},
	}
	for _, tc := range lookups {
		t.Run(tc.name, func(t *testing.T) {
			res := cp.Internal(t, http.MethodGet, tc.path)
			if tc.code != "" {
				expectProblem(t, res, tc.status, tc.code)
				return
			}
			res.Expect(t, tc.status)
			var raw map[string]any
			res.Decode(t, &raw)
			var tenant tenantapi.Tenant
			res.Decode(t, &tenant)
			if tenant.Status != tc.want || (tenant.Database != nil) != tc.database {
				t.Fatalf("tenant %+v, want status %s with database %v", tenant, tc.want, tc.database)
			}
			for _, key := range []string{"id", "deployment", "status", "schema_version"} {
				if _, ok := raw[key]; !ok {
					t.Fatalf("answer lacks %q: %s", key, res.Body)
				}
			}
			if tc.database {
				db := tenant.Database
				name := cp.DatabaseName(t, tenant.ID)
				assertTenantName(t, cp, tenant.ID, name)
				if db.Name != name || db.User != name || db.Host == "" || db.Port == 0 || db.Password == "" {
					t.Fatalf("database %+v", db)
				}
				var n int
				testenv.QueryRow(t, cptest.DSN(db), `SELECT count(*) FROM tenantuser`, nil, &n)
				if res.Header.Get("Cache-Control") != "no-store" {
					t.Fatalf("Cache-Control %q, want no-store", res.Header.Get("Cache-Control"))
				}
			}
		})
	}

	t.Run("the public listener has no internal routes", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, cp.PublicURL+tenantPath(ready.ID), nil)
		req.Header.Set("Authorization", good)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Fatalf("public GET %s = %d, want 404", tenantPath(ready.ID), res.StatusCode)
		}
	})

	t.Run("the password appears nowhere else", func(t *testing.T) {
		password := cp.Tenant(t, ready.ID).Database.Password
		public := cp.Do(t, http.MethodGet, "/organizations/"+strconv.FormatInt(ready.ID, 10), owner.AccessToken, nil)
		list := cp.Do(t, http.MethodGet, "/organizations", admin, nil)
		var outbox string
		testenv.QueryRow(t, cp.DatabaseURL, `SELECT coalesce(string_agg(payload::text, ''), '') FROM event_outbox`, nil, &outbox)
		var sealed []byte
		testenv.QueryRow(t, cp.DatabaseURL, `SELECT db_password_enc FROM organization WHERE id = $1`, []any{ready.ID}, &sealed)
		for name, text := range map[string]string{
			"public organization": string(public.Body),
			"public list":         string(list.Body),
			"event outbox":        outbox,
			"stored credential":   string(sealed),
			"logs":                cp.Logs(),
		} {
			if strings.Contains(text, password.Reveal()) {
				t.Errorf("the tenant database password appears in the %s", name)
			}
		}
	})

	t.Run("provisioning completes once released", func(t *testing.T) {
		releaseAll()
		cp.WaitStatus(t, owner.AccessToken, provisioning.ID, "ready", readyTimeout)
		if tenant := cp.Tenant(t, provisioning.ID); tenant.Database == nil {
			t.Fatalf("ready tenant without database: %+v", tenant)
		}
	})
}
