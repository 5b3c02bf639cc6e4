// Package events is the contract of the tenant lifecycle events the control
// plane publishes on JetStream: subjects, the CloudEvents 1.0 JSON envelope
// and its data. Subscribers import it to decode what they receive;
// docs/events.md describes the same contract.
package events

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Default names of the stream and of the subject prefix. A deployment that
// shares a NATS server with another chooses its own (see Channel).
const (
	DefaultStream = "TENANT_EVENTS"
	DefaultPrefix = "tenant"
)

// Event types. An event of type "tenant.X" is published on the subject
// "<prefix>.X" of its deployment's Channel ("tenant.X" by default).
const (
	TenantCreated            = "tenant.created"
	TenantProvisioningFailed = "tenant.provisioning_failed"
	TenantSuspended          = "tenant.suspended"
	TenantResumed            = "tenant.resumed"
	TenantDeleted            = "tenant.deleted"
	// TenantMigrated announces that the tenant database reached another
	// schema version (data.schema_version, from data.previous_schema_version).
	TenantMigrated = "tenant.migrated"
	// TenantMigrationFailed announces a tenant parked by a migration run:
	// data.detail says why, data.schema_version where it stays.
	TenantMigrationFailed = "tenant.migration_failed"
	// TenantUpdated announces changed connection details (credential rotation, relocation).
	TenantUpdated = "tenant.updated"
)

// typePrefix starts every event type.
const typePrefix = "tenant."

// Channel is where one deployment's events travel: a JetStream stream and
// the subject prefix of its events.
type Channel struct {
	Stream string
	Prefix string
}

// DefaultChannel is the stream TENANT_EVENTS with subjects tenant.>.
var DefaultChannel = Channel{Stream: DefaultStream, Prefix: DefaultPrefix}

var (
	validStream = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	validPrefix = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// Validate checks the names: a stream name without dots or wildcards, and
// a prefix of dot-separated subject tokens.
func (c Channel) Validate() error {
	if !validStream.MatchString(c.Stream) {
		return fmt.Errorf("events: stream name %q must be 1 to 64 letters, digits, '-' or '_'", c.Stream)
	}
	if len(c.Prefix) > 200 || !validPrefix.MatchString(c.Prefix) {
		return fmt.Errorf("events: subject prefix %q must be dot-separated tokens of letters, digits, '-' or '_'", c.Prefix)
	}
	return nil
}

// Subject is the subject an event of eventType is published on.
func (c Channel) Subject(eventType string) string {
	return c.Prefix + "." + strings.TrimPrefix(eventType, typePrefix)
}

// All is the subject filter matching every event of the channel.
func (c Channel) All() string { return c.Prefix + ".>" }

// Source is the CloudEvents source of every event of a deployment.
func Source(deployment string) string { return "/deployments/" + deployment + "/control-plane" }

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

// Envelope is a CloudEvents 1.0 structured-mode JSON event.
type Envelope struct {
	SpecVersion string `json:"specversion"`
	ID          string `json:"id"`
	Source      string `json:"source"`
	Type        string `json:"type"`
	Subject     string `json:"subject"`
	// Deployment is a CloudEvents extension attribute: the id of the
	// deployment that sent the event, also part of Source. Tenant ids are
	// only unique within a deployment.
	Deployment      string     `json:"deployment"`
	Time            time.Time  `json:"time"`
	DataContentType string     `json:"datacontenttype"`
	Data            TenantData `json:"data"`
}

// TenantData is the data of every tenant event. It never holds credentials.
type TenantData struct {
	TenantID      int64  `json:"tenant_id"`
	Name          string `json:"name"`
	OwnerID       int64  `json:"owner_id"`
	Status        string `json:"status"`
	SchemaVersion int    `json:"schema_version"`
	// PreviousSchemaVersion is the version before a tenant.migrated; absent
	// on other events.
	PreviousSchemaVersion *int `json:"previous_schema_version,omitempty"`
	// Detail explains a failure (tenant.provisioning_failed,
	// tenant.migration_failed); empty otherwise.
	Detail string `json:"detail,omitempty"`
}

// New builds the envelope of an event of type typ about a tenant of deployment.
func New(typ, deployment string, data TenantData) Envelope {
	return Envelope{
		SpecVersion:     SpecVersion,
		ID:              uuid.NewString(),
		Source:          Source(deployment),
		Type:            typ,
		Subject:         strconv.FormatInt(data.TenantID, 10),
		Deployment:      deployment,
		Time:            time.Now().UTC(),
		DataContentType: "application/json",
		Data:            data,
	}
}

// FromDeployment reports whether e was sent by deployment. Events written
// before deployments had ids carry none and count as anyone's.
func (e Envelope) FromDeployment(deployment string) bool {
	return e.Deployment == "" || e.Deployment == deployment
}

// Decode parses and checks an envelope received from the stream.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("events: decode: %w", err)
	}
	if e.SpecVersion != SpecVersion || e.ID == "" || !strings.HasPrefix(e.Type, typePrefix) || e.Subject == "" {
		return e, fmt.Errorf("events: not a tenant event envelope")
	}
	return e, nil
}
