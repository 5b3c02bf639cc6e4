package main

import (
	"net/http"
	"strings"
	"testing"

	"tenantbase/services/control-plane/cptest"
)

func TestAudit(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner password 1")
	admin := newCLI(t, cp.PublicURL)
	admin.loginAdmin(t)
	var me user
	admin.json(t, &me, "whoami")
	var u user
	admin.json(t, &u, "users", "promote", itoa(owner.ID))
	admin.json(t, &u, "users", "demote", itoa(owner.ID))
	var org cptest.Organization
	admin.json(t, &org, "orgs", "create", "Acme", "--owner-id", itoa(owner.ID), "--wait")

	// Every page, as the API lists it.
	var api, all auditList
	cp.Do(t, http.MethodGet, "/admin/audit?limit=200", cp.LoginAdmin(t), nil).Expect(t, http.StatusOK).Decode(t, &api)
	admin.json(t, &all, "audit", "list", "--chunk-size", "2")
	if len(all.Items) < 6 || all.NextCursor != nil || len(all.Items) != len(api.Items) {
		t.Fatalf("audit list: %d entries (cursor %v), the API has %d", len(all.Items), all.NextCursor, len(api.Items))
	}
	for i, e := range all.Items {
		if e.ID != api.Items[i].ID || e.Action != api.Items[i].Action || !e.At.Equal(api.Items[i].At) {
			t.Fatalf("audit list entry %d: %+v, the API's %+v", i, e, api.Items[i])
		}
	}

	// --target and --action: the promotion and the demotion, newest first.
	var list auditList
	admin.json(t, &list, "audit", "list", "--target", "user:"+itoa(owner.ID), "--action", "user.update")
	if len(list.Items) != 2 || list.Items[0].Detail["is_admin"] != false || list.Items[1].Detail["is_admin"] != true {
		t.Fatalf("audit list --target user:%d --action user.update: %+v", owner.ID, list)
	}
	for _, e := range list.Items {
		if e.ActorType != "user" || e.ActorID == nil || *e.ActorID != me.ID || e.TargetType != "user" || e.TargetID != itoa(owner.ID) || e.Outcome != "success" {
			t.Fatalf("an update of the owner: %+v", e)
		}
	}
	// --actor: what the admin did, which includes creating Acme but not
	// its provisioning, which the system did.
	admin.json(t, &list, "audit", "list", "--actor", itoa(me.ID))
	var created, ready bool
	for _, e := range list.Items {
		if e.ActorID == nil || *e.ActorID != me.ID {
			t.Fatalf("audit list --actor %d: %+v", me.ID, e)
		}
		created = created || (e.Action == "organization.create" && e.TargetID == itoa(org.ID))
		ready = ready || e.Action == "organization.ready"
	}
	if !created || ready {
		t.Fatalf("audit list --actor %d: %+v, want organization.create and no organization.ready", me.ID, list.Items)
	}
	admin.json(t, &list, "audit", "list", "--target", "organization:"+itoa(org.ID), "--action", "organization.ready")
	if len(list.Items) != 1 || list.Items[0].ActorType != "system" || list.Items[0].ActorID != nil {
		t.Fatalf("audit list of the organization's organization.ready: %+v", list)
	}
	admin.json(t, &list, "audit", "list", "--target", "migration_run:999999")
	if len(list.Items) != 0 || list.Items == nil {
		t.Fatalf("audit list of a run that never was: %+v, want an empty items array", list)
	}

	table := admin.expect(t, 0, "audit", "list", "--action", "user.update", "-o", "table").stdout
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "TARGET_TYPE") ||
		!strings.Contains(lines[1], `{"is_admin":false}`) {
		t.Fatalf("audit list as a table:\n%s", table)
	}

	// A malformed --target is refused before any request, as usage.
	for _, target := range []string{"user", "user:", "owner:" + itoa(owner.ID), "organization:acme"} {
		r := admin.expect(t, 2, "audit", "list", "--target", target)
		if !strings.Contains(r.stderr, `for "--target" flag: must be TYPE:ID`) || r.stdout != "" {
			t.Fatalf("audit list --target %s: %s", target, r)
		}
	}
	oc := newCLI(t, cp.PublicURL)
	oc.login(t, owner.Email, owner.Password)
	expectProblem(t, oc.expect(t, 4, "audit", "list"), 4, "admin_required")
}
