// Package pgcluster finds a PostgreSQL server for local runs and tests, or
// starts a throwaway cluster from the local server binaries when there is none.
package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBinariesNotFound says what to install when no initdb/postgres exists.
var ErrBinariesNotFound = errors.New("PostgreSQL server binaries not found: install postgresql-15 (initdb, postgres) or set DATABASE_URL to a reachable server")

// A Unix socket path longer than this is rejected by the kernel.
const maxSocketPath = 107

// Cluster is a PostgreSQL cluster in a local directory, served by
// 127.0.0.1:port with trust authentication for the user postgres.
type Cluster struct {
	dir    string
	port   int
	bindir string
	// runAs is the unprivileged account the server runs as when this process
	// is root: initdb and postgres refuse to run as root.
	runAs *user.User
	// runuser is the util-linux tool that switches to runAs.
	runuser string
	// exitGuard is the write end of the pipe watched by StopOnExit.
	exitGuard *os.File
	// settings replace or add to the server settings start passes.
	settings map[string]string
}

// Dir is the cluster's data directory.
func (c *Cluster) Dir() string { return c.dir }

// Port is the TCP port the cluster listens on.
func (c *Cluster) Port() int { return c.port }

// DSN is a connection URL for database db on the cluster.
func (c *Cluster) DSN(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     "127.0.0.1:" + strconv.Itoa(c.port),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Start runs a cluster in dir on 127.0.0.1:port, creating it with initdb
// when dir holds none yet, and returns once it accepts connections. The
// settings trade durability for speed (fsync=off): the cluster is for
// development and tests only.
//
// When the process runs as root, the server runs as the postgres user: dir
// is handed to that user, and every directory above dir that others cannot
// search is given the search (x) permission so the server can reach it.
func Start(ctx context.Context, dir string, port int) (*Cluster, error) {
	return StartWith(ctx, dir, port, nil)
}

// StartWith is Start with server settings (name to value, as for
// postgres -c) that replace or add to the defaults, such as a chosen
// max_connections. Below 14 connections, also set max_wal_senders lower:
// PostgreSQL 15 wants superuser_reserved_connections + max_wal_senders to
// stay below max_connections.
func StartWith(ctx context.Context, dir string, port int, settings map[string]string) (*Cluster, error) {
	bindir, err := BinDir()
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: abs, port: port, bindir: bindir, settings: settings}
	if err := c.prepareDir(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(abs, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	if err := waitReachable(ctx, c.DSN("postgres"), 30*time.Second); err != nil {
		return nil, fmt.Errorf("PostgreSQL in %s started but does not accept connections on port %d: %w", abs, port, err)
	}
	return c, nil
}

// Stop shuts the cluster down (fast mode: open connections are closed).
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.command(ctx, "pg_ctl", "-D", c.dir, "stop", "-m", "fast", "-w").CombinedOutput()
	if c.exitGuard != nil {
		c.exitGuard.Close()
		c.exitGuard = nil
	}
	if err != nil {
		return fmt.Errorf("stopping PostgreSQL in %s: %s", c.dir, lastLine(out, err))
	}
	return nil
}

// StopOnExit makes sure the cluster stops, and with removeDir its directory
// is deleted, when this process ends for any reason, a crash or SIGKILL
// included. A watcher process in its own process group blocks on a pipe
// whose write end only this process holds; the kernel closes it at exit.
// The pipe lives as long as c: keep c reachable until the process ends.
func (c *Cluster) StopOnExit(removeDir bool) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	stop := c.command(context.Background(), "pg_ctl", "-D", c.dir, "stop", "-m", "fast", "-w")
	remove := ""
	if removeDir {
		remove = c.dir
	}
	const script = `cat >/dev/null; "$@" >/dev/null 2>&1; if [ -n "$REMOVE_DIR" ]; then rm -rf "$REMOVE_DIR"; fi`
	watcher := exec.Command("/bin/sh", append([]string{"-c", script, "pgcluster-stop-on-exit"}, stop.Args...)...)
	watcher.Env = append(os.Environ(), "REMOVE_DIR="+remove)
	watcher.Stdin = r
	// Its own process group keeps a Ctrl-C aimed at this process's group
	// from killing the watcher before it has stopped the cluster.
	watcher.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := watcher.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting the exit watcher for %s: %w", c.dir, err)
	}
	go watcher.Wait()
	if c.exitGuard != nil {
		c.exitGuard.Close()
	}
	c.exitGuard = w
	return nil
}

// BinDir finds the directory holding initdb, pg_ctl and postgres:
// `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin, then PATH.
func BinDir() (string, error) {
	var candidates []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	versioned, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(versioned, func(i, j int) bool { return majorOf(versioned[i]) > majorOf(versioned[j]) })
	candidates = append(candidates, versioned...)
	if p, err := exec.LookPath("initdb"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	for _, dir := range candidates {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", ErrBinariesNotFound
}

func majorOf(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

func (c *Cluster) prepareDir() error {
	if os.Geteuid() != 0 {
		return os.MkdirAll(filepath.Dir(c.dir), 0o755)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root, PostgreSQL needs an unprivileged user to run as: create the user postgres (%w)", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return fmt.Errorf("user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return fmt.Errorf("user postgres: gid %q: %w", u.Gid, err)
	}
	c.runAs = u
	if c.runuser, err = exec.LookPath("runuser"); err != nil {
		// root's PATH may lack sbin.
		c.runuser = "/usr/sbin/runuser"
		if _, err := os.Stat(c.runuser); err != nil {
			return errors.New("running as root, PostgreSQL must run as user postgres: install runuser (util-linux)")
		}
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	if err := filepath.WalkDir(c.dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	}); err != nil {
		return fmt.Errorf("handing %s to user postgres: %w", c.dir, err)
	}
	return allowSearch(filepath.Dir(c.dir), uid)
}

// allowSearch lets uid reach the data directory through every ancestor.
func allowSearch(dir string, uid int) error {
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		owned := st != nil && int(st.Uid) == uid
		if !owned && fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(dir, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("letting user postgres search %s: %w", dir, err)
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	out, err := c.command(ctx, "initdb",
		"-D", c.dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
	).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb %s: %s", c.dir, lastLine(out, err))
	}
	return nil
}

func (c *Cluster) start(ctx context.Context) error {
	socketDir := c.dir
	if len(socketDir)+len("/.s.PGSQL.")+len(strconv.Itoa(c.port)) > maxSocketPath {
		// TCP is enough; pg_ctl then checks readiness over TCP too.
		socketDir = ""
	}
	settings := map[string]string{
		"max_connections":    "200",
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
	}
	maps.Copy(settings, c.settings)
	// pg_ctl hands -o to a shell, hence the quoting.
	opts := []string{
		"-c listen_addresses=127.0.0.1",
		"-p " + strconv.Itoa(c.port),
		"-c unix_socket_directories=" + shellQuote(socketDir),
	}
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		opts = append(opts, "-c "+shellQuote(name+"="+settings[name]))
	}
	logFile := filepath.Join(c.dir, "server.log")
	var logStart int64
	if fi, err := os.Stat(logFile); err == nil {
		logStart = fi.Size()
	}
	out, err := c.command(ctx, "pg_ctl", "-D", c.dir, "-l", logFile, "-w", "-t", "60", "-o", strings.Join(opts, " "), "start").CombinedOutput()
	if err != nil {
		detail := lastLine(out, err)
		if log, rerr := os.ReadFile(logFile); rerr == nil && int64(len(log)) > logStart {
			detail = failureLine(log[logStart:], detail)
		}
		return fmt.Errorf("starting PostgreSQL in %s on port %d: %s (log: %s)", c.dir, c.port, detail, logFile)
	}
	return nil
}

// failureLine picks the server's own reasons from its log, on one line:
// FATAL, PANIC and ERROR messages and the "could not ..." lines that
// explain them (a bind failure is logged before the FATAL it causes).
func failureLine(log []byte, fallback string) string {
	var reasons []string
	for _, line := range strings.Split(string(log), "\n") {
		for _, sev := range []string{"FATAL:", "PANIC:", "ERROR:", "LOG:", "WARNING:"} {
			i := strings.Index(line, sev)
			if i < 0 {
				continue
			}
			msg := strings.TrimSpace(line[i+len(sev):])
			if sev == "FATAL:" || sev == "PANIC:" || sev == "ERROR:" || strings.HasPrefix(msg, "could not") {
				reasons = append(reasons, msg)
			}
			break
		}
	}
	if len(reasons) == 0 {
		return fallback
	}
	return strings.Join(reasons, "; ")
}

// command runs a server binary, as the postgres user when this process is root.
func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	bin := filepath.Join(c.bindir, name)
	if c.runAs == nil {
		return exec.CommandContext(ctx, bin, args...)
	}
	return exec.CommandContext(ctx, c.runuser, append([]string{"-u", c.runAs.Username, "--", bin}, args...)...)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lastLine keeps error messages to one line: the last non-empty line of a
// tool's output, or err when the tool printed nothing.
func lastLine(out []byte, err error) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return err.Error()
}
