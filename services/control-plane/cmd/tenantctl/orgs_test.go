package main

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

func itoa(id int64) string { return strconv.FormatInt(id, 10) }

func TestOrgs(t *testing.T) {
	t.Parallel()
	// Provisioning fails while failing is set, at once (one attempt).
	var failing atomic.Bool
	cp := cptest.Start(t, cptest.Options{
		Configure: func(c *app.Config) { c.ProvisionMaxAttempts = 1 },
		RunOptions: []app.Option{app.WithBeforeProvisionStep(func(context.Context, int64, string) error {
			if failing.Load() {
				return errors.New("injected failure")
			}
			return nil
		})},
	})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner password 1")
	admin := newCLI(t, cp.PublicURL)
	admin.loginAdmin(t)

	// create --wait without a terminal: a plain line per status on stderr,
	// the organization as the API shows it once ready on stdout.
	var acme cptest.Organization
	r := admin.json(t, &acme, "orgs", "create", "Acme", "--owner-id", itoa(owner.ID), "--wait")
	if acme.Status != "ready" || acme.Name != "Acme" || acme.OwnerID != owner.ID || acme.SchemaVersion < 1 || acme.ReadyAt == nil {
		t.Fatalf("create --wait printed %+v, want Acme ready for the owner", acme)
	}
	title := "organization " + itoa(acme.ID) + " (Acme): "
	if !strings.Contains(r.stderr, title+"provisioning\n") || !strings.Contains(r.stderr, title+"ready (") || strings.Contains(r.stderr, "\r") {
		t.Fatalf("create --wait without a terminal: want plain progress lines, got %s", r)
	}

	// Without --wait the answer comes at once.
	var globex cptest.Organization
	admin.json(t, &globex, "orgs", "create", "Globex", "--owner-id", itoa(owner.ID))
	if globex.Status != "provisioning" {
		t.Fatalf("create printed %+v, want it provisioning", globex)
	}
	cp.WaitStatus(t, owner.AccessToken, globex.ID, "ready", time.Minute)

	// list prints every page, newest first, as one page of the API.
	var list orgList
	admin.json(t, &list, "orgs", "list", "--chunk-size", "1")
	if len(list.Items) != 2 || list.Items[0].ID != globex.ID || list.Items[1].ID != acme.ID || list.NextCursor != nil {
		t.Fatalf("orgs list: %+v, want Globex then Acme and no cursor", list)
	}
	if list.Items[1].Status != "ready" || list.Items[1].Name != "Acme" {
		t.Fatalf("orgs list: %+v", list.Items[1])
	}
	expectOrgs(t, admin, nil, "--status", "provisioning")
	expectProblem(t, admin.expect(t, 2, "orgs", "list", "--status", "sleeping"), 2, "validation_failed")
	table := admin.expect(t, 0, "orgs", "list", "-o", "table").stdout
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATUS") ||
		!strings.Contains(lines[2], "Acme") || !strings.Contains(lines[2], "ready") {
		t.Fatalf("orgs list as a table:\n%s", table)
	}

	// Onboarding: --owner EMAIL makes a known user the owner and invites
	// an unknown email, whose account waits unverified.
	var initech, hooli cptest.Organization
	admin.json(t, &initech, "orgs", "create", "Initech", "--owner", owner.Email, "--wait")
	if initech.Status != "ready" || initech.Name != "Initech" || initech.OwnerID != owner.ID {
		t.Fatalf("create --owner of a known user printed %+v", initech)
	}
	admin.json(t, &hooli, "orgs", "create", "Hooli", "--owner", "newcomer@example.com", "--wait")
	if hooli.Status != "ready" || hooli.OwnerID == owner.ID {
		t.Fatalf("create --owner of an unknown email printed %+v", hooli)
	}
	var users userList
	admin.json(t, &users, "users", "list", "--email", "newcomer@")
	if len(users.Items) != 1 || users.Items[0].ID != hooli.OwnerID || users.Items[0].IsVerified || !users.Items[0].IsOwner {
		t.Fatalf("the invited owner: %+v", users)
	}
	r = admin.expect(t, 2, "orgs", "create", "Nameless", "--owner", "")
	if !strings.Contains(r.stderr, "\n  owner_email: ") {
		t.Fatalf("create --owner '': want the owner_email field refused, got %s", r)
	}

	// The filters of the admins' fleet list.
	expectOrgs(t, admin, []int64{initech.ID, globex.ID, acme.ID}, "--owner", itoa(owner.ID))
	expectOrgs(t, admin, []int64{hooli.ID}, "--owner", itoa(hooli.OwnerID), "--status", "ready")
	expectOrgs(t, admin, nil, "--owner", itoa(owner.ID), "--status", "failed")
	expectOrgs(t, admin, nil, "--owner", "424242")
	expectOrgs(t, admin, []int64{globex.ID}, "--q", "GLOB")
	expectOrgs(t, admin, []int64{hooli.ID, globex.ID}, "--q", "o", "--status", "ready", "--chunk-size", "1")
	r = admin.expect(t, 2, "orgs", "list", "--q", strings.Repeat("x", 101))
	if expectProblem(t, r, 2, "validation_failed"); !strings.Contains(r.stderr, "\n  q: ") {
		t.Fatalf("a name search too long names q: %s", r)
	}

	// Admins see the fleet view: owner, database server, attempts.
	var fleet cptest.FleetOrganization
	admin.json(t, &fleet, "orgs", "get", itoa(acme.ID))
	if fleet.ID != acme.ID || fleet.Status != "ready" || fleet.Name != "Acme" || fleet.Owner.ID != owner.ID || fleet.Owner.Email != owner.Email ||
		fleet.DBServerID == nil || fleet.DatabaseServer == nil || fleet.DatabaseServer.ID != *fleet.DBServerID || fleet.DatabaseServer.Database == "" ||
		len(fleet.ProvisioningAttempts) == 0 || fleet.ProvisioningAttempts[0].Error != nil {
		t.Fatalf("orgs get as an admin: %+v", fleet)
	}
	table = admin.expect(t, 0, "orgs", "get", itoa(acme.ID), "-o", "table").stdout
	if !strings.Contains(table, "\nowner.email ") || !strings.Contains(table, "\ndatabase_server.name ") {
		t.Fatalf("orgs get as a table, nested objects as lines of their own:\n%s", table)
	}
	expectProblem(t, admin.expect(t, 3, "orgs", "get", "999999"), 3, "organization_not_found")

	var got cptest.Organization

	admin.json(t, &got, "orgs", "suspend", itoa(acme.ID))
	if got.Status != "suspended" {
		t.Fatalf("orgs suspend: %+v", got)
	}
	expectProblem(t, admin.expect(t, 1, "orgs", "suspend", itoa(acme.ID)), 1, "invalid_status")
	admin.json(t, &got, "orgs", "resume", itoa(acme.ID))
	if got.Status != "ready" {
		t.Fatalf("orgs resume: %+v", got)
	}
	expectProblem(t, admin.expect(t, 1, "orgs", "retry", itoa(acme.ID)), 1, "invalid_status")

	// rotate-credentials answers at once; the new password follows.
	old := cp.Tenant(t, acme.ID).Database.Password.Reveal()
	admin.json(t, &got, "orgs", "rotate-credentials", itoa(acme.ID))
	if got.ID != acme.ID || got.Status != "ready" {
		t.Fatalf("rotate-credentials: %+v", got)
	}
	testenv.Eventually(t, time.Minute, func() bool { return cp.Tenant(t, acme.ID).Database.Password.Reveal() != old },
		"the tenant database's new password")
	expectProblem(t, admin.expect(t, 3, "orgs", "rotate-credentials", "999999"), 3, "organization_not_found")

	// Provisioning that ends failed: exit 1, the failed organization still
	// printed, and the reason on stderr.
	failing.Store(true)
	r = admin.expect(t, 1, "orgs", "create", "Doomed", "--owner-id", itoa(owner.ID), "--wait", "-o", "json")
	failing.Store(false)
	var doomed cptest.Organization
	decode(t, r.stdout, &doomed)
	if doomed.Status != "failed" || doomed.StatusDetail == nil || !strings.Contains(r.stderr, "(Doomed): failed: ") {
		t.Fatalf("create --wait of a failing organization: %s", r)
	}
	admin.json(t, &got, "orgs", "retry", itoa(doomed.ID), "--wait")
	if got.Status != "ready" || got.ID != doomed.ID {
		t.Fatalf("retry --wait: %+v", got)
	}

	// An owner may see their organizations but not suspend them; invalid
	// input is a usage error naming the field.
	oc := newCLI(t, cp.PublicURL)
	oc.login(t, owner.Email, owner.Password)
	expectOrgs(t, oc, []int64{doomed.ID, initech.ID, globex.ID, acme.ID})
	expectOrgs(t, oc, nil, "--status", "failed")
	expectProblem(t, oc.expect(t, 4, "orgs", "list", "--q", "Acme"), 4, "admin_required")
	// An owner sees their organization as owners do.
	r = oc.json(t, &got, "orgs", "get", itoa(acme.ID))
	if got.ID != acme.ID || strings.Contains(r.stdout, "db_server_id") || strings.Contains(r.stdout, "provisioning_attempts") {
		t.Fatalf("orgs get as the owner: want the owner's view, got %s", r)
	}
	expectProblem(t, oc.expect(t, 3, "orgs", "get", itoa(hooli.ID)), 3, "organization_not_found")
	expectProblem(t, oc.expect(t, 4, "orgs", "suspend", itoa(acme.ID)), 4, "admin_required")
	expectProblem(t, oc.expect(t, 4, "orgs", "rotate-credentials", itoa(acme.ID)), 4, "admin_required")
	r = oc.expect(t, 2, "orgs", "create", "   ")
	expectProblem(t, r, 2, "validation_failed")
	if !strings.Contains(r.stderr, "\n  name: ") {
		t.Fatalf("a validation error names the field: %s", r)
	}

	// delete --wait follows it to deleted.
	admin.json(t, &got, "orgs", "delete", itoa(globex.ID), "--wait")
	if got.Status != "deleted" || got.ID != globex.ID {
		t.Fatalf("delete --wait: %+v", got)
	}
	expectProblem(t, admin.expect(t, 1, "orgs", "delete", itoa(globex.ID)), 1, "invalid_status")
	expectProblem(t, admin.expect(t, 1, "orgs", "rotate-credentials", itoa(globex.ID)), 1, "invalid_status")
}

// expectOrgs runs orgs list with args and checks the ids it prints, in
// order, from one page holding them all.
func expectOrgs(t *testing.T, c *cli, want []int64, args ...string) {
	t.Helper()
	var list orgList
	c.json(t, &list, append([]string{"orgs", "list"}, args...)...)
	var ids []int64
	for _, o := range list.Items {
		ids = append(ids, o.ID)
	}
	if !slices.Equal(ids, want) || list.Items == nil || list.NextCursor != nil {
		t.Fatalf("orgs list %s: %v (%+v), want %v", strings.Join(args, " "), ids, list, want)
	}
}
