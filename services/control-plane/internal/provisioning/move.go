package provisioning

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/services/control-plane/internal/organizations"
)

// Steps of a move between database servers, as passed to Options.BeforeStep
// and shown in failures.
const (
	StepMoveFreeze  = "move_freeze"
	StepMovePrepare = "move_prepare"
	StepMoveCopy    = "move_copy"
	StepMoveVerify  = "move_verify"
	StepMoveSwitch  = "move_switch"
)

// drainTimeout bounds the wait for tenant planes to close the connections
// they opened before a freeze; the ones left are then terminated.
const drainTimeout = 5 * time.Second

// Move carries a moving organization's database to its target server:
//
//   - prepare: the role (same name and password) and a fresh, empty database
//     on the target; a copy left there by an earlier attempt is replaced.
//   - freeze: new sessions of the tenant role on the source database are
//     read-only (ALTER ROLE ... IN DATABASE ... SET
//     default_transaction_read_only), tenant.updated tells the tenant
//     planes to drop their connections, and the sessions opened before are
//     waited for (then terminated): from then on no write reaches the source.
//   - copy: pg_dump of the source piped into pg_restore on the target, in
//     one transaction.
//   - verify: every table has as many rows on the target as on the source.
//   - switch: one core transaction records the target as the tenant's
//     server, sets it ready, publishes tenant.updated and schedules the
//     removal of the source copy after the grace period.
//
// Every step can be re-run: a crash before the switch repeats the move
// from the freeze, one after it finds the organization ready and does
// nothing. The source stays read-only after the switch, so no write is
// accepted there by a tenant plane that has not switched yet. An
// organization whose move failed (its move error is recorded) is rolled
// back instead. It returns nil at once unless the organization is moving.
func (p *Provisioner) Move(ctx context.Context, orgID int64) error {
	return p.withOrganization(ctx, orgID, organizations.StatusMoving, func(org organizations.Organization) error {
		if org.Move.Error != "" {
			return p.rollBack(ctx, org)
		}
		src, err := p.orgServer(ctx, org)
		if err != nil {
			return err
		}
		dst, err := p.server(ctx, org.Move.To)
		if err != nil {
			return err
		}
		creds, err := OpenCredentials(p.box, org)
		if err != nil {
			return err
		}
		// took times each step for the log line of a finished move.
		var took []any
		timed := func(name string, fn func() error) error {
			began := time.Now()
			err := p.step(ctx, orgID, name, fn)
			took = append(took, name, time.Since(began).Round(time.Millisecond).String())
			return err
		}
		// The empty target is made before the source stops taking writes,
		// so that the time without writes is the copy's alone.
		if err := timed(StepMovePrepare, func() error { return p.prepareTarget(ctx, dst, orgID, creds) }); err != nil {
			return err
		}
		if err := timed(StepMoveFreeze, func() error { _, err := p.freeze(ctx, src, org); return err }); err != nil {
			return err
		}
		if err := timed(StepMoveCopy, func() error { return p.copyDatabase(ctx, src, dst, creds) }); err != nil {
			return err
		}
		var rows map[string]int64
		if err := timed(StepMoveVerify, func() error {
			rows, err = verifyCopy(ctx, src, dst, creds.Name)
			return err
		}); err != nil {
			return err
		}
		var ok bool
		if err := timed(StepMoveSwitch, func() error {
			ok, err = p.store.FinishMove(ctx, orgID, dst.server.ID, dst.server.Host, dst.server.Port, func(tx pgx.Tx) error {
				return p.jobs.EnqueueDropCopy(ctx, tx, orgID, src.server.ID, p.opts.MoveGrace)
			})
			return err
		}); err != nil || !ok {
			return err
		}
		var total int64
		for _, n := range rows {
			total += n
		}
		p.log.Info("tenant moved", append([]any{"tenant_id", orgID, "from_db_server_id", src.server.ID,
			"db_server_id", dst.server.ID, "tables", len(rows), "rows", total}, took...)...)
		return nil
	})
}

// AbortMove records why the move of orgID failed and rolls it back: the
// tenant is ready on its source server again, with the reason as its
// status_detail. The reason stays recorded if the rollback fails, so that
// a re-run (Move or AbortMove) only rolls back.
func (p *Provisioner) AbortMove(ctx context.Context, orgID int64, cause error) error {
	return p.withOrganization(ctx, orgID, organizations.StatusMoving, func(org organizations.Organization) error {
		target := "database server " + strconv.FormatInt(org.Move.To, 10)
		if s, err := p.servers.Get(ctx, org.Move.To); err == nil {
			target = fmt.Sprintf("database server %s (id %d)", s.Name, s.ID)
		}
		org, err := p.store.FailMove(ctx, orgID, fmt.Sprintf("moving to %s failed; the tenant stayed on its server: %v", target, cause))
		if err != nil {
			return err
		}
		if org.Status != organizations.StatusMoving {
			return nil
		}
		return p.rollBack(ctx, org)
	})
}

// rollBack ends a failed move on the source: writes are allowed again,
// the organization is ready with the reason recorded (tenant.updated), the
// copy on the target is scheduled for removal, and the read-only sessions
// of the move are waited for (then terminated). Only the source server
// needs to answer: a target that is down does not keep the tenant
// read-only.
func (p *Provisioner) rollBack(ctx context.Context, org organizations.Organization) error {
	src, err := p.orgServer(ctx, org)
	if err != nil {
		return err
	}
	role, db := org.Database.User, org.Database.Name
	if _, err := src.admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" IN DATABASE "+
		pgx.Identifier{db}.Sanitize()+" RESET default_transaction_read_only"); err != nil {
		return fmt.Errorf("allow writes on the source again: %w", err)
	}
	var since time.Time
	if err := src.admin.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&since); err != nil {
		return err
	}
	if err := p.store.AbandonMove(ctx, org.ID, func(tx pgx.Tx) error {
		return p.jobs.EnqueueDropCopy(ctx, tx, org.ID, org.Move.To, 0)
	}); err != nil {
		return err
	}
	p.log.Error("move abandoned; the tenant stays on its server", "tenant_id", org.ID, "db_server_id", src.server.ID,
		"reason", org.Move.Error)
	if org.Move.FrozenAt != nil {
		if err := p.drain(ctx, src, role, db, since); err != nil {
			p.log.Warn("read-only sessions of an abandoned move did not end", "tenant_id", org.ID, "error", err.Error())
		}
	}
	return nil
}

// freeze makes the source refuse writes and returns when it started to,
// on the source server's clock.
func (p *Provisioner) freeze(ctx context.Context, src *serverConn, org organizations.Organization) (time.Time, error) {
	role, db := org.Database.User, org.Database.Name
	if _, err := src.admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" IN DATABASE "+
		pgx.Identifier{db}.Sanitize()+" SET default_transaction_read_only = on"); err != nil {
		return time.Time{}, err
	}
	var since time.Time
	if org.Move.FrozenAt != nil {
		// An earlier attempt froze it: sessions since then are read-only.
		since = *org.Move.FrozenAt
	} else {
		if err := src.admin.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&since); err != nil {
			return time.Time{}, err
		}
		if _, err := p.store.MoveFrozen(ctx, org.ID, since); err != nil {
			return time.Time{}, err
		}
	}
	return since, p.drain(ctx, src, role, db, since)
}

// drain waits until no session of role on db that started before since
// is left: tenant planes close their pools on tenant.updated, once the
// requests using them are done. After drainTimeout the sessions left
// (a plane that missed the event) are terminated.
func (p *Provisioner) drain(ctx context.Context, sc *serverConn, role, db string, since time.Time) error {
	const query = `FROM pg_stat_activity WHERE usename = $1 AND datname = $2 AND backend_start < $3`
	left := func() (int, error) {
		var n int
		err := sc.admin.QueryRow(ctx, `SELECT count(*) `+query, role, db, since).Scan(&n)
		return n, err
	}
	wait := func() (int, error) {
		deadline := time.Now().Add(drainTimeout)
		for {
			n, err := left()
			if err != nil || n == 0 || time.Now().After(deadline) {
				return n, err
			}
			select {
			case <-ctx.Done():
				return n, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	n, err := wait()
	if err != nil || n == 0 {
		return err
	}
	p.log.Warn("terminating tenant sessions that predate a change of the tenant's database", "database", db, "sessions", n)
	if _, err := sc.admin.Exec(ctx, `SELECT pg_terminate_backend(pid) `+query, role, db, since); err != nil {
		return err
	}
	if n, err = wait(); err == nil && n > 0 {
		err = fmt.Errorf("%d sessions of %s on %s do not end", n, role, db)
	}
	return err
}

// prepareTarget creates the tenant's role and a fresh database on the
// target server. The tenant does not live there (the move checked that),
// so a database of its name carrying its tag is a copy an earlier attempt
// left, or the source of an earlier move away still waiting for removal:
// it is replaced. Anything else of that name belongs to someone else.
func (p *Provisioner) prepareTarget(ctx context.Context, dst *serverConn, orgID int64, creds Credentials) error {
	if err := p.applyRole(ctx, dst, orgID, creds.User, creds.Password); err != nil {
		return err
	}
	tag, owner, exists, err := databaseTag(ctx, dst, creds.Name)
	if err != nil {
		return err
	}
	if exists {
		if tag != p.tag(orgID) && (tag != "" || owner != creds.User) {
			return &ForeignObjectError{Kind: "database", Name: creds.Name}
		}
		if _, err := dst.admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{creds.Name}.Sanitize()+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	return p.ensureDatabase(ctx, dst, orgID, creds, false)
}

// copyDatabase pipes pg_dump of the source (as the admin: the tenant
// role's connection limit may be taken by tenant planes serving reads)
// into pg_restore on the target as the tenant role, in one transaction,
// so the objects belong to the tenant role there too. Passwords reach the
// tools in PGPASSWORD, never on their command line.
func (p *Provisioner) copyDatabase(ctx context.Context, src, dst *serverConn, creds Credentials) error {
	dumpBin, restoreBin, err := p.clientTools()
	if err != nil {
		return err
	}
	srcDSN, srcPassword := splitPassword(src.adminDSN(creds.Name))
	dstDSN, _ := splitPassword(dst.tenantDSN(creds))
	dump := exec.CommandContext(ctx, dumpBin, "--format=custom", "--compress=0", "--dbname="+srcDSN)
	dump.Env = toolEnv(srcPassword)
	restore := exec.CommandContext(ctx, restoreBin, "--no-owner", "--no-privileges", "--exit-on-error",
		"--single-transaction", "--dbname="+dstDSN)
	restore.Env = toolEnv(creds.Password)
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	dump.Stdout, restore.Stdin = w, r
	var dumpErr, restoreErr tail
	dump.Stderr, restore.Stderr = &dumpErr, &restoreErr
	if err := restore.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("pg_restore: %w", err)
	}
	r.Close()
	if err := dump.Start(); err != nil {
		w.Close()
		_ = restore.Wait()
		return fmt.Errorf("pg_dump: %w", err)
	}
	// Only the tools hold the pipe now: either one ending closes it.
	w.Close()
	restoreRes := restore.Wait()
	if restoreRes != nil {
		_ = dump.Process.Kill()
	}
	dumpRes := dump.Wait()
	switch {
	case dumpRes != nil && (restoreRes == nil || dumpErr.String() != ""):
		return fmt.Errorf("pg_dump: %v: %s", dumpRes, dumpErr.String())
	case restoreRes != nil:
		return fmt.Errorf("pg_restore: %v: %s", restoreRes, restoreErr.String())
	}
	return nil
}

// clientTools finds pg_dump and pg_restore: in Options.PGBinDir, else on
// PATH, else in the newest /usr/lib/postgresql/*/bin. pg_dump must be at
// least as new as the servers it dumps.
func (p *Provisioner) clientTools() (dump, restore string, err error) {
	find := func(name string) (string, error) {
		if dir := p.opts.PGBinDir; dir != "" {
			return exec.LookPath(filepath.Join(dir, name))
		}
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return majorVersion(dirs[i]) > majorVersion(dirs[j]) })
		for _, d := range dirs {
			if path, err := exec.LookPath(filepath.Join(d, name)); err == nil {
				return path, nil
			}
		}
		return "", fmt.Errorf("%s not found: install the PostgreSQL client tools or set PG_BIN_DIR", name)
	}
	if dump, err = find("pg_dump"); err != nil {
		return "", "", err
	}
	restore, err = find("pg_restore")
	return dump, restore, err
}

func majorVersion(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

// splitPassword returns a URL DSN without its password, and the password.
func splitPassword(dsn string) (string, string) {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn, ""
	}
	pw, _ := u.User.Password()
	u.User = url.User(u.User.Username())
	q := u.Query()
	if v := q.Get("password"); v != "" {
		pw = v
		q.Del("password")
		u.RawQuery = q.Encode()
	}
	return u.String(), pw
}

// toolEnv is the whole environment of pg_dump and pg_restore.
func toolEnv(password string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LC_ALL=C",
		"PGCONNECT_TIMEOUT=10", "PGAPPNAME=tenantbase-move"}
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return env
}

// tail keeps the last lines a tool wrote to stderr, for the failure.
type tail struct{ b []byte }

const tailBytes = 2000

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 2*tailBytes {
		t.b = append([]byte(nil), t.b[len(t.b)-tailBytes:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	s := string(t.b)
	if len(s) > tailBytes {
		s = s[len(s)-tailBytes:]
	}
	return strings.Join(strings.Fields(s), " ")
}

// verifyCopy counts the rows of every table of database db on both
// servers and returns the counts, or an error naming the first table that
// differs. The source refuses writes meanwhile, so its counts are final.
func verifyCopy(ctx context.Context, src, dst *serverConn, db string) (map[string]int64, error) {
	var want, got map[string]int64
	var srcErr, dstErr error
	var wg sync.WaitGroup
	wg.Go(func() { want, srcErr = rowCounts(ctx, src.adminDSN(db)) })
	wg.Go(func() { got, dstErr = rowCounts(ctx, dst.adminDSN(db)) })
	wg.Wait()
	if srcErr != nil {
		return nil, fmt.Errorf("count rows on the source: %w", srcErr)
	}
	if dstErr != nil {
		return nil, fmt.Errorf("count rows on the target: %w", dstErr)
	}
	names := slices.Sorted(maps.Keys(want))
	for _, t := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[t]; !ok {
			return nil, fmt.Errorf("table %s is on the target only", t)
		}
	}
	for _, t := range names {
		n, ok := got[t]
		if !ok {
			return nil, fmt.Errorf("table %s is missing on the target", t)
		}
		if n != want[t] {
			return nil, fmt.Errorf("table %s has %d rows on the source and %d on the target", t, want[t], n)
		}
	}
	return want, nil
}

// rowCounts counts the rows of every table outside the system schemas, in
// one snapshot.
func rowCounts(ctx context.Context, dsn string) (map[string]int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	counts := map[string]int64{}
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
				AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
			ORDER BY 1`)
		if err != nil {
			return err
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, t := range tables {
			var n int64
			// t is quoted by format('%I.%I').
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t).Scan(&n); err != nil {
				return err
			}
			counts[t] = n
		}
		return nil
	})
	return counts, err
}

// DropCopy removes org's database and role from server serverID, once a
// move left them behind there (the source after a switch, the target of
// a move rolled back), when they carry the organization's tag. Nothing is
// dropped while the organization lives on that server, or is moving to it.
func (p *Provisioner) DropCopy(ctx context.Context, orgID, serverID int64) error {
	return p.withLock(ctx, "organization", orgID, func() error {
		org, err := p.store.Get(ctx, orgID)
		if errors.Is(err, organizations.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if (org.Status != organizations.StatusDeleted && org.ServerID == serverID) ||
			(org.Status == organizations.StatusMoving && org.Move.To == serverID) {
			return nil
		}
		sc, err := p.server(ctx, serverID)
		if err != nil {
			return err
		}
		if err := p.dropObjects(ctx, sc, org); err != nil {
			return err
		}
		p.log.Info("tenant copy removed", "tenant_id", orgID, "db_server_id", serverID, "database", org.Database.Name)
		return nil
	})
}

// ResumeMoves enqueues the move again of every moving organization that
// nobody works on: a move's job holds the organization's lock while it
// runs, so a free lock on a moving organization means its worker died
// with its process. River would only rescue that job after the move's
// timeout, and the tenant refuses writes meanwhile. An extra job is
// harmless: it waits for the lock and acts on the status it finds.
func (p *Provisioner) ResumeMoves(ctx context.Context) error {
	ids, err := p.store.Moving(ctx)
	if err != nil || len(ids) == 0 {
		return err
	}
	conn, err := pgx.Connect(ctx, p.coreDSN)
	if err != nil {
		return fmt.Errorf("lock connection: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var errs []error
	for _, id := range ids {
		var free bool
		key := lockKey("organization", id)
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, key).Scan(&free); err != nil {
			return err
		}
		if !free {
			continue
		}
		if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, key); err != nil {
			return err
		}
		err := pgx.BeginFunc(ctx, p.core, func(tx pgx.Tx) error { return p.jobs.EnqueueMove(ctx, tx, id) })
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.log.Info("resuming a move nobody works on", "tenant_id", id)
	}
	return errors.Join(errs...)
}
