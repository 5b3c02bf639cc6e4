package dbservers_test

import (
	"testing"

	"tenantbase/services/control-plane/internal/dbservers"
)

func TestChoose(t *testing.T) {
	t.Parallel()
	s := func(id int64, state dbservers.State, max, tenants int) dbservers.Server {
		return dbservers.Server{ID: id, State: state, MaxTenants: max, Tenants: tenants}
	}
	active, draining := dbservers.StateActive, dbservers.StateDraining
	for _, tc := range []struct {
		name    string
		servers []dbservers.Server
		want    int64 // 0: none
	}{
		{"none registered", nil, 0},
		{"the most free places", []dbservers.Server{s(1, active, 100, 90), s(2, active, 50, 10), s(3, active, 200, 180)}, 2},
		{"a tie goes to the lowest id", []dbservers.Server{s(3, active, 10, 5), s(2, active, 10, 5), s(4, active, 6, 1)}, 2},
		{"draining servers take none", []dbservers.Server{s(1, draining, 100, 0), s(2, active, 10, 9)}, 2},
		{"full servers take none", []dbservers.Server{s(1, active, 10, 10), s(2, draining, 10, 0)}, 0},
		{"over-full servers take none", []dbservers.Server{s(1, active, 10, 12)}, 0},
	} {
		got, ok := dbservers.Choose(tc.servers)
		if (tc.want == 0) == ok || (ok && got.ID != tc.want) {
			t.Errorf("%s: Choose = %d, %v; want %d", tc.name, got.ID, ok, tc.want)
		}
	}
}

func TestAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dsn  string
		host string
		port int
		ok   bool
	}{
		{"postgres://admin:pw@db-1.internal:6432/postgres?sslmode=require", "db-1.internal", 6432, true},
		{"postgresql://admin@10.0.0.5/postgres", "10.0.0.5", 5432, true},
		{"postgres://admin@[::1]:5433/postgres", "::1", 5433, true},
		{"host=db user=admin", "", 0, false},
		{"postgres:///postgres?host=/var/run/postgresql", "localhost", 5432, true},
		{"postgres://admin@db:99999/postgres", "", 0, false},
	} {
		host, port, err := dbservers.Address(tc.dsn)
		if (err == nil) != tc.ok || host != tc.host || port != tc.port {
			t.Errorf("Address(%q) = %q, %d, %v", tc.dsn, host, port, err)
		}
	}
}
