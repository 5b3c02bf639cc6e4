package provisioning_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/internal/provisioning"
)

// TestReconcileGivesStuckOrganizationsAJob loses the jobs of an organization
// being provisioned and of one being deleted: Reconcile enqueues a job for
// each once they have been stuck long enough, and nothing for the one
// that changed a moment ago or the ones that have their job.
func TestReconcileGivesStuckOrganizationsAJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	client, err := river.NewClient(riverpgxv5.New(f.pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// loseJobs deletes the jobs of the organizations ids.
	loseJobs := func(t *testing.T, ids ...int64) {
		t.Helper()
		res, err := client.JobList(ctx, river.NewJobListParams().First(100))
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range res.Jobs {
			var args provisioning.ProvisionArgs
			if err := json.Unmarshal(j.EncodedArgs, &args); err != nil {
				t.Fatal(err)
			}
			if slices.Contains(ids, args.OrganizationID) {
				if _, err := client.JobDelete(ctx, j.ID); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	stuck := f.create(t)
	deleting := f.create(t)
	if _, err := f.store.Delete(ctx, deleting.ID); err != nil {
		t.Fatal(err)
	}
	withJob := f.create(t)
	loseJobs(t, stuck.ID, deleting.ID)
	testenv.Exec(t, f.core, `UPDATE organization SET updated_at = now() - interval '10 minutes'`)
	justNow := f.create(t)
	loseJobs(t, justNow.ID)

	n, err := f.prov.Reconcile(ctx, time.Minute)
	if err != nil || n != 2 {
		t.Fatalf("Reconcile = %d, %v; want the two stuck organizations", n, err)
	}
	jobs := rivertest.RequireManyInserted(ctx, t, riverpgxv5.New(f.pool), []rivertest.ExpectedJob{
		{Args: &provisioning.ProvisionArgs{}}, // withJob's, from its creation
		{Args: &provisioning.ProvisionArgs{}},
		{Args: &provisioning.DeleteArgs{}},
	})
	var got []int64
	for _, j := range jobs {
		var args provisioning.ProvisionArgs
		if err := json.Unmarshal(j.EncodedArgs, &args); err != nil {
			t.Fatal(err)
		}
		got = append(got, args.OrganizationID)
	}
	if want := []int64{withJob.ID, stuck.ID, deleting.ID}; !slices.Equal(got, want) {
		t.Fatalf("jobs for organizations %v, want %v", got, want)
	}
	if n, err := f.prov.Reconcile(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("second Reconcile = %d, %v; want nothing: every stuck organization has a job now", n, err)
	}
}
