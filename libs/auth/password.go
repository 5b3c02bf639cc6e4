// Package auth holds what both planes do the same way: password rules and
// hashing, email normalisation, Ed25519 JWTs with a JWKS, opaque tokens
// stored hashed, refresh-token rotation with reuse detection, and the
// throttled password check.
package auth

import (
	"context"
	"errors"
	"net/mail"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/semaphore"

	"tenantbase/libs/apperr"
)

// Password length bounds, in bytes. bcrypt ignores bytes past 72, so longer
// passwords are refused instead of silently truncated.
const (
	MinPasswordBytes = 10
	MaxPasswordBytes = 72
)

// ValidatePassword checks the length rule and names the field on failure.
func ValidatePassword(field, pw string) error {
	if len(pw) < MinPasswordBytes || len(pw) > MaxPasswordBytes {
		return apperr.Invalid(field, "must be 10 to 72 bytes long")
	}
	return nil
}

// NormalizeEmail trims and lower-cases an address and checks that it is a
// plain addr-spec (no display name) of at most 255 characters.
func NormalizeEmail(field, raw string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(raw))
	// U+FFFD stands for bytes that were not UTF-8 (encoding/json substitutes
	// it); control and format characters have no place in an address.
	if e == "" || len(e) > 255 || strings.ContainsFunc(e, func(r rune) bool { return r == utf8.RuneError || !unicode.IsPrint(r) }) {
		return "", apperr.Invalid(field, "must be a valid email address")
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" || !strings.Contains(e[strings.LastIndexByte(e, '@')+1:], ".") {
		return "", apperr.Invalid(field, "must be a valid email address")
	}
	return e, nil
}

// ValidateSignup normalises a new account's email and checks its password,
// naming every failing field.
func ValidateSignup(rawEmail, password string) (string, error) {
	email, emailErr := NormalizeEmail("email", rawEmail)
	if err := apperr.Join(emailErr, ValidatePassword("password", password)); err != nil {
		return "", err
	}
	return email, nil
}

// ValidateLogin normalises a login's email and requires a password, naming
// every failing field. A password over 72 bytes cannot be anyone's (bcrypt
// would compare only its first 72 bytes), so it is refused like at signup.
func ValidateLogin(rawEmail, password string) (string, error) {
	email, emailErr := NormalizeEmail("email", rawEmail)
	pwErr := required("password", password)
	if len(password) > MaxPasswordBytes {
		pwErr = apperr.Invalid("password", "must be at most 72 bytes long")
	}
	if err := apperr.Join(emailErr, pwErr); err != nil {
		return "", err
	}
	return email, nil
}

// ValidatePasswordChange requires the current password and checks the new
// one, naming every failing field.
func ValidatePasswordChange(current, next string) error {
	return apperr.Join(required("current_password", current), ValidatePassword("new_password", next))
}

func required(field, value string) error {
	if value == "" {
		return apperr.Invalid(field, "is required")
	}
	return nil
}

// ErrBusy refuses a password operation that waited in vain for a free
// core: the machine hashes as fast as it can, and a burst beyond that is
// shed rather than making every login slow.
var ErrBusy = errors.New("too many logins at once; try again in a moment")

// Passwords hashes and checks passwords with bcrypt at a fixed cost, at
// most as many at once as the machine has cores (a bcrypt hash is pure
// CPU: more at once only makes each slower). Callers beyond that wait up
// to the queue wait for their turn, then get ErrBusy; a caller that would
// find more waiting ahead of it than the slots can hash within the queue
// wait gets ErrBusy at once, so a burst is shed in microseconds instead of
// holding every refused login for the whole wait.
type Passwords struct {
	cost       int
	dummy      []byte
	slots      *semaphore.Weighted
	wait       time.Duration
	waiting    atomic.Int64
	maxWaiting int64
}

// PasswordOptions bound the work of Passwords.
type PasswordOptions struct {
	// Concurrency is how many hashes run at once (0: one per core).
	Concurrency int
	// QueueWait is how long a caller waits for its turn (0: 2 s).
	QueueWait time.Duration
	// MaxWaiting is how many callers may wait for a turn (0: as many as
	// the slots can hash within QueueWait, from the time one hash took
	// when NewPasswords made its dummy hash; at least one per slot).
	MaxWaiting int
}

// NewPasswords precomputes a dummy hash at the same cost, so a login for an
// unknown account spends as long as one with a wrong password.
func NewPasswords(cost int, o PasswordOptions) (*Passwords, error) {
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return nil, errors.New("auth: bcrypt cost out of range")
	}
	began := time.Now()
	dummy, err := bcrypt.GenerateFromPassword([]byte("dummy-password-for-timing"), cost)
	if err != nil {
		return nil, err
	}
	took := max(time.Since(began), time.Microsecond)
	n := o.Concurrency
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	wait := o.QueueWait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	maxWaiting := int64(o.MaxWaiting)
	if maxWaiting <= 0 {
		maxWaiting = max(int64(n), int64(n)*int64(wait/took))
	}
	return &Passwords{cost: cost, dummy: dummy, slots: semaphore.NewWeighted(int64(n)), wait: wait, maxWaiting: maxWaiting}, nil
}

// turn waits for a free slot, at most the queue wait; release gives it back.
func (p *Passwords) turn(ctx context.Context) (release func(), err error) {
	release = func() { p.slots.Release(1) }
	if p.slots.TryAcquire(1) {
		return release, nil
	}
	if p.waiting.Add(1) > p.maxWaiting {
		p.waiting.Add(-1)
		return nil, ErrBusy
	}
	defer p.waiting.Add(-1)
	wctx, cancel := context.WithTimeout(ctx, p.wait)
	defer cancel()
	if err := p.slots.Acquire(wctx, 1); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, ErrBusy
	}
	return release, nil
}

// Hash returns the bcrypt hash of pw.
func (p *Passwords) Hash(ctx context.Context, pw string) (string, error) {
	release, err := p.turn(ctx)
	if err != nil {
		return "", err
	}
	defer release()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), p.cost)
	return string(h), err
}

// Verify reports whether pw matches hash. An empty hash (unknown account)
// is compared against the dummy hash and never matches.
func (p *Passwords) Verify(ctx context.Context, hash, pw string) (bool, error) {
	release, err := p.turn(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	return p.verify(hash, pw), nil
}

// verify is Verify for a caller that holds a turn.
func (p *Passwords) verify(hash, pw string) bool {
	if hash == "" {
		_ = bcrypt.CompareHashAndPassword(p.dummy, []byte(pw))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}
