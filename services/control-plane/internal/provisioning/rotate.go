package provisioning

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"tenantbase/services/control-plane/internal/organizations"
)

// errMoving postpones work that must not overlap a move.
var errMoving = errors.New("provisioning: the tenant is being moved")

// RotateCredentials gives a ready or suspended tenant's login role a new
// random password. The sealed password, tenant.updated and the ALTER ROLE
// on the tenant's server happen together: the role changes last inside
// the core transaction, so only a crash between the two leaves the stored
// password behind, and the job's re-run then sets a new one again.
// Sessions already open keep working (Postgres checks passwords at login
// only); tenant planes replace their pools on tenant.updated, and a
// connection refused for the old password makes them look the tenant up
// again. A moving tenant is rotated after its move (errMoving).
func (p *Provisioner) RotateCredentials(ctx context.Context, orgID int64) error {
	return p.withLock(ctx, "organization", orgID, func() error {
		org, err := p.store.Get(ctx, orgID)
		if errors.Is(err, organizations.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		switch org.Status {
		case organizations.StatusMoving:
			return errMoving
		case organizations.StatusReady, organizations.StatusSuspended:
		default:
			return nil
		}
		sc, err := p.orgServer(ctx, org)
		if err != nil {
			return err
		}
		user := org.Database.User
		if got, _, err := roleTag(ctx, sc, user); err != nil {
			return err
		} else if got != p.tag(orgID) {
			return &ForeignObjectError{Kind: "role", Name: user}
		}
		pw := newPassword()
		verifier, err := newScramVerifier(pw)
		if err != nil {
			return err
		}
		ok, err := p.store.RotatePassword(ctx, orgID, p.box.Seal([]byte(pw), sealContext(orgID)), func(organizations.Organization) error {
			_, err := sc.admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" WITH"+p.roleAttributes(verifier))
			return err
		})
		if err == nil && ok {
			p.log.Info("tenant credentials rotated", "tenant_id", orgID, "db_server_id", sc.server.ID)
		}
		return err
	})
}
