// Package tenantapi is the contract of the control plane's internal tenant
// lookup, GET /internal/tenants/{id} on its internal listener, which the
// tenant plane (and any service that needs a tenant's database) calls with
// the service token. Both sides use these types; docs/events.md describes
// the same contract.
package tenantapi

import (
	"fmt"
	"log/slog"
	"strconv"
)

// PathPrefix starts the path of a lookup; the tenant id follows.
const PathPrefix = "/internal/tenants/"

// Path is the path of the lookup of tenant id.
func Path(id int64) string { return PathPrefix + strconv.FormatInt(id, 10) }

// CodeNotFound is the problem code of the 404 for an unknown tenant; a 404
// without it (a wrong URL) is no answer about the tenant.
const CodeNotFound = "tenant_not_found"

// Status is an organization's lifecycle state.
type Status string

// Statuses, in lifecycle order.
const (
	StatusProvisioning Status = "provisioning"
	StatusReady        Status = "ready"
	// StatusMoving is a ready tenant whose database is being copied to
	// another server: it serves reads, and its database refuses writes
	// until the move is done.
	StatusMoving    Status = "moving"
	StatusFailed    Status = "failed"
	StatusSuspended Status = "suspended"
	StatusDeleting  Status = "deleting"
	StatusDeleted   Status = "deleted"
)

// Statuses lists every status, in lifecycle order.
var Statuses = []Status{StatusProvisioning, StatusReady, StatusMoving, StatusFailed, StatusSuspended, StatusDeleting, StatusDeleted}

// Serving reports whether requests are served for a tenant in status s:
// ready, or moving (reads only). The internal API gives the database of
// exactly these.
func (s Status) Serving() bool { return s == StatusReady || s == StatusMoving }

// Tenant is one organization as the internal API answers for it.
type Tenant struct {
	ID int64 `json:"id"`
	// Deployment is the control plane's deployment id; events of other
	// deployments are not about this tenant.
	Deployment    string `json:"deployment"`
	Status        Status `json:"status"`
	SchemaVersion int    `json:"schema_version"`
	// Database is present only while the tenant is serving (ready or moving).
	Database *Database `json:"database,omitempty"`
}

// Database is where a ready tenant's data lives and how to log in to it.
type Database struct {
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Name     string   `json:"name"`
	User     string   `json:"user"`
	Password Password `json:"password"`
}

// LogValue keeps the password out of logs: slog would print the struct
// as JSON, password included.
func (t Tenant) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Int64("id", t.ID), slog.String("deployment", t.Deployment),
		slog.String("status", string(t.Status)), slog.Int("schema_version", t.SchemaVersion)}
	if t.Database != nil {
		attrs = append(attrs, slog.Any("database", *t.Database))
	}
	return slog.GroupValue(attrs...)
}

// LogValue shows where the database is, never the password.
func (d Database) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", d.Host), slog.Int("port", d.Port), slog.String("name", d.Name),
		slog.String("user", d.User), slog.String("password", d.Password.String()))
}

// Password travels in the answer as plain JSON but never prints: fmt and
// slog show a mask, so a logged Tenant leaks nothing.
type Password string

// Reveal returns the password; call it only where it is used.
func (p Password) Reveal() string { return string(p) }

func (p Password) String() string { return "********" }

// GoString masks %#v too.
func (p Password) GoString() string { return `"********"` }

// LogValue implements slog.LogValuer.
func (p Password) LogValue() slog.Value { return slog.StringValue(p.String()) }

// Validate checks an answer for tenant id: the right id, a known status,
// and complete connection details when serving.
func (t Tenant) Validate(id int64) error {
	if t.ID != id {
		return fmt.Errorf("tenantapi: asked for tenant %d, got %d", id, t.ID)
	}
	known := false
	for _, s := range Statuses {
		known = known || t.Status == s
	}
	if !known {
		return fmt.Errorf("tenantapi: tenant %d has unknown status %q", id, t.Status)
	}
	if !t.Status.Serving() {
		return nil
	}
	d := t.Database
	if d == nil || d.Host == "" || d.Port < 1 || d.Port > 65535 || d.Name == "" || d.User == "" {
		return fmt.Errorf("tenantapi: tenant %d is %s without complete connection details", id, t.Status)
	}
	return nil
}
