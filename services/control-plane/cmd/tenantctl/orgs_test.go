package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
	admin.json(t, &list, "orgs", "list", "--status", "provisioning")
	if len(list.Items) != 0 || list.Items == nil {
		t.Fatalf("orgs list --status provisioning: %+v, want an empty items array", list)
	}
	admin.json(t, &list, "orgs", "list", "--owner", itoa(owner.ID), "--status", "ready")
	if len(list.Items) != 2 {
		t.Fatalf("orgs list --owner: %+v, want both", list)
	}
	admin.json(t, &list, "orgs", "list", "--owner", "424242")
	if len(list.Items) != 0 {
		t.Fatalf("orgs list --owner of nobody: %+v", list)
	}
	expectProblem(t, admin.expect(t, 2, "orgs", "list", "--status", "sleeping"), 2, "validation_failed")
	table := admin.expect(t, 0, "orgs", "list", "-o", "table").stdout
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "STATUS") ||
		!strings.Contains(lines[2], "Acme") || !strings.Contains(lines[2], "ready") {
		t.Fatalf("orgs list as a table:\n%s", table)
	}

	var got cptest.Organization
	admin.json(t, &got, "orgs", "get", itoa(acme.ID))
	if got.ID != acme.ID || got.Status != "ready" || got.Name != "Acme" {
		t.Fatalf("orgs get: %+v", got)
	}
	expectProblem(t, admin.expect(t, 3, "orgs", "get", "999999"), 3, "organization_not_found")

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
	oc.json(t, &list, "orgs", "list")
	if len(list.Items) != 3 {
		t.Fatalf("the owner's orgs list: %+v", list)
	}
	expectProblem(t, oc.expect(t, 4, "orgs", "suspend", itoa(acme.ID)), 4, "admin_required")
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
}
