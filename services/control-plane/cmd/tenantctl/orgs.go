package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/spf13/cobra"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// orgColumns are the columns of `orgs list`.
var orgColumns = []string{"id", "name", "owner_id", "status", "schema_version", "created_at"}

func (a *ctl) orgsCmd() *cobra.Command {
	cmd := group("orgs", "Organizations (tenants) and their databases", "organizations", "org")
	cmd.AddCommand(a.orgsList(), a.orgsGet(), a.orgsCreate(),
		a.orgChange("retry", "Provision a failed organization again", "POST", "/organizations/%d/retry", "provisioning", "ready"),
		a.orgChange("suspend", "Suspend a ready organization: the tenant plane refuses its requests", "POST", "/admin/organizations/%d/suspend", "", ""),
		a.orgChange("resume", "Resume a suspended organization", "POST", "/admin/organizations/%d/resume", "", ""),
		a.orgChange("delete", "Delete an organization with its database", "DELETE", "/organizations/%d", "deleting", "deleted"),
		a.orgsMove(),
		a.orgChange("rotate-credentials", "Give the tenant database's login role a new password (in the background)",
			"POST", "/admin/organizations/%d/rotate-credentials", "", ""),
	)
	return cmd
}

func (a *ctl) orgsList() *cobra.Command {
	var status, text string
	var owner idFlag
	cmd := a.listCommand(listCmd{short: "List organizations, newest first (every page)", noun: "organizations", columns: orgColumns,
		request: func() api.Request {
			q := query("status", status, "owner_id", owner.String(), "q", text)
			if owner == 0 && text == "" {
				// Owners may list their own organizations too; only the
				// admins' fleet list takes the other filters.
				return api.Get("/organizations", q)
			}
			return api.Get("/admin/organizations", q)
		}})
	cmd.Flags().StringVar(&status, "status", "", "only organizations in this status (provisioning, ready, moving, failed, suspended, deleting, deleted)")
	cmd.Flags().Var(&owner, "owner", "only organizations of this owner (user id; platform admins)")
	cmd.Flags().StringVar(&text, "q", "", "only organizations whose name contains this text, ignoring case (platform admins)")
	return cmd
}

func (a *ctl) orgsGet() *cobra.Command {
	return a.objectCommand(objectCmd{use: "get ID", what: "organization",
		short: "Show one organization; to platform admins with its owner, database server and provisioning attempts",
		do: func(ctx context.Context, id int64, _ []string) (json.RawMessage, error) {
			org, err := a.call(ctx, api.Get("/admin"+orgPath(id), nil))
			var apiErr *api.Error
			if errors.As(err, &apiErr) && apiErr.Status == http.StatusForbidden && apiErr.Code == "admin_required" {
				// An owner: the organization as owners see it.
				return a.getOrg(ctx, id)
			}
			return org, err
		}})
}

func (a *ctl) orgsCreate() *cobra.Command {
	var ownerEmail string
	var ownerID idFlag
	var wait bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an organization; its database is provisioned in the background",
		Long: `Create an organization; its database is provisioned in the background.

Without --owner or --owner-id it is your own (you must be a verified owner).
--owner EMAIL onboards it for a customer (platform admins): a known user
becomes its owner, an unknown email gets an account and an invitation mail.
--owner-id ID creates it for a verified owner who exists already, and
refuses anyone else.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		req := api.Post("/organizations", map[string]any{"name": args[0]})
		switch {
		case cmd.Flags().Changed("owner"):
			req = api.Post("/admin/organizations", map[string]any{"name": args[0], "owner_email": ownerEmail})
		case ownerID != 0:
			req = api.Post("/organizations", map[string]any{"name": args[0], "owner_id": int64(ownerID)})
		}
		org, err := a.call(ctx, req)
		if err != nil {
			return err
		}
		return a.answer(ctx, org, wait, func(ctx context.Context, org json.RawMessage) error {
			return a.waitOrg(ctx, org, "provisioning", endsIn("ready"))
		})
	})
	cmd.Flags().StringVar(&ownerEmail, "owner", "", "onboard it for the owner with this email, inviting an unknown one (platform admins)")
	cmd.Flags().Var(&ownerID, "owner-id", "create it for this verified owner (user id) instead of yourself (platform admins)")
	cmd.MarkFlagsMutuallyExclusive("owner", "owner-id")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until it is ready or failed, showing progress")
	return cmd
}

// orgChange is a command that changes an organization's status with one
// request; with pending set it takes --wait, which follows the
// organization while its status is pending and succeeds when it reaches
// ok.
func (a *ctl) orgChange(name, short, method, pathFormat, pending, ok string) *cobra.Command {
	c := objectCmd{use: name + " ID", short: short, what: "organization",
		request: func(id int64) api.Request { return api.Request{Method: method, Path: fmt.Sprintf(pathFormat, id)} }}
	if pending != "" {
		c.follow = func(ctx context.Context, org json.RawMessage) error { return a.waitOrg(ctx, org, pending, endsIn(ok)) }
		c.waitHelp = "wait until it is " + ok + ", showing progress"
	}
	return a.objectCommand(c)
}

func (a *ctl) orgsMove() *cobra.Command {
	var server idFlag
	cmd := a.objectCommand(objectCmd{use: "move ID --server ID", what: "organization",
		short: "Move a ready organization's database to another database server (reads go on, writes wait)",
		request: func(id int64) api.Request {
			return api.Post("/admin"+orgPath(id)+"/move", map[string]int64{"db_server_id": int64(server)})
		},
		follow: func(ctx context.Context, org json.RawMessage) error {
			return a.waitOrg(ctx, org, "moving", movedTo(int64(server)))
		},
		waitHelp: "wait until the move ends, showing progress: exit 0 on the target server, 1 when it rolled back"})
	cmd.Flags().Var(&server, "server", "the database server to move it to (an id of tenantctl servers list)")
	_ = cmd.MarkFlagRequired("server")
	return cmd
}

// orgSummary is what tenantctl itself reads of an organization.
type orgSummary struct {
	ID           int64   `json:"id"`
	Name         string  `json:"name"`
	Status       string  `json:"status"`
	StatusDetail *string `json:"status_detail"`
	// DBServerID is shown to platform admins only.
	DBServerID *int64 `json:"db_server_id"`
}

// state is the organization's status with its detail, if any.
func (o orgSummary) state() string {
	if o.StatusDetail == nil {
		return o.Status
	}
	return o.Status + ": " + *o.StatusDetail
}

func orgPath(id int64) string { return "/organizations/" + strconv.FormatInt(id, 10) }

func (a *ctl) getOrg(ctx context.Context, id int64) (json.RawMessage, error) {
	return a.call(ctx, api.Get(orgPath(id), nil))
}

// outcome says why an organization whose operation ended did not end as
// wanted; "" when it did.
type outcome func(orgSummary) string

// endsIn is the outcome of an operation that succeeds when the
// organization ends in status.
func endsIn(status string) outcome {
	return func(o orgSummary) string {
		if o.Status == status {
			return ""
		}
		return o.state()
	}
}

// movedTo is the outcome of a move to server: ready there. A move that
// failed leaves the organization ready where it was, the reason in its
// status_detail.
func movedTo(server int64) outcome {
	return func(o orgSummary) string {
		switch {
		case o.Status == "ready" && o.DBServerID != nil && *o.DBServerID == server:
			return ""
		case o.Status == "ready" && o.StatusDetail != nil:
			return "the move was rolled back: " + *o.StatusDetail
		default:
			return o.state()
		}
	}
}

// waitOrg follows the organization while its status is pending; done
// says whether the status it ends in is a success.
func (a *ctl) waitOrg(ctx context.Context, org json.RawMessage, pending string, done outcome) error {
	var o orgSummary
	if err := json.Unmarshal(org, &o); err != nil {
		return err
	}
	return a.follow(ctx, fmt.Sprintf("organization %d (%s)", o.ID, o.Name), org,
		func(ctx context.Context) (json.RawMessage, error) { return a.getOrg(ctx, o.ID) },
		func(org json.RawMessage) (progress, error) {
			var o orgSummary
			if err := json.Unmarshal(org, &o); err != nil {
				return progress{}, err
			}
			p := progress{Object: org, Status: o.Status, Ended: o.Status != pending}
			if p.Ended {
				p.Failure = done(o)
			}
			return p, nil
		})
}
