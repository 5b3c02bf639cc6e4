package app

import "context"

// mountAccounts registers core users: registration, verification, login,
// tokens and the platform-admin user API.
func mountAccounts(ctx context.Context, d *deps) error {
	return nil
}
