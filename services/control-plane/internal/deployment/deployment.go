// Package deployment holds the identity of one control plane deployment: a
// short id stored once in the core database. Tenant database and role names
// carry it, tags on those objects name it, and events say which deployment
// sent them, so that deployments sharing a Postgres or NATS server keep
// apart.
package deployment

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// validID is what a deployment id may look like: it becomes part of
// Postgres identifiers and NATS subjects.
var validID = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}$`)

// ErrMismatch means the configured id is not the one the core database has.
var ErrMismatch = errors.New("deployment: DEPLOYMENT_ID differs from the id stored in the core database")

// Validate checks a configured deployment id ("" means generate one).
func Validate(id string) error {
	if id != "" && !validID.MatchString(id) {
		return fmt.Errorf("deployment: id %q must be 1 to 16 lowercase letters and digits, starting with a letter", id)
	}
	return nil
}

// Querier runs statements on the core database.
type Querier interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Ensure returns the deployment id stored in the core database. On the first
// start it stores configured, or a random id when configured is empty.
// Replicas starting together agree on one id. A configured id that differs
// from the stored one is ErrMismatch: renaming a deployment would orphan
// the objects tagged with its old id.
func Ensure(ctx context.Context, db Querier, configured string) (string, error) {
	if err := Validate(configured); err != nil {
		return "", err
	}
	candidate := configured
	if candidate == "" {
		candidate = newID()
	}
	var id string
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO deployment (id) VALUES ($1) ON CONFLICT (singleton) DO NOTHING`, candidate); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT id FROM deployment`).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("deployment: %w", err)
	}
	if configured != "" && id != configured {
		return "", fmt.Errorf("%w (configured %q, stored %q)", ErrMismatch, configured, id)
	}
	return id, nil
}

const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newID is a random id: "d" and seven letters or digits (about 36 bits).
func newID() string {
	return "d" + RandomString(7)
}

// RandomString returns n random characters of [a-z0-9] from crypto/rand.
func RandomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		// 256 % 36 leaves a slight bias, irrelevant for names.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
