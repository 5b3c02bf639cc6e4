package main

import (
	"context"
	"net/url"
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
	var chunk int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List core users in id order (every page)",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			if err := checkChunk(chunk); err != nil {
				return err
			}
			q := url.Values{}
			if email != "" {
				q.Set("email", email)
			}
			items, err := a.client.List(ctx, "/admin/users", q, chunk)
			if err != nil {
				return err
			}
			return a.out.list(items, userColumns...)
		}),
	}
	cmd.Flags().StringVar(&email, "email", "", "only users whose email contains this text")
	cmd.Flags().IntVar(&chunk, "chunk-size", defaultChunkSize, "users per request (1 to 200); every page is printed")
	return cmd
}

// userPatch is a command sending one fixed PATCH /admin/users/{id}.
func (a *ctl) userPatch(name, short string, patch map[string]any) *cobra.Command {
	return a.objectCommand(objectCmd{use: name + " ID", short: short, what: "user",
		request: func(id int64) api.Request { return api.Patch("/admin/users/"+strconv.FormatInt(id, 10), patch) }})
}
