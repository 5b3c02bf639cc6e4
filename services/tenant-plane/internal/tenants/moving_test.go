package tenants

import (
	"errors"
	"testing"

	"tenantbase/libs/tenantapi"
)

// TestMovingTenantsAreServed: a tenant whose database moves keeps being
// served (its database refuses the writes); every other status keeps its
// answer.
func TestMovingTenantsAreServed(t *testing.T) {
	for status, want := range map[tenantapi.Status]error{
		tenantapi.StatusReady:        nil,
		tenantapi.StatusMoving:       nil,
		tenantapi.StatusProvisioning: ErrNotReady,
		tenantapi.StatusFailed:       ErrFailed,
		tenantapi.StatusSuspended:    ErrSuspended,
		tenantapi.StatusDeleting:     ErrNotFound,
		tenantapi.StatusDeleted:      ErrNotFound,
	} {
		if err := Usable(Tenant{ID: 1, Status: status}); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("Usable(%s) = %v, want %v", status, err, want)
		}
	}
}
