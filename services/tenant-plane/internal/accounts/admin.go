package accounts

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/auth"
	"tenantbase/libs/problem"
)

// Page limits of ListUsers.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// UserQuery selects a page of users in id order.
type UserQuery struct {
	// EmailContains keeps users whose email contains it (case-insensitive).
	EmailContains string
	// After is the cursor: the id of the last user of the previous page.
	After int64
	Limit int
}

// UserPage is one page of users; NextCursor is nil on the last page.
type UserPage struct {
	Items      []User  `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// ListUsers returns one page of the tenant's users (keyset pagination on id).
func (s *Service) ListUsers(ctx context.Context, db DB, q UserQuery) (UserPage, error) {
	if q.Limit == 0 {
		q.Limit = DefaultPageSize
	}
	if q.Limit < 1 || q.Limit > MaxPageSize {
		return UserPage{}, problem.Invalid("limit", fmt.Sprintf("must be between 1 and %d", MaxPageSize))
	}
	if q.After < 0 {
		return UserPage{}, problem.Invalid("cursor", "is not a cursor this API returned")
	}
	filter := strings.ToLower(strings.TrimSpace(q.EmailContains))
	if len(filter) > 255 || !utf8.ValidString(filter) || strings.ContainsRune(filter, 0) {
		return UserPage{}, problem.Invalid("email", "must be at most 255 characters of valid UTF-8 text")
	}
	accounts, err := listAccounts(ctx, db, filter, q.After, q.Limit+1)
	if err != nil {
		return UserPage{}, err
	}
	page := UserPage{Items: make([]User, 0, min(len(accounts), q.Limit))}
	for _, a := range accounts[:min(len(accounts), q.Limit)] {
		page.Items = append(page.Items, a.User())
	}
	if len(accounts) > q.Limit {
		next := strconv.FormatInt(page.Items[q.Limit-1].ID, 10)
		page.NextCursor = &next
	}
	return page, nil
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
			admins, err := lockActiveAdmins(ctx, tx)
			if err != nil {
				return err
			}
			if len(admins) == 1 && admins[0] == id {
				return ErrLastAdmin
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

// lockActiveAdmins locks the active admins' rows, in id order so that
// concurrent changes queue instead of deadlocking.
func lockActiveAdmins(ctx context.Context, tx pgx.Tx) ([]int64, error) {
	rows, err := tx.Query(ctx, `SELECT id FROM tenantuser WHERE role = 'admin' AND is_active ORDER BY id FOR UPDATE`)
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	return ids, nil
}
