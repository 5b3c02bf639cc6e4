package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

func (a *ctl) loginCmd() *cobra.Command {
	var email string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in to the control plane; the session is kept in $XDG_CONFIG_HOME/tenantctl (mode 0600)",
		Long: `Log in with a core account's email and password. The password is asked on the
terminal without echo, or read from standard input with --password-stdin
(never from a flag, which other users of the machine can read). The access and
refresh tokens are kept in $XDG_CONFIG_HOME/tenantctl/session.json (else
~/.config/tenantctl), mode 0600, one session per control plane URL; the access
token is refreshed when it runs out. The URL logged in to becomes the default
of later commands.`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			in := bufio.NewReader(a.stdin)
			if email == "" {
				if passwordStdin || !isTerminal(a.stdin) {
					return usage(errors.New("--email is required when no terminal can ask for it"))
				}
				fmt.Fprint(a.stderr, "Email: ")
				line, err := in.ReadString('\n')
				if err != nil {
					return err
				}
				email = strings.TrimSpace(line)
			}
			password, err := a.secret(ctx, in, passwordStdin, "password", "--password-stdin")
			if err != nil {
				return err
			}
			if err := a.client.Login(ctx, email, password); err != nil {
				return err
			}
			var me json.RawMessage
			if err := a.client.Do(ctx, api.Get("/auth/me", nil), &me); err != nil {
				return err
			}
			if a.out.json {
				return a.out.object(me)
			}
			var u struct {
				IsAdmin bool `json:"is_admin"`
			}
			_ = json.Unmarshal(me, &u)
			role := ""
			if u.IsAdmin {
				role = " (platform admin)"
			}
			a.out.message("Logged in to %s as %s%s.", a.client.BaseURL, clean(email), role)
			return nil
		}),
	}
	cmd.Flags().StringVar(&email, "email", "", "the account's email (asked when not given)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

// secret reads what must not be given as a flag, which other users of the
// machine can read (a password, an admin URL carrying one): with fromStdin
// all of in up to its end (4 KiB at most) without the last line ending,
// else from the terminal without echo; it is a usage error with neither.
// flag is the option that reads standard input.
func (a *ctl) secret(ctx context.Context, in io.Reader, fromStdin bool, what, flag string) (string, error) {
	switch {
	case fromStdin:
		b, err := io.ReadAll(io.LimitReader(in, 4096))
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
	case isTerminal(a.stdin):
		fmt.Fprint(a.stderr, strings.ToUpper(what[:1])+what[1:]+": ")
		s, err := readPassword(ctx, a.stdin)
		fmt.Fprintln(a.stderr)
		return s, err
	default:
		return "", usage(fmt.Errorf("no terminal to ask for the %s on: pipe it in with %s", what, flag))
	}
}

// readPassword reads a line from the terminal without echo. An interrupt
// restores the terminal and ends the prompt.
func readPassword(ctx context.Context, f *os.File) (string, error) {
	fd := int(f.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return "", err
	}
	type read struct {
		b   []byte
		err error
	}
	done := make(chan read, 1)
	go func() {
		b, err := term.ReadPassword(fd)
		done <- read{b, err}
	}()
	select {
	case r := <-done:
		return string(r.b), r.err
	case <-ctx.Done():
		_ = term.Restore(fd, state)
		return "", ctx.Err()
	}
}

func (a *ctl) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session with the control plane and forget its tokens",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			had, err := a.client.Logout(ctx)
			switch {
			case err != nil:
				return fmt.Errorf("the session is forgotten here, but the control plane could not end it: %w", err)
			case had:
				fmt.Fprintf(a.stderr, "Logged out of %s.\n", a.client.BaseURL)
			default:
				fmt.Fprintf(a.stderr, "Not logged in to %s.\n", a.client.BaseURL)
			}
			return nil
		}),
	}
}

func (a *ctl) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the logged-in user",
		Args:  cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			var me json.RawMessage
			if err := a.client.Do(ctx, api.Get("/auth/me", nil), &me); err != nil {
				return err
			}
			return a.out.object(me)
		}),
	}
}
