package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// TestServers registers a second PostgreSQL server, drains and activates
// it, and moves an organization there and back with --wait, then a move
// that fails and is rolled back.
func TestServers(t *testing.T) {
	t.Parallel()
	second := testenv.Cluster(t)
	// The verification of a move fails while failing is set.
	var failing atomic.Bool
	cp := cptest.Start(t, cptest.Options{
		RunOptions: []app.Option{app.WithBeforeProvisionStep(func(_ context.Context, _ int64, step string) error {
			if step == "move_verify" && failing.Load() {
				return errors.New("injected: rows differ")
			}
			return nil
		})},
	})
	owner := cp.SignUpOwner(t, "owner@example.com", "owner password 1")
	admin := newCLI(t, cp.PublicURL)
	admin.loginAdmin(t)

	var list serverList
	admin.json(t, &list, "servers", "list")
	if len(list.Items) != 1 || list.Items[0].Name != "default" || list.Items[0].State != "active" || list.NextCursor != nil {
		t.Fatalf("servers list on the first start: %+v, want the default server alone", list)
	}

	// The admin URL's password is never printed, not even when the server
	// cannot be used: exit 1 with the cause.
	const secret = "s3cret-marker-4c1"
	down := "postgres://postgres:" + secret + "@127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) + "/postgres?sslmode=disable"
	r := admin.run(t, down+"\n", "servers", "add", "down", "--admin-url-stdin")
	expectProblem(t, r, 1, "db_server_unreachable")
	if !strings.Contains(r.stderr, "the database server cannot be used with this admin_url: ") || !strings.Contains(r.stderr, "connect") ||
		strings.Contains(r.stderr+r.stdout, secret) {
		t.Fatalf("an unusable admin URL: want the cause without the password, got %s", r)
	}
	// Input the API refuses is a usage error naming the field: --port is sent.
	r = admin.run(t, second.DSN("postgres")+"\n", "servers", "add", "b", "--admin-url-stdin", "--port", "70000")
	expectProblem(t, r, 2, "validation_failed")
	if !strings.Contains(r.stderr, "\n  port: ") {
		t.Fatalf("a refused port names the field: %s", r)
	}

	var b cptest.DBServer
	r = admin.run(t, testenv.WithPassword(t, second.DSN("postgres"), secret)+"\n", "servers", "add", "b", "--admin-url-stdin",
		"--max-tenants", "5", "-o", "json")
	if r.code != 0 {
		t.Fatalf("servers add: %s", r)
	}
	decode(t, r.stdout, &b)
	if b.Name != "b" || b.Host != "127.0.0.1" || b.Port != second.Port() || b.MaxTenants != 5 || b.Tenants != 0 || b.State != "active" {
		t.Fatalf("servers add printed %+v", b)
	}
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Fatalf("servers add printed the admin URL's password: %s", r)
	}
	// --admin-url works too; the same server twice is refused.
	expectProblem(t, admin.expect(t, 1, "servers", "add", "b2", "--admin-url", second.DSN("postgres")), 1, "db_server_exists")

	admin.json(t, &list, "servers", "list", "--chunk-size", "1")
	if len(list.Items) != 2 || list.Items[0].ID != b.ID || list.Items[1].Name != "default" || list.NextCursor != nil {
		t.Fatalf("servers list: %+v, want b then the default, no cursor", list)
	}
	table := admin.expect(t, 0, "servers", "list", "-o", "table").stdout
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[0], "MAX_TENANTS") || !strings.Contains(lines[1], "b ") || !strings.Contains(lines[1], "active") {
		t.Fatalf("servers list as a table:\n%s", table)
	}

	var s cptest.DBServer
	for _, step := range []struct{ cmd, state string }{{"drain", "draining"}, {"drain", "draining"}, {"activate", "active"}} {
		admin.json(t, &s, "servers", step.cmd, itoa(b.ID))
		if s.ID != b.ID || s.State != step.state {
			t.Fatalf("servers %s: %+v, want %s", step.cmd, s, step.state)
		}
	}
	expectProblem(t, admin.expect(t, 3, "servers", "drain", "999999"), 3, "db_server_not_found")
	oc := newCLI(t, cp.PublicURL)
	oc.login(t, owner.Email, owner.Password)
	expectProblem(t, oc.expect(t, 4, "servers", "list"), 4, "admin_required")
	expectProblem(t, oc.run(t, second.DSN("postgres")+"\n", "servers", "add", "c", "--admin-url-stdin"), 4, "admin_required")

	// The organization starts on the default server, which has more room.
	org := cp.CreateReadyOrganization(t, owner, "Movers")
	var placed cptest.FleetOrganization
	admin.json(t, &placed, "orgs", "get", itoa(org.ID))
	if placed.DatabaseServer == nil || placed.DatabaseServer.ID != 1 || placed.DatabaseServer.Name != "default" {
		t.Fatalf("placed %+v, want on the default server", placed)
	}
	expectProblem(t, oc.expect(t, 4, "orgs", "move", itoa(org.ID), "--server", itoa(b.ID)), 4, "admin_required")
	r = admin.expect(t, 2, "orgs", "move", itoa(org.ID), "--server", "1")
	expectProblem(t, r, 2, "validation_failed")
	if !strings.Contains(r.stderr, "\n  db_server_id: the tenant is on this server already") {
		t.Fatalf("a move to the server it is on: %s", r)
	}

	// There and back: each --wait ends ready on the target.
	var moved cptest.Organization
	for _, m := range []struct{ to, from int64 }{{b.ID, 1}, {1, b.ID}} {
		r := admin.json(t, &moved, "orgs", "move", itoa(org.ID), "--server", itoa(m.to), "--wait")
		if moved.ID != org.ID || moved.Status != "ready" || moved.DBServerID == nil || *moved.DBServerID != m.to || moved.StatusDetail != nil {
			t.Fatalf("move --wait to %d printed %+v", m.to, moved)
		}
		title := "organization " + itoa(org.ID) + " (Movers): "
		if !strings.Contains(r.stderr, title+"moving\n") || !strings.Contains(r.stderr, title+"ready (") {
			t.Fatalf("move --wait without a terminal: want plain progress lines, got %s", r)
		}
		admin.json(t, &list, "servers", "list")
		checkTenants(t, list, map[int64]int{m.to: 1, m.from: 0})
	}

	// A move that fails is rolled back: the organization is ready where it
	// was, and --wait exits 1 with the reason.
	failing.Store(true)
	r = admin.expect(t, 1, "orgs", "move", itoa(org.ID), "--server", itoa(b.ID), "--wait", "-o", "json")
	failing.Store(false)
	var back cptest.Organization
	decode(t, r.stdout, &back)
	if back.Status != "ready" || back.DBServerID == nil || *back.DBServerID != 1 || back.StatusDetail == nil {
		t.Fatalf("a rolled back move printed %+v", back)
	}
	if !strings.Contains(r.stderr, "(Movers): the move was rolled back: moving to database server b (id "+itoa(b.ID)+") failed") ||
		!strings.Contains(r.stderr, "injected: rows differ") {
		t.Fatalf("a rolled back move: want the reason on stderr, got %s", r)
	}
}

// checkTenants checks the tenant count of each server in want.
func checkTenants(t *testing.T, list serverList, want map[int64]int) {
	t.Helper()
	for _, s := range list.Items {
		if n, ok := want[s.ID]; ok && s.Tenants != n {
			t.Fatalf("server %d (%s) has %d tenants, want %d: %+v", s.ID, s.Name, s.Tenants, n, list.Items)
		}
	}
}
