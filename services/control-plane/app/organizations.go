package app

import "context"

// mountOrganizations registers organizations, provisioning and the internal
// tenant API, and returns the background work (job workers, outbox relay)
// that runs until its context is cancelled.
func mountOrganizations(ctx context.Context, d *deps) (func(context.Context) error, error) {
	return func(ctx context.Context) error { <-ctx.Done(); return nil }, nil
}
