// Package provisioning creates, moves and removes tenant databases: a
// login role and a database per organization on the database server it is
// placed on, the tenant migrations, the owner as the tenant's first admin,
// moves between servers and new role passwords. Every step may be re-run
// after a crash and converges to the same result; River runs the steps as
// retried jobs.
package provisioning

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/auth"
	"tenantbase/libs/pgutil"
	"tenantbase/libs/tenantdb"
	"tenantbase/services/control-plane/internal/accounts"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/deployment"
	"tenantbase/services/control-plane/internal/organizations"
	"tenantbase/services/control-plane/internal/secretbox"
)

// Step names, as passed to Options.BeforeStep and shown in failures.
const (
	StepCreateRole     = "create_role"
	StepCreateDatabase = "create_database"
	StepMigrate        = "migrate"
	StepSyncOwner      = "sync_owner"
	StepMarkReady      = "mark_ready"
)

// Steps lists the provisioning steps in order.
var Steps = []string{StepCreateRole, StepCreateDatabase, StepMigrate, StepSyncOwner, StepMarkReady}

// Options configure a Provisioner.
type Options struct {
	// Deployment is this deployment's id: part of every name the
	// provisioner chooses and of every tag it writes.
	Deployment string
	// CoreDSN is the core database; the lock connections' pool is opened
	// on it.
	CoreDSN string
	// ConnectionLimit is the CONNECTION LIMIT of every tenant role; -1
	// means none.
	ConnectionLimit int
	// MoveGrace is how long the source database of a moved tenant is kept,
	// so that every tenant plane has switched before it goes.
	MoveGrace time.Duration
	// MoveTimeout bounds one attempt at a move.
	MoveTimeout time.Duration
	// PGBinDir holds pg_dump and pg_restore; empty means PATH, then the
	// newest /usr/lib/postgresql/*/bin.
	PGBinDir string
	// BeforeStep, when set, runs before each provisioning step; an error
	// fails the step. It exists for fault-injection tests.
	BeforeStep func(ctx context.Context, orgID int64, step string) error
	// Migrations are the tenant migrations new tenants get, up to the
	// newest; nil means the embedded ones.
	Migrations *tenantdb.Migrations
	// Spares is how many spare databases each active server keeps ready
	// for new tenants (spares.go); 0 means none.
	Spares int
}

// Provisioner runs the provisioning, deletion, owner-sync, move and
// rotation work, each on the tenant's own database server.
type Provisioner struct {
	core    *pgxpool.Pool
	store   *organizations.Store
	servers *dbservers.Registry
	jobs    *Jobs
	box     *secretbox.Box
	coreDSN string
	// locks holds the connections that hold advisory locks (withLock):
	// a pool, so that each provisioning does not start a session.
	locks      *pgxpool.Pool
	deployment string
	opts       Options
	beforeStep func(ctx context.Context, orgID int64, step string) error
	migrations tenantdb.Migrations
	log        *slog.Logger

	mu    sync.Mutex
	conns map[int64]*serverConn
	// closed is set by Close: no admin pool is opened after it.
	closed bool
}

// New returns a Provisioner; Close releases its admin connections.
func New(core *pgxpool.Pool, store *organizations.Store, servers *dbservers.Registry, jobs *Jobs, box *secretbox.Box, o Options, log *slog.Logger) (*Provisioner, error) {
	if err := deployment.Validate(o.Deployment); err != nil || o.Deployment == "" {
		return nil, fmt.Errorf("provisioning: a valid deployment id is required (%v)", err)
	}
	if o.ConnectionLimit == 0 || o.ConnectionLimit < -1 {
		return nil, fmt.Errorf("provisioning: connection limit must be -1 (none) or positive, got %d", o.ConnectionLimit)
	}
	mig := tenantdb.Embedded()
	if o.Migrations != nil {
		mig = *o.Migrations
	}
	cfg, err := lockPoolConfig(o.CoreDSN)
	if err != nil {
		return nil, fmt.Errorf("provisioning: core DSN: %w", err)
	}
	// Connections are opened on first use, not here.
	locks, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("provisioning: lock pool: %w", err)
	}
	return &Provisioner{
		core: core, store: store, servers: servers, jobs: jobs, box: box, coreDSN: o.CoreDSN, locks: locks,
		deployment: o.Deployment, opts: o, beforeStep: o.BeforeStep, migrations: mig, log: log, conns: map[int64]*serverConn{},
	}, nil
}

// CheckAdminDSN reports whether dsn can serve as a server's admin DSN:
// tenant DSNs are derived from it, so it must be a postgres:// URL.
func CheckAdminDSN(dsn string) error {
	_, err := dbservers.ParseURL(dsn)
	return err
}

// serverConn is the admin side of one database server: a small pool
// opened on first use and kept until Close.
type serverConn struct {
	server dbservers.Server
	admin  *pgxpool.Pool
	// url is the admin DSN: tenant DSNs take its address and options.
	url *url.URL
}

// server returns the admin connections of server id, opening its pool
// on first use.
func (p *Provisioner) server(ctx context.Context, id int64) (*serverConn, error) {
	p.mu.Lock()
	sc := p.conns[id]
	p.mu.Unlock()
	if sc != nil {
		return sc, nil
	}
	s, err := p.servers.Get(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("database server %d: %w", id, err)
	}
	dsn, err := p.servers.AdminURL(s)
	if err != nil {
		return nil, err
	}
	u, err := dbservers.ParseURL(dsn)
	if err != nil {
		return nil, fmt.Errorf("database server %d: admin DSN %w", id, err)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database server %d: admin DSN does not parse", id)
	}
	cfg.MaxConns = adminConns
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = time.Minute
	pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
	if err != nil {
		return nil, fmt.Errorf("database server %d: admin pool: %w", id, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		pool.Close()
		return nil, errors.New("provisioning: closed")
	}
	if other := p.conns[id]; other != nil {
		pool.Close()
		return other, nil
	}
	sc = &serverConn{server: s, admin: pool, url: u}
	p.conns[id] = sc
	return sc, nil
}

// adminConns bounds the admin connections to one server.
const adminConns = 4

// orgServer returns the admin connections of the server org lives on.
// Organizations placed before servers were registered, and not adopted
// yet, live on the default server.
func (p *Provisioner) orgServer(ctx context.Context, org organizations.Organization) (*serverConn, error) {
	if org.ServerID != 0 {
		return p.server(ctx, org.ServerID)
	}
	s, err := p.servers.Default(ctx)
	if err != nil {
		return nil, err
	}
	return p.server(ctx, s.ID)
}

// Close releases the admin connections.
func (p *Provisioner) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.locks.Close()
	for id, sc := range p.conns {
		sc.admin.Close()
		delete(p.conns, id)
	}
}

// Credentials are the connection details of a ready tenant database.
type Credentials struct {
	Host     string
	Port     int
	Name     string
	User     string
	Password string
}

// OpenCredentials returns the connection details of org with its stored
// password decrypted.
func OpenCredentials(box *secretbox.Box, org organizations.Organization) (Credentials, error) {
	pw, err := openPassword(box, org.ID, org.Database)
	if err != nil {
		return Credentials{}, err
	}
	d := org.Database
	return Credentials{Host: d.Host, Port: d.Port, Name: d.Name, User: d.User, Password: pw}, nil
}

func sealContext(orgID int64) []byte { return []byte("organization:" + strconv.FormatInt(orgID, 10)) }

func openPassword(box *secretbox.Box, orgID int64, d organizations.Placement) (string, error) {
	if d.SealedPassword == nil {
		return "", fmt.Errorf("organization %d has no stored credentials", orgID)
	}
	pw, err := box.Open(d.SealedPassword, sealContext(orgID))
	if err != nil {
		return "", fmt.Errorf("organization %d credentials: %w", orgID, err)
	}
	return string(pw), nil
}

// Provision runs every step for one organization. It returns nil at once
// when the organization is no longer provisioning (ready after an earlier
// run, or deleted meanwhile).
func (p *Provisioner) Provision(ctx context.Context, orgID int64) error {
	return p.withOrganization(ctx, orgID, organizations.StatusProvisioning, func(org organizations.Organization) error {
		var (
			sc      *serverConn
			creds   Credentials
			claimed bool
			err     error
		)
		if err := p.step(ctx, orgID, StepCreateRole, func() error {
			if sc, err = p.place(ctx, org); err != nil {
				return err
			}
			creds, claimed, err = p.ensureRole(ctx, sc, org)
			return err
		}); err != nil {
			return err
		}
		// A claimed spare is a tagged database with its grants already.
		if err := p.step(ctx, orgID, StepCreateDatabase, func() error {
			if claimed {
				return nil
			}
			return p.ensureDatabase(ctx, sc, orgID, creds, true)
		}); err != nil {
			return err
		}
		var (
			version uint
			owner   accounts.Credentials
			synced  bool
		)
		if err := p.step(ctx, orgID, StepMigrate, func() error {
			if owner, err = accounts.OwnerCredentials(ctx, p.core, org.OwnerID); err != nil {
				return err
			}
			version, synced, err = p.migrate(ctx, sc, orgID, creds, owner)
			return err
		}); err != nil {
			return err
		}
		if err := p.step(ctx, orgID, StepSyncOwner, func() error {
			if synced {
				return nil
			}
			return p.syncOwner(ctx, sc, owner, creds)
		}); err != nil {
			return err
		}
		return p.step(ctx, orgID, StepMarkReady, func() error {
			ok, err := p.store.MarkReady(ctx, orgID, int(version), func(tx pgx.Tx, org organizations.Organization) error {
				if p.opts.Spares > 0 {
					if err := p.jobs.enqueueRefill(ctx, tx, sc.server.ID); err != nil {
						return err
					}
				}
				// Locking the owner row orders this commit against a
				// concurrent password change: either its sync job sees this
				// tenant ready, or the hash read here is already the new one.
				current, err := accounts.LockPasswordHash(ctx, tx, org.OwnerID)
				if err != nil || current == owner.PasswordHash {
					return err
				}
				return p.jobs.EnqueueOwnerPasswordSync(ctx, tx, org.OwnerID)
			})
			if err == nil && ok {
				p.log.Info("tenant ready", "tenant_id", orgID, "db_server_id", sc.server.ID, "schema_version", version, "from_spare", claimed)
			}
			return err
		})
	})
}

func (p *Provisioner) step(ctx context.Context, orgID int64, name string, fn func() error) error {
	if p.beforeStep != nil {
		if err := p.beforeStep(ctx, orgID, name); err != nil {
			return &StepError{Step: name, Err: err}
		}
	}
	if err := fn(); err != nil {
		return &StepError{Step: name, Err: err}
	}
	return nil
}

// StepError is a provisioning step that failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }

// Unwrap returns the step's error.
func (e *StepError) Unwrap() error { return e.Err }

// Reason is what an owner (status_detail) and subscribers
// (tenant.provisioning_failed) are told of a failure: what failed and
// what to do, never the raw error, whose SQL text and host names stay in
// the logs.
func Reason(err error) string {
	var step *StepError
	if errors.As(err, &step) {
		return "step " + step.Step + " failed: " + cause(step.Err)
	}
	// Only the text survives in River's record of an earlier attempt.
	if name, _, ok := strings.Cut(err.Error(), ": "); ok && slices.Contains(Steps, name) {
		return "step " + name + " failed: " + cause(err)
	}
	return cause(err)
}

func cause(err error) string {
	var foreign *ForeignObjectError
	switch {
	case errors.As(err, &foreign):
		return foreign.Error()
	case errors.Is(err, dbservers.ErrNoCapacity):
		return err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return "it took longer than allowed; retry, and tell the platform operators if it happens again"
	case pgutil.IsUnavailable(err):
		return "the tenant database server could not be reached; retry once it is back"
	}
	return "an internal error occurred; retry, and tell the platform operators if it happens again"
}

// place records the server of a new tenant (dbservers.Choose) unless one
// is recorded, and returns its admin connections. A tenant whose names
// were recorded before servers were (by an older release) stays on the
// default server, where those names live. ErrNoCapacity when no server
// has room: retrying does not help until one is added.
func (p *Provisioner) place(ctx context.Context, org organizations.Organization) (*serverConn, error) {
	id, err := p.store.Place(ctx, org.ID, func(ctx context.Context, tx pgx.Tx) (int64, error) {
		if org.Database.Name != "" {
			s, err := p.servers.Default(ctx)
			return s.ID, err
		}
		s, err := p.servers.Place(ctx, tx)
		return s.ID, err
	})
	if err != nil {
		return nil, err
	}
	return p.server(ctx, id)
}

// roleAttributes are the attributes of every tenant role, with the
// password given as a SCRAM verifier.
func (p *Provisioner) roleAttributes(verifier string) string {
	return " LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION CONNECTION LIMIT " +
		strconv.Itoa(p.opts.ConnectionLimit) + " PASSWORD " + quoteLiteral(verifier)
}

// ensureRole records the placement and a sealed password once, then makes
// the role on the tenant's server match it: a spare claimed and renamed
// (claimed: its database is made too), else a role of its own. The
// password is stored before the role exists, so a crash in between leaves
// a password that the next run applies.
func (p *Provisioner) ensureRole(ctx context.Context, sc *serverConn, org organizations.Organization) (Credentials, bool, error) {
	name := ObjectName(p.deployment, org.ID)
	place, err := p.store.SetPlacement(ctx, org.ID, organizations.Placement{
		Host: sc.server.Host, Port: sc.server.Port, Name: name, User: name,
		SealedPassword: p.box.Seal([]byte(newPassword()), sealContext(org.ID)),
	})
	if err != nil {
		return Credentials{}, false, fmt.Errorf("record placement: %w", err)
	}
	pw, err := openPassword(p.box, org.ID, place)
	if err != nil {
		return Credentials{}, false, err
	}
	creds := Credentials{Host: place.Host, Port: place.Port, Name: place.Name, User: place.User, Password: pw}
	claimed, err := p.claimSpare(ctx, sc, org.ID, creds)
	if err != nil || claimed {
		return creds, claimed, err
	}
	return creds, false, p.applyRole(ctx, sc, org.ID, place.User, pw)
}

// applyRole creates the tenant role on sc's server with password, or
// makes an existing role carrying this organization's tag match it. The
// role is created and tagged in one transaction; a role of that name that
// does not carry the organization's tag belongs to someone else and is
// left untouched.
func (p *Provisioner) applyRole(ctx context.Context, sc *serverConn, orgID int64, user, password string) error {
	verifier, err := newScramVerifier(password)
	if err != nil {
		return err
	}
	tag := p.tag(orgID)
	role := pgx.Identifier{user}.Sanitize()
	attrs := p.roleAttributes(verifier)
	err = execTx(ctx, sc.admin, createTaggedRole(role, attrs, tag)...)
	if pgutil.Code(err) == pgerrcode.DuplicateObject {
		got, _, err := roleTag(ctx, sc, user)
		if err != nil {
			return err
		}
		if got != tag {
			return &ForeignObjectError{Kind: "role", Name: user}
		}
		// Created by an earlier run: make it match the stored password.
		if _, err := sc.admin.Exec(ctx, "ALTER ROLE "+role+" WITH"+attrs); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	// A non-superuser admin may only create databases owned by roles it
	// is a member of, and only drop databases it may act for.
	return grantToAdmin(ctx, sc.admin, role)
}

// ensureDatabase creates the tenant database owned by its role, tags it,
// and closes it to everyone else: a copy of the server's template with
// fromTemplate (provisioning), else empty (a move's target, filled by
// pg_restore). CREATE DATABASE cannot run in a
// transaction, so a crash can leave it untagged: an untagged database
// owned by the organization's own (tagged) role is that run's and gets its
// tag now; any other database of that name is someone else's and is left
// untouched.
func (p *Provisioner) ensureDatabase(ctx context.Context, sc *serverConn, orgID int64, creds Credentials, fromTemplate bool) error {
	db := pgx.Identifier{creds.Name}.Sanitize()
	tag := p.tag(orgID)
	var cloned bool
	var err error
	if fromTemplate {
		cloned, err = p.cloneDatabase(ctx, sc, creds)
	}
	if err == nil && !cloned {
		_, err = sc.admin.Exec(ctx, "CREATE DATABASE "+db+" OWNER "+pgx.Identifier{creds.User}.Sanitize())
	}
	switch {
	case err == nil:
	case pgutil.Code(err) == pgerrcode.DuplicateDatabase:
		got, owner, _, err := databaseTag(ctx, sc, creds.Name)
		if err != nil {
			return err
		}
		if got == tag {
			break
		}
		if got != "" || owner != creds.User {
			return &ForeignObjectError{Kind: "database", Name: creds.Name}
		}
	default:
		return err
	}
	// The tag and the grants commit together.
	return execTx(ctx, sc.admin, closeDatabase(db, pgx.Identifier{creds.User}.Sanitize(), tag)...)
}

// migrate hands a copy of the template to the tenant role, and applies the
// tenant migrations it still lacks (all of them to a database that is no
// copy) as the tenant role, so the tables belong to it. A copy already at
// the newest version gets owner as its admin in the same transaction
// (synced): one session in the new database instead of two. A migration
// interrupted by a crash leaves golang-migrate's dirty flag; the database
// holds nothing yet, so it is recreated.
func (p *Provisioner) migrate(ctx context.Context, sc *serverConn, orgID int64, creds Credentials, owner accounts.Credentials) (version uint, synced bool, err error) {
	version, dirty, synced, err := p.adoptClone(ctx, sc, creds, &owner)
	if err != nil {
		return 0, false, err
	}
	if dirty {
		p.log.Warn("tenant migration was interrupted; recreating the empty tenant database", "database", creds.Name)
		if _, err := sc.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{creds.Name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return 0, false, err
		}
		if err := p.ensureDatabase(ctx, sc, orgID, creds, true); err != nil {
			return 0, false, err
		}
		if version, dirty, synced, err = p.adoptClone(ctx, sc, creds, &owner); err != nil {
			return 0, false, err
		}
	}
	latest := p.migrations.Latest()
	if !dirty && version == latest {
		return version, synced, nil
	}
	res, err := p.migrations.MigrateTo(ctx, sc.tenantDSN(creds), latest, tenantdb.MigrateOptions{})
	return res.To, false, err
}

// syncOwner makes the owner the tenant's admin, with the same email and
// password hash as in the core (as read by the migrate step).
func (p *Provisioner) syncOwner(ctx context.Context, sc *serverConn, o accounts.Credentials, creds Credentials) error {
	conn, err := pgx.Connect(ctx, sc.tenantDSN(creds))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return tenantdb.UpsertAdmin(ctx, conn, o.Email, o.PasswordHash)
}

// SyncOwnerPassword copies the owner's current password hash into their
// tenant-admin row in every tenant database they own. A tenant whose hash
// changes has its tokens revoked, as a password change in the tenant would.
// A tenant being moved refuses the write; the job is retried and reaches
// it on its new server.
func (p *Provisioner) SyncOwnerPassword(ctx context.Context, ownerID int64) error {
	return p.withLock(ctx, "owner", ownerID, func() error {
		o, err := accounts.OwnerCredentials(ctx, p.core, ownerID)
		if err != nil {
			return err
		}
		orgs, err := p.store.OwnerTenants(ctx, ownerID)
		if err != nil {
			return err
		}
		var errs []error
		for _, org := range orgs {
			if err := p.syncPassword(ctx, org, o); err != nil {
				errs = append(errs, fmt.Errorf("tenant %d: %w", org.ID, err))
			}
		}
		return errors.Join(errs...)
	})
}

func (p *Provisioner) syncPassword(ctx context.Context, org organizations.Organization, o accounts.Credentials) error {
	creds, err := OpenCredentials(p.box, org)
	if err != nil {
		return err
	}
	sc, err := p.orgServer(ctx, org)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, sc.tenantDSN(creds))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		userID, changed, err := tenantdb.ReplacePassword(ctx, tx, o.Email, o.PasswordHash)
		if err != nil || !changed {
			return err
		}
		if tenantdb.HasAudit(org.SchemaVersion) {
			if err := tenantdb.RecordAudit(ctx, tx, tenantdb.AuditEntry{Action: tenantdb.AuditPasswordSync, TargetUserID: userID}); err != nil {
				return err
			}
		}
		return auth.RevokeAllRefresh(ctx, tx, userID)
	})
}

// Delete drops the tenant's database and role on its server, as recorded
// for the organization and only when they carry its tag, then marks the
// organization deleted with its event. An object of the recorded name that
// is not the organization's is left in place. It returns nil at once
// unless the organization is being deleted.
func (p *Provisioner) Delete(ctx context.Context, orgID int64) error {
	return p.withOrganization(ctx, orgID, organizations.StatusDeleting, func(org organizations.Organization) error {
		if org.Database.Name != "" || org.Database.User != "" {
			sc, err := p.orgServer(ctx, org)
			if err != nil {
				return err
			}
			if err := p.dropObjects(ctx, sc, org); err != nil {
				return err
			}
		}
		if err := p.store.MarkDeleted(ctx, orgID); err != nil {
			return err
		}
		p.log.Info("tenant deleted", "tenant_id", orgID)
		return nil
	})
}

// dropObjects drops org's database and role on sc's server when they
// carry the organization's tag (or, for a database, carry none and belong
// to its tagged role: a crash before the tag). Anything else of those
// names is logged and left in place.
func (p *Provisioner) dropObjects(ctx context.Context, sc *serverConn, org organizations.Organization) error {
	tag := p.tag(org.ID)
	if name := org.Database.Name; name != "" {
		got, owner, exists, err := databaseTag(ctx, sc, name)
		if err != nil {
			return fmt.Errorf("drop database: %w", err)
		}
		switch {
		case !exists:
		case got == tag || (got == "" && owner == org.Database.User && ownsRole(ctx, sc, owner, tag)):
			if _, err := sc.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				return fmt.Errorf("drop database: %w", err)
			}
		default:
			p.log.Warn("tenant database belongs to someone else; left in place", "tenant_id", org.ID,
				"db_server_id", sc.server.ID, "database", name)
		}
	}
	if user := org.Database.User; user != "" {
		got, exists, err := roleTag(ctx, sc, user)
		if err != nil {
			return fmt.Errorf("drop role: %w", err)
		}
		switch {
		case !exists:
		case got == tag:
			if _, err := sc.admin.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{user}.Sanitize()); err != nil {
				return fmt.Errorf("drop role: %w", err)
			}
		default:
			p.log.Warn("tenant role belongs to someone else; left in place", "tenant_id", org.ID,
				"db_server_id", sc.server.ID, "role", user)
		}
	}
	return nil
}

// withOrganization runs fn under the organization's lock when it is (still)
// in status, and returns nil at once when it is not or is gone.
func (p *Provisioner) withOrganization(ctx context.Context, orgID int64, status organizations.Status, fn func(organizations.Organization) error) error {
	return p.withLock(ctx, "organization", orgID, func() error {
		org, err := p.store.Get(ctx, orgID)
		if errors.Is(err, organizations.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if org.Status != status {
			return nil
		}
		return fn(org)
	})
}

// withLock runs fn holding an advisory lock (pg_advisory_lock) on a
// connection of the lock pool: work on one organization (provisioning,
// deletion) or one owner never overlaps, across processes too, and a
// crashed holder releases the lock with its connection. The lock is a
// session lock, since fn runs for seconds on other connections and a
// transaction held open that long would block vacuum; it is released
// before the connection goes back to the pool, or the connection is closed.
// The server probes the idle connection with TCP keepalives, so a holder
// whose host vanished without closing it loses the lock within about 30 s,
// not after the kernel's two hours.
func (p *Provisioner) withLock(ctx context.Context, kind string, id int64, fn func() error) error {
	return withAdvisoryLock(ctx, p.locks, lockKey(kind, id), false, func(*pgxpool.Conn) error { return fn() })
}

// lockKey names the advisory lock of work on one organization or owner.
func lockKey(kind string, id int64) string {
	return "tenantbase." + kind + "." + strconv.FormatInt(id, 10)
}

// lockPoolConfig is the configuration of the lock connections' pool on
// dsn: the server notices a holder's vanished host by TCP keepalive probes
// after 15 s idle, every 5 s, and ends the session after 3 unanswered. A
// provisioning, deletion or move holds one connection while it runs, and
// an owner's password sync one more: the pool is sized for many workers.
func lockPoolConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_idle"] = "15"
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_interval"] = "5"
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_count"] = "3"
	cfg.MaxConns = lockConns
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = time.Minute
	return cfg, nil
}

// lockConns bounds the lock connections of one control plane.
const lockConns = 32

// TenantDSN is a DSN for org's tenant database as its own role, with the
// stored password, on the server it lives on: what any work inside a
// tenant database connects with.
func (p *Provisioner) TenantDSN(ctx context.Context, org organizations.Organization) (string, error) {
	creds, err := OpenCredentials(p.box, org)
	if err != nil {
		return "", err
	}
	sc, err := p.orgServer(ctx, org)
	if err != nil {
		return "", err
	}
	return sc.tenantDSN(creds), nil
}

// WithOrganizationLock runs fn holding the organization's lock, the one
// provisioning, deletion and moves hold: fn never overlaps with them.
func (p *Provisioner) WithOrganizationLock(ctx context.Context, orgID int64, fn func() error) error {
	return p.withLock(ctx, "organization", orgID, fn)
}

// tenantDSN is a DSN for the tenant database as its own role, through the
// admin DSN's server address and options.
func (sc *serverConn) tenantDSN(c Credentials) string {
	u := *sc.url
	u.User = url.UserPassword(c.User, c.Password)
	u.Path = "/" + c.Name
	u.RawPath = ""
	return u.String()
}

// adminDSN is the admin DSN pointed at database db.
func (sc *serverConn) adminDSN(db string) string {
	u := *sc.url
	u.Path = "/" + db
	u.RawPath = ""
	return u.String()
}

// RestrictDatabase closes the database of the connection to PUBLIC, so
// that tenant roles cannot connect to it; its owner and superusers keep
// their access.
func RestrictDatabase(ctx context.Context, pool *pgxpool.Pool) error {
	// Replicas starting together would update the database's catalog row at
	// the same moment, and all but one fail with "tuple concurrently updated".
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenantbase.restrict_database'))`); err != nil {
			return err
		}
		var name string
		if err := tx.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "REVOKE CONNECT, TEMPORARY ON DATABASE "+pgx.Identifier{name}.Sanitize()+" FROM PUBLIC")
		return err
	})
}
