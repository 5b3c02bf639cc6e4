// Package events is the contract of the tenant lifecycle events the control
// plane publishes on the JetStream stream TENANT_EVENTS: subjects, the
// CloudEvents 1.0 JSON envelope and its data. Subscribers import it to
// decode what they receive; docs/events.md describes the same contract.
package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Stream is the JetStream stream holding every tenant event.
const Stream = "TENANT_EVENTS"

// SubjectAll matches every tenant event.
const SubjectAll = "tenant.>"

// Event types; each is also the NATS subject it is published on.
const (
	TenantCreated            = "tenant.created"
	TenantProvisioningFailed = "tenant.provisioning_failed"
	TenantSuspended          = "tenant.suspended"
	TenantResumed            = "tenant.resumed"
	TenantDeleted            = "tenant.deleted"
	// TenantUpdated announces changed connection details (credential rotation, relocation).
	TenantUpdated = "tenant.updated"
)

// Source is the CloudEvents source of every event.
const Source = "control-plane"

// SpecVersion is the CloudEvents version of the envelope.
const SpecVersion = "1.0"

// Envelope is a CloudEvents 1.0 structured-mode JSON event.
type Envelope struct {
	SpecVersion     string     `json:"specversion"`
	ID              string     `json:"id"`
	Source          string     `json:"source"`
	Type            string     `json:"type"`
	Subject         string     `json:"subject"`
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
	// Detail explains a failure (tenant.provisioning_failed); empty otherwise.
	Detail string `json:"detail,omitempty"`
}

// New builds the envelope of an event of type typ about a tenant.
func New(typ string, data TenantData) Envelope {
	return Envelope{
		SpecVersion:     SpecVersion,
		ID:              uuid.NewString(),
		Source:          Source,
		Type:            typ,
		Subject:         strconv.FormatInt(data.TenantID, 10),
		Time:            time.Now().UTC(),
		DataContentType: "application/json",
		Data:            data,
	}
}

// Decode parses and checks an envelope received from the stream.
func Decode(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("events: decode: %w", err)
	}
	if e.SpecVersion != SpecVersion || e.ID == "" || e.Type == "" || e.Subject == "" {
		return e, fmt.Errorf("events: not a tenant event envelope")
	}
	return e, nil
}
