package app_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

type auditPage struct {
	Items      []cptest.AuditEntry `json:"items"`
	NextCursor *string             `json:"next_cursor"`
}

// audit reads the admin audit log with query (without the leading ?),
// oldest first, every page.
func (h *harness) audit(t testing.TB, admin, query string) []cptest.AuditEntry {
	t.Helper()
	return adminAudit(t, h.ControlPlane, admin, query)
}

// adminAudit reads cp's audit log as admin with query (without the
// leading ?), oldest first, every page.
func adminAudit(t testing.TB, cp *cptest.ControlPlane, admin, query string) []cptest.AuditEntry {
	t.Helper()
	var all []cptest.AuditEntry
	cursor := ""
	for {
		q := query + "&limit=200"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		var p auditPage
		cp.Do(t, http.MethodGet, "/admin/audit?"+q, admin, nil).Expect(t, http.StatusOK).Decode(t, &p)
		all = append(all, p.Items...)
		if p.NextCursor == nil {
			break
		}
		cursor = *p.NextCursor
	}
	slices.Reverse(all)
	return all
}

// actions lists the actions of entries, in order.
func actions(entries []cptest.AuditEntry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Action
	}
	return out
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

// tenantOwnerHash is the password hash of email's row in organization
// org's tenant database; found is false when there is no such row.
func (h *harness) tenantOwnerHash(t testing.TB, org int64, email string) (hash, role string, found bool) {
	t.Helper()
	db := h.Tenant(t, org).Database
	if db == nil {
		t.Fatalf("organization %d has no database", org)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, cptest.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = conn.QueryRow(ctx, `SELECT password_hash, role FROM tenantuser WHERE email = $1`, email).Scan(&hash, &role)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	return hash, role, true
}

func (h *harness) coreHash(t testing.TB, email string) string {
	t.Helper()
	var hash string
	if err := h.db(t).QueryRow(context.Background(), `SELECT password_hash FROM coreuser WHERE email = $1`, email).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	return hash
}

// onboard is POST /admin/organizations, checked like the owner's create.
func (h *harness) onboard(t testing.TB, admin, name, email string) cptest.Organization {
	t.Helper()
	res := h.do(t, http.MethodPost, "/admin/organizations", map[string]string{"name": name, "owner_email": email}, withToken(admin))
	res.expect(t, http.StatusAccepted, "")
	var org cptest.Organization
	res.Decode(t, &org)
	if org.Status != "provisioning" || org.Name != name {
		t.Fatalf("onboarded %+v, want %s provisioning", org, name)
	}
	if loc := res.Header.Get("Location"); loc != "/organizations/"+id(org.ID) {
		t.Fatalf("Location %q, want /organizations/%d", loc, org.ID)
	}
	return org
}

func TestOnboardKnownOwner(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{})
	admin := h.loginAdmin(t).AccessToken
	// A verified user who is not an owner yet.
	u, tok := h.signUp(t, "known@example.com", "known-password-1", false)

	org := h.onboard(t, admin, "Known Co", "  Known@Example.com ")
	if org.OwnerID != u.ID {
		t.Fatalf("owner %d, want the known user %d", org.OwnerID, u.ID)
	}
	var me userBody
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).Decode(t, &me)
	if !me.IsOwner {
		t.Fatalf("the known user did not become an owner: %+v", me)
	}
	h.WaitStatus(t, admin, org.ID, "ready", 2*time.Minute)
	// The owner had a password: the tenant has them as admin with it at once.
	hash, role, found := h.tenantOwnerHash(t, org.ID, u.Email)
	if !found || role != "admin" || hash != h.coreHash(t, u.Email) {
		t.Fatalf("tenant owner row found=%v role=%q, hash equal=%v", found, role, hash == h.coreHash(t, u.Email))
	}
	if n := h.mailsTo(u.Email); n != 1 {
		t.Fatalf("%d mails to the known owner, want only the verification mail", n)
	}
	// The owner sees it as their own.
	h.Organization(t, tok.AccessToken, org.ID)

	entries := h.audit(t, admin, "target_type=user&target_id="+id(u.ID))
	if got := actions(entries); !slices.Equal(got, []string{"user.create", "user.verify", "user.update"}) {
		t.Fatalf("audit of the user: %v", got)
	}
	if e := entries[2]; e.ActorType != "user" || e.ActorID == nil || e.Detail["is_owner"] != true {
		t.Fatalf("is_owner grant %+v, want by the admin with is_owner", e)
	}
}

func TestOnboardInvitedOwner(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.InvitationTTL = time.Hour }})
	admin := h.loginAdmin(t).AccessToken
	const email = "new-owner@example.com"

	org := h.onboard(t, admin, "Fresh Co", email)
	var owner userBody
	var users struct {
		Items []userBody `json:"items"`
	}
	h.do(t, http.MethodGet, "/admin/users?email="+email, nil, withToken(admin)).Decode(t, &users)
	if len(users.Items) != 1 {
		t.Fatalf("users %+v", users.Items)
	}
	owner = users.Items[0]
	if owner.ID != org.OwnerID || owner.IsVerified || !owner.IsOwner {
		t.Fatalf("invited account %+v, want the unverified owner of %d", owner, org.OwnerID)
	}
	// Provisioning does not wait for the owner: the organization becomes
	// ready, with the owner's admin row but no usable password.
	h.WaitStatus(t, admin, org.ID, "ready", 2*time.Minute)
	if hash, role, found := h.tenantOwnerHash(t, org.ID, email); !found || role != "admin" || hash != "" {
		t.Fatalf("tenant owner row before acceptance: found=%v role=%q hash=%q", found, role, hash)
	}
	h.do(t, http.MethodPost, "/auth/login", map[string]string{"email": email, "password": "anything-at-all"}).
		expect(t, http.StatusUnauthorized, "invalid_credentials")

	first := h.invitationToken(t, email, 1)
	// Onboarding another organization before acceptance sends a new link
	// and voids the first.
	second := h.onboard(t, admin, "Fresh Two", email)
	token := h.invitationToken(t, email, 2)
	accept := func(token, password string) *apiResponse {
		return h.do(t, http.MethodPost, "/auth/invitations/accept", map[string]string{"token": token, "password": password})
	}
	accept(first, "owner-password-1").expect(t, http.StatusBadRequest, "token_invalid")
	accept(token, "short").expect(t, http.StatusUnprocessableEntity, "validation_failed")
	accept("", "owner-password-1").expect(t, http.StatusUnprocessableEntity, "validation_failed")

	res := accept(token, "owner-password-1")
	res.expect(t, http.StatusOK, "")
	var tok tokensBody
	res.Decode(t, &tok)
	var me userBody
	h.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).Decode(t, &me)
	if me.ID != owner.ID || !me.IsVerified || !me.IsOwner {
		t.Fatalf("after acceptance /auth/me is %+v", me)
	}
	h.login(t, email, "owner-password-1")
	accept(token, "owner-password-2").expect(t, http.StatusBadRequest, "token_invalid")

	// The password reaches both tenants through the sync job.
	h.WaitStatus(t, admin, second.ID, "ready", 2*time.Minute)
	for _, o := range []int64{org.ID, second.ID} {
		testenv.Eventually(t, 30*time.Second, func() bool {
			hash, _, _ := h.tenantOwnerHash(t, o, email)
			return hash != "" && hash == h.coreHash(t, email)
		}, "the owner's password in tenant "+id(o))
	}

	t.Run("expired invitation", func(t *testing.T) {
		h.onboard(t, admin, "Late Co", "late@example.com")
		late := h.invitationToken(t, "late@example.com", 1)
		testenv.Exec(t, h.DatabaseURL, `UPDATE invitation_token SET expires_at = now() - interval '1 second'
			WHERE user_id = (SELECT id FROM coreuser WHERE email = 'late@example.com')`)
		accept(late, "late-password-1").expect(t, http.StatusGone, "token_expired")
	})

	entries := h.audit(t, admin, "target_type=user&target_id="+id(owner.ID))
	if got := actions(entries); !slices.Equal(got, []string{"user.create", "user.invitation_accept"}) {
		t.Fatalf("audit of the invited owner: %v", got)
	}
	if e := entries[0]; e.ActorType != "user" || e.Detail["via"] != "invitation" {
		t.Fatalf("creation %+v, want by the admin via invitation", e)
	}
	if e := entries[1]; e.ActorType != "user" || e.ActorID == nil || *e.ActorID != owner.ID {
		t.Fatalf("acceptance %+v, want by the owner", e)
	}

	t.Run("validation", func(t *testing.T) {
		h.do(t, http.MethodPost, "/admin/organizations", map[string]string{"name": "", "owner_email": "x"}, withToken(admin)).
			expect(t, http.StatusUnprocessableEntity, "validation_failed")
		h.do(t, http.MethodPost, "/admin/organizations", map[string]string{"name": "Ok"}, withToken(admin)).
			expect(t, http.StatusUnprocessableEntity, "validation_failed")
		h.do(t, http.MethodPost, "/admin/organizations", map[string]string{"name": "Ok", "owner_email": "not-an-email"}, withToken(admin)).
			expect(t, http.StatusUnprocessableEntity, "validation_failed")
		h.do(t, http.MethodPost, "/admin/organizations", map[string]string{"name": "Ok", "owner_email": "x@example.com"}, withToken(tok.AccessToken)).
			expect(t, http.StatusForbidden, "admin_required")
	})
}

// invitationToken waits for the nth invitation mail to email and returns
// the token of its link.
func (h *harness) invitationToken(t testing.TB, email string, nth int) string {
	t.Helper()
	var tokens []string
	testenv.Eventually(t, 15*time.Second, func() bool {
		tokens = tokens[:0]
		for _, m := range h.SMTP.Messages() {
			if len(m.To) == 1 && m.To[0] == email && strings.Contains(m.Text(t), "/auth/invitations/accept?") {
				link := testenv.LinkIn(t, m.Text(t), "http://tenantbase.test/auth/invitations/accept?")
				tokens = append(tokens, link.Query().Get("token"))
			}
		}
		return len(tokens) >= nth
	}, "invitation mail to "+email)
	return tokens[nth-1]
}

func TestOrganizationQuota(t *testing.T) {
	t.Parallel()
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) { c.OwnerMaxOrganizations = 2 }})
	admin := h.loginAdmin(t).AccessToken
	owner, tok := h.signUp(t, "quota@example.com", "quota-password-1", true)
	create := func(name string) *apiResponse {
		return h.do(t, http.MethodPost, "/organizations", map[string]string{"name": name}, withToken(tok.AccessToken))
	}

	first := h.CreateOrganization(t, tok.AccessToken, "One")
	h.CreateOrganization(t, tok.AccessToken, "Two")
	create("Three").expect(t, http.StatusForbidden, "quota_exceeded")
	// Admins creating for the owner are held to the same limit.
	h.do(t, http.MethodPost, "/admin/organizations", map[string]string{"name": "Three", "owner_email": owner.Email}, withToken(admin)).
		expect(t, http.StatusForbidden, "quota_exceeded")
	h.do(t, http.MethodPost, "/organizations", map[string]any{"name": "Three", "owner_id": owner.ID}, withToken(admin)).
		expect(t, http.StatusForbidden, "quota_exceeded")

	// A deleted (or deleting) organization does not count.
	h.do(t, http.MethodDelete, "/organizations/"+id(first.ID), nil, withToken(tok.AccessToken)).expect(t, http.StatusAccepted, "")
	h.CreateOrganization(t, tok.AccessToken, "Three")
	create("Four").expect(t, http.StatusForbidden, "quota_exceeded")

	// The user's own limit replaces the default, and null restores it.
	patch := func(body any) *apiResponse {
		return h.do(t, http.MethodPatch, "/admin/users/"+id(owner.ID), body, withToken(admin))
	}
	var u struct {
		MaxOrganizations *int `json:"max_organizations"`
	}
	res := patch(map[string]any{"max_organizations": 8})
	res.expect(t, http.StatusOK, "")
	res.Decode(t, &u)
	if u.MaxOrganizations == nil || *u.MaxOrganizations != 8 {
		t.Fatalf("max_organizations %v, want 8", u.MaxOrganizations)
	}
	patch(map[string]any{"max_organizations": -1}).expect(t, http.StatusUnprocessableEntity, "validation_failed")
	patch(map[string]any{"max_organizations": "ten"}).expect(t, http.StatusUnprocessableEntity, "validation_failed")
	patch(map[string]any{"max_organizations": 1.5}).expect(t, http.StatusUnprocessableEntity, "validation_failed")

	// Eight creations at once with room for six: exactly six get in.
	var wg sync.WaitGroup
	statuses := make([]int, 8)
	for i := range statuses {
		wg.Go(func() { statuses[i] = create("Burst " + strconv.Itoa(i)).Status })
	}
	wg.Wait()
	accepted := 0
	for _, s := range statuses {
		switch s {
		case http.StatusAccepted:
			accepted++
		case http.StatusForbidden:
		default:
			t.Fatalf("concurrent creation answered %d", s)
		}
	}
	if accepted != 6 {
		t.Fatalf("%d of 8 concurrent creations accepted with room for 6 (%v)", accepted, statuses)
	}
	var n int
	if err := h.db(t).QueryRow(context.Background(), `SELECT count(*) FROM organization
		WHERE owner_id = $1 AND status NOT IN ('deleting', 'deleted')`, owner.ID).Scan(&n); err != nil || n != 8 {
		t.Fatalf("%d counted organizations (%v), want 8", n, err)
	}

	res = patch(map[string]any{"max_organizations": nil})
	res.expect(t, http.StatusOK, "")
	res.Decode(t, &u)
	if u.MaxOrganizations != nil {
		t.Fatalf("max_organizations %v after reset, want null", *u.MaxOrganizations)
	}
	create("Over").expect(t, http.StatusForbidden, "quota_exceeded")

	entries := h.audit(t, admin, "action=user.update&target_id="+id(owner.ID))
	if len(entries) != 2 || entries[0].Detail["max_organizations"] != float64(8) || entries[1].Detail["max_organizations"] != nil {
		t.Fatalf("limit changes in the audit log: %+v", entries)
	}
}
