package provisioning

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tenantbase/libs/pgutil"
	"tenantbase/libs/tenantdb"
	"tenantbase/services/control-plane/internal/accounts"
)

// A template database per server and deployment holds the tenant schema
// at the newest migration, so that a new tenant database is a copy of it
// (CREATE DATABASE ... TEMPLATE) rather than an empty database migrated
// file by file: provisioning then costs about what a bare CREATE DATABASE
// costs. Its tables belong to a role of its own, which owns nothing else:
// the copy's tables are handed to the tenant role with REASSIGN OWNED
// (templateRole's databases would move too, hence the template database
// itself belongs to the admin). The template is built on first use, and
// migrated forward when a release carries a newer migration, under an
// exclusive advisory lock on its server; copies are taken under the
// shared one, since CREATE DATABASE fails while anyone is connected to
// its template.

// TemplateName is the name of the deployment's template database and of
// the role that owns its tables, on every server.
func TemplateName(deploymentID string) string { return "tenant_" + deploymentID + "_template" }

// TemplateTag is the comment on the template role, and on the template
// database once it is at version (0: being built). Both start with
// TagPrefix, so removing a deployment's tagged objects removes them too.
func TemplateTag(deploymentID string, version uint) string {
	return versionedTag(TagPrefix(deploymentID)+"template", version)
}

// templateVersion is the version a template tag names, 0 for none (a
// template being built, or not a template tag).
func templateVersion(deploymentID, tag string) uint {
	return tagVersion(TemplateTag(deploymentID, 0), tag)
}

// versionedTag is base, followed by " version=<version>" unless version
// is 0.
func versionedTag(base string, version uint) string {
	if version == 0 {
		return base
	}
	return base + " version=" + strconv.FormatUint(uint64(version), 10)
}

// tagVersion is the version of tag as versionedTag(base, version) wrote
// it, 0 when tag is not such a tag.
func tagVersion(base, tag string) uint {
	v, ok := strings.CutPrefix(tag, base+" version=")
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0
	}
	return uint(n)
}

// templateLock is the advisory lock key of the template on its server.
func templateLock(deploymentID string) string { return "tenantbase.template." + deploymentID }

// cloneDatabase creates the tenant database creds.Name owned by its role
// as a copy of the server's template, building or migrating the template
// first when it is behind the newest version. It answers false, having
// created nothing, when the template cannot be used: a database of its
// name that is not this deployment's template, or a template a newer
// release has moved past this one's newest version (during a rolling
// deploy). The caller then creates an empty database and migrates it.
func (p *Provisioner) cloneDatabase(ctx context.Context, sc *serverConn, creds Credentials) (bool, error) {
	name := TemplateName(p.deployment)
	latest := p.migrations.Latest()
	tag, _, _, err := databaseTag(ctx, sc, name)
	if err != nil {
		return false, err
	}
	if v := templateVersion(p.deployment, tag); v < latest {
		if ok, err := p.buildTemplate(ctx, sc); err != nil || !ok {
			return false, err
		}
	}
	create := "CREATE DATABASE " + pgx.Identifier{creds.Name}.Sanitize() + " TEMPLATE " + pgx.Identifier{name}.Sanitize() +
		" OWNER " + pgx.Identifier{creds.User}.Sanitize()
	cloned := false
	err = withAdvisoryLock(ctx, sc.admin, templateLock(p.deployment), true, func(conn *pgxpool.Conn) error {
		// Checked again under the lock, which no build holds now, on the
		// locked connection: the pool's others may all be waiting for it.
		tag, _, _, err := databaseTagOn(ctx, conn, name)
		if err != nil || templateVersion(p.deployment, tag) != latest {
			return err
		}
		// A session that has just left the template may not have ended
		// yet; an operator may be looking at it: wait a little for them.
		for wait := 10 * time.Millisecond; ; wait *= 2 {
			_, err := conn.Exec(ctx, create)
			if pgutil.Code(err) != pgerrcode.ObjectInUse || wait > time.Second {
				cloned = err == nil
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
	})
	return cloned, err
}

// buildTemplate brings the server's template to the newest migration:
// creating its role and database when missing, then migrating it as that
// role. It answers false when a database or role of the template's name
// exists that is not this deployment's template.
func (p *Provisioner) buildTemplate(ctx context.Context, sc *serverConn) (bool, error) {
	name := TemplateName(p.deployment)
	ident := pgx.Identifier{name}.Sanitize()
	latest := p.migrations.Latest()
	ok := true
	err := withAdvisoryLock(ctx, sc.admin, templateLock(p.deployment), false, func(conn *pgxpool.Conn) error {
		// Every query under the lock goes through its connection: the
		// pool's others may all be waiting for the lock.
		tag, owner, exists, err := databaseTagOn(ctx, conn, name)
		switch {
		case err != nil:
			return err
		case templateVersion(p.deployment, tag) >= latest:
			return nil // built by another process meanwhile, or by a newer release
		case exists && tag == "" && owner == name:
			// A build that crashed between CREATE DATABASE and its tag:
			// the database is born owned by the (tagged) template role.
		case exists && !strings.HasPrefix(tag, TemplateTag(p.deployment, 0)):
			ok = false
			return nil
		}
		roleTagged, roleExists, err := roleTagOn(ctx, conn, name)
		if err != nil {
			return err
		}
		if roleExists && roleTagged != TemplateTag(p.deployment, 0) {
			ok = false
			return nil
		}
		// A password of the moment: the role logs in only while it is
		// being migrated here.
		password := newPassword()
		verifier, err := newScramVerifier(password)
		if err != nil {
			return err
		}
		if !roleExists {
			if err := execTx(ctx, conn, createTaggedRole(ident, " NOLOGIN", TemplateTag(p.deployment, 0))...); err != nil {
				return err
			}
		}
		if err := grantToAdmin(ctx, conn, ident); err != nil {
			return err
		}
		if !exists {
			// Owned by the template role until it is tagged, so that a
			// crash in between leaves a database this build recognises
			// (above); then handed to the admin, since REASSIGN OWNED in
			// each copy would move a database the role owned too.
			if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident+" OWNER "+ident); err != nil {
				return err
			}
		}
		setup := []string{
			"ALTER DATABASE " + ident + " OWNER TO CURRENT_USER",
			"REVOKE CONNECT, TEMPORARY ON DATABASE " + ident + " FROM PUBLIC",
			"GRANT CONNECT ON DATABASE " + ident + " TO " + ident,
		}
		if tag == "" {
			// Being built: a template being migrated forward keeps its
			// version, which an older release must not take for less.
			setup = append(setup, "COMMENT ON DATABASE "+ident+" IS "+quoteLiteral(TemplateTag(p.deployment, 0)))
		}
		if err := execTx(ctx, conn, setup...); err != nil {
			return err
		}
		// The template's schema belongs to the admin (its database's
		// owner); the role may create in it, and owns what it creates.
		if err := execIn(ctx, sc.adminDSN(name), "GRANT CREATE, USAGE ON SCHEMA public TO "+ident); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "ALTER ROLE "+ident+" LOGIN PASSWORD "+quoteLiteral(verifier)); err != nil {
			return err
		}
		dsn := sc.tenantDSN(Credentials{Name: name, User: name, Password: password})
		_, migrateErr := p.migrations.MigrateTo(ctx, dsn, latest, tenantdb.MigrateOptions{})
		if _, err := conn.Exec(ctx, "ALTER ROLE "+ident+" NOLOGIN PASSWORD NULL"); err != nil {
			return errors.Join(migrateErr, err)
		}
		if migrateErr != nil {
			return fmt.Errorf("migrate the template database: %w", migrateErr)
		}
		// Copies fail while a session is connected to the template.
		if err := waitUnused(ctx, conn, name); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "COMMENT ON DATABASE "+ident+" IS "+quoteLiteral(TemplateTag(p.deployment, latest)))
		if err == nil {
			p.log.Info("tenant template database ready", "db_server_id", sc.server.ID, "database", name, "schema_version", latest)
		}
		return err
	})
	return ok, err
}

// adoptClone hands a copy of the template to the tenant role: the tables
// and everything else the template role owns there, and the schema's
// grant to it taken back. It returns the copy's migration version and
// whether it is dirty; a database that is no copy has nothing to hand
// over and answers its own version (0 when never migrated). A copy at the
// newest version, not dirty, gets owner (unless nil: a spare) as its
// admin in the same transaction (synced).
func (p *Provisioner) adoptClone(ctx context.Context, sc *serverConn, creds Credentials,
	owner *accounts.Credentials) (version uint, dirty, synced bool, err error) {
	conn, err := pgx.Connect(ctx, sc.adminDSN(creds.Name))
	if err != nil {
		return 0, false, false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tmpl := pgx.Identifier{TemplateName(p.deployment)}.Sanitize()
	// Only this deployment's template role is ours to take from.
	tag, _, err := roleTag(ctx, sc, TemplateName(p.deployment))
	if err != nil {
		return 0, false, false, err
	}
	ours := tag == TemplateTag(p.deployment, 0)
	adopt := func(tx pgx.Tx) error {
		if ours {
			if _, err := tx.Exec(ctx, "REASSIGN OWNED BY "+tmpl+" TO "+pgx.Identifier{creds.User}.Sanitize()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "REVOKE ALL ON SCHEMA public FROM "+tmpl); err != nil {
				return err
			}
		}
		var migrated bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('public.schema_migrations') IS NOT NULL`).Scan(&migrated); err != nil || !migrated {
			return err
		}
		var v int64
		err := tx.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations LIMIT 1`).Scan(&v, &dirty)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil || dirty {
			return err
		}
		if version = uint(v); version != p.migrations.Latest() || owner == nil {
			return nil
		}
		synced = true
		return tenantdb.UpsertAdmin(ctx, tx, owner.Email, owner.PasswordHash)
	}
	if ours {
		// REASSIGN OWNED moves the role's databases too, and a build's
		// new template belongs to the role until it is tagged: the shared
		// lock keeps builds out meanwhile.
		err = withAdvisoryLock(ctx, sc.admin, templateLock(p.deployment), true, func(*pgxpool.Conn) error {
			return pgx.BeginFunc(ctx, conn, adopt)
		})
	} else {
		err = pgx.BeginFunc(ctx, conn, adopt)
	}
	return version, dirty, synced, err
}

// withAdvisoryLock runs fn on one connection of pool holding the session
// advisory lock key, shared or exclusive.
func withAdvisoryLock(ctx context.Context, pool *pgxpool.Pool, key string, shared bool, fn func(*pgxpool.Conn) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	defer conn.Release()
	lock, unlock := "pg_advisory_lock", "pg_advisory_unlock"
	if shared {
		lock, unlock = "pg_advisory_lock_shared", "pg_advisory_unlock_shared"
	}
	if _, err := conn.Exec(ctx, `SELECT `+lock+`(hashtextextended($1, 0))`, key); err != nil {
		return fmt.Errorf("lock %s: %w", key, err)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT `+unlock+`(hashtextextended($1, 0))`, key); err != nil {
			// A lock that cannot be released dies with its session.
			conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}()
	return fn(conn)
}

// grantToAdmin makes a non-superuser admin a member of role (an
// identifier), which CREATE DATABASE ... OWNER, REASSIGN OWNED and DROP
// DATABASE need; q is a pool or one of its connections.
func grantToAdmin(ctx context.Context, q interface {
	querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}, role string) error {
	var super bool
	if err := q.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		return err
	}
	_, err := q.Exec(ctx, "GRANT "+role+" TO CURRENT_USER")
	return err
}

// execIn runs sql on a connection of its own to dsn.
func execIn(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}
