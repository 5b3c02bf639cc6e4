package app_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/tenantdb/tenantdbtest"
	"tenantbase/libs/testenv"
)

type auditEntry struct {
	ID         int64          `json:"id"`
	ActorType  string         `json:"actor_type"`
	ActorID    *int64         `json:"actor_id"`
	Action     string         `json:"action"`
	TargetType string         `json:"target_type"`
	TargetID   string         `json:"target_id"`
	RequestID  *string        `json:"request_id"`
	ClientIP   *string        `json:"client_ip"`
	Outcome    string         `json:"outcome"`
	Detail     map[string]any `json:"detail"`
}

type auditPage struct {
	Items      []auditEntry `json:"items"`
	NextCursor *string      `json:"next_cursor"`
}

// TestTenantAudit checks that a tenant's user management lands in its own
// audit log, one entry per change with who, whom, the request and the
// client; that only admins read it; that it is kept per tenant; and that
// the database refuses to change or remove an entry.
func TestTenantAudit(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	tp, a := w.tp, w.a.ID
	admin := w.ownerLogin(t, a)
	adminID := profileID(t, tp, a, admin.AccessToken)
	member := tp.register(t, a, "mem@example.com", "member-password-1")
	memberTok := tp.login(t, a, "mem@example.com", "member-password-1")
	target := strconv.FormatInt(member.ID, 10)

	tp.call(t, http.MethodGet, "/audit", a, memberTok.AccessToken, nil).Expect(t, http.StatusForbidden)

	// One change of each kind, each with a request id of its own.
	patch := func(body map[string]any, id string) {
		t.Helper()
		req := tpRequest(t, tp, http.MethodPatch, "/users/"+target, a, admin.AccessToken, body)
		req.Header.Set("X-Request-ID", id)
		tp.send(t, req).Expect(t, http.StatusOK)
	}
	req := tpRequest(t, tp, http.MethodPost, "/profile/password", a, memberTok.AccessToken,
		map[string]string{"current_password": "member-password-1", "new_password": "member-password-2"})
	req.Header.Set("X-Request-ID", "audit-password")
	tp.send(t, req).Expect(t, http.StatusOK)
	patch(map[string]any{"role": "admin"}, "audit-promote")
	patch(map[string]any{"is_active": false, "role": "member"}, "audit-deactivate")
	patch(map[string]any{"is_active": true}, "audit-activate")
	patch(map[string]any{"is_active": true}, "audit-nothing") // no change, no entry

	var got auditPage
	tp.call(t, http.MethodGet, "/audit", a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &got)
	type want struct {
		action, requestID string
		actor             int64
	}
	wants := []want{ // newest first
		{"user.activate", "audit-activate", adminID},
		{"user.deactivate", "audit-deactivate", adminID},
		{"user.role_change", "audit-deactivate", adminID},
		{"user.role_change", "audit-promote", adminID},
		{"user.password_change", "audit-password", member.ID},
	}
	if len(got.Items) != len(wants) {
		t.Fatalf("audit log has %d entries, want %d: %+v", len(got.Items), len(wants), got.Items)
	}
	for i, w := range wants {
		e := got.Items[i]
		if e.Action != w.action || e.ActorType != "user" || e.ActorID == nil || *e.ActorID != w.actor ||
			e.TargetType != "user" || e.TargetID != target || e.Outcome != "success" ||
			e.RequestID == nil || *e.RequestID != w.requestID || e.ClientIP == nil || *e.ClientIP != "127.0.0.1" {
			t.Errorf("entry %d = %+v, want %s by %d on user %s in request %s from 127.0.0.1", i, e, w.action, w.actor, target, w.requestID)
		}
	}
	if d := got.Items[3].Detail; d["from"] != "member" || d["to"] != "admin" {
		t.Errorf("promotion detail %v, want from member to admin", d)
	}

	t.Run("filters and pages", func(t *testing.T) {
		var p auditPage
		tp.call(t, http.MethodGet, "/audit?action=user.role_change", a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &p)
		if len(p.Items) != 2 {
			t.Fatalf("role changes: %+v", p.Items)
		}
		tp.call(t, http.MethodGet, "/audit?actor_id="+target, a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &p)
		if len(p.Items) != 1 || p.Items[0].Action != "user.password_change" {
			t.Fatalf("the member's own actions: %+v", p.Items)
		}
		tp.call(t, http.MethodGet, "/audit?limit=2", a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &p)
		if len(p.Items) != 2 || p.NextCursor == nil {
			t.Fatalf("first page %+v", p)
		}
		var next auditPage
		tp.call(t, http.MethodGet, "/audit?limit=2&cursor="+*p.NextCursor, a, admin.AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &next)
		if len(next.Items) != 2 || next.Items[0].ID >= p.Items[1].ID {
			t.Fatalf("second page %+v after %+v", next.Items, p.Items)
		}
		tp.call(t, http.MethodGet, "/audit?actor_id=x", a, admin.AccessToken, nil).Expect(t, http.StatusUnprocessableEntity)
	})

	t.Run("kept per tenant", func(t *testing.T) {
		var p auditPage
		tp.call(t, http.MethodGet, "/audit", w.b.ID, w.ownerLogin(t, w.b.ID).AccessToken, nil).Expect(t, http.StatusOK).Decode(t, &p)
		if len(p.Items) != 0 {
			t.Fatalf("tenant B's audit log shows %+v", p.Items)
		}
	})

	t.Run("entries cannot be changed or removed", func(t *testing.T) {
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, tenantdbtest.DSN(w.a.DB))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for _, stmt := range []string{
			`UPDATE audit_log SET action = 'user.nothing'`,
			`DELETE FROM audit_log`,
			`TRUNCATE audit_log`,
		} {
			if _, err := conn.Exec(ctx, stmt); err == nil {
				t.Errorf("%s succeeded as the tenant role", stmt)
			}
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&n); err != nil || n != len(wants) {
			t.Fatalf("%d entries left (%v), want %d", n, err, len(wants))
		}
	})
}

func tpRequest(t *testing.T, tp *plane, method, p string, tenant int64, token string, body any) *http.Request {
	t.Helper()
	req := testenv.JSONRequest(t, method, tp.PublicURL+p, body)
	req.Header.Set("X-TENANT", strconv.FormatInt(tenant, 10))
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

func profileID(t *testing.T, tp *plane, tenant int64, token string) int64 {
	t.Helper()
	var p struct {
		ID int64 `json:"id"`
	}
	tp.call(t, http.MethodGet, "/profile", tenant, token, nil).Expect(t, http.StatusOK).Decode(t, &p)
	return p.ID
}
