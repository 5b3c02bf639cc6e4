package auth_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"tenantbase/libs/apperr"
	"tenantbase/libs/auth"
)

func TestValidatePassword(t *testing.T) {
	cases := []struct {
		name string
		pw   string
		ok   bool
	}{
		{name: "empty", pw: ""},
		{name: "9 bytes", pw: strings.Repeat("a", 9)},
		{name: "10 bytes", pw: strings.Repeat("a", 10), ok: true},
		{name: "72 bytes", pw: strings.Repeat("a", 72), ok: true},
		{name: "73 bytes", pw: strings.Repeat("a", 73)},
		{name: "36 two-byte characters", pw: strings.Repeat("é", 36), ok: true},
		{name: "37 two-byte characters are 74 bytes", pw: strings.Repeat("é", 37)},
		{name: "5 four-byte characters are 20 bytes", pw: strings.Repeat("🔑", 5), ok: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := auth.ValidatePassword("new_password", tc.pw)
			if tc.ok {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var v *apperr.ValidationError
			if !errors.As(err, &v) || len(v.Fields) != 1 || v.Fields[0].Field != "new_password" {
				t.Fatalf("error %v, want a validation error naming new_password", err)
			}
		})
	}
}

func TestNormalizeEmail(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want string
	}{
		{name: "plain", in: "user@example.com", want: "user@example.com"},
		{name: "trimmed and lower-cased", in: "  User.Name+Tag@Example.COM \t\n", want: "user.name+tag@example.com"},
		{name: "unicode", in: "Jürgen@Bücher.example", want: "jürgen@bücher.example"},
		{name: "subdomain", in: "a@mail.example.co.uk", want: "a@mail.example.co.uk"},
		{name: "empty"},
		{name: "blank", in: "   "},
		{name: "no at", in: "user.example.com"},
		{name: "no domain dot", in: "user@localhost"},
		{name: "two ats", in: "a@b@example.com"},
		{name: "display name", in: "User <user@example.com>"},
		{name: "angle brackets", in: "<user@example.com>"},
		{name: "quoted local part", in: `"john doe"@example.com`},
		{name: "comment", in: "user(comment)@example.com"},
		{name: "inner space", in: "us er@example.com"},
		{name: "NUL", in: "us\x00er@example.com"},
		{name: "CRLF", in: "user@example.com\r\nBcc: x@example.com"},
		{name: "invalid UTF-8 replaced", in: "\uFFFD@example.com"},
		{name: "invalid UTF-8 raw", in: "\xff@example.com"},
		{name: "zero-width space", in: "us\u200ber@example.com"},
		{name: "too long", in: strings.Repeat("a", 244) + "@example.com"},
		{name: "255 bytes", in: strings.Repeat("a", 243) + "@example.com", want: strings.Repeat("a", 243) + "@example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := auth.NormalizeEmail("email", tc.in)
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("NormalizeEmail(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			var v *apperr.ValidationError
			if !errors.As(err, &v) || v.Fields[0].Field != "email" {
				t.Fatalf("NormalizeEmail(%q) = %q, %v; want a validation error naming email", tc.in, got, err)
			}
		})
	}
}

func TestPasswords(t *testing.T) {
	pw, err := auth.NewPasswords(bcrypt.MinCost, auth.PasswordOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := pw.Hash(context.Background(), "correct-horse-1")
	if err != nil {
		t.Fatal(err)
	}
	if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost != bcrypt.MinCost {
		t.Fatalf("hash cost %d (%v), want %d", cost, err, bcrypt.MinCost)
	}
	cases := []struct {
		name string
		hash string
		pw   string
		want bool
	}{
		{name: "right password", hash: hash, pw: "correct-horse-1", want: true},
		{name: "wrong password", hash: hash, pw: "correct-horse-2"},
		{name: "unknown account", hash: "", pw: "dummy-password-for-timing"},
		{name: "corrupt hash", hash: "not-a-hash", pw: "correct-horse-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := pw.Verify(context.Background(), tc.hash, tc.pw); err != nil || got != tc.want {
				t.Fatalf("Verify = %v, want %v", got, tc.want)
			}
		})
	}

	for _, cost := range []int{bcrypt.MinCost - 1, bcrypt.MaxCost + 1} {
		if _, err := auth.NewPasswords(cost, auth.PasswordOptions{}); err == nil {
			t.Errorf("NewPasswords(%d) accepted", cost)
		}
	}
}

// burstResult counts the answers to a burst of Verify calls started at
// once: correct answers, ErrBusy refusals, and refusals that came after a
// hash had already been answered.
type burstResult struct{ answered, busy, busyAfterAnAnswer int }

// verifyBurst starts n Verify calls of the right password at once.
func verifyBurst(t *testing.T, cost int, o auth.PasswordOptions, n int) burstResult {
	t.Helper()
	pw, err := auth.NewPasswords(cost, o)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := pw.Hash(context.Background(), "correct-horse-1")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var r burstResult
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			ok, err := pw.Verify(context.Background(), hash, "correct-horse-1")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, auth.ErrBusy):
				r.busy++
				if r.answered > 0 {
					r.busyAfterAnAnswer++
				}
			case err == nil && ok:
				r.answered++
			default:
				t.Errorf("Verify = %v, %v", ok, err)
			}
		})
	}
	close(start)
	wg.Wait()
	return r
}

// TestPasswordsShedWhatTheCoresCannotHash lets one hash run at a time and
// callers wait a millisecond for their turn: of a burst, those that got a
// turn are answered correctly and the rest are refused with ErrBusy at
// once instead of queueing behind each other.
func TestPasswordsShedWhatTheCoresCannotHash(t *testing.T) {
	const burst = 10
	r := verifyBurst(t, 10, auth.PasswordOptions{Concurrency: 1, QueueWait: time.Millisecond}, burst)
	if r.answered < 1 || r.busy < 1 || r.answered+r.busy != burst {
		t.Fatalf("%d answered, %d refused as busy; want both, %d in all", r.answered, r.busy, burst)
	}
}

// TestPasswordsRefuseAtOnceBeyondTheQueue lets one hash run and two
// callers wait, each as long as it takes: of a burst, those three are
// answered, and every other caller is refused with ErrBusy before the
// first hash has finished, rather than after waiting for a turn.
func TestPasswordsRefuseAtOnceBeyondTheQueue(t *testing.T) {
	const burst = 20
	r := verifyBurst(t, 12, auth.PasswordOptions{Concurrency: 1, QueueWait: time.Minute, MaxWaiting: 2}, burst)
	if r.answered < 3 || r.busy < 1 || r.answered+r.busy != burst {
		t.Fatalf("%d answered, %d refused as busy; want at least the 3 that had a turn or a place in the queue, %d in all", r.answered, r.busy, burst)
	}
	if r.busyAfterAnAnswer > 0 {
		t.Errorf("%d callers were refused only after a hash had finished; a full queue refuses at once", r.busyAfterAnAnswer)
	}
}
