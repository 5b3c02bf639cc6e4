package accounts

import (
	"context"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/auth"
	"tenantbase/libs/page"
	"tenantbase/libs/problem"
)

// UserQuery selects a page of users in id order.
type UserQuery struct {
	// EmailContains keeps users whose email contains it (case-insensitive).
	EmailContains string
	page.Request
}

// userList is the tenant admins' list of the tenant's users.
var userList = auth.UserList[Account]{Table: "tenantuser", Columns: accountColumns, Scan: scanAccount, ID: func(a Account) int64 { return a.ID }}

// ListUsers returns one page of the tenant's users (keyset pagination on id).
func (s *Service) ListUsers(ctx context.Context, db DB, q UserQuery) (page.Page[User], error) {
	p, err := userList.Page(ctx, db, q.EmailContains, q.Request)
	if err != nil {
		return page.Page[User]{}, err
	}
	return page.Map(p, Account.User), nil
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
		return User{}, problem.Invalid("body", "set at least one of is_active, role")
	}
	if patch.Role != nil && *patch.Role != RoleAdmin && *patch.Role != RoleMember {
		return User{}, problem.Invalid("role", "must be admin or member")
	}
	deactivate := patch.IsActive != nil && !*patch.IsActive
	demote := patch.Role != nil && *patch.Role != RoleAdmin
	var a Account
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if deactivate || demote {
			if err := auth.GuardLastAdmin(ctx, tx, "tenantuser", "role = 'admin' AND is_active", id, ErrLastAdmin); err != nil {
				return err
			}
		}
		var err error
		if a, err = updateFlags(ctx, tx, id, patch); err != nil {
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
	return a.User(), nil
}
