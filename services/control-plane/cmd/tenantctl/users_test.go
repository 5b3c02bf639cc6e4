package main

import (
	"strings"
	"testing"

	"tenantbase/services/control-plane/cptest"
)

func TestUsers(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner password 1")
	cp.SignUp(t, "member@example.com", "member password 1", false)
	admin := newCLI(t, cp.PublicURL)
	admin.loginAdmin(t)

	var list userList
	admin.json(t, &list, "users", "list", "--chunk-size", "2")
	if len(list.Items) != 3 || list.NextCursor != nil {
		t.Fatalf("users list: %+v, want the admin, the owner and the member", list)
	}
	if list.Items[0].Email != cptest.AdminEmail || !list.Items[0].IsAdmin || list.Items[1].ID != owner.ID || !list.Items[1].IsOwner {
		t.Fatalf("users list in id order: %+v", list.Items)
	}
	adminID := list.Items[0].ID
	admin.json(t, &list, "users", "list", "--email", "MEMBER@")
	if len(list.Items) != 1 || list.Items[0].Email != "member@example.com" {
		t.Fatalf("users list --email: %+v", list)
	}
	if out := admin.expect(t, 0, "users", "list", "-o", "table").stdout; !strings.HasPrefix(out, "ID") || !strings.Contains(out, "owner@example.com") {
		t.Fatalf("users list as a table:\n%s", out)
	}

	var u user
	admin.json(t, &u, "users", "promote", itoa(owner.ID))
	if u.ID != owner.ID || !u.IsAdmin || !u.IsOwner {
		t.Fatalf("promote: %+v", u)
	}
	// The owner is an admin now and may list users.
	oc := newCLI(t, cp.PublicURL)
	oc.login(t, owner.Email, owner.Password)
	oc.json(t, &list, "users", "list")

	admin.json(t, &u, "users", "demote", itoa(owner.ID))
	if u.IsAdmin {
		t.Fatalf("demote: %+v", u)
	}
	expectProblem(t, oc.expect(t, 4, "users", "list"), 4, "admin_required")
	expectProblem(t, oc.expect(t, 4, "users", "promote", itoa(owner.ID)), 4, "admin_required")

	// The last admin stays one; unknown users are not found.
	expectProblem(t, admin.expect(t, 1, "users", "demote", itoa(adminID)), 1, "last_admin")
	expectProblem(t, admin.expect(t, 3, "users", "promote", "999999"), 3, "user_not_found")

	// A quota of one: the owner's second organization is refused, by their
	// own create and by onboarding alike, with exit 1 (not 4: nothing is
	// wrong with who asks).
	admin.json(t, &u, "users", "set-quota", itoa(owner.ID), "1")
	if u.ID != owner.ID || u.MaxOrganizations == nil || *u.MaxOrganizations != 1 {
		t.Fatalf("set-quota 1: %+v", u)
	}
	var org cptest.Organization
	oc.json(t, &org, "orgs", "create", "First", "--wait")
	r := oc.expect(t, 1, "orgs", "create", "Second")
	expectProblem(t, r, 1, "quota_exceeded")
	if r.stdout != "" {
		t.Fatalf("a refused create printed %q", r.stdout)
	}
	expectProblem(t, admin.expect(t, 1, "orgs", "create", "Second", "--owner", owner.Email), 1, "quota_exceeded")
	admin.json(t, &u, "users", "set-quota", itoa(owner.ID), "--default")
	if u.MaxOrganizations != nil {
		t.Fatalf("set-quota --default: %+v, want max_organizations null", u)
	}
	oc.json(t, &org, "orgs", "create", "Second", "--wait")
	if org.Status != "ready" || org.OwnerID != owner.ID {
		t.Fatalf("create under the default quota: %+v", org)
	}
	r = admin.expect(t, 2, "users", "set-quota", itoa(owner.ID), "100001")
	if expectProblem(t, r, 2, "validation_failed"); !strings.Contains(r.stderr, "\n  max_organizations: ") {
		t.Fatalf("a quota over the limit names the field: %s", r)
	}
	expectProblem(t, admin.expect(t, 3, "users", "set-quota", "999999", "3"), 3, "user_not_found")
	expectProblem(t, oc.expect(t, 4, "users", "set-quota", itoa(owner.ID), "50"), 4, "admin_required")
}
