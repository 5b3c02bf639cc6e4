// Package organizations holds tenants as the core database records them:
// their lifecycle (provisioning -> ready | failed; ready <-> suspended;
// ready -> moving -> ready; any -> deleting -> deleted), where their
// database lives, and every state change together with its event in one
// transaction.
package organizations

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/apperr"
	"tenantbase/libs/events"
	"tenantbase/libs/tenantapi"
	"tenantbase/services/control-plane/internal/audit"
	"tenantbase/services/control-plane/internal/outbox"
)

// Status is an organization's lifecycle state, as the internal tenant API
// reports it.
type Status = tenantapi.Status

// Status values of an organization.
const (
	StatusProvisioning = tenantapi.StatusProvisioning
	StatusReady        = tenantapi.StatusReady
	StatusMoving       = tenantapi.StatusMoving
	StatusFailed       = tenantapi.StatusFailed
	StatusSuspended    = tenantapi.StatusSuspended
	StatusDeleting     = tenantapi.StatusDeleting
	StatusDeleted      = tenantapi.StatusDeleted
)

// Domain errors; the HTTP layer maps them to problems.
var (
	ErrNotFound      = errors.New("no such organization")
	ErrInvalidStatus = errors.New("the organization's status does not allow this")
	ErrQuotaExceeded = errors.New("the owner has as many organizations as their limit allows")
)

// MaxNameLength bounds an organization's name, in characters.
const MaxNameLength = 100

// Organization is a tenant as the core database records it.
type Organization struct {
	ID            int64
	Name          string
	OwnerID       int64
	Status        Status
	StatusDetail  string
	SchemaVersion int
	CreatedAt     time.Time
	ReadyAt       *time.Time
	UpdatedAt     time.Time
	// ServerID is the database server the tenant is placed on; 0 until
	// provisioning has placed it.
	ServerID int64
	// Database is where the tenant's database lives; zero until provisioning
	// has placed it.
	Database Placement
	// Move is the move in progress while the status is moving.
	Move Move
}

// Move is the state of a move between database servers.
type Move struct {
	// To is the target server.
	To int64
	// FrozenAt is when the source stopped taking writes, on the source
	// server's clock; nil until then.
	FrozenAt *time.Time
	// Error, once set, says why the move failed: it is being rolled back.
	Error string
}

// Placement is where a tenant's database lives and how to log in to it.
// The password is kept sealed; only the provisioning package opens it.
type Placement struct {
	Host           string
	Port           int
	Name           string
	User           string
	SealedPassword []byte
}

// NormalizeName trims a proposed name and checks its length.
func NormalizeName(raw string) (string, error) {
	name := strings.TrimSpace(raw)
	if n := utf8.RuneCountInString(name); n < 1 || n > MaxNameLength {
		return "", apperr.Invalid("name", fmt.Sprintf("must be 1 to %d characters", MaxNameLength))
	}
	if !utf8.ValidString(name) || strings.ContainsFunc(name, isControl) {
		return "", apperr.Invalid("name", "must be printable text")
	}
	return name, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Jobs enqueues the background work of a lifecycle change in the same
// transaction as the change.
type Jobs interface {
	EnqueueProvision(ctx context.Context, tx pgx.Tx, orgID int64) error
	EnqueueDelete(ctx context.Context, tx pgx.Tx, orgID int64) error
	EnqueueMove(ctx context.Context, tx pgx.Tx, orgID int64) error
	EnqueueRotation(ctx context.Context, tx pgx.Tx, orgID int64) error
}

// Store reads and changes organizations in the core database.
type Store struct {
	pool *pgxpool.Pool
	jobs Jobs
	// deployment is the id the store's events carry.
	deployment string
}

// NewStore returns a Store on the core database of deployment.
func NewStore(pool *pgxpool.Pool, jobs Jobs, deployment string) *Store {
	return &Store{pool: pool, jobs: jobs, deployment: deployment}
}

const columns = `id, name, owner_id, status, coalesce(status_detail, ''), schema_version,
	created_at, ready_at, updated_at, coalesce(db_server_id, 0),
	coalesce(db_host, ''), coalesce(db_port, 0), coalesce(db_name, ''), coalesce(db_user, ''), db_password_enc,
	coalesce(move_to_server_id, 0), move_frozen_at, coalesce(move_error, '')`

func scan(row pgx.Row) (Organization, error) {
	var o Organization
	err := row.Scan(&o.ID, &o.Name, &o.OwnerID, &o.Status, &o.StatusDetail, &o.SchemaVersion,
		&o.CreatedAt, &o.ReadyAt, &o.UpdatedAt, &o.ServerID,
		&o.Database.Host, &o.Database.Port, &o.Database.Name, &o.Database.User, &o.Database.SealedPassword,
		&o.Move.To, &o.Move.FrozenAt, &o.Move.Error)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, ErrNotFound
	}
	return o, err
}

// Owner chooses, in the creating transaction, who owns a new organization:
// it returns the owner's id, with the owner's row locked until the
// transaction ends, and how many organizations the owner may have.
type Owner func(tx pgx.Tx) (id int64, limit int, err error)

// Create inserts an organization of ownerID without checking the owner's
// quota: for the system's own use and tests. The API creates with
// CreateWithin.
func (s *Store) Create(ctx context.Context, name string, ownerID int64) (Organization, error) {
	return s.CreateWithin(ctx, name, func(pgx.Tx) (int64, int, error) { return ownerID, math.MaxInt, nil })
}

// CreateWithin inserts an organization in status provisioning and
// enqueues its provisioning in the same transaction. The owner's
// organizations that are not being deleted are counted under the owner's
// row lock, so concurrent creations for one owner cannot exceed the limit
// together (ErrQuotaExceeded).
func (s *Store) CreateWithin(ctx context.Context, name string, owner Owner) (Organization, error) {
	var org Organization
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ownerID, limit, err := owner(tx)
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM organization
			WHERE owner_id = $1 AND status NOT IN ('deleting', 'deleted')`, ownerID).Scan(&n); err != nil {
			return fmt.Errorf("count organizations: %w", err)
		}
		if n >= limit {
			return ErrQuotaExceeded
		}
		org, err = scan(tx.QueryRow(ctx, `INSERT INTO organization (name, owner_id) VALUES ($1, $2)
			RETURNING `+columns, name, ownerID))
		if err != nil {
			return fmt.Errorf("insert organization: %w", err)
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationCreate, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(org.ID), Detail: map[string]any{"name": name, "owner_id": ownerID}}); err != nil {
			return err
		}
		return s.jobs.EnqueueProvision(ctx, tx, org.ID)
	})
	return org, err
}

// Get returns one organization.
func (s *Store) Get(ctx context.Context, id int64) (Organization, error) {
	return scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM organization WHERE id = $1`, id))
}

// Filter selects organizations for List.
type Filter struct {
	// OwnerID, when not zero, keeps only that owner's organizations.
	OwnerID int64
	// Status, when not empty, keeps only organizations in it.
	Status Status
	// NameContains, when not empty, keeps organizations whose name
	// contains it (case-insensitive).
	NameContains string
	// Before, when not zero, keeps ids below it (the next page of a newest-first list).
	Before int64
	Limit  int
}

// List returns organizations newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Organization, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM organization
		WHERE ($1::bigint = 0 OR owner_id = $1) AND ($2::text = '' OR status = $2) AND ($3::bigint = 0 OR id < $3)
			AND ($5 = '' OR strpos(lower(name), lower($5)) > 0)
		ORDER BY id DESC LIMIT $4`, f.OwnerID, f.Status, f.Before, f.Limit, f.NameContains)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Organization, error) { return scan(r) })
}

// Retry sends a failed organization back to provisioning.
func (s *Store) Retry(ctx context.Context, id int64) (Organization, error) {
	return s.change(ctx, id, change{from: []Status{StatusFailed}, to: StatusProvisioning, clearDetail: true,
		action: audit.OrganizationRetry,
		after:  func(tx pgx.Tx, _ Organization) error { return s.jobs.EnqueueProvision(ctx, tx, id) }})
}

// Suspend takes a ready organization out of service.
func (s *Store) Suspend(ctx context.Context, id int64) (Organization, error) {
	return s.change(ctx, id, change{from: []Status{StatusReady}, to: StatusSuspended, event: events.TenantSuspended,
		action: audit.OrganizationSuspend})
}

// Resume puts a suspended organization back in service.
func (s *Store) Resume(ctx context.Context, id int64) (Organization, error) {
	return s.change(ctx, id, change{from: []Status{StatusSuspended}, to: StatusReady, event: events.TenantResumed,
		action: audit.OrganizationResume})
}

// Delete starts deleting an organization. Deleting one that is already
// being deleted is not an error: the same deletion continues.
func (s *Store) Delete(ctx context.Context, id int64) (Organization, error) {
	org, err := s.change(ctx, id, change{
		from:   []Status{StatusProvisioning, StatusReady, StatusFailed, StatusSuspended},
		to:     StatusDeleting,
		action: audit.OrganizationDelete,
		after:  func(tx pgx.Tx, _ Organization) error { return s.jobs.EnqueueDelete(ctx, tx, id) },
	})
	if errors.Is(err, ErrInvalidStatus) && org.Status == StatusDeleting {
		return org, nil
	}
	return org, err
}

// SetPlacement records where the tenant database goes and its sealed
// password, unless they were recorded before: a re-run of provisioning
// keeps the first choice. It returns the placement in force.
func (s *Store) SetPlacement(ctx context.Context, id int64, p Placement) (Placement, error) {
	org, err := scan(s.pool.QueryRow(ctx, `UPDATE organization SET
			db_host = $2, db_port = $3, db_name = $4, db_user = $5, db_password_enc = $6, updated_at = now()
		WHERE id = $1 AND db_password_enc IS NULL
		RETURNING `+columns, id, p.Host, p.Port, p.Name, p.User, p.SealedPassword))
	if errors.Is(err, ErrNotFound) {
		org, err = s.Get(ctx, id)
	}
	return org.Database, err
}

// MarkReady finishes provisioning: status ready, the schema version and
// the tenant.created event, in one transaction, in which then runs too. ok
// is false when the organization was no longer provisioning (deleted
// meanwhile, or already ready after a crash), and nothing was changed.
func (s *Store) MarkReady(ctx context.Context, id int64, schemaVersion int,
	then func(tx pgx.Tx, org Organization) error) (ok bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		org, err := scan(tx.QueryRow(ctx, `UPDATE organization SET status = 'ready', status_detail = NULL,
				schema_version = $2, ready_at = now(), updated_at = now()
			WHERE id = $1 AND status = 'provisioning' RETURNING `+columns, id, schemaVersion))
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		if err := then(tx, org); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationReady, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id), Detail: map[string]any{"schema_version": schemaVersion}}); err != nil {
			return err
		}
		return outbox.Add(ctx, tx, s.Event(events.TenantCreated, org))
	})
	return ok, err
}

// MarkFailed ends provisioning as failed, with a readable detail and the
// tenant.provisioning_failed event. It does nothing unless the organization
// is provisioning.
func (s *Store) MarkFailed(ctx context.Context, id int64, detail string) error {
	_, err := s.change(ctx, id, change{from: []Status{StatusProvisioning}, to: StatusFailed, detail: detail,
		event: events.TenantProvisioningFailed, action: audit.OrganizationProvisioningFailed, outcome: audit.Failure})
	if errors.Is(err, ErrInvalidStatus) {
		return nil
	}
	return err
}

// MarkDeleted ends a deletion: status deleted, the credentials forgotten,
// and the tenant.deleted event.
func (s *Store) MarkDeleted(ctx context.Context, id int64) error {
	_, err := s.change(ctx, id, change{from: []Status{StatusDeleting}, to: StatusDeleted, forget: true,
		event: events.TenantDeleted, action: audit.OrganizationDeleted})
	if errors.Is(err, ErrInvalidStatus) {
		return nil
	}
	return err
}

// OwnerTenants lists the organizations of ownerID whose database holds the
// owner's tenant-admin row (ready, moving or suspended).
func (s *Store) OwnerTenants(ctx context.Context, ownerID int64) ([]Organization, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM organization
		WHERE owner_id = $1 AND status IN ('ready', 'moving', 'suspended') ORDER BY id`, ownerID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Organization, error) { return scan(r) })
}

// InStatusSince lists the organizations in one of statuses whose last
// change is at least age old.
func (s *Store) InStatusSince(ctx context.Context, statuses []Status, age time.Duration) ([]Organization, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM organization
		WHERE status = ANY($1) AND updated_at <= now() - $2::interval ORDER BY id`, statuses, age)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Organization, error) { return scan(r) })
}

// Sealed are the organizations' sealed database passwords, by id.
func (s *Store) Sealed(ctx context.Context) (map[int64][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, db_password_enc FROM organization WHERE db_password_enc IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64][]byte{}
	for rows.Next() {
		var id int64
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			return nil, err
		}
		out[id] = sealed
	}
	return out, rows.Err()
}

// ReplaceSealed stores sealed as organization id's password in place of
// old, unless it changed meanwhile; it reports whether it did.
func (s *Store) ReplaceSealed(ctx context.Context, id int64, old, sealed []byte) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE organization SET db_password_enc = $3 WHERE id = $1 AND db_password_enc = $2`, id, old, sealed)
	return tag.RowsAffected() == 1, err
}

// Legacy lists the organizations, not deleted, whose recorded database
// name does not start with prefix: those provisioned before names carried
// the deployment.
func (s *Store) Legacy(ctx context.Context, prefix string) ([]Organization, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+columns+` FROM organization
		WHERE db_name IS NOT NULL AND status <> 'deleted' AND NOT starts_with(db_name, $1) ORDER BY id`, prefix)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Organization, error) { return scan(r) })
}

// MigrationCandidates lists, in id order, the organizations a migration
// run takes: every ready and suspended one, or those of ids among them;
// with below > 0, only those whose schema version is below it. It reads in
// tx, the transaction that creates the run.
func (s *Store) MigrationCandidates(ctx context.Context, tx pgx.Tx, ids []int64, below int) ([]Organization, error) {
	rows, err := tx.Query(ctx, `SELECT `+columns+` FROM organization
		WHERE status IN ('ready', 'suspended') AND ($1::bigint[] IS NULL OR id = ANY($1))
			AND ($2::int = 0 OR schema_version < $2)
		ORDER BY id`, ids, below)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Organization, error) { return scan(r) })
}

// CountBehind counts the ready and suspended organizations whose schema
// version is below version, without touching their databases.
func (s *Store) CountBehind(ctx context.Context, version int) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM organization
		WHERE status IN ('ready', 'suspended') AND schema_version < $1`, version).Scan(&n)
	return n, err
}

// RecordMigration records in tx that organization id's database is at
// version now, and returns the organization and the version it had. When
// the version changed for a ready or suspended organization,
// tenant.migrated is written with it; the status never changes.
func (s *Store) RecordMigration(ctx context.Context, tx pgx.Tx, id int64, version int) (org Organization, previous int, err error) {
	if previous, err = s.lockSchemaVersion(ctx, tx, id); err != nil {
		return org, 0, err
	}
	if org, err = s.setSchemaVersion(ctx, tx, id, version); err != nil {
		return org, 0, err
	}
	if previous != version && migratable(org.Status) {
		e := s.Event(events.TenantMigrated, org)
		e.Data.PreviousSchemaVersion = &previous
		e.Data.Detail = ""
		if err := outbox.Add(ctx, tx, e); err != nil {
			return org, 0, err
		}
	}
	if previous != version {
		if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationMigrate, TargetType: audit.TargetOrganization,
			TargetID: audit.ID(id), Detail: map[string]any{"from_version": previous, "to_version": version}}); err != nil {
			return org, 0, err
		}
	}
	return org, previous, nil
}

// RecordMigrationFailure records in tx that migrating organization id
// failed with its database at version, and writes tenant.migration_failed
// with detail for a ready or suspended organization. The organization keeps
// its status: it goes on being served at that version.
func (s *Store) RecordMigrationFailure(ctx context.Context, tx pgx.Tx, id int64, version int, detail string) (Organization, error) {
	if _, err := s.lockSchemaVersion(ctx, tx, id); err != nil {
		return Organization{}, err
	}
	org, err := s.setSchemaVersion(ctx, tx, id, version)
	if err != nil {
		return org, err
	}
	if err := audit.Record(ctx, tx, audit.Entry{Action: audit.OrganizationMigrate, TargetType: audit.TargetOrganization,
		TargetID: audit.ID(id), Outcome: audit.Failure, Detail: map[string]any{"schema_version": version, "error": detail}}); err != nil {
		return org, err
	}
	if !migratable(org.Status) {
		return org, nil
	}
	e := s.Event(events.TenantMigrationFailed, org)
	e.Data.Detail = detail
	return org, outbox.Add(ctx, tx, e)
}

func migratable(st Status) bool { return st == StatusReady || st == StatusSuspended }

func (s *Store) lockSchemaVersion(ctx context.Context, tx pgx.Tx, id int64) (int, error) {
	var v int
	err := tx.QueryRow(ctx, `SELECT schema_version FROM organization WHERE id = $1 FOR UPDATE`, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	return v, err
}

func (s *Store) setSchemaVersion(ctx context.Context, tx pgx.Tx, id int64, version int) (Organization, error) {
	return scan(tx.QueryRow(ctx, `UPDATE organization SET schema_version = $2,
			updated_at = CASE WHEN schema_version = $2 THEN updated_at ELSE now() END
		WHERE id = $1 RETURNING `+columns, id, version))
}

type change struct {
	from        []Status
	to          Status
	detail      string
	clearDetail bool
	// forget clears the stored credentials.
	forget bool
	// event, when set, is written to the outbox with the change.
	event string
	// action, when set, is recorded in the audit log with the change, with
	// outcome (success when empty).
	action, outcome string
	after           func(tx pgx.Tx, org Organization) error
}

// change moves an organization from one of c.from to c.to. On
// ErrInvalidStatus the returned organization shows the status it is in.
func (s *Store) change(ctx context.Context, id int64, c change) (Organization, error) {
	var org Organization
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		org, err = scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM organization WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if !slices.Contains(c.from, org.Status) {
			return ErrInvalidStatus
		}
		detail := org.StatusDetail
		switch {
		case c.detail != "":
			detail = c.detail
		case c.clearDetail:
			detail = ""
		}
		org, err = scan(tx.QueryRow(ctx, `UPDATE organization SET status = $2, status_detail = NULLIF($3, ''),
				db_password_enc = CASE WHEN $4 THEN NULL ELSE db_password_enc END, updated_at = now()
			WHERE id = $1 RETURNING `+columns, id, c.to, detail, c.forget))
		if err != nil {
			return err
		}
		if c.event != "" {
			if err := outbox.Add(ctx, tx, s.Event(c.event, org)); err != nil {
				return err
			}
		}
		if c.action != "" {
			detail := map[string]any{"status": org.Status}
			if org.StatusDetail != "" {
				detail["status_detail"] = org.StatusDetail
			}
			if err := audit.Record(ctx, tx, audit.Entry{Action: c.action, TargetType: audit.TargetOrganization,
				TargetID: audit.ID(id), Outcome: c.outcome, Detail: detail}); err != nil {
				return err
			}
		}
		if c.after != nil {
			return c.after(tx, org)
		}
		return nil
	})
	return org, err
}

// Event is the envelope announcing org's current state.
func (s *Store) Event(typ string, org Organization) events.Envelope {
	return events.New(typ, s.deployment, events.TenantData{
		TenantID:      org.ID,
		Name:          org.Name,
		OwnerID:       org.OwnerID,
		Status:        string(org.Status),
		SchemaVersion: org.SchemaVersion,
		Detail:        org.StatusDetail,
	})
}
