// Package tenants resolves the X-TENANT id of a request to the tenant's
// status and database. The control plane's internal API is the source of
// truth; a Resolver caches its answers in-process and lifecycle events from
// TENANT_EVENTS invalidate them.
package tenants

import (
	"errors"
	"fmt"

	"tenantbase/libs/tenantapi"
)

// Tenant is one organization as the internal API answers for it.
type Tenant = tenantapi.Tenant

// Errors telling why a request cannot be served for a tenant.
var (
	ErrNotFound  = errors.New("no such tenant")
	ErrNotReady  = errors.New("the tenant is still being provisioned")
	ErrFailed    = errors.New("the tenant could not be provisioned")
	ErrSuspended = errors.New("the tenant is suspended")
	ErrMigrating = errors.New("the tenant's database is being migrated to a schema version this service works with")
	// ErrMoving refuses a write while the tenant's database moves to
	// another server: reads are served meanwhile.
	ErrMoving       = errors.New("the tenant's database is being moved to another server; reads work, writes are refused until it is done")
	ErrUnavailable  = errors.New("the tenant directory is unavailable")
	errBadDirectory = errors.New("tenants: malformed answer from the control plane")
)

// Usable returns nil when requests may be served for t, else the error its
// status calls for.
func Usable(t Tenant) error {
	switch t.Status {
	case tenantapi.StatusReady, tenantapi.StatusMoving:
		// A moving tenant's database refuses writes itself (see
		// WriteRefused): reads go on.
		return nil
	case tenantapi.StatusProvisioning:
		return ErrNotReady
	case tenantapi.StatusFailed:
		return ErrFailed
	case tenantapi.StatusSuspended:
		return ErrSuspended
	case tenantapi.StatusDeleting, tenantapi.StatusDeleted:
		return ErrNotFound
	}
	return fmt.Errorf("%w: status %q", ErrUnavailable, t.Status)
}

// maxIDDigits bounds the header before parsing: int64 has 19 digits.
const maxIDDigits = 19

// ParseID reads an X-TENANT value: a positive decimal integer in ASCII
// digits without sign, spaces or leading zeros, that fits in int64.
func ParseID(s string) (int64, bool) {
	if s == "" || len(s) > maxIDDigits || s[0] == '0' {
		return 0, false
	}
	var id int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if id > (1<<63-1-d)/10 {
			return 0, false
		}
		id = id*10 + d
	}
	return id, true
}
