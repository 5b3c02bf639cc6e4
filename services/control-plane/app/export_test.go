package app

import "context"

// SetBeforeProvisionStep installs a function that runs before every
// provisioning step; an error it returns fails the step. Tests use it to
// inject failures and to count how often each step runs.
func SetBeforeProvisionStep(cfg *Config, f func(ctx context.Context, orgID int64, step string) error) {
	cfg.beforeProvisionStep = f
}
