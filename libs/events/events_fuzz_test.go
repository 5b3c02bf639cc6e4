package events_test

import (
	"encoding/json"
	"testing"

	"tenantbase/libs/events"
)

// FuzzDecode feeds Decode arbitrary bytes: it never panics, and what it
// accepts survives encoding and decoding again unchanged.
func FuzzDecode(f *testing.F) {
	good, _ := json.Marshal(events.New(events.TenantCreated, "prod", events.TenantData{TenantID: 7, Name: "Acme", OwnerID: 1, Status: "ready", SchemaVersion: 1}))
	for _, seed := range []string{string(good), `{}`, `null`, `[]`, `{"specversion":"1.0","id":"x","type":"tenant.x","subject":"1"}`,
		`{"specversion":"1.0","id":"x","type":"other.created","subject":"1"}`, `{"data":{"tenant_id":"1"}}`, "\xff"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := events.Decode(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("an accepted envelope does not encode: %v", err)
		}
		back, err := events.Decode(again)
		if err != nil || back != e {
			t.Fatalf("round trip changed the envelope: %+v -> %+v (%v)", e, back, err)
		}
	})
}
