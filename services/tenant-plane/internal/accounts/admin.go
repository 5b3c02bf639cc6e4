package accounts

import (
	"context"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
	"tenantbase/libs/page"
	"tenantbase/libs/tenantdb"
)

// UserQuery selects a page of users in id order.
type UserQuery struct {
	// EmailContains keeps users whose email contains it (case-insensitive).
	EmailContains string
	page.Request
}

// ListUsers returns one page of the tenant's users (keyset pagination on id).
func (s *Service) ListUsers(ctx context.Context, db DB, q UserQuery) (page.Page[User], error) {
	r, err := q.Request.Normalize()
	if err != nil {
		return page.Page[User]{}, err
	}
	filter, err := auth.EmailFilter(q.EmailContains)
	if err != nil {
		return page.Page[User]{}, err
	}
	p, err := tenantdb.ListUsers(ctx, db, filter, r)
	if err != nil {
		return page.Page[User]{}, err
	}
	return page.Map(p, UserOf), nil
}

// UserPatch changes a user's flags; nil fields stay as they are.
type UserPatch struct {
	IsActive *bool
	Role     *string
}

// UpdateUser applies patch to user id. Deactivation ends the user's
// sessions and access tokens at once. The tenant always keeps one active
// admin: the admins' rows are locked while the change is checked, so two
// admins demoting each other at once cannot both succeed.
func (s *Service) UpdateUser(ctx context.Context, db DB, id int64, patch UserPatch) (User, error) {
	if patch.IsActive == nil && patch.Role == nil {
		return User{}, apperr.Invalid("body", "set at least one of is_active, role")
	}
	if patch.Role != nil && *patch.Role != RoleAdmin && *patch.Role != RoleMember {
		return User{}, apperr.Invalid("role", "must be admin or member")
	}
	deactivate := patch.IsActive != nil && !*patch.IsActive
	demote := patch.Role != nil && *patch.Role != RoleAdmin
	var a Account
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if deactivate || demote {
			admins, err := tenantdb.LockActiveAdmins(ctx, tx)
			if err != nil {
				return err
			}
			if len(admins) == 1 && admins[0] == id {
				return ErrLastAdmin
			}
		}
		before, err := tenantdb.UserByID(ctx, tx, id)
		if err != nil {
			return err
		}
		if a, err = tenantdb.UpdateFlags(ctx, tx, id, tenantdb.FlagsChange{IsActive: patch.IsActive, Role: patch.Role}); err != nil {
			return err
		}
		if err := recordFlags(ctx, tx, before, a); err != nil {
			return err
		}
		if deactivate {
			return auth.RevokeAllRefresh(ctx, tx, id)
		}
		return nil
	})
	if err != nil {
		return User{}, err
	}
	return UserOf(a), nil
}

// recordFlags audits what UpdateUser changed: the role, the active flag.
func recordFlags(ctx context.Context, tx pgx.Tx, before, after Account) error {
	if before.Role != after.Role {
		if err := record(ctx, tx, tenantdb.AuditRoleChange, after.ID, map[string]any{"from": before.Role, "to": after.Role}); err != nil {
			return err
		}
	}
	switch {
	case before.IsActive && !after.IsActive:
		return record(ctx, tx, tenantdb.AuditDeactivate, after.ID, nil)
	case !before.IsActive && after.IsActive:
		return record(ctx, tx, tenantdb.AuditActivate, after.ID, nil)
	}
	return nil
}
