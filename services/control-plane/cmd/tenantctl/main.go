// Command tenantctl is the platform admin's command line: it drives the
// control plane's public API (never a database) with subcommands in the
// habits of kubectl and gh.
//
//	tenantctl login --email admin@example.com
//	tenantctl orgs create Acme --owner ceo@acme.example --wait
//	tenantctl orgs list -o json | jq '.items[] | select(.status == "failed") | .id'
//	tenantctl migrations start --canary 5 --on-error pause --wait
//
// Every command takes --output table|json: tables on a terminal, JSON (the
// API's own objects; lists as one {"items", "next_cursor": null} page
// holding every item) otherwise. --wait follows a long operation with a
// progress bar on a terminal and plain lines elsewhere, on stderr.
//
// Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 not
// found, 4 not authenticated or not allowed (130 when interrupted).
//
// A command group is one file: a function returning its *cobra.Command,
// added in rootCmd, whose commands are made with a.objectCommand (one
// request about one object) and a.listCommand (every page of a list), or
// call a.client.Do themselves, and print with a.out (a.follow for --wait).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"tenantbase/services/control-plane/cmd/tenantctl/internal/api"
)

// Exit codes scripts can rely on.
const (
	exitFailed      = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitAuth        = 4
	exitInterrupted = 130
)

// defaultURL is the control plane of `make run`.
const defaultURL = "http://127.0.0.1:8000"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// ctl is what every command shares: the streams, the global flags and,
// once they are read, the client and the printer.
type ctl struct {
	stdin, stdout, stderr *os.File

	urlFlag string
	output  string

	store  *api.Store
	client *api.Client
	out    printer
}

func run(ctx context.Context, args []string) int {
	a := &ctl{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	code := exitCode(err)
	a.report(cmd, err, code)
	return code
}

func (a *ctl) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:               "tenantctl",
		Short:             "Drive the tenantbase control plane: organizations, database servers, users, migration runs, audit, events",
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: a.setup,
	}
	root.PersistentFlags().StringVar(&a.urlFlag, "url", "",
		"control plane URL (default $TENANTCTL_URL, else the URL of the last login, else "+defaultURL+")")
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "",
		"output format, table or json (default table on a terminal, json otherwise)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usage(err) })
	root.AddCommand(a.loginCmd(), a.logoutCmd(), a.whoamiCmd(), a.orgsCmd(), a.serversCmd(), a.usersCmd(),
		a.migrationsCmd(), a.auditCmd(), a.eventsCmd())
	return root
}

// setup reads the global flags before any command runs.
func (a *ctl) setup(*cobra.Command, []string) error {
	switch a.output {
	case "":
		a.out = printer{w: a.stdout, json: !isTerminal(a.stdout)}
	case "table", "json":
		a.out = printer{w: a.stdout, json: a.output == "json"}
	default:
		return usage(fmt.Errorf("--output must be table or json, not %q", a.output))
	}
	path, err := api.DefaultPath()
	if err != nil {
		return err
	}
	a.store = &api.Store{Path: path}
	base, err := a.baseURL()
	if err != nil {
		return err
	}
	a.client = api.NewClient(base, a.store, "tenantctl")
	return nil
}

// baseURL is --url, else TENANTCTL_URL, else the control plane of the last
// login, else the local default.
func (a *ctl) baseURL() (string, error) {
	raw := a.urlFlag
	if raw == "" {
		raw = os.Getenv("TENANTCTL_URL")
	}
	if raw == "" {
		if f, err := a.store.Load(); err == nil && f.Current != "" {
			raw = f.Current
		}
	}
	if raw == "" {
		raw = defaultURL
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", usage(fmt.Errorf("the control plane URL must be http(s)://host[:port][/path], not %q", raw))
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// exitError ends tenantctl with its code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usage(err error) error { return &exitError{code: exitUsage, err: err} }

func failed(err error) error { return &exitError{code: exitFailed, err: err} }

// runE adapts a command's function to cobra. Errors of the command itself
// that carry no exit code are failures (1); errors cobra returns without
// running a command (unknown flags and commands, wrong arguments) are
// usage errors (2), see exitCode.
func (a *ctl) runE(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd.Context(), args)
		var apiErr *api.Error
		var exit *exitError
		switch {
		case err == nil, errors.As(err, &apiErr), errors.As(err, &exit):
			return err
		case errors.Is(err, context.Canceled):
			return &exitError{code: exitInterrupted, err: errors.New("interrupted")}
		default:
			return failed(err)
		}
	}
}

// failedCodes are the problems whose HTTP status would give another exit
// code than their meaning: the request was well formed and allowed, but
// the operation cannot be done as things stand (exit 1).
var failedCodes = map[string]bool{
	// 403: the owner has as many organizations as their limit allows.
	"quota_exceeded": true,
	// 422: the server to register does not answer, or its admin role may
	// not create databases.
	"db_server_unreachable": true,
}

func exitCode(err error) int {
	var exit *exitError
	var apiErr *api.Error
	switch {
	case errors.As(err, &exit):
		return exit.code
	case errors.As(err, &apiErr):
		if failedCodes[apiErr.Code] {
			return exitFailed
		}
		switch apiErr.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			return exitAuth
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusBadRequest, http.StatusUnprocessableEntity:
			// The request the command line made is invalid: a usage error.
			return exitUsage
		default:
			return exitFailed
		}
	default:
		return exitUsage
	}
}

// report prints err on stderr: a problem's detail and code, the fields it
// names, and for usage errors where to find the usage.
func (a *ctl) report(cmd *cobra.Command, err error, code int) {
	fmt.Fprintln(a.stderr, "tenantctl:", clean(err.Error()))
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		for _, f := range apiErr.Fields {
			fmt.Fprintf(a.stderr, "  %s: %s\n", clean(f.Field), clean(f.Message))
		}
	}
	if code == exitUsage && cmd != nil && apiErr == nil {
		fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
}

// group is a command that only holds subcommands: alone it prints its
// help, with an unknown subcommand it is a usage error.
func group(name, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{
		Use:     name,
		Short:   short,
		Aliases: aliases,
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
}

// parseID parses an object's id: a positive integer.
func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, errors.New("must be a positive integer")
	}
	return id, nil
}

// idArg parses the id argument of a command.
func idArg(what, s string) (int64, error) {
	id, err := parseID(s)
	if err != nil {
		return 0, usage(fmt.Errorf("%s id %w, not %q", what, err, s))
	}
	return id, nil
}

// idFlag is a flag naming an object by its id (--owner, --server); 0 when
// not given. A value that is no id is a usage error before any request.
type idFlag int64

func (f *idFlag) String() string {
	if *f == 0 {
		return ""
	}
	return strconv.FormatInt(int64(*f), 10)
}

func (f *idFlag) Set(s string) error {
	id, err := parseID(s)
	*f = idFlag(id)
	return err
}

func (*idFlag) Type() string { return "ID" }

// query is the query of a list request: the filters that are set, as
// name, value pairs.
func query(pairs ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			q.Set(pairs[i], pairs[i+1])
		}
	}
	return q
}

// givenField is a flag whose value goes into a request's body only when
// the command line gives it: the API's defaults are the defaults.
type givenField struct {
	flag, field string
	value       any
}

// setGiven puts the fields whose flags cmd was given into body.
func setGiven(cmd *cobra.Command, body map[string]any, fields ...givenField) {
	for _, f := range fields {
		if cmd.Flags().Changed(f.flag) {
			body[f.field] = f.value
		}
	}
}

// call sends req and returns the API's answer as it was sent.
func (a *ctl) call(ctx context.Context, req api.Request) (json.RawMessage, error) {
	var obj json.RawMessage
	err := a.client.Do(ctx, req, &obj)
	return obj, err
}

// objectCmd is a command NAME ID about one object of the API: it sends
// one request and prints the answer, or follows it with --wait.
type objectCmd struct {
	use, short string
	// what names the object in errors: "organization".
	what    string
	request func(id int64) api.Request
	// args, when set, replaces "the id alone" (the id stays the first
	// argument), and do, when set, answers instead of request: from the id
	// and the arguments after it (users set-quota ID N), or with more than
	// one request (orgs get).
	args cobra.PositionalArgs
	do   func(ctx context.Context, id int64, rest []string) (json.RawMessage, error)
	// follow, when set, gives the command --wait (waitHelp says until
	// when) and follows the answer until the operation ends.
	follow   func(ctx context.Context, answer json.RawMessage) error
	waitHelp string
}

func (a *ctl) objectCommand(c objectCmd) *cobra.Command {
	var wait bool
	args := c.args
	if args == nil {
		args = cobra.ExactArgs(1)
	}
	do := c.do
	if do == nil {
		do = func(ctx context.Context, id int64, _ []string) (json.RawMessage, error) {
			return a.call(ctx, c.request(id))
		}
	}
	cmd := &cobra.Command{
		Use:   c.use,
		Short: c.short,
		Args:  args,
		RunE: a.runE(func(ctx context.Context, args []string) error {
			id, err := idArg(c.what, args[0])
			if err != nil {
				return err
			}
			obj, err := do(ctx, id, args[1:])
			if err != nil {
				return err
			}
			return a.answer(ctx, obj, wait, c.follow)
		}),
	}
	if c.follow != nil {
		cmd.Flags().BoolVar(&wait, "wait", false, c.waitHelp)
	}
	return cmd
}

// answer prints the API's answer to a command, or with wait follows the
// operation it started until it ends.
func (a *ctl) answer(ctx context.Context, obj json.RawMessage, wait bool, follow func(context.Context, json.RawMessage) error) error {
	if !wait {
		return a.out.object(obj)
	}
	return follow(ctx, obj)
}

// defaultChunkSize is the page size of list requests (the API's maximum).
const defaultChunkSize = 200

// listCmd is a command `list` printing every item of a list endpoint,
// following next_cursor from page to page.
type listCmd struct {
	short string
	// noun names the items in the help of --chunk-size: "users".
	noun    string
	columns []string
	// request is the first page's request, made once the flags are read:
	// the list's path and the filters given.
	request func() api.Request
}

// listCommand makes the command; its filter flags are added to it by the
// caller, bound to what request reads.
func (a *ctl) listCommand(c listCmd) *cobra.Command {
	var chunk int
	cmd := &cobra.Command{
		Use:   "list",
		Short: c.short,
		Args:  cobra.NoArgs,
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			if chunk < 1 || chunk > defaultChunkSize {
				return usage(fmt.Errorf("--chunk-size must be 1 to %d, not %d", defaultChunkSize, chunk))
			}
			req := c.request()
			items, err := a.client.List(ctx, req.Path, req.Query, chunk)
			if err != nil {
				return err
			}
			return a.out.list(items, c.columns...)
		}),
	}
	cmd.Flags().IntVar(&chunk, "chunk-size", defaultChunkSize, c.noun+" per request (1 to 200); every page is printed")
	return cmd
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }
