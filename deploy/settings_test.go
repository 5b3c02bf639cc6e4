package deploy_test

import (
	"testing"

	cpapp "tenantbase/services/control-plane/app"
)

// TestManifestProductionSettings: the base carries a PUBLIC_URL that the
// control plane refuses until an overlay sets a real one, and connects to
// tenant databases over TLS; the dev overlay sets what a local cluster
// needs, so it still starts.
func TestManifestProductionSettings(t *testing.T) {
	tests := []struct {
		name, dir      string
		publicURLValid bool
		sslmode        string
	}{
		{name: "base", dir: "deploy/k8s/base", publicURLValid: false, sslmode: "require"},
		// The dev Postgres has no TLS.
		{name: "dev", dir: "deploy/k8s/overlays/dev", publicURLValid: true, sslmode: "disable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := render(t, tt.dir)
			cp := r.configMapData(t, envConfigMapName(t, r, "control-plane", "control-plane-env"))
			err := cpapp.CheckPublicURL(cp["ENV"], cp["PUBLIC_URL"])
			if tt.publicURLValid && err != nil {
				t.Errorf("the control plane refuses PUBLIC_URL=%s: %v", cp["PUBLIC_URL"], err)
			}
			if !tt.publicURLValid && (err == nil || cp["ENV"] != "production") {
				t.Errorf("ENV=%s PUBLIC_URL=%s is accepted: the placeholder must keep the control plane from starting", cp["ENV"], cp["PUBLIC_URL"])
			}
			tp := r.configMapData(t, envConfigMapName(t, r, "tenant-plane", "tenant-plane-env"))
			if tp["TENANT_DB_SSLMODE"] != tt.sslmode {
				t.Errorf("TENANT_DB_SSLMODE=%q, want %s", tp["TENANT_DB_SSLMODE"], tt.sslmode)
			}
		})
	}
}
