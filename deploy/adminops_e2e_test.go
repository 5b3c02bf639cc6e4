//go:build unix

package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tenantbase/libs/testenv"
)

// TestAdminOpsThroughIngress runs the stack of TestIngressEndToEnd (nginx
// with deploy/nginx/nginx.conf in front of two replicas of each plane) and
// takes a platform admin's onboarding through it for a known and for an
// unknown email, up to each owner signing in to their tenant; then checks
// the ingress's rate limits (per client address on the auth routes of
// both planes, per tenant everywhere): a burst is answered 429
// rate_limited with Retry-After by nginx itself, and requests pass again
// once the wait is over. Clients use loopback addresses of their own
// (127.0.0.x), which nginx tells apart like any client addresses.
func TestAdminOpsThroughIngress(t *testing.T) {
	s := e2eStartStack(t)
	const password = "correct-horse-battery-staple"
	var admin string
	e2eStep(t, "admin logs in", func(t *testing.T) {
		r := s.do(t, http.MethodPost, "/auth/login", map[string]any{"email": e2eAdminEmail, "password": e2eAdminPassword})
		r.Expect(t, http.StatusOK)
		admin = e2eTokens(t, r)
	})
	auth := func(token string) []string { return []string{"Authorization", "Bearer " + token} }

	type org struct {
		ID      int64  `json:"id"`
		OwnerID int64  `json:"owner_id"`
		Status  string `json:"status"`
	}
	onboard := func(t *testing.T, client *http.Client, name, email string) org {
		t.Helper()
		r := s.sendWith(t, client, http.MethodPost, "/admin/organizations", map[string]any{"name": name, "owner_email": email},
			append(auth(admin), "X-Real-IP", "198.51.100.7")...)
		r.Expect(t, http.StatusAccepted)
		var o org
		r.Decode(t, &o)
		if o.Status != "provisioning" || r.Header.Get("Location") != "/organizations/"+strconv.FormatInt(o.ID, 10) {
			t.Fatalf("onboarded %s with Location %q", r.Body, r.Header.Get("Location"))
		}
		return o
	}
	waitReady := func(t *testing.T, id int64) {
		t.Helper()
		testenv.Eventually(t, 90*time.Second, func() bool {
			var o org
			s.do(t, http.MethodGet, "/organizations/"+strconv.FormatInt(id, 10), nil, auth(admin)...).Expect(t, http.StatusOK).Decode(t, &o)
			if o.Status == "failed" {
				t.Fatalf("organization %d failed", id)
			}
			return o.Status == "ready"
		}, "organization ready")
	}
	tenantLogin := func(t *testing.T, id int64, email, pw string) *testenv.Response {
		t.Helper()
		return s.do(t, http.MethodPost, "/auth/login", map[string]any{"email": email, "password": pw}, "X-TENANT", strconv.FormatInt(id, 10))
	}

	e2eStep(t, "onboarding a known user", func(t *testing.T) {
		email := "known-" + e2eRandomHex(t, 4) + "@example.com"
		s.do(t, http.MethodPost, "/auth/register", map[string]any{"email": email, "password": password}).Expect(t, http.StatusCreated)
		m := s.smtp.WaitForMail(t, 30*time.Second, func(m testenv.Mail) bool { return len(m.To) == 1 && m.To[0] == email })
		s.do(t, http.MethodGet, strings.TrimPrefix(e2eVerificationLink(t, m, s.url), s.url), nil).Expect(t, http.StatusOK)

		// From a client address of its own, to find it in the audit log.
		o := onboard(t, s.clientFrom(t, "127.0.0.3"), "Known Co", email)
		waitReady(t, o.ID)
		r := tenantLogin(t, o.ID, email, password)
		r.Expect(t, http.StatusOK)
		if p := s.profile(t, e2eTokens(t, r), strconv.FormatInt(o.ID, 10)); p.Role != "admin" || p.Email != email {
			t.Fatalf("known owner's tenant profile %+v", p)
		}
		var page struct {
			Items []struct {
				ActorType string  `json:"actor_type"`
				ClientIP  *string `json:"client_ip"`
				RequestID *string `json:"request_id"`
			} `json:"items"`
		}
		s.do(t, http.MethodGet, fmt.Sprintf("/admin/audit?action=organization.create&target_id=%d", o.ID), nil, auth(admin)...).
			Expect(t, http.StatusOK).Decode(t, &page)
		// nginx replaces the X-Real-IP the client sent with the address it saw.
		if len(page.Items) != 1 || page.Items[0].ClientIP == nil || *page.Items[0].ClientIP != "127.0.0.3" || page.Items[0].RequestID == nil {
			t.Fatalf("audit of the onboarding %+v, want client_ip 127.0.0.3 and a request id", page.Items)
		}
	})

	e2eStep(t, "onboarding an unknown email", func(t *testing.T) {
		email := "invited-" + e2eRandomHex(t, 4) + "@example.com"
		o := onboard(t, s.client, "Invited Co", email)
		m := s.smtp.WaitForMail(t, 30*time.Second, func(m testenv.Mail) bool { return len(m.To) == 1 && m.To[0] == email })
		link := testenv.LinkIn(t, m.Text(t), s.url+"/auth/invitations/accept?")
		token := link.Query().Get("token")
		if token == "" {
			t.Fatalf("invitation link %s has no token", link)
		}
		waitReady(t, o.ID)
		tenantLogin(t, o.ID, email, password).ExpectProblem(t, http.StatusUnauthorized, "invalid_credentials")

		r := s.do(t, http.MethodPost, "/auth/invitations/accept", map[string]any{"token": token, "password": password})
		r.Expect(t, http.StatusOK)
		core := e2eTokens(t, r)
		var me struct {
			ID         int64 `json:"id"`
			IsVerified bool  `json:"is_verified"`
			IsOwner    bool  `json:"is_owner"`
		}
		s.do(t, http.MethodGet, "/auth/me", nil, auth(core)...).Expect(t, http.StatusOK).Decode(t, &me)
		if me.ID != o.OwnerID || !me.IsVerified || !me.IsOwner {
			t.Fatalf("invited owner after acceptance %+v, want verified owner %d", me, o.OwnerID)
		}
		// The password reaches the tenant through the sync job, enqueued
		// with the acceptance. Polling the tenant login instead would lock
		// the account with failures if the job takes a moment.
		testenv.Eventually(t, 60*time.Second, func() bool {
			var pending, done int
			testenv.QueryRow(t, s.coreDB, `SELECT count(*) FILTER (WHERE state NOT IN ('completed', 'cancelled', 'discarded')),
				count(*) FILTER (WHERE state = 'completed')
				FROM river_job WHERE kind = 'sync_owner_password' AND args->>'owner_id' = $1`,
				[]any{strconv.FormatInt(o.OwnerID, 10)}, &pending, &done)
			return pending == 0 && done > 0
		}, "the owner's password sync")
		r = tenantLogin(t, o.ID, email, password)
		r.Expect(t, http.StatusOK)
		if p := s.profile(t, e2eTokens(t, r), strconv.FormatInt(o.ID, 10)); p.Role != "admin" {
			t.Fatalf("invited owner's tenant role %q", p.Role)
		}
		s.do(t, http.MethodPost, "/auth/invitations/accept", map[string]any{"token": token, "password": password}).
			ExpectProblem(t, http.StatusBadRequest, "token_invalid")
	})

	// Every request the ingress refused, by request id: no plane may have seen one.
	var refusedMu sync.Mutex
	var refused []string
	// limited reports whether r is the ingress's 429 and checks its form;
	// it may run in goroutines of the test, so it reports with Errorf.
	limited := func(t *testing.T, r *testenv.Response, id string) bool {
		t.Helper()
		if r.Status != http.StatusTooManyRequests {
			return false
		}
		var p struct {
			Status int    `json:"status"`
			Code   string `json:"code"`
		}
		if err := json.Unmarshal(r.Body, &p); err != nil || p.Status != 429 || p.Code != "rate_limited" {
			t.Errorf("429 body %s, want a rate_limited problem", r.Body)
		}
		if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("429 without a Retry-After: %q", r.Header.Get("Retry-After"))
		}
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/problem+json") || r.Header.Get("X-Request-ID") != id {
			t.Errorf("429 headers %v", r.Header)
		}
		refusedMu.Lock()
		refused = append(refused, id)
		refusedMu.Unlock()
		return true
	}

	e2eStep(t, "auth routes are limited per client address, on both planes", func(t *testing.T) {
		client := s.clientFrom(t, "127.0.0.2")
		n := 0
		send := func(tenant bool) *testenv.Response {
			n++
			id := "e2e-rl-auth-" + strconv.Itoa(n)
			headers := []string{"X-Request-ID", id}
			if tenant {
				headers = append(headers, "X-TENANT", "1")
			}
			r := s.sendWith(t, client, http.MethodPost, "/auth/refresh", map[string]any{"refresh_token": "nope"}, headers...)
			limited(t, r, id)
			return r
		}
		passed := 0
		for passed < 100 && send(false).Status != http.StatusTooManyRequests {
			passed++
		}
		if passed == 100 || passed < 10 {
			t.Fatalf("limited after %d requests, want after the burst of 10 (and before 100)", passed)
		}
		// The same address is limited on the tenant plane's auth routes too.
		if r := send(true); r.Status != http.StatusTooManyRequests {
			t.Fatalf("tenant-plane refresh from a limited address: %d", r.Status)
		}
		// Others are not, and routes outside auth are not limited per address.
		s.do(t, http.MethodPost, "/auth/refresh", map[string]any{"refresh_token": "nope"}).ExpectProblem(t, http.StatusUnauthorized, "invalid_refresh_token")
		s.sendWith(t, client, http.MethodGet, "/health", nil).Expect(t, http.StatusOK)
		// Recovery: a token is back within 1/5 s.
		testenv.Eventually(t, 10*time.Second, func() bool { return send(false).Status == http.StatusUnauthorized }, "the address passing again")
	})

	e2eStep(t, "each tenant is limited", func(t *testing.T) {
		const tenant = "987654321"
		var sent, seen429 atomic.Int64
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil && seen429.Load() == 0 && sent.Add(1) <= 3000; i++ {
					id := fmt.Sprintf("e2e-rl-tenant-%d-%d", w, i)
					r, err := s.get(ctx, "/health", "X-TENANT", tenant, "X-Request-ID", id)
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("tenant request: %v", err)
						}
						return
					}
					if limited(t, r, id) {
						seen429.Add(1)
					} else if r.Status != http.StatusOK {
						t.Errorf("tenant request answered %d", r.Status)
						return
					}
				}
			})
		}
		wg.Wait()
		if seen429.Load() == 0 {
			t.Fatalf("%d requests for one tenant, none limited", sent.Load())
		}
		// Another tenant, and the control plane, are not held back.
		s.do(t, http.MethodGet, "/health", nil, "X-TENANT", "987654322").Expect(t, http.StatusOK)
		s.do(t, http.MethodGet, "/health", nil).Expect(t, http.StatusOK)
		testenv.Eventually(t, 10*time.Second, func() bool {
			return s.do(t, http.MethodGet, "/health", nil, "X-TENANT", tenant).Status == http.StatusOK
		}, "the tenant passing again")
	})

	e2eStep(t, "refused requests never reached a plane", func(t *testing.T) {
		if len(refused) == 0 {
			t.Fatal("nothing was refused")
		}
		for _, p := range append(slices.Clone(s.controlPlanes), s.tenantPlanes...) {
			for _, id := range p.requestIDs(t) {
				if slices.Contains(refused, id) {
					t.Errorf("%s logged request %s, which nginx refused", p.name, id)
				}
			}
		}
	})
}

// clientFrom is a client whose connections come from the loopback address
// ip, a client address of its own as nginx sees it.
func (s *e2eStack) clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	c := &http.Client{
		Transport:     &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 2},
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// sendWith sends a request to the ingress with client.
func (s *e2eStack) sendWith(t *testing.T, client *http.Client, method, path string, body any, headers ...string) *testenv.Response {
	t.Helper()
	req := testenv.JSONRequest(t, method, s.url+path, body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return testenv.Send(t, client, req, nil)
}

// get sends a GET to the ingress without failing the test, for use in
// goroutines of it.
func (s *e2eStack) get(ctx context.Context, path string, headers ...string) (*testenv.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return &testenv.Response{Method: req.Method, Path: path, Status: res.StatusCode, Header: res.Header, Body: body}, err
}
