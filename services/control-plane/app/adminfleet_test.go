package app_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

type orgPage struct {
	Items      []cptest.Organization `json:"items"`
	NextCursor *string               `json:"next_cursor"`
}

// TestFleetViews checks what platform admins see of the fleet: every
// organization, filtered and paged; one organization with its owner, its
// database server and its provisioning attempts in readable words; and
// retry and deletion of anyone's organization through the admin paths.
func TestFleetViews(t *testing.T) {
	t.Parallel()
	var core string
	var healed atomic.Bool
	var flakyOnce sync.Map
	name := func(ctx context.Context, orgID int64) (string, error) {
		conn, err := pgx.Connect(ctx, core)
		if err != nil {
			return "", err
		}
		defer conn.Close(ctx)
		var n string
		err = conn.QueryRow(ctx, `SELECT name FROM organization WHERE id = $1`, orgID).Scan(&n)
		return n, err
	}
	cp := cptest.Start(t, cptest.Options{
		Configure: func(c *app.Config) { c.ProvisionMaxAttempts = 2 },
		RunOptions: []app.Option{app.WithBeforeProvisionStep(func(ctx context.Context, orgID int64, step string) error {
			if step != "migrate" {
				return nil
			}
			n, err := name(ctx, orgID)
			if err != nil {
				return err
			}
			switch {
			case strings.HasPrefix(n, "Flaky"):
				if _, failed := flakyOnce.LoadOrStore(orgID, true); !failed {
					return errors.New("injected: relation \"secret_table\" does not exist")
				}
			case strings.HasPrefix(n, "Broken") && !healed.Load():
				return errors.New("injected: relation \"secret_table\" does not exist")
			}
			return nil
		})},
	})
	core = cp.DatabaseURL
	admin := cp.LoginAdmin(t)
	alice := cp.SignUpOwner(t, "alice@example.com", "alice-password-1")
	bob := cp.SignUpOwner(t, "bob@example.com", "bob-password-1")

	flaky := cp.CreateOrganization(t, alice.AccessToken, "Flaky Acme Corp")
	broken := cp.CreateOrganization(t, alice.AccessToken, "Broken Widgets")
	plain := cp.CreateOrganization(t, bob.AccessToken, "Bob's Garage")
	cp.WaitStatus(t, admin, flaky.ID, "ready", 2*time.Minute)
	cp.WaitStatus(t, admin, broken.ID, "failed", 2*time.Minute)
	cp.WaitStatus(t, admin, plain.ID, "ready", 2*time.Minute)

	list := func(t *testing.T, query string) orgPage {
		t.Helper()
		var p orgPage
		cp.Do(t, http.MethodGet, "/admin/organizations"+query, admin, nil).Expect(t, http.StatusOK).Decode(t, &p)
		return p
	}
	ids := func(p orgPage) []int64 {
		out := []int64{}
		for _, o := range p.Items {
			out = append(out, o.ID)
		}
		return out
	}
	t.Run("list", func(t *testing.T) {
		cases := []struct {
			query string
			want  []int64
		}{
			{"", []int64{plain.ID, broken.ID, flaky.ID}},
			{"?status=failed", []int64{broken.ID}},
			{"?owner_id=" + id(alice.ID), []int64{broken.ID, flaky.ID}},
			{"?q=acme", []int64{flaky.ID}},
			{"?q=%25", []int64{}}, // a wildcard is a plain character
			{"?q=garage&owner_id=" + id(alice.ID), []int64{}},
		}
		for _, tc := range cases {
			if got := ids(list(t, tc.query)); !slices.Equal(got, tc.want) {
				t.Errorf("GET /admin/organizations%s = %v, want %v", tc.query, got, tc.want)
			}
		}
		first := list(t, "?limit=2")
		if !slices.Equal(ids(first), []int64{plain.ID, broken.ID}) || first.NextCursor == nil {
			t.Fatalf("first page %v next %v", ids(first), first.NextCursor)
		}
		if rest := list(t, "?limit=2&cursor="+*first.NextCursor); !slices.Equal(ids(rest), []int64{flaky.ID}) || rest.NextCursor != nil {
			t.Fatalf("second page %v", ids(rest))
		}
		for _, bad := range []string{"?status=gone", "?owner_id=0", "?owner_id=x", "?limit=0", "?q=" + strings.Repeat("a", 101)} {
			cp.Do(t, http.MethodGet, "/admin/organizations"+bad, admin, nil).Expect(t, http.StatusUnprocessableEntity)
		}
		// The refusal names every status, moving included, and moving is a filter.
		p := cp.Do(t, http.MethodGet, "/admin/organizations?status=gone", admin, nil).Expect(t, http.StatusUnprocessableEntity).Problem(t)
		if len(p.Errors) != 1 || p.Errors[0].Field != "status" || !strings.Contains(p.Errors[0].Message, "moving") {
			t.Errorf("status refusal %+v, want the status field and every status", p.Errors)
		}
		if got := list(t, "?status=moving"); len(got.Items) != 0 {
			t.Errorf("moving organizations %v, want none", ids(got))
		}
		cp.Do(t, http.MethodGet, "/admin/organizations", alice.AccessToken, nil).Expect(t, http.StatusForbidden)
	})

	detail := func(t *testing.T, orgID int64) cptest.FleetOrganization {
		t.Helper()
		var f cptest.FleetOrganization
		cp.Do(t, http.MethodGet, "/admin/organizations/"+id(orgID), admin, nil).Expect(t, http.StatusOK).Decode(t, &f)
		return f
	}
	t.Run("one organization", func(t *testing.T) {
		// The attempt is recorded just after the job's outcome (best
		// effort, for admins), so it may trail the status by a moment.
		var f cptest.FleetOrganization
		testenv.Eventually(t, 10*time.Second, func() bool {
			f = detail(t, flaky.ID)
			return len(f.ProvisioningAttempts) >= 2
		}, "both provisioning attempts recorded")
		if f.Owner.ID != alice.ID || f.Owner.Email != alice.Email || f.SchemaVersion < 1 || f.Status != "ready" {
			t.Fatalf("fleet view %+v", f)
		}
		if f.DatabaseServer == nil || f.DatabaseServer.Database != cp.DatabaseName(t, flaky.ID) || f.DatabaseServer.Port == 0 || f.DatabaseServer.Host == "" {
			t.Fatalf("database server %+v, want the placement of %s", f.DatabaseServer, cp.DatabaseName(t, flaky.ID))
		}
		a := f.ProvisioningAttempts
		if len(a) != 2 || a[0].Attempt != 2 || a[0].Error != nil || a[0].Step == nil || *a[0].Step != "mark_ready" ||
			a[1].Attempt != 1 || a[1].Step == nil || *a[1].Step != "migrate" || a[1].Error == nil || a[0].At.Before(a[1].At) {
			t.Fatalf("attempts %+v, want a failed migrate then the success, newest first", a)
		}
		if !strings.Contains(*a[1].Error, "step migrate failed") || strings.Contains(*a[1].Error, "secret_table") {
			t.Fatalf("attempt error %q, want a reason without the raw error", *a[1].Error)
		}
		cp.Do(t, http.MethodGet, "/admin/organizations/"+id(flaky.ID), alice.AccessToken, nil).Expect(t, http.StatusForbidden)
		cp.Do(t, http.MethodGet, "/admin/organizations/999999", admin, nil).Expect(t, http.StatusNotFound)
	})

	t.Run("retry and delete through the admin paths", func(t *testing.T) {
		f := detail(t, broken.ID)
		if len(f.ProvisioningAttempts) != 2 || f.ProvisioningAttempts[0].Error == nil {
			t.Fatalf("attempts of the broken organization %+v", f.ProvisioningAttempts)
		}
		cp.Do(t, http.MethodPost, "/admin/organizations/"+id(plain.ID)+"/retry", admin, nil).Expect(t, http.StatusConflict)
		cp.Do(t, http.MethodPost, "/admin/organizations/"+id(broken.ID)+"/retry", alice.AccessToken, nil).Expect(t, http.StatusForbidden)
		healed.Store(true)
		cp.Do(t, http.MethodPost, "/admin/organizations/"+id(broken.ID)+"/retry", admin, nil).Expect(t, http.StatusAccepted)
		cp.WaitStatus(t, admin, broken.ID, "ready", 2*time.Minute)
		var p struct {
			Items []cptest.AuditEntry `json:"items"`
		}
		cp.Do(t, http.MethodGet, "/organizations/"+id(broken.ID)+"/audit", alice.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &p)
		got := actions(p.Items)
		slices.Reverse(got)
		if !slices.Equal(got, []string{"organization.create", "organization.provisioning_failed", "organization.retry", "organization.ready"}) {
			t.Fatalf("audit of the retried organization %v", got)
		}
		if failed := p.Items[2]; failed.ActorType != "system" || failed.Outcome != "failure" || !strings.Contains(failed.Detail["status_detail"].(string), "step migrate failed") {
			t.Fatalf("provisioning failure entry %+v", failed)
		}
		if retry := p.Items[1]; retry.ActorType != "user" || retry.ActorID == nil || retry.Outcome != "success" {
			t.Fatalf("retry entry %+v, want by the admin", retry)
		}

		cp.Do(t, http.MethodDelete, "/admin/organizations/"+id(plain.ID), bob.AccessToken, nil).Expect(t, http.StatusForbidden)
		cp.Do(t, http.MethodDelete, "/admin/organizations/"+id(plain.ID), admin, nil).Expect(t, http.StatusAccepted)
		cp.WaitStatus(t, admin, plain.ID, "deleted", 2*time.Minute)
		if f := detail(t, plain.ID); f.Status != "deleted" {
			t.Fatalf("deleted organization shows %s", f.Status)
		}
	})
}
