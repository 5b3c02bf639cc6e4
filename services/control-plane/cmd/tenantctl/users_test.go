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
}
