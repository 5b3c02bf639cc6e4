package provisioning

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"tenantbase/services/control-plane/internal/deployment"
	"tenantbase/services/control-plane/internal/organizations"
)

// ObjectName is a fresh name for an organization's database and login role:
// tenant_<deployment>_<organization id>_<6 random characters>. Nothing in it
// comes from user input. The deployment keeps deployments sharing a server
// apart; the random part keeps apart two organizations of one deployment
// that got the same id, as after a restore of the core database from a
// backup. The name is recorded with the organization before anything is
// created, and every later step uses the recorded name.
func ObjectName(deploymentID string, orgID int64) string {
	return "tenant_" + deploymentID + "_" + strconv.FormatInt(orgID, 10) + "_" + deployment.RandomString(6)
}

// Tag is the comment the control plane writes on every database and role
// it creates for an organization. Only objects carrying the organization's
// tag are ever adopted, changed or dropped for it.
func Tag(deploymentID string, orgID int64) string {
	return "tenantbase deployment=" + deploymentID + " organization=" + strconv.FormatInt(orgID, 10)
}

// TagPrefix starts the tag of every object of a deployment.
func TagPrefix(deploymentID string) string { return "tenantbase deployment=" + deploymentID + " " }

func (p *Provisioner) tag(orgID int64) string { return Tag(p.deployment, orgID) }

// ErrForeignObject means a database or role of the organization's name
// exists on the server but was not created for the organization. Retrying
// does not help; the organization fails with a readable reason.
var ErrForeignObject = errors.New("provisioning: the object belongs to someone else")

// ForeignObjectError names the object that was left untouched.
type ForeignObjectError struct {
	Kind string // "database" or "role"
	Name string
}

func (e *ForeignObjectError) Error() string {
	return fmt.Sprintf("a %s named %s already exists on the tenant database server and was not created for this organization; "+
		"it was left untouched (remove or rename it, then retry)", e.Kind, e.Name)
}

// Is makes errors.Is(err, ErrForeignObject) hold.
func (e *ForeignObjectError) Is(target error) bool { return target == ErrForeignObject }

// querier is a pool or one of its connections.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// roleTag returns the comment on role name on sc's server and whether the role exists.
func roleTag(ctx context.Context, sc *serverConn, name string) (tag string, exists bool, err error) {
	return roleTagOn(ctx, sc.admin, name)
}

// roleTagOn is roleTag through q, a connection to the server.
func roleTagOn(ctx context.Context, q querier, name string) (tag string, exists bool, err error) {
	err = q.QueryRow(ctx, `SELECT coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = $1`, name).Scan(&tag)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	return tag, err == nil, err
}

// databaseTag returns the comment on database name on sc's server, its
// owner, and whether it exists.
func databaseTag(ctx context.Context, sc *serverConn, name string) (tag, owner string, exists bool, err error) {
	return databaseTagOn(ctx, sc.admin, name)
}

// databaseTagOn is databaseTag through q, a connection to the server.
func databaseTagOn(ctx context.Context, q querier, name string) (tag, owner string, exists bool, err error) {
	err = q.QueryRow(ctx, `SELECT coalesce(shobj_description(oid, 'pg_database'), ''), pg_get_userbyid(datdba)
		FROM pg_database WHERE datname = $1`, name).Scan(&tag, &owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", false, nil
	}
	return tag, owner, err == nil, err
}

// ownsRole reports whether role on sc's server carries tag.
func ownsRole(ctx context.Context, sc *serverConn, role, tag string) bool {
	got, exists, err := roleTag(ctx, sc, role)
	return err == nil && exists && got == tag
}

// TagLegacy tags the databases and roles of organizations provisioned
// before objects were tagged: their names (tenant_<id>) carry no
// deployment. For each such organization that is not deleted, an untagged
// role of the recorded name is tagged, and an untagged database of the
// recorded name owned by that role. The organization's rows already named
// these objects, so this deployment has been acting on them all along;
// tagging them makes sure that from now on nobody else does. An object
// already carrying another tag is left alone and reported. Objects of
// organizations provisioned since have their deployment in the name and
// are skipped. It is safe to run at every start and on several replicas.
func (p *Provisioner) TagLegacy(ctx context.Context) error {
	orgs, err := p.store.Legacy(ctx, "tenant_"+p.deployment+"_")
	if err != nil {
		return err
	}
	var errs []error
	for _, org := range orgs {
		if err := p.withLock(ctx, "organization", org.ID, func() error { return p.tagLegacy(ctx, org) }); err != nil {
			errs = append(errs, fmt.Errorf("organization %d: %w", org.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (p *Provisioner) tagLegacy(ctx context.Context, org organizations.Organization) error {
	sc, err := p.orgServer(ctx, org)
	if err != nil {
		return err
	}
	tag := p.tag(org.ID)
	d := org.Database
	rTag, roleExists, err := roleTag(ctx, sc, d.User)
	if err != nil {
		return err
	}
	switch {
	case !roleExists:
	case rTag == "":
		if _, err := sc.admin.Exec(ctx, "COMMENT ON ROLE "+pgx.Identifier{d.User}.Sanitize()+" IS "+quoteLiteral(tag)); err != nil {
			return err
		}
		p.log.Info("tagged the role of a tenant provisioned before tags", "tenant_id", org.ID, "role", d.User)
	case rTag != tag:
		p.log.Error("the recorded role of a tenant carries another tag; left alone", "tenant_id", org.ID, "role", d.User)
		return nil
	}
	dbTag, owner, dbExists, err := databaseTag(ctx, sc, d.Name)
	if err != nil || !dbExists || dbTag == tag {
		return err
	}
	if dbTag != "" || owner != d.User {
		p.log.Error("the recorded database of a tenant carries another tag or owner; left alone", "tenant_id", org.ID, "database", d.Name)
		return nil
	}
	if _, err := sc.admin.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{d.Name}.Sanitize()+" IS "+quoteLiteral(tag)); err != nil {
		return err
	}
	p.log.Info("tagged the database of a tenant provisioned before tags", "tenant_id", org.ID, "database", d.Name)
	return nil
}

// Reseal seals again with the current credentials key every stored tenant
// password sealed with a previous one, and returns how many it changed:
// once none is left, the previous key can be retired.
func (p *Provisioner) Reseal(ctx context.Context) (int, error) {
	sealed, err := p.store.Sealed(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for id, old := range sealed {
		if p.box.Current(old) {
			continue
		}
		pw, err := p.box.Open(old, sealContext(id))
		if err != nil {
			return n, fmt.Errorf("organization %d credentials: %w", id, err)
		}
		ok, err := p.store.ReplaceSealed(ctx, id, old, p.box.Seal(pw, sealContext(id)))
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// beginner is a pool or one of its connections, where a transaction starts.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// execTx runs statements in one transaction on db: one commit, and one
// flush of the server's log, for all of them.
func execTx(ctx context.Context, db beginner, statements ...string) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for _, sql := range statements {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
		}
		return nil
	})
}

// createTaggedRole is the statements that create role (an identifier)
// with attrs and tag it, for execTx: a role never exists untagged.
func createTaggedRole(role, attrs, tag string) []string {
	return []string{"CREATE ROLE " + role + attrs, "COMMENT ON ROLE " + role + " IS " + quoteLiteral(tag)}
}

// closeDatabase is the statements that tag database db and open it to
// role alone (both identifiers), for execTx.
func closeDatabase(db, role, tag string) []string {
	return []string{
		"COMMENT ON DATABASE " + db + " IS " + quoteLiteral(tag),
		"REVOKE CONNECT, TEMPORARY ON DATABASE " + db + " FROM PUBLIC",
		"GRANT CONNECT, TEMPORARY ON DATABASE " + db + " TO " + role,
	}
}

// quoteLiteral quotes s as an SQL string literal; the DDL statements that
// take passwords and comments accept no parameters.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
