package provisioning

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"tenantbase/libs/pgutil"
	"tenantbase/services/control-plane/internal/dbservers"
	"tenantbase/services/control-plane/internal/deployment"
)

// Spare databases take CREATE DATABASE out of the time an owner waits. Each
// active server keeps Options.Spares of them: a role and a database of one
// random name (tenant_<deployment>_spare_<8 characters>), a copy of the
// template at the newest version whose tables already belong to the role.
// Provisioning claims one in a single transaction, renaming the role and
// the database to the organization's names, giving the role its login and
// password and tagging both for the organization; the database step is
// then skipped, and the migrate step only adds the owner. Without a spare
// (none built yet, all taken by a burst) provisioning copies the template
// as before. Refilling runs as a job after each provisioning that found
// the server's spares short, and every minute: one refill at a time per
// server (an advisory lock in the core database), dropping what a crash
// left half-built, spares of an older version (a release raised the
// newest) and every spare of a draining server.

// SpareTag is the comment on a spare role, and on a spare database once it
// is ready at version (0: being built). Both start with TagPrefix.
func SpareTag(deploymentID string, version uint) string {
	return versionedTag(TagPrefix(deploymentID)+"spare", version)
}

// SparePrefix starts the name of every spare of a deployment.
func SparePrefix(deploymentID string) string { return "tenant_" + deploymentID + "_spare_" }

// sparesQueue is the queue of refills, with one worker of its own: a
// refill never takes a provisioning's place, and one runs at a time.
const sparesQueue = "tenant_spares"

// refillOpts are the insert options of every refill.
var refillOpts = river.InsertOpts{MaxAttempts: 3, Queue: sparesQueue, UniqueOpts: onePerOrganization}

// RefillSparesArgs is the job that brings the spare databases of one
// server (0: of every server) to the configured count.
type RefillSparesArgs struct {
	DBServerID int64 `json:"db_server_id"`
}

// Kind implements river.JobArgs.
func (RefillSparesArgs) Kind() string { return "refill_spare_databases" }

type refillSparesWorker struct {
	river.WorkerDefaults[RefillSparesArgs]
	p *Provisioner
}

func (w *refillSparesWorker) Work(ctx context.Context, job *river.Job[RefillSparesArgs]) error {
	return w.p.RefillSpares(ctx, job.Args.DBServerID)
}

// enqueueRefill asks for server's spares to be refilled, in tx. A refill
// already running recounts after each spare it builds.
func (j *Jobs) enqueueRefill(ctx context.Context, tx pgx.Tx, serverID int64) error {
	opts := refillOpts
	_, err := j.client.InsertTx(ctx, tx, RefillSparesArgs{DBServerID: serverID}, &opts)
	return err
}

// claimSpare makes a ready spare on sc's server the organization's, in one
// transaction: its role and database renamed to the recorded names, the
// role given the organization's password and attributes, both tagged for
// the organization. It answers false, having changed nothing, when no
// spare is ready or the names are taken (an earlier run of this
// provisioning created the role).
func (p *Provisioner) claimSpare(ctx context.Context, sc *serverConn, orgID int64, creds Credentials) (bool, error) {
	if p.opts.Spares == 0 || creds.Name != creds.User {
		return false, nil
	}
	verifier, err := newScramVerifier(creds.Password)
	if err != nil {
		return false, err
	}
	claimed := false
	err = pgx.BeginFunc(ctx, sc.admin, func(tx pgx.Tx) error {
		// Claims on one server take turns, so two never pick one spare.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "tenantbase.spares.claim."+p.deployment); err != nil {
			return err
		}
		var spare string
		err := tx.QueryRow(ctx, `SELECT d.datname FROM pg_database d
			JOIN pg_roles r ON r.rolname = d.datname AND shobj_description(r.oid, 'pg_authid') = $2
			WHERE shobj_description(d.oid, 'pg_database') = $1 ORDER BY d.oid LIMIT 1`,
			SpareTag(p.deployment, p.migrations.Latest()), SpareTag(p.deployment, 0)).Scan(&spare)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		from, to, tag := pgx.Identifier{spare}.Sanitize(), pgx.Identifier{creds.Name}.Sanitize(), quoteLiteral(p.tag(orgID))
		for _, sql := range []string{
			"ALTER ROLE " + from + " RENAME TO " + to,
			"ALTER ROLE " + to + " WITH" + p.roleAttributes(verifier),
			"COMMENT ON ROLE " + to + " IS " + tag,
			"ALTER DATABASE " + from + " RENAME TO " + to,
			"COMMENT ON DATABASE " + to + " IS " + tag,
		} {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
		}
		claimed = true
		return nil
	})
	switch pgutil.Code(err) {
	case pgerrcode.DuplicateObject, pgerrcode.DuplicateDatabase, pgerrcode.ObjectInUse:
		return false, nil
	}
	return claimed, err
}

// RefillSpares brings the spares of server serverID, or of every server
// for 0, to the configured count; see the comment at the top of this file.
func (p *Provisioner) RefillSpares(ctx context.Context, serverID int64) error {
	if p.opts.Spares == 0 {
		return nil
	}
	var servers []dbservers.Server
	if serverID != 0 {
		s, err := p.servers.Get(ctx, serverID)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	} else {
		var err error
		if servers, err = p.servers.List(ctx, 0, 1000); err != nil {
			return err
		}
	}
	var errs []error
	for _, s := range servers {
		want := p.opts.Spares
		if s.State != dbservers.StateActive {
			want = 0
		}
		err := p.withLock(ctx, "spares", s.ID, func() error {
			sc, err := p.server(ctx, s.ID)
			if err != nil {
				return err
			}
			return p.refill(ctx, sc, want)
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("database server %d: %w", s.ID, err))
		}
	}
	return errors.Join(errs...)
}

// spare is a spare role on a server and the database of its name.
type spare struct {
	name      string
	dbExists  bool
	dbTag     string
	dbOwner   string
	dbVersion uint
}

// refill drops on sc's server the spares that cannot be claimed (never
// finished, or of an older version) and those beyond want, then builds
// spares until want are ready, counting again after each: claims go on
// meanwhile. Spares of a newer version belong to a newer release running
// beside this one (a rolling deploy) and are left alone.
func (p *Provisioner) refill(ctx context.Context, sc *serverConn, want int) error {
	latest := p.migrations.Latest()
	for built := 0; ; built++ {
		spares, err := p.spares(ctx, sc)
		if err != nil {
			return err
		}
		ready := 0
		for _, s := range spares {
			ours := !s.dbExists || s.dbOwner == s.name
			switch {
			case !ours || s.dbVersion > latest:
			case s.dbVersion == latest && ready < want:
				ready++
			default:
				if err := p.dropSpare(ctx, sc, s); err != nil {
					return err
				}
			}
		}
		// A server that cannot build them (its template is someone else's)
		// gets no spares; nor does one where every build fails.
		if ready >= want || built >= want {
			return nil
		}
		ok, err := p.buildSpare(ctx, sc)
		if err != nil || !ok {
			return err
		}
	}
}

// spares lists the spare roles of this deployment on sc's server, with the
// database of each one's name.
func (p *Provisioner) spares(ctx context.Context, sc *serverConn) ([]spare, error) {
	rows, err := sc.admin.Query(ctx, `SELECT r.rolname, d.datname IS NOT NULL,
			coalesce(shobj_description(d.oid, 'pg_database'), ''), coalesce(pg_get_userbyid(d.datdba), '')
		FROM pg_roles r LEFT JOIN pg_database d ON d.datname = r.rolname
		WHERE shobj_description(r.oid, 'pg_authid') = $1 ORDER BY r.oid`, SpareTag(p.deployment, 0))
	if err != nil {
		return nil, err
	}
	spares, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (spare, error) {
		var s spare
		err := row.Scan(&s.name, &s.dbExists, &s.dbTag, &s.dbOwner)
		return s, err
	})
	for i := range spares {
		spares[i].dbVersion = tagVersion(SpareTag(p.deployment, 0), spares[i].dbTag)
	}
	return spares, err
}

// dropSpare drops a spare's database, when it has one of its own, and
// its role.
func (p *Provisioner) dropSpare(ctx context.Context, sc *serverConn, s spare) error {
	ident := pgx.Identifier{s.name}.Sanitize()
	if s.dbExists {
		if _, err := sc.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop spare database: %w", err)
		}
	}
	if _, err := sc.admin.Exec(ctx, "DROP ROLE IF EXISTS "+ident); err != nil {
		return fmt.Errorf("drop spare role: %w", err)
	}
	return nil
}

// buildSpare creates one spare on sc's server: its role (tagged, without
// login), a copy of the template owned by it with every table handed to
// it, and last the database's ready tag with its grants. A crash before the
// tag leaves a spare the next refill drops. It answers false when the
// template cannot be used.
func (p *Provisioner) buildSpare(ctx context.Context, sc *serverConn) (bool, error) {
	name := SparePrefix(p.deployment) + deployment.RandomString(8)
	ident := pgx.Identifier{name}.Sanitize()
	if err := execTx(ctx, sc.admin, createTaggedRole(ident, " NOLOGIN", SpareTag(p.deployment, 0))...); err != nil {
		return false, fmt.Errorf("create spare role: %w", err)
	}
	if err := grantToAdmin(ctx, sc.admin, ident); err != nil {
		return false, err
	}
	creds := Credentials{Name: name, User: name}
	if cloned, err := p.cloneDatabase(ctx, sc, creds); err != nil || !cloned {
		if err == nil {
			err = p.dropSpare(ctx, sc, spare{name: name})
		}
		return false, err
	}
	latest := p.migrations.Latest()
	version, dirty, _, err := p.adoptClone(ctx, sc, creds, nil)
	if err != nil {
		return false, err
	}
	if dirty || version != latest {
		return false, fmt.Errorf("spare %s is at version %d (dirty %v), not %d", name, version, dirty, latest)
	}
	// A claim renames the database, which fails while anyone is connected.
	if err := waitUnused(ctx, sc.admin, name); err != nil {
		return false, err
	}
	if err := execTx(ctx, sc.admin, closeDatabase(ident, ident, SpareTag(p.deployment, latest))...); err != nil {
		return false, fmt.Errorf("tag spare database: %w", err)
	}
	p.log.Debug("spare tenant database ready", "db_server_id", sc.server.ID, "database", name, "schema_version", latest)
	return true, nil
}

// waitUnused waits until no session is connected to database name: one
// that has just been closed ends on the server a moment later.
func waitUnused(ctx context.Context, q querier, name string) error {
	for {
		var n int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, name).Scan(&n); err != nil || n == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
