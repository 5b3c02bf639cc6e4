package app_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// TestEventsWaitForNATS creates organizations while NATS is down: the API
// keeps answering, provisioning completes, and once NATS is back every
// tenant.created arrives exactly once.
func TestEventsWaitForNATS(t *testing.T) {
	t.Parallel()
	const orgs = 10
	cases := []struct {
		name string
		// down is when NATS stops: before the control plane starts (so the
		// stream does not exist yet), or while it runs.
		downAtStart bool
	}{
		{"down at start", true},
		{"down while running", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nats := testenv.NATS(t)
			if tc.downAtStart {
				nats.Shutdown()
			}
			cp := cptest.Start(t, cptest.Options{NATSURL: nats.URL()})
			owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
			if !tc.downAtStart {
				first := cp.CreateReadyOrganization(t, owner, "Before the outage")
				before := cptest.Subscribe(t, nats.URL(), events.TenantCreated)
				before.WaitFor(t, 1, 30*time.Second)
				nats.Shutdown()
				t.Logf("organization %d announced before the outage", first.ID)
			}

			ids := map[int64]bool{}
			for i := range orgs {
				org := cp.CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Outage %d", i))
				ids[org.ID] = true
			}
			for id := range ids {
				cp.WaitStatus(t, owner.AccessToken, id, "ready", readyTimeout)
			}
			cp.Do(t, http.MethodGet, "/organizations", owner.AccessToken, nil).Expect(t, http.StatusOK)
			var pending int
			testenv.QueryRow(t, cp.DatabaseURL, `SELECT count(*) FROM event_outbox WHERE published_at IS NULL`, nil, &pending)
			if pending != orgs {
				t.Fatalf("%d events wait in the outbox, want %d", pending, orgs)
			}

			nats.Restart()
			log := cptest.Subscribe(t, nats.URL(), events.TenantCreated)
			log.WaitUntil(t, time.Minute, "every tenant.created", func(got []cptest.Received) bool {
				n := 0
				for _, r := range got {
					if ids[r.Envelope.Data.TenantID] {
						n++
					}
				}
				return n >= orgs
			})
			cptest.OutboxDrained(t, cp.DatabaseURL, 30*time.Second)
			got := log.Drain(t, 30*time.Second)
			perTenant := map[int64]int{}
			perID := map[string]int{}
			for _, r := range got {
				perID[r.Envelope.ID]++
				if ids[r.Envelope.Data.TenantID] {
					perTenant[r.Envelope.Data.TenantID]++
				}
			}
			for id := range ids {
				if perTenant[id] != 1 {
					t.Errorf("tenant %d: %d tenant.created events, want 1", id, perTenant[id])
				}
			}
			for id, n := range perID {
				if n != 1 {
					t.Errorf("event %s received %d times", id, n)
				}
			}
		})
	}
}
