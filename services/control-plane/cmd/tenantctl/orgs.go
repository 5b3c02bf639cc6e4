package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
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
	)
	return cmd
}

func (a *ctl) orgsList() *cobra.Command {
	var status string
	var owner idFlag
	var chunk int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List organizations, newest first (every page)",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			if err := checkChunk(chunk); err != nil {
				return err
			}
			q := url.Values{}
			if status != "" {
				q.Set("status", status)
			}
			items, err := a.client.List(ctx, "/organizations", q, chunk)
			if err != nil {
				return err
			}
			if owner != 0 {
				// GET /organizations has no owner filter; the admin list
				// of the admin-operations API will take owner_id.
				items, err = filter(items, func(o orgSummary) bool { return o.OwnerID == int64(owner) })
				if err != nil {
					return err
				}
			}
			return a.out.list(items, orgColumns...)
		}),
	}
	cmd.Flags().StringVar(&status, "status", "", "only organizations in this status (provisioning, ready, failed, suspended, deleting, deleted)")
	cmd.Flags().Var(&owner, "owner", "only organizations of this owner (user id)")
	cmd.Flags().IntVar(&chunk, "chunk-size", defaultChunkSize, "organizations per request (1 to 200); every page is printed")
	return cmd
}

func (a *ctl) orgsGet() *cobra.Command {
	return a.objectCommand(objectCmd{use: "get ID", short: "Show one organization and its provisioning state", what: "organization",
		request: func(id int64) api.Request { return api.Get(orgPath(id), nil) }})
}

func (a *ctl) orgsCreate() *cobra.Command {
	var ownerID idFlag
	var wait bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an organization; its database is provisioned in the background",
		Args:  cobra.ExactArgs(1),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			body := map[string]any{"name": args[0]}
			if ownerID != 0 {
				body["owner_id"] = int64(ownerID)
			}
			var org json.RawMessage
			if err := a.client.Do(ctx, api.Post("/organizations", body), &org); err != nil {
				return err
			}
			if !wait {
				return a.out.object(org)
			}
			return a.waitOrg(ctx, org, "provisioning", "ready")
		}),
	}
	cmd.Flags().Var(&ownerID, "owner-id", "create it for this verified owner (user id) instead of yourself")
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
		c.follow = func(ctx context.Context, org json.RawMessage) error { return a.waitOrg(ctx, org, pending, ok) }
		c.waitHelp = "wait until it is " + ok + ", showing progress"
	}
	return a.objectCommand(c)
}

// orgSummary is what tenantctl itself reads of an organization.
type orgSummary struct {
	ID           int64   `json:"id"`
	Name         string  `json:"name"`
	OwnerID      int64   `json:"owner_id"`
	Status       string  `json:"status"`
	StatusDetail *string `json:"status_detail"`
}

func orgPath(id int64) string { return "/organizations/" + strconv.FormatInt(id, 10) }

func (a *ctl) getOrg(ctx context.Context, id int64) (json.RawMessage, error) {
	var org json.RawMessage
	err := a.client.Do(ctx, api.Get(orgPath(id), nil), &org)
	return org, err
}

// waitOrg follows the organization while its status is pending; it
// succeeds if the status it ends in is ok.
func (a *ctl) waitOrg(ctx context.Context, org json.RawMessage, pending, ok string) error {
	var o orgSummary
	if err := json.Unmarshal(org, &o); err != nil {
		return err
	}
	return a.follow(ctx, fmt.Sprintf("organization %d (%s)", o.ID, o.Name), org,
		func(ctx context.Context) (json.RawMessage, error) { return a.getOrg(ctx, o.ID) },
		func(org json.RawMessage) (progress, error) { return orgProgress(org, pending, ok) })
}

func orgProgress(org json.RawMessage, pending, ok string) (progress, error) {
	var o orgSummary
	if err := json.Unmarshal(org, &o); err != nil {
		return progress{}, err
	}
	p := progress{Object: org, Status: o.Status, Ended: o.Status != pending}
	if p.Ended && o.Status != ok {
		p.Failure = o.Status
		if o.StatusDetail != nil {
			p.Failure += ": " + *o.StatusDetail
		}
	}
	return p, nil
}

// filter keeps the items for which keep holds, decoded as T.
func filter[T any](items []json.RawMessage, keep func(T) bool) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	for _, raw := range items {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, err
		}
		if keep(v) {
			out = append(out, raw)
		}
	}
	return out, nil
}

func checkChunk(n int) error {
	if n < 1 || n > defaultChunkSize {
		return usage(fmt.Errorf("--chunk-size must be 1 to %d, not %d", defaultChunkSize, n))
	}
	return nil
}
