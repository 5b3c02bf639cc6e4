package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// userColumns are the columns of `users list`.
var userColumns = []string{"id", "email", "is_verified", "is_owner", "is_admin", "max_organizations", "created_at"}

func (a *ctl) usersCmd() *cobra.Command {
	cmd := group("users", "Core users, their platform-admin flag and their organization quota", "user")
	cmd.AddCommand(a.usersList(),
		a.userPatch("promote", "Make a user a platform admin", map[string]any{"is_admin": true}),
		a.userPatch("demote", "Take the platform-admin flag from a user (never the last admin's)", map[string]any{"is_admin": false}),
		a.usersSetQuota(),
	)
	return cmd
}

func (a *ctl) usersList() *cobra.Command {
	var email string
	cmd := a.listCommand(listCmd{short: "List core users in id order (every page)", noun: "users", columns: userColumns,
		request: func() api.Request { return api.Get("/admin/users", query("email", email)) }})
	cmd.Flags().StringVar(&email, "email", "", "only users whose email contains this text")
	return cmd
}

func userPath(id int64) string { return "/admin/users/" + strconv.FormatInt(id, 10) }

// userPatch is a command sending one fixed PATCH /admin/users/{id}.
func (a *ctl) userPatch(name, short string, patch map[string]any) *cobra.Command {
	return a.objectCommand(objectCmd{use: name + " ID", short: short, what: "user",
		request: func(id int64) api.Request { return api.Patch(userPath(id), patch) }})
}

func (a *ctl) usersSetQuota() *cobra.Command {
	var reset bool
	cmd := a.objectCommand(objectCmd{use: "set-quota ID (N | --default)", what: "user",
		short: "Set how many organizations (not being deleted) a user may own; --default: the deployment's default",
		args:  cobra.RangeArgs(1, 2),
		do: func(ctx context.Context, id int64, rest []string) (json.RawMessage, error) {
			var quota *int // nil: the default
			switch {
			case reset && len(rest) == 0:
			case !reset && len(rest) == 1:
				n, err := strconv.Atoi(rest[0])
				if err != nil || n < 0 {
					return nil, usage(fmt.Errorf("the quota must be a whole number, 0 or more, not %q", rest[0]))
				}
				quota = &n
			default:
				return nil, usage(errors.New("give either the quota N or --default"))
			}
			return a.call(ctx, api.Patch(userPath(id), map[string]any{"max_organizations": quota}))
		}})
	cmd.Flags().BoolVar(&reset, "default", false, "reset the user's quota to the deployment's default (OWNER_MAX_ORGANIZATIONS)")
	return cmd
}
