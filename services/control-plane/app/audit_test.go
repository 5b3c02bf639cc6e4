package app_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// TestAuditLog takes accounts and an organization through every change
// the control plane audits and checks the row each one wrote: who, what,
// on what, from which request and address, with which outcome; that a
// refused change writes none; what owners may read; and that the database
// refuses to change or remove a row.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.LoginMaxFailures = 3 }})
	admin := h.loginAdmin(t)
	var adminUser userBody
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(admin.AccessToken)).Decode(t, &adminUser)

	// Sign-up and verification, with request ids and a client address
	// reported by the (trusted, loopback) ingress.
	h.do(t, http.MethodPost, "/auth/register", map[string]any{"email": "audited@example.com", "password": "audited-password-1", "is_owner": true},
		withHeader("X-Request-ID", "audit-register"), withHeader("X-Real-IP", "203.0.113.9")).expect(t, http.StatusCreated, "")
	h.do(t, http.MethodPost, "/auth/verify", map[string]string{"token": h.verificationToken(t, "audited@example.com", 1)},
		withHeader("X-Request-ID", "audit-verify")).expect(t, http.StatusOK, "")
	owner := h.login(t, "audited@example.com", "audited-password-1")
	var me userBody
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(owner.AccessToken)).Decode(t, &me)

	// A password change, then failed logins until the account locks.
	h.do(t, http.MethodPost, "/auth/password", map[string]string{"current_password": "audited-password-1", "new_password": "audited-password-2"},
		withToken(owner.AccessToken), withHeader("X-Request-ID", "audit-password")).expect(t, http.StatusNoContent, "")
	for i := range 4 {
		code := "invalid_credentials"
		status := http.StatusUnauthorized
		if i == 3 {
			code, status = "too_many_attempts", http.StatusTooManyRequests
		}
		h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": "audited@example.com", "password": "wrong-password"},
			withHeader("X-Request-ID", "audit-login")).expect(t, status, code)
	}
	// An admin changes the user.
	h.do(t, http.MethodPatch, "/admin/users/"+id(me.ID), map[string]any{"is_admin": false, "max_organizations": 3},
		withToken(admin.AccessToken), withHeader("X-Request-ID", "audit-patch")).expect(t, http.StatusOK, "")

	entries := h.audit(t, admin.AccessToken, "target_type=user&target_id="+id(me.ID))
	type want struct {
		action, actorType string
		actor             int64
		requestID, ip     string
		outcome           string
	}
	wants := []want{
		{"user.create", "anonymous", 0, "audit-register", "203.0.113.9", "success"},
		{"user.verify", "user", me.ID, "audit-verify", "127.0.0.1", "success"},
		{"user.password_change", "user", me.ID, "audit-password", "127.0.0.1", "success"},
		{"user.lock", "anonymous", 0, "audit-login", "127.0.0.1", "failure"},
		{"user.update", "user", adminUser.ID, "audit-patch", "127.0.0.1", "success"},
	}
	checkEntries(t, entries, wants, func(w want) (string, string, int64, string, string, string) {
		return w.action, w.actorType, w.actor, w.requestID, w.ip, w.outcome
	})
	if d := entries[4].Detail; d["is_admin"] != false || d["max_organizations"] != float64(3) {
		t.Errorf("user.update detail %v", d)
	}

	// An organization through its lifecycle.
	// The locked owner waits out the lock: the admin owns this one.
	org := h.CreateReadyOrganization(t, userOf(adminUser.ID, admin.AccessToken), "Audited Org")
	h.do(t, http.MethodPost, "/admin/organizations/"+id(org.ID)+"/resume", nil, withToken(admin.AccessToken)).expect(t, http.StatusConflict, "invalid_status")
	h.do(t, http.MethodPost, "/admin/organizations/"+id(org.ID)+"/suspend", nil, withToken(admin.AccessToken)).expect(t, http.StatusOK, "")
	h.do(t, http.MethodPost, "/admin/organizations/"+id(org.ID)+"/resume", nil, withToken(admin.AccessToken)).expect(t, http.StatusOK, "")
	h.do(t, http.MethodDelete, "/organizations/"+id(org.ID), nil, withToken(admin.AccessToken)).expect(t, http.StatusAccepted, "")
	h.WaitStatus(t, admin.AccessToken, org.ID, "deleted", 2*time.Minute)

	orgEntries := h.audit(t, admin.AccessToken, "target_type=organization&target_id="+id(org.ID))
	if got := actions(orgEntries); !slices.Equal(got, []string{"organization.create", "organization.ready", "organization.suspend",
		"organization.resume", "organization.delete", "organization.deleted"}) {
		t.Fatalf("organization audit %v (the refused resume must write nothing)", got)
	}
	for _, e := range orgEntries {
		system := e.Action == "organization.ready" || e.Action == "organization.deleted"
		if system && (e.ActorType != "system" || e.ActorID != nil || e.RequestID != nil || e.ClientIP != nil) {
			t.Errorf("%s %+v, want by the system outside a request", e.Action, e)
		}
		if !system && (e.ActorType != "user" || e.ActorID == nil || *e.ActorID != adminUser.ID || e.RequestID == nil || e.ClientIP == nil) {
			t.Errorf("%s %+v, want by the admin in a request", e.Action, e)
		}
	}

	t.Run("owners read their organizations' entries", func(t *testing.T) {
		other, otherTok := h.signUp(t, "other@example.com", "other-password-1", true)
		mine := h.CreateReadyOrganization(t, userOf(other.ID, otherTok.AccessToken), "Mine")
		var p auditPage
		h.do(t, http.MethodGet, "/organizations/"+id(mine.ID)+"/audit", nil, withToken(otherTok.AccessToken)).Decode(t, &p)
		if got := actions(p.Items); !slices.Equal(got, []string{"organization.ready", "organization.create"}) {
			t.Fatalf("owner's view %v", got)
		}
		h.do(t, http.MethodGet, "/organizations/"+id(org.ID)+"/audit", nil, withToken(otherTok.AccessToken)).
			expect(t, http.StatusNotFound, "organization_not_found")
		h.do(t, http.MethodGet, "/organizations/"+id(mine.ID)+"/audit?limit=1", nil, withToken(admin.AccessToken)).Decode(t, &p)
		if len(p.Items) != 1 || p.NextCursor == nil {
			t.Fatalf("admin's paged view %+v", p)
		}
		h.do(t, http.MethodGet, "/admin/audit", nil, withToken(otherTok.AccessToken)).expect(t, http.StatusForbidden, "admin_required")
	})

	t.Run("the right password on the locking attempt lifts its lock", func(t *testing.T) {
		u, _ := h.signUp(t, "lucky@example.com", "lucky-password-1", false)
		for range 2 {
			h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": u.Email, "password": "wrong-password"}).
				expect(t, http.StatusUnauthorized, "invalid_credentials")
		}
		h.login(t, u.Email, "lucky-password-1") // the third attempt: it locks, then the password is right
		h.login(t, u.Email, "lucky-password-1")
		got := actions(h.audit(t, admin.AccessToken, "target_type=user&target_id="+id(u.ID)))
		if !slices.Equal(got, []string{"user.create", "user.verify", "user.lock", "user.unlock"}) {
			t.Fatalf("audit of the lucky user %v", got)
		}
	})

	t.Run("filters", func(t *testing.T) {
		byAdmin := h.audit(t, admin.AccessToken, "actor_id="+id(adminUser.ID))
		if len(byAdmin) == 0 || slices.ContainsFunc(byAdmin, func(e cptest.AuditEntry) bool { return e.ActorID == nil || *e.ActorID != adminUser.ID }) {
			t.Fatalf("actor filter %+v", byAdmin)
		}
		boot := h.audit(t, admin.AccessToken, "action=user.create&target_id="+id(adminUser.ID))
		if len(boot) != 1 || boot[0].ActorType != "system" || boot[0].Detail["via"] != "bootstrap" {
			t.Fatalf("bootstrap admin creation %+v", boot)
		}
		for _, bad := range []string{"actor_id=x", "limit=500", "cursor=abc", "target_type=users"} {
			h.do(t, http.MethodGet, "/admin/audit?"+bad, nil, withToken(admin.AccessToken)).expect(t, http.StatusUnprocessableEntity, "validation_failed")
		}
	})

	t.Run("rows cannot be changed or removed", func(t *testing.T) {
		ctx := context.Background()
		var before int
		if err := h.db(t).QueryRow(ctx, `SELECT count(*) FROM audit_log`).Scan(&before); err != nil {
			t.Fatal(err)
		}
		for _, stmt := range []string{
			`UPDATE audit_log SET outcome = 'failure'`,
			`UPDATE audit_log SET action = 'user.nothing' WHERE id = (SELECT min(id) FROM audit_log)`,
			`DELETE FROM audit_log`,
			`DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)`,
			`TRUNCATE audit_log`,
		} {
			if _, err := h.db(t).Exec(ctx, stmt); err == nil {
				t.Errorf("%s succeeded", stmt)
			}
		}
		var after int
		var changed bool
		if err := h.db(t).QueryRow(ctx, `SELECT count(*), bool_or(action = 'user.nothing') FROM audit_log`).Scan(&after, &changed); err != nil {
			t.Fatal(err)
		}
		if after != before || changed {
			t.Fatalf("%d rows, %d before, changed %v", after, before, changed)
		}
	})
}

func checkEntries[W any](t *testing.T, got []cptest.AuditEntry, wants []W, fields func(W) (action, actorType string, actor int64, requestID, ip, outcome string)) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%d entries %v, want %d", len(got), actions(got), len(wants))
	}
	for i, w := range wants {
		action, actorType, actor, requestID, ip, outcome := fields(w)
		e := got[i]
		ok := e.Action == action && e.ActorType == actorType && e.Outcome == outcome &&
			(actor == 0) == (e.ActorID == nil) && (actor == 0 || *e.ActorID == actor) &&
			e.RequestID != nil && *e.RequestID == requestID && e.ClientIP != nil && *e.ClientIP == ip
		if !ok {
			t.Errorf("entry %d = %+v, want %s by %s %d in %s from %s (%s)", i, e, action, actorType, actor, requestID, ip, outcome)
		}
	}
}

// TestAuditClientAddress checks that X-Real-IP counts only from a trusted
// proxy: with the loopback not trusted, the peer's own address is
// recorded whatever the client claims.
func TestAuditClientAddress(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.TrustedProxies = "10.0.0.0/8" }})
	admin := h.loginAdmin(t)
	u := h.register(t, "claims@example.com", "claims-password-1", false)
	h.do(t, http.MethodPatch, "/admin/users/"+id(u.ID), map[string]any{"is_verified": true}, withToken(admin.AccessToken),
		withHeader("X-Real-IP", "203.0.113.9"), withHeader("X-Forwarded-For", "203.0.113.9")).expect(t, http.StatusOK, "")
	entries := h.audit(t, admin.AccessToken, "action=user.update&target_id="+id(u.ID))
	if len(entries) != 1 || entries[0].ClientIP == nil || *entries[0].ClientIP != "127.0.0.1" {
		t.Fatalf("entries %+v, want the peer's address 127.0.0.1", entries)
	}
}

func userOf(id int64, token string) cptest.User { return cptest.User{ID: id, AccessToken: token} }
