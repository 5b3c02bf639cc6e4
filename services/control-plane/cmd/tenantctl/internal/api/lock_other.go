//go:build !unix

package api

// lockDir does not lock where flock is missing: two tenantctl processes
// refreshing the same session at once may end it (run login again then).
func lockDir(string) (func(), error) { return func() {}, nil }
