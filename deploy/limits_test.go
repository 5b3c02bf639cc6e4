package deploy_test

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"tenantbase/deploy/internal/ingress"
)

// TestIngressLimitsAgree checks that nginx.conf (production) and the Go
// ingress of `make run` enforce the same rate limits on the same routes,
// so that what a user meets locally is what production does.
func TestIngressLimitsAgree(t *testing.T) {
	raw, err := os.ReadFile("nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(raw)
	zone := func(key, name string) float64 {
		t.Helper()
		m := regexp.MustCompile(`limit_req_zone \` + key + ` zone=` + name + `:\d+m rate=(\d+)r/s;`).FindStringSubmatch(conf)
		if m == nil {
			t.Fatalf("nginx.conf has no limit_req_zone %s keyed on %s", name, key)
		}
		n, _ := strconv.ParseFloat(m[1], 64)
		return n
	}
	bursts := func(name string) []int {
		var out []int
		for _, m := range regexp.MustCompile(`limit_req zone=`+name+` burst=(\d+) nodelay;`).FindAllStringSubmatch(conf, -1) {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
		return out
	}
	want := ingress.DefaultLimits
	if got := zone("$binary_remote_addr", "auth_per_ip"); got != want.AuthRate {
		t.Errorf("nginx auth rate %v/s, Go ingress %v/s", got, want.AuthRate)
	}
	if got := zone("$http_x_tenant", "per_tenant"); got != want.TenantRate {
		t.Errorf("nginx tenant rate %v/s, Go ingress %v/s", got, want.TenantRate)
	}
	if b := bursts("auth_per_ip"); len(b) != 1 || b[0] != want.AuthBurst {
		t.Errorf("nginx auth bursts %v, want one of %d", b, want.AuthBurst)
	}
	if b := bursts("per_tenant"); len(b) != 2 || b[0] != want.TenantBurst || b[1] != want.TenantBurst {
		t.Errorf("nginx tenant bursts %v, want %d in both proxying locations", b, want.TenantBurst)
	}
	loc := regexp.MustCompile(`location ~ (\S+) \{\s*limit_req zone=auth_per_ip`).FindStringSubmatch(conf)
	if loc == nil || loc[1] != ingress.AuthRoutePattern {
		t.Errorf("nginx auth location %v, want %s", loc, ingress.AuthRoutePattern)
	}
}
