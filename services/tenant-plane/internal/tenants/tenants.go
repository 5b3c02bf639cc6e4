// Package tenants resolves the X-TENANT id of a request to the tenant's
// status and database. The control plane's internal API is the source of
// truth; a Resolver caches its answers in-process and lifecycle events from
// TENANT_EVENTS invalidate them.
package tenants

import (
	"errors"
	"fmt"

	"tenantbase/libs/config"
)

// Status is an organization's lifecycle state as the control plane reports it.
type Status string

// Statuses of the control plane's contract.
const (
	StatusProvisioning Status = "provisioning"
	StatusReady        Status = "ready"
	StatusFailed       Status = "failed"
	StatusSuspended    Status = "suspended"
	StatusDeleting     Status = "deleting"
	StatusDeleted      Status = "deleted"
)

// Database is where a ready tenant's data lives.
type Database struct {
	Host     string        `json:"host"`
	Port     int           `json:"port"`
	Name     string        `json:"name"`
	User     string        `json:"user"`
	Password config.Secret `json:"password"`
}

// Tenant is one organization as the tenant plane needs it.
type Tenant struct {
	ID int64 `json:"id"`
	// Deployment is the control plane's deployment id; events of other
	// deployments are not about this tenant.
	Deployment    string    `json:"deployment"`
	Status        Status    `json:"status"`
	SchemaVersion int       `json:"schema_version"`
	Database      *Database `json:"database"`
}

// Errors telling why a request cannot be served for a tenant.
var (
	ErrNotFound     = errors.New("no such tenant")
	ErrNotReady     = errors.New("the tenant is still being provisioned")
	ErrFailed       = errors.New("the tenant could not be provisioned")
	ErrSuspended    = errors.New("the tenant is suspended")
	ErrUnavailable  = errors.New("the tenant directory is unavailable")
	errBadDirectory = errors.New("tenants: malformed answer from the control plane")
)

// Usable returns nil when requests may be served for t, else the error its
// status calls for.
func (t Tenant) Usable() error {
	switch t.Status {
	case StatusReady:
		return nil
	case StatusProvisioning:
		return ErrNotReady
	case StatusFailed:
		return ErrFailed
	case StatusSuspended:
		return ErrSuspended
	case StatusDeleting, StatusDeleted:
		return ErrNotFound
	}
	return fmt.Errorf("%w: status %q", ErrUnavailable, t.Status)
}

func (t Tenant) validate(id int64) error {
	if t.ID != id {
		return fmt.Errorf("%w: asked for tenant %d, got %d", errBadDirectory, id, t.ID)
	}
	if t.Status != StatusReady {
		return nil
	}
	d := t.Database
	if d == nil || d.Host == "" || d.Port < 1 || d.Port > 65535 || d.Name == "" || d.User == "" {
		return fmt.Errorf("%w: tenant %d is ready without complete connection details", errBadDirectory, id)
	}
	return nil
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
