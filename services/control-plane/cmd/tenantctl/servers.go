package main

import (
	"context"
	"strconv"

	"github.com/spf13/cobra"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// serverColumns are the columns of `servers list`.
var serverColumns = []string{"id", "name", "host", "port", "state", "tenants", "max_tenants"}

func (a *ctl) serversCmd() *cobra.Command {
	cmd := group("servers", "The PostgreSQL servers tenant databases are placed on", "server", "db-servers")
	cmd.AddCommand(
		a.listCommand(listCmd{short: "List the database servers with their tenant counts, newest first (every page)",
			noun: "servers", columns: serverColumns,
			request: func() api.Request { return api.Get("/admin/db-servers", nil) }}),
		a.serversAdd(),
		a.serverState("drain", "Stop placing new organizations on a server; its tenants stay (move them with orgs move)"),
		a.serverState("activate", "Place new organizations on a server again"),
	)
	return cmd
}

func (a *ctl) serversAdd() *cobra.Command {
	var adminURL, host string
	var fromStdin bool
	var port, maxTenants int
	cmd := &cobra.Command{
		Use:   "add NAME (--admin-url URL | --admin-url-stdin)",
		Short: "Register a PostgreSQL server for tenant databases",
		Long: `Register a PostgreSQL server for tenant databases. The admin URL is a
postgres:// URL of a role that may create roles and databases there (a
superuser, or CREATEROLE CREATEDB); the control plane checks it by creating
and dropping a database, stores it encrypted and never shows it again.

The URL carries a password: prefer --admin-url-stdin (or the prompt on a
terminal) to --admin-url, which other users of the machine can read.
--host and --port (default those of the URL) are what the tenant plane
connects to. New organizations go to the active server with the most room.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if !cmd.Flags().Changed("admin-url") {
			var err error
			if adminURL, err = a.secret(ctx, a.stdin, fromStdin, "admin URL", "--admin-url-stdin"); err != nil {
				return err
			}
		}
		body := map[string]any{"name": args[0], "admin_url": adminURL}
		setGiven(cmd, body, givenField{"host", "host", host}, givenField{"port", "port", port},
			givenField{"max-tenants", "max_tenants", maxTenants})
		server, err := a.call(ctx, api.Post("/admin/db-servers", body))
		if err != nil {
			return err
		}
		return a.out.object(server)
	})
	cmd.Flags().StringVar(&adminURL, "admin-url", "", "the admin role's postgres:// URL (visible to other users: prefer --admin-url-stdin)")
	cmd.Flags().BoolVar(&fromStdin, "admin-url-stdin", false, "read the admin URL from standard input")
	cmd.MarkFlagsMutuallyExclusive("admin-url", "admin-url-stdin")
	cmd.Flags().StringVar(&host, "host", "", "the host the tenant plane connects to (default the admin URL's)")
	cmd.Flags().IntVar(&port, "port", 0, "the port the tenant plane connects to (default the admin URL's)")
	cmd.Flags().IntVar(&maxTenants, "max-tenants", 0, "how many tenants it takes at most, 1 to 100000 (default 2000)")
	return cmd
}

// serverState is a command setting a server's state: POST
// /admin/db-servers/{id}/<name>.
func (a *ctl) serverState(name, short string) *cobra.Command {
	return a.objectCommand(objectCmd{use: name + " ID", short: short, what: "database server",
		request: func(id int64) api.Request {
			return api.Post("/admin/db-servers/"+strconv.FormatInt(id, 10)+"/"+name, nil)
		}})
}
