package app_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"tenantbase/libs/events"
	"tenantbase/libs/natsembed"
	"tenantbase/libs/testenv"
	cpapp "tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/tenant-plane/app"
)

// TestEventsFlowBetweenLeastPrivilegeUsers runs both planes against a NATS
// server that lets each log in only with the permissions of its role, as
// the shipped configurations do: the control plane's events reach the
// tenant plane, and neither is refused anything it needs.
func TestEventsFlowBetweenLeastPrivilegeUsers(t *testing.T) {
	pub, follow := events.DefaultChannel.PublisherPermissions(), events.DefaultChannel.FollowerPermissions()
	srv := testenv.NATSWithUsers(t,
		natsembed.User{Name: "control-plane", Password: "cp-password", Publish: pub.Publish, Subscribe: pub.Subscribe},
		natsembed.User{Name: "tenant-plane", Password: "tp-password", Publish: follow.Publish, Subscribe: follow.Subscribe},
	)
	cp := cptest.Start(t, cptest.Options{NATSURL: srv.URL(), Configure: func(c *cpapp.Config) {
		c.NATSUser, c.NATSPassword = "control-plane", "cp-password"
	}})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	org := cp.CreateReadyOrganization(t, owner, "Alpha")
	tp := startPlane(t, cp.InternalURL, srv.URL(), func(c *app.Config) {
		c.NATSUser, c.NATSPassword = "tenant-plane", "tp-password"
	})
	tok := tp.login(t, org.ID, owner.Email, ownerPassword).AccessToken
	tp.call(t, http.MethodGet, "/profile", org.ID, tok, nil).Expect(t, http.StatusOK)

	// The cache holds the tenant for minutes: only the event makes this quick.
	cp.Do(t, http.MethodPost, path("/admin/organizations/%d/suspend", org.ID), cp.LoginAdmin(t), nil).Expect(t, http.StatusOK)
	testenv.Eventually(t, 10*time.Second, func() bool {
		return tp.call(t, http.MethodGet, "/profile", org.ID, tok, nil).Status == http.StatusForbidden
	}, "the suspension arrives through NATS")
	for name, logs := range map[string]string{"control plane": cp.Logs(), "tenant plane": tp.svc.Logs.String()} {
		if strings.Contains(logs, "Permissions Violation") {
			t.Errorf("the %s was refused something:\n%s", name, logs)
		}
	}
}
