package provisioning_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"tenantbase/services/control-plane/internal/provisioning"
)

// TestReasonNeverShowsTheRawError turns failures into what owners and
// subscribers read: the step and a cause they can act on, never SQL text
// or host names.
func TestReasonNeverShowsTheRawError(t *testing.T) {
	t.Parallel()
	secret := `ERROR: relation "tenantuser" violates check (host db-7.internal)`
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"internal error in a step", &provisioning.StepError{Step: provisioning.StepMigrate, Err: errors.New(secret)},
			"step migrate failed: an internal error occurred"},
		{"timeout", &provisioning.StepError{Step: provisioning.StepCreateRole, Err: fmt.Errorf("%s: %w", secret, context.DeadlineExceeded)},
			"step create_role failed: it took longer than allowed"},
		{"server unreachable", &provisioning.StepError{Step: provisioning.StepCreateDatabase, Err: &pgconn.PgError{Code: "57P03", Message: secret}},
			"step create_database failed: the tenant database server could not be reached"},
		{"someone else's database", &provisioning.StepError{Step: provisioning.StepCreateDatabase, Err: &provisioning.ForeignObjectError{Kind: "database", Name: "tenant_p_1_abcdef"}},
			"step create_database failed: a database named tenant_p_1_abcdef already exists"},
		{"only the text of an earlier attempt", errors.New("sync_owner: " + secret),
			"step sync_owner failed: an internal error occurred"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := provisioning.Reason(tc.err)
			if !strings.HasPrefix(got, tc.want) || strings.Contains(got, "relation") || strings.Contains(got, "db-7") {
				t.Fatalf("Reason = %q, want %q... without the raw error", got, tc.want)
			}
		})
	}
}
