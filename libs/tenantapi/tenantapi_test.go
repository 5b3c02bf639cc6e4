package tenantapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"tenantbase/libs/tenantapi"
)

func TestPasswordTravelsButNeverPrints(t *testing.T) {
	tn := tenantapi.Tenant{ID: 7, Status: tenantapi.StatusReady, Database: &tenantapi.Database{
		Host: "db", Port: 5432, Name: "t", User: "t", Password: "hunter2-secret"}}
	b, err := json.Marshal(tn)
	if err != nil {
		t.Fatal(err)
	}
	var back tenantapi.Tenant
	if err := json.Unmarshal(b, &back); err != nil || back.Database.Password.Reveal() != "hunter2-secret" {
		t.Fatalf("round trip lost the password: %s, %v", b, err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("tenant", "tenant", tn, "db", *tn.Database, "pw", tn.Database.Password)
	for name, out := range map[string]string{
		"fmt":  fmt.Sprintf("%v %+v %#v %s", *tn.Database, *tn.Database, *tn.Database, tn.Database.Password),
		"slog": logs.String(),
	} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("%s shows the password: %s", name, out)
		}
	}
}

func TestValidate(t *testing.T) {
	ready := &tenantapi.Database{Host: "db", Port: 5432, Name: "t", User: "t"}
	for _, tc := range []struct {
		name string
		t    tenantapi.Tenant
		ok   bool
	}{
		{"ready with a database", tenantapi.Tenant{ID: 7, Status: tenantapi.StatusReady, Database: ready}, true},
		{"provisioning without one", tenantapi.Tenant{ID: 7, Status: tenantapi.StatusProvisioning}, true},
		{"another id", tenantapi.Tenant{ID: 8, Status: tenantapi.StatusProvisioning}, false},
		{"ready without a database", tenantapi.Tenant{ID: 7, Status: tenantapi.StatusReady}, false},
		{"moving with a database", tenantapi.Tenant{ID: 7, Status: tenantapi.StatusMoving, Database: ready}, true},
		{"moving without a database", tenantapi.Tenant{ID: 7, Status: tenantapi.StatusMoving}, false},
		{"ready without a port", tenantapi.Tenant{ID: 7, Status: tenantapi.StatusReady, Database: &tenantapi.Database{Host: "db", Name: "t", User: "t"}}, false},
		{"unknown status", tenantapi.Tenant{ID: 7, Status: "archived"}, false},
	} {
		if err := tc.t.Validate(7); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
