package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// runColumns are the columns of `migrations list`.
var runColumns = []string{"id", "status", "target_version", "counts.pending", "counts.running", "counts.done",
	"counts.skipped", "counts.failed", "started_at", "finished_at"}

func (a *ctl) migrationsCmd() *cobra.Command {
	cmd := group("migrations", "Migration runs: every tenant database moved to a schema version", "migration")
	cmd.AddCommand(a.migrationsStart(), a.migrationsList(), a.migrationsStatus(),
		a.runChange("resume", "Retry a run's failed tenants and continue it, paused or completed with failures", "/resume", true),
		a.runChange("pause", "Pause a run: tenants being migrated finish, no other starts", "/pause", false),
		a.runChange("cancel", "Cancel a run: tenants being migrated finish, pending ones never start", "/cancel", false),
	)
	return cmd
}

func (a *ctl) migrationsStart() *cobra.Command {
	var target, canary, concurrency int
	var onError string
	var wait bool
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Start a run moving every ready and suspended tenant to a schema version",
		Long: "Start a run moving every ready and suspended tenant to a schema version (default the newest the\n" +
			"control plane carries; below a tenant's version rolls it back). The canary wave goes first and\n" +
			"alone; a failing canary pauses the run. Only one run is in progress at a time.",
		Args: cobra.NoArgs,
	}
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		body := map[string]any{}
		if cmd.Flags().Changed("on-error") {
			if onError != "continue" && onError != "pause" {
				return usage(fmt.Errorf("--on-error must be continue or pause, not %q", onError))
			}
			body["on_error"] = onError
		}
		setGiven(cmd, body, givenField{"target", "target_version", target}, givenField{"canary", "canary", canary},
			givenField{"concurrency", "concurrency", concurrency})
		run, err := a.call(ctx, api.Post("/admin/migrations", body))
		if err != nil {
			return err
		}
		return a.answer(ctx, run, wait, a.waitRun)
	})
	cmd.Flags().IntVar(&target, "target", 0, "the schema version to reach (default the newest)")
	cmd.Flags().IntVar(&canary, "canary", 0, "tenants in the canary wave, 0 to 1000 (default 1)")
	cmd.Flags().IntVar(&concurrency, "concurrency", 0, "tenants migrated at once per database server, 1 to 64 (default 4)")
	cmd.Flags().StringVar(&onError, "on-error", "", "what a failing tenant does: continue (it is parked, the others go on; the default) or pause (the run pauses)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the run ends, showing progress")
	return cmd
}

func (a *ctl) migrationsList() *cobra.Command {
	return a.listCommand(listCmd{short: "List migration runs, newest first (every page)", noun: "runs", columns: runColumns,
		request: func() api.Request { return api.Get("/admin/migrations", nil) }})
}

func (a *ctl) migrationsStatus() *cobra.Command {
	return a.objectCommand(objectCmd{use: "status ID", short: "Show a run: its status, its counts and its failed tenants",
		what: "migration run", request: func(id int64) api.Request { return api.Get(runPath(id), nil) }})
}

// runChange is a command that steers a run with one POST to its path
// plus suffix; with waitable set it takes --wait.
func (a *ctl) runChange(name, short, suffix string, waitable bool) *cobra.Command {
	c := objectCmd{use: name + " ID", short: short, what: "migration run",
		request: func(id int64) api.Request { return api.Post(runPath(id)+suffix, nil) }}
	if waitable {
		c.follow, c.waitHelp = a.waitRun, "wait until the run ends, showing progress"
	}
	return a.objectCommand(c)
}

func runPath(id int64) string { return "/admin/migrations/" + strconv.FormatInt(id, 10) }

func (a *ctl) getRun(ctx context.Context, id int64) (json.RawMessage, error) {
	return a.call(ctx, api.Get(runPath(id), nil))
}

// Run statuses, as the API names them.
const (
	runRunning               = "running"
	runPaused                = "paused"
	runCompleted             = "completed"
	runCompletedWithFailures = "completed_with_failures"
	runCancelled             = "cancelled"
)

// runSummary is what tenantctl itself reads of a migration run.
type runSummary struct {
	ID     int64  `json:"id"`
	Status string `json:"status"`
	// Counts are the run's tenants per state: pending, running, done,
	// skipped, failed.
	Counts map[string]int `json:"counts"`
	Failed []struct {
		TenantID    int64  `json:"tenant_id"`
		FromVersion int    `json:"from_version"`
		Error       string `json:"error"`
	} `json:"failed"`
}

// total is the number of the run's tenants, in every state.
func (r runSummary) total() int {
	n := 0
	for _, c := range r.Counts {
		n += c
	}
	return n
}

// waitRun follows a run until it is no longer running.
func (a *ctl) waitRun(ctx context.Context, run json.RawMessage) error {
	var r runSummary
	if err := json.Unmarshal(run, &r); err != nil {
		return err
	}
	return a.follow(ctx, "migration run "+strconv.FormatInt(r.ID, 10), run,
		func(ctx context.Context) (json.RawMessage, error) { return a.getRun(ctx, r.ID) }, runProgress)
}

// runProgress is where a run stands: tenants at the target (done or
// skipped) of all its tenants, the failures so far beside them. It ends
// when the run stops running, and succeeds only completed: paused (by a
// failing canary, a failure with on_error pause, or an admin), completed
// with failures and cancelled are failures, each said with the run's
// status as the code.
func runProgress(raw json.RawMessage) (progress, error) {
	var r runSummary
	if err := json.Unmarshal(raw, &r); err != nil {
		return progress{}, err
	}
	p := progress{Object: raw, Status: fmt.Sprintf("%s, %d failed", r.Status, r.Counts["failed"]),
		Done: r.Counts["done"] + r.Counts["skipped"], Total: r.total(), Ended: r.Status != runRunning}
	if p.Ended {
		p.Failure = runFailure(r)
	}
	return p, nil
}

// runFailure says why an ended run did not succeed, "" when it did.
func runFailure(r runSummary) string {
	resume := "tenantctl migrations resume " + strconv.FormatInt(r.ID, 10)
	var why string
	switch r.Status {
	case runCompleted:
		return ""
	case runCompletedWithFailures:
		why = failures(r) + "; once fixed, " + resume + " retries the failed tenants"
	case runPaused:
		if r.Counts["failed"] > 0 {
			why = "paused by a failing tenant: " + failures(r) + "; once fixed, " + resume + " retries the failed tenants and goes on"
		} else {
			why = "paused before the end; " + resume + " goes on"
		}
	case runCancelled:
		why = fmt.Sprintf("cancelled with %d of %d tenants never migrated", r.Counts["pending"], r.total())
		if r.Counts["failed"] > 0 {
			why += "; " + failures(r)
		}
	default:
		why = "ended as " + r.Status
	}
	return why + " (" + r.Status + ")"
}

// failures names how many tenants failed and the first one's error.
func failures(r runSummary) string {
	s := fmt.Sprintf("%d of %d tenants failed", r.Counts["failed"], r.total())
	if len(r.Failed) > 0 {
		f := r.Failed[0]
		s += fmt.Sprintf(", first tenant %d (from version %d): %s", f.TenantID, f.FromVersion, f.Error)
	}
	return s
}
