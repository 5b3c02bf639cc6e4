package main

import (
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
)

// terminal is tenantctl running with a pseudo-terminal as its stdin,
// stdout and stderr, as in an admin's shell.
type terminal struct {
	proc
	tty    *os.File
	screen *testenv.LogBuffer
	read   chan struct{}
}

func (c *cli) startTerminal(t *testing.T, args ...string) *terminal {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	term := &terminal{proc: proc{cmd: c.command(ctx, args...), done: make(chan struct{})},
		screen: &testenv.LogBuffer{}, read: make(chan struct{})}
	tty, err := pty.StartWithSize(term.cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	term.tty = tty
	go func() {
		// Reading ends with an error once the process has ended and
		// everything it wrote has been read.
		_, _ = io.Copy(term.screen, tty)
		close(term.read)
	}()
	go func() {
		term.err = term.cmd.Wait()
		close(term.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-term.done
		tty.Close()
	})
	return term
}

// waitScreen waits until the terminal shows text.
func (term *terminal) waitScreen(t *testing.T, text string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() bool {
		select {
		case <-term.done:
			select {
			case <-term.read:
			case <-time.After(5 * time.Second):
			}
			if !strings.Contains(term.screen.String(), text) {
				t.Fatalf("tenantctl ended (%v) before showing %q; the terminal shows:\n%q", term.err, text, term.screen)
			}
		default:
		}
		return strings.Contains(term.screen.String(), text)
	}, "the terminal shows "+text)
}

// typeSecret types line once the terminal no longer echoes: the prompt is
// written a moment before the program turns echo off, and a line typed in
// between would be echoed (a person does not type that fast).
func (term *terminal) typeSecret(t *testing.T, line string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool {
		tio, err := unix.IoctlGetTermios(int(term.tty.Fd()), unix.TCGETS)
		return err == nil && tio.Lflag&unix.ECHO == 0
	}, "the terminal stops echoing for the password")
	term.typeLine(t, line)
}

// typeLine writes what a person types.
func (term *terminal) typeLine(t *testing.T, line string) {
	t.Helper()
	if _, err := term.tty.WriteString(line + "\r"); err != nil {
		t.Fatal(err)
	}
}

// exit waits for the end and returns the exit code and all it showed.
func (term *terminal) exit(t *testing.T) (int, string) {
	t.Helper()
	select {
	case <-term.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("tenantctl did not end; the terminal shows:\n%q", term.screen)
	}
	select {
	case <-term.read:
	case <-time.After(5 * time.Second):
	}
	code := 0
	if term.err != nil {
		code = term.cmd.ProcessState.ExitCode()
	}
	return code, term.screen.String()
}

// spinner are the frames of the progress spinner.
var spinner = regexp.MustCompile(`[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]`)

// TestTerminal runs tenantctl as an admin at a terminal: login asks for the
// email and for the password without echo, create --wait shows a progress
// bar while the organization provisions, then clears it and prints a
// table.
func TestTerminal(t *testing.T) {
	t.Parallel()
	// Provisioning waits until the test has seen the progress bar.
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	cp := cptest.Start(t, cptest.Options{RunOptions: []app.Option{app.WithBeforeProvisionStep(func(ctx context.Context, _ int64, _ string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})}})
	defer releaseOnce()
	owner := cp.SignUpOwner(t, "owner@example.com", "owner password 1")
	c := newCLI(t, cp.PublicURL)

	login := c.startTerminal(t, "login")
	login.waitScreen(t, "Email: ")
	login.typeLine(t, cptest.AdminEmail)
	login.waitScreen(t, "Password: ")
	login.typeSecret(t, cptest.AdminPassword)
	code, screen := login.exit(t)
	if code != 0 || !strings.Contains(screen, "Logged in to "+cp.PublicURL+" as "+cptest.AdminEmail+" (platform admin).") {
		t.Fatalf("login at a terminal: exit %d, the terminal shows:\n%s", code, screen)
	}
	if strings.Contains(screen, cptest.AdminPassword) {
		t.Fatalf("the password was echoed:\n%s", screen)
	}

	create := c.startTerminal(t, "orgs", "create", "Acme", "--owner-id", itoa(owner.ID), "--wait")
	create.waitScreen(t, "organization 1 (Acme): provisioning")
	// The spinner turns while provisioning goes on.
	testenv.Eventually(t, time.Minute, func() bool {
		return len(uniq(spinner.FindAllString(create.screen.String(), -1))) >= 3
	}, "the spinner turning")
	if strings.Contains(create.screen.String(), "\r\n") {
		t.Fatalf("the progress bar is drawn on one line, redrawn in place; the terminal shows:\n%q", create.screen)
	}
	releaseOnce()
	code, screen = create.exit(t)
	if code != 0 {
		t.Fatalf("create --wait at a terminal: exit %d, the terminal shows:\n%s", code, screen)
	}
	if !strings.Contains(screen, "organization 1 (Acme): ready (") || !regexp.MustCompile(`(?m)^status\s+ready\r$`).MatchString(screen) {
		t.Fatalf("create --wait at a terminal ends with the result as a table; the terminal shows:\n%q", screen)
	}
}

func uniq(s []string) map[string]bool {
	m := map[string]bool{}
	for _, v := range s {
		m[v] = true
	}
	return m
}
