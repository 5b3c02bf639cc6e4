// Package dbservers is the registry of the Postgres servers that hold
// tenant databases: each server's admin DSN (encrypted, never shown), the
// address the tenant plane connects to, its capacity and its state, and the
// placement of new tenants on them.
package dbservers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/apperr"
	"tenantbase/libs/pgutil"
	"tenantbase/services/control-plane/internal/secretbox"
)

// State says whether a server takes new tenants.
type State string

// States of a server.
const (
	// StateActive servers take new tenants while they have room.
	StateActive State = "active"
	// StateDraining servers keep their tenants but take no new ones.
	StateDraining State = "draining"
)

const (
	// DefaultName is the server registered on the first start from
	// TENANT_DB_ADMIN_URL (or the core database's server).
	DefaultName = "default"
	// DefaultMaxTenants is max_tenants when a registration names none: a
	// Postgres server slows down in catalogs, autovacuum and start-up well
	// before 5,000 databases (see docs/scaling.md).
	DefaultMaxTenants = 2000
	// maxMaxTenants bounds max_tenants.
	maxMaxTenants = 100_000
)

// Domain errors; the HTTP layer maps them to problems.
var (
	ErrNotFound = errors.New("no such database server")
	ErrExists   = errors.New("a database server with this name or address is already registered")
	// ErrNoCapacity means no active server has room for another tenant.
	ErrNoCapacity = errors.New("no database server has room for a new tenant: every active server is full or draining " +
		"(register a server with POST /admin/db-servers or activate one, then retry)")
)

// UnreachableError means a server to be registered could not be used: it
// did not accept the connection, or the role may not create databases.
type UnreachableError struct {
	// Cause is what went wrong, without the DSN's password.
	Cause string
}

func (e *UnreachableError) Error() string {
	return "the database server cannot be used with this admin_url: " + e.Cause
}

// Server is one registered server. Its admin DSN stays sealed; AdminURL
// opens it for the code that connects.
type Server struct {
	ID         int64
	Name       string
	Host       string
	Port       int
	MaxTenants int
	State      State
	// Tenants counts the organizations placed on the server, deleted ones
	// aside, and those moving to it.
	Tenants   int
	CreatedAt time.Time

	sealedAdminURL []byte
}

// Free is how many more tenants the server takes.
func (s Server) Free() int { return max(s.MaxTenants-s.Tenants, 0) }

// Choose is the placement rule, in one place so that it can change: among
// the active servers with room, the one with the most free places (the
// lowest id among equals). ok is false when none has room.
func Choose(servers []Server) (best Server, ok bool) {
	for _, s := range servers {
		if s.State != StateActive || s.Free() == 0 {
			continue
		}
		if !ok || s.Free() > best.Free() || (s.Free() == best.Free() && s.ID < best.ID) {
			best, ok = s, true
		}
	}
	return best, ok
}

// Counter counts the tenants of each server. The organizations package
// implements it: it owns the table that says where tenants are.
type Counter interface {
	TenantsPerServer(ctx context.Context, tx pgx.Tx) (map[int64]int, error)
}

// Registry reads and changes the registered servers.
type Registry struct {
	pool    *pgxpool.Pool
	box     *secretbox.Box
	tenants Counter
	// probe checks a DSN before it is registered (Probe; tests replace it).
	probe func(ctx context.Context, adminURL string) error
}

// New returns the registry on the core database.
func New(pool *pgxpool.Pool, box *secretbox.Box, tenants Counter) *Registry {
	return &Registry{pool: pool, box: box, tenants: tenants, probe: Probe}
}

// Registration is a server to register. Host and Port default to the
// admin DSN's, MaxTenants to DefaultMaxTenants.
type Registration struct {
	Name       string
	AdminURL   string
	Host       string
	Port       int
	MaxTenants int
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// normalize checks r and fills in its defaults.
func (r Registration) normalize() (Registration, error) {
	var errs []error
	if !validName.MatchString(r.Name) {
		errs = append(errs, apperr.Invalid("name", "must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"))
	}
	host, port, err := Address(r.AdminURL)
	if err != nil {
		errs = append(errs, apperr.Invalid("admin_url", err.Error()))
	}
	if r.Host == "" {
		r.Host = host
	} else if len(r.Host) > 255 || strings.ContainsAny(r.Host, " \t\r\n/@") {
		errs = append(errs, apperr.Invalid("host", "must be a host name or IP address"))
	}
	if r.Port == 0 {
		r.Port = port
	} else if r.Port < 1 || r.Port > 65535 {
		errs = append(errs, apperr.Invalid("port", "must be 1 to 65535"))
	}
	if r.MaxTenants == 0 {
		r.MaxTenants = DefaultMaxTenants
	} else if r.MaxTenants < 1 || r.MaxTenants > maxMaxTenants {
		errs = append(errs, apperr.Invalid("max_tenants", fmt.Sprintf("must be 1 to %d", maxMaxTenants)))
	}
	return r, apperr.Join(errs...)
}

// Address is the host and port of a postgres:// admin DSN: localhost and
// 5432 when it names none (a DSN over a Unix socket), as libpq does.
func Address(adminURL string) (host string, port int, err error) {
	u, err := ParseURL(adminURL)
	if err != nil {
		return "", 0, err
	}
	host, port = u.Hostname(), 5432
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil || port < 1 || port > 65535 {
			return "", 0, fmt.Errorf("port %q is not a port number", p)
		}
	}
	if host == "" {
		host = "localhost"
	}
	return host, port, nil
}

// ParseURL parses an admin DSN, which must be a postgres:// URL: the
// control plane derives tenant DSNs from it.
func ParseURL(adminURL string) (*url.URL, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errors.New("must be a postgres:// URL")
	}
	return u, nil
}

// Register checks that the server can be used, by connecting and creating
// (then dropping) a database, and records it as active.
func (r *Registry) Register(ctx context.Context, in Registration) (Server, error) {
	in, err := in.normalize()
	if err != nil {
		return Server{}, err
	}
	if err := r.probe(ctx, in.AdminURL); err != nil {
		return Server{}, err
	}
	var s Server
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		var err error
		s, err = r.insert(ctx, tx, in)
		return err
	})
	if pgutil.Code(err) == pgerrcode.UniqueViolation {
		return Server{}, ErrExists
	}
	return s, err
}

// EnsureDefault registers the server of in as DefaultName unless a server
// of that name exists already, and returns it. It does not probe: the
// control plane needs the server at once anyway, and retries until it
// answers. Replicas starting together register it once.
func (r *Registry) EnsureDefault(ctx context.Context, in Registration) (s Server, created bool, err error) {
	in.Name = DefaultName
	if in, err = in.normalize(); err != nil {
		return Server{}, false, fmt.Errorf("default database server: %w", err)
	}
	err = pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenantbase.default_db_server'))`); err != nil {
			return err
		}
		s, err = scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM db_server WHERE name = $1`, DefaultName))
		if !errors.Is(err, ErrNotFound) {
			return err
		}
		created = true
		s, err = r.insert(ctx, tx, in)
		return err
	})
	return s, created, err
}

// insert adds the server; its admin DSN is sealed for its id, so that a
// ciphertext cannot be moved to another row.
func (r *Registry) insert(ctx context.Context, tx pgx.Tx, in Registration) (Server, error) {
	var id int64
	if err := tx.QueryRow(ctx, `SELECT nextval(pg_get_serial_sequence('db_server', 'id'))`).Scan(&id); err != nil {
		return Server{}, err
	}
	return scan(tx.QueryRow(ctx, `INSERT INTO db_server (id, name, admin_url_enc, host, port, max_tenants)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+columns,
		id, in.Name, r.box.Seal([]byte(in.AdminURL), sealContext(id)), in.Host, in.Port, in.MaxTenants))
}

func sealContext(id int64) []byte { return []byte("db_server:" + strconv.FormatInt(id, 10)) }

// AdminURL opens s's admin DSN. Use it to connect; never show or log it.
func (r *Registry) AdminURL(s Server) (string, error) {
	b, err := r.box.Open(s.sealedAdminURL, sealContext(s.ID))
	if err != nil {
		return "", fmt.Errorf("database server %d admin DSN: %w", s.ID, err)
	}
	return string(b), nil
}

const columns = `id, name, admin_url_enc, host, port, max_tenants, state, created_at`

func scan(row pgx.Row) (Server, error) {
	var s Server
	err := row.Scan(&s.ID, &s.Name, &s.sealedAdminURL, &s.Host, &s.Port, &s.MaxTenants, &s.State, &s.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNotFound
	}
	return s, err
}

func collect(rows pgx.Rows, err error) ([]Server, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Server, error) { return scan(r) })
}

// withCounts fills in the tenant counts.
func (r *Registry) withCounts(ctx context.Context, tx pgx.Tx, servers []Server) error {
	counts, err := r.tenants.TenantsPerServer(ctx, tx)
	if err != nil {
		return err
	}
	for i := range servers {
		servers[i].Tenants = counts[servers[i].ID]
	}
	return nil
}

// List returns servers newest first, below id before (0: from the newest),
// with their tenant counts.
func (r *Registry) List(ctx context.Context, before int64, limit int) ([]Server, error) {
	var servers []Server
	err := pgx.BeginTxFunc(ctx, r.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		servers, err = collect(tx.Query(ctx, `SELECT `+columns+` FROM db_server
			WHERE ($1::bigint = 0 OR id < $1) ORDER BY id DESC LIMIT $2`, before, limit))
		if err != nil {
			return err
		}
		return r.withCounts(ctx, tx, servers)
	})
	return servers, err
}

// Get returns one server with its tenant count.
func (r *Registry) Get(ctx context.Context, id int64) (Server, error) {
	var s Server
	err := pgx.BeginTxFunc(ctx, r.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if s, err = scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM db_server WHERE id = $1`, id)); err != nil {
			return err
		}
		one := []Server{s}
		err = r.withCounts(ctx, tx, one)
		s = one[0]
		return err
	})
	return s, err
}

// Default returns the server registered as DefaultName.
func (r *Registry) Default(ctx context.Context) (Server, error) {
	return scan(r.pool.QueryRow(ctx, `SELECT `+columns+` FROM db_server WHERE name = $1`, DefaultName))
}

// SetState makes a server active or draining. Setting the state it has
// already is no error.
func (r *Registry) SetState(ctx context.Context, id int64, state State) (Server, error) {
	s, err := scan(r.pool.QueryRow(ctx, `UPDATE db_server SET state = $2, updated_at = now()
		WHERE id = $1 RETURNING `+columns, id, state))
	if err != nil {
		return s, err
	}
	return r.Get(ctx, s.ID)
}

// lockActive locks the active servers, in id order, until tx ends, and
// returns them with their counts: placements and moves that hold the
// lock see each other's tenants, so none overfills a server.
func (r *Registry) lockActive(ctx context.Context, tx pgx.Tx) ([]Server, error) {
	servers, err := collect(tx.Query(ctx, `SELECT `+columns+` FROM db_server
		WHERE state = 'active' ORDER BY id FOR UPDATE`))
	if err != nil {
		return nil, err
	}
	return servers, r.withCounts(ctx, tx, servers)
}

// Place chooses the server of a new tenant with Choose, within tx, which
// must record the choice before it commits. ErrNoCapacity when no active
// server has room.
func (r *Registry) Place(ctx context.Context, tx pgx.Tx) (Server, error) {
	servers, err := r.lockActive(ctx, tx)
	if err != nil {
		return Server{}, err
	}
	s, ok := Choose(servers)
	if !ok {
		return Server{}, ErrNoCapacity
	}
	return s, nil
}

// MoveTarget checks, within tx, that server id may take a tenant moving
// from server from: it exists, is not from, is active and has room. tx
// must record the move before it commits.
func (r *Registry) MoveTarget(ctx context.Context, tx pgx.Tx, id, from int64) (Server, error) {
	if id == from {
		return Server{}, apperr.Invalid("db_server_id", "the tenant is on this server already")
	}
	servers, err := r.lockActive(ctx, tx)
	if err != nil {
		return Server{}, err
	}
	for _, s := range servers {
		if s.ID != id {
			continue
		}
		if s.Free() == 0 {
			return Server{}, apperr.Invalid("db_server_id", "the server is full (max_tenants)")
		}
		return s, nil
	}
	if _, err := scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM db_server WHERE id = $1`, id)); err != nil {
		if errors.Is(err, ErrNotFound) {
			return Server{}, apperr.Invalid("db_server_id", "no such database server")
		}
		return Server{}, err
	}
	return Server{}, apperr.Invalid("db_server_id", "the server is draining")
}

// probeTimeout bounds the check of a server to be registered.
const probeTimeout = 10 * time.Second

// Probe connects with adminURL and creates and drops a database, as
// provisioning will. The error is an *UnreachableError whose cause never
// holds the DSN's password.
func Probe(ctx context.Context, adminURL string) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	fail := func(what string, err error) error {
		return &UnreachableError{Cause: what + ": " + redact(err.Error(), adminURL)}
	}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fail("connect", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	name := pgx.Identifier{"tenantbase_probe_" + strings.ToLower(rand.Text()[:10])}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fail("create a database", err)
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE "+name); err != nil {
		return fail("drop the database it created", err)
	}
	return nil
}

// redact removes adminURL's password from msg.
func redact(msg, adminURL string) string {
	u, err := url.Parse(adminURL)
	if err != nil {
		return msg
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "********")
		msg = strings.ReplaceAll(msg, url.QueryEscape(pw), "********")
	}
	return strings.Join(strings.Fields(msg), " ")
}
