package main

import (
	"errors"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// auditColumns are the columns of `audit list`.
var auditColumns = []string{"id", "at", "actor_type", "actor_id", "action", "target_type", "target_id", "outcome", "detail"}

// targetTypes are the kinds of target audit entries are about.
var targetTypes = []string{"user", "organization", "migration_run"}

func (a *ctl) auditCmd() *cobra.Command {
	cmd := group("audit", "The audit log: every state-changing action on the control plane")
	cmd.AddCommand(a.auditList())
	return cmd
}

func (a *ctl) auditList() *cobra.Command {
	var actor idFlag
	var target targetFlag
	var action string
	cmd := a.listCommand(listCmd{short: "List audit entries, newest first (every page)", noun: "entries", columns: auditColumns,
		request: func() api.Request {
			return api.Get("/admin/audit", query("actor_id", actor.String(), "target_type", target.typ,
				"target_id", target.id, "action", action))
		}})
	cmd.Flags().Var(&actor, "actor", "only what this user did (user id)")
	cmd.Flags().Var(&target, "target", "only entries about this target: user:ID, organization:ID or migration_run:ID")
	cmd.Flags().StringVar(&action, "action", "", "only entries of this action, e.g. organization.create")
	return cmd
}

// targetFlag is --target TYPE:ID; a malformed one is a usage error before
// any request.
type targetFlag struct{ typ, id string }

func (f *targetFlag) String() string {
	if f.typ == "" {
		return ""
	}
	return f.typ + ":" + f.id
}

func (f *targetFlag) Set(s string) error {
	typ, id, _ := strings.Cut(s, ":")
	if !slices.Contains(targetTypes, typ) {
		return errors.New("must be TYPE:ID with TYPE one of " + strings.Join(targetTypes, ", "))
	}
	if _, err := parseID(id); err != nil {
		return errors.New("must be TYPE:ID with ID a positive integer")
	}
	f.typ, f.id = typ, id
	return nil
}

func (*targetFlag) Type() string { return "TYPE:ID" }
