package main

import (
	"strconv"

	"github.com/spf13/cobra"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// userColumns are the columns of `users list`.
var userColumns = []string{"id", "email", "is_verified", "is_owner", "is_admin", "created_at"}

func (a *ctl) usersCmd() *cobra.Command {
	cmd := group("users", "Core users and their platform-admin flag", "user")
	cmd.AddCommand(a.usersList(),
		a.userPatch("promote", "Make a user a platform admin", map[string]any{"is_admin": true}),
		a.userPatch("demote", "Take the platform-admin flag from a user (never the last admin's)", map[string]any{"is_admin": false}),
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
