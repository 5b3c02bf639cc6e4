package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tenantbase/libs/config"
	"tenantbase/libs/events"
	"tenantbase/libs/tenantdb"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/app"
	"tenantbase/services/control-plane/cptest"
	"tenantbase/services/control-plane/internal/provisioning"
)

// stepCounter counts provisioning steps per organization and, once told
// which step fails for an organization, fails that step until healed.
type stepCounter struct {
	mu    sync.Mutex
	runs  map[int64]map[string]int
	fails map[int64]string
	// failing, when set, names the step to fail for an organization seen
	// for the first time ("" for none).
	failing func(ctx context.Context, orgID int64) (string, error)
}

var errInjected = errors.New("injected: disk full")

func newStepCounter() *stepCounter {
	return &stepCounter{runs: map[int64]map[string]int{}, fails: map[int64]string{}}
}

func (s *stepCounter) before(ctx context.Context, orgID int64, step string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.runs[orgID] == nil {
		s.runs[orgID] = map[string]int{}
		if s.failing != nil {
			fail, err := s.failing(ctx, orgID)
			if err != nil {
				return err
			}
			s.fails[orgID] = fail
		}
	}
	s.runs[orgID][step]++
	if step == s.fails[orgID] {
		return errInjected
	}
	return nil
}

// heal stops failing the steps of orgID.
func (s *stepCounter) heal(orgID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.fails, orgID)
}

func (s *stepCounter) count(orgID int64, step string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runs[orgID][step]
}

// TestProvisioningFailureThenRetry fails each step in turn: the job is
// retried up to the limit, then the organization is failed with a readable
// detail and tenant.provisioning_failed; the retry endpoint brings it to
// ready once the cause is gone.
func TestProvisioningFailureThenRetry(t *testing.T) {
	t.Parallel()
	const attempts = 3
	steps := newStepCounter()
	var core string
	// The organization's name says which step fails: "Fails at <step>".
	steps.failing = func(ctx context.Context, orgID int64) (string, error) {
		conn, err := pgx.Connect(ctx, core)
		if err != nil {
			return "", err
		}
		defer conn.Close(ctx)
		var name string
		err = conn.QueryRow(ctx, `SELECT name FROM organization WHERE id = $1`, orgID).Scan(&name)
		return strings.TrimPrefix(name, "Fails at "), err
	}
	cp := cptest.Start(t, cptest.Options{
		Configure:  func(c *app.Config) { c.ProvisionMaxAttempts = attempts },
		RunOptions: []app.Option{app.WithBeforeProvisionStep(steps.before)},
	})
	core = cp.DatabaseURL
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)

	for _, step := range []string{
		provisioning.StepCreateRole, provisioning.StepCreateDatabase, provisioning.StepMigrate,
		provisioning.StepSyncOwner, provisioning.StepMarkReady,
	} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			log := cptest.Subscribe(t, cp.NATS.URL(), events.DefaultChannel.All())
			org := cp.CreateOrganization(t, owner.AccessToken, "Fails at "+step)
			failed := cp.WaitStatus(t, owner.AccessToken, org.ID, "failed", readyTimeout)
			want := fmt.Sprintf("provisioning failed after %d attempts: step %s failed: an internal error occurred", attempts, step)
			if failed.StatusDetail == nil || !strings.HasPrefix(*failed.StatusDetail, want) || strings.Contains(*failed.StatusDetail, "disk full") {
				t.Fatalf("status_detail = %v, want %q and no raw error", failed.StatusDetail, want)
			}
			if logs := cp.Logs(); !strings.Contains(logs, `"detail":"`+*failed.StatusDetail) || !strings.Contains(logs, step+": injected: disk full") {
				t.Fatalf("the raw error of the failure is not in the logs beside its detail")
			}
			if n := steps.count(org.ID, step); n != attempts {
				t.Fatalf("step %s ran %d times, want %d", step, n, attempts)
			}
			if tenant := cp.Tenant(t, org.ID); tenant.Status != "failed" || tenant.Database != nil {
				t.Fatalf("internal API: %+v, want failed without database", tenant)
			}
			got := log.WaitUntil(t, 30*time.Second, "tenant.provisioning_failed", func(got []cptest.Received) bool {
				return len(cptest.OfTenant(got, org.ID)) > 0
			})
			if e := cptest.OfTenant(got, org.ID); e[0].Envelope.Type != events.TenantProvisioningFailed ||
				e[0].Envelope.Data.Status != "failed" || e[0].Envelope.Data.Detail != *failed.StatusDetail {
				t.Fatalf("first event %+v, want tenant.provisioning_failed with the detail", e[0].Envelope)
			}

			steps.heal(org.ID)
			var retried cptest.Organization
			cp.Do(t, http.MethodPost, "/organizations/"+strconv.FormatInt(org.ID, 10)+"/retry", owner.AccessToken, nil).
				Expect(t, http.StatusAccepted).Decode(t, &retried)
			if retried.Status != "provisioning" || retried.StatusDetail != nil {
				t.Fatalf("retry answered %+v, want provisioning without detail", retried)
			}
			cp.WaitStatus(t, owner.AccessToken, org.ID, "ready", readyTimeout)
			var n int
			testenv.QueryRow(t, cptest.DSN(cp.Tenant(t, org.ID).Database), `SELECT count(*) FROM tenantuser WHERE role = 'admin'`, nil, &n)
			if n != 1 {
				t.Fatalf("%d tenant admins after the retry, want 1", n)
			}
			log.WaitUntil(t, 30*time.Second, "tenant.created", func(got []cptest.Received) bool {
				return len(cptest.OfTenant(got, org.ID)) >= 2
			})
			var types []string
			cptest.OutboxDrained(t, cp.DatabaseURL, 30*time.Second)
			for _, e := range cptest.OfTenant(log.Drain(t, 30*time.Second), org.ID) {
				types = append(types, e.Envelope.Type)
			}
			if want := []string{events.TenantProvisioningFailed, events.TenantCreated}; !slices.Equal(types, want) {
				t.Fatalf("events %v, want %v", types, want)
			}
		})
	}
}

// TestProvisioningTwoControlPlanes runs two control planes on one core
// database: each of 20 organizations is provisioned exactly once.
func TestProvisioningTwoControlPlanes(t *testing.T) {
	t.Parallel()
	const orgs = 20
	core := cptest.CoreDatabase(t)
	nats := testenv.NATS(t)
	keys := t.TempDir()
	counters := []*stepCounter{newStepCounter(), newStepCounter()}
	var cps []*cptest.ControlPlane
	for i := range counters {
		cps = append(cps, cptest.Start(t, cptest.Options{DatabaseURL: core, NATSURL: nats.URL(), KeysDir: keys,
			RunOptions: []app.Option{app.WithBeforeProvisionStep(counters[i].before)}}))
	}
	created := cptest.Subscribe(t, nats.URL(), events.TenantCreated)
	owner := cps[0].SignUpOwner(t, "owner@example.com", ownerPassword)

	var ids []int64
	for i := range orgs {
		ids = append(ids, cps[i%2].CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Shared %d", i)).ID)
	}
	for _, id := range ids {
		cps[1].WaitStatus(t, owner.AccessToken, id, "ready", readyTimeout)
	}
	worked := []int{0, 0}
	for _, id := range ids {
		for _, step := range []string{provisioning.StepCreateRole, provisioning.StepMarkReady} {
			a, b := counters[0].count(id, step), counters[1].count(id, step)
			if a+b != 1 {
				t.Errorf("organization %d: step %s ran %d + %d times, want once in all", id, step, a, b)
			}
		}
		if counters[0].count(id, provisioning.StepCreateRole) == 1 {
			worked[0]++
		} else {
			worked[1]++
		}
	}
	t.Logf("provisioned by the first control plane: %d, by the second: %d", worked[0], worked[1])

	created.WaitFor(t, orgs, time.Minute)
	cptest.OutboxDrained(t, core, 30*time.Second)
	got := created.Drain(t, 30*time.Second)
	perTenant := map[int64]int{}
	for _, r := range got {
		perTenant[r.Envelope.Data.TenantID]++
	}
	for _, id := range ids {
		if perTenant[id] != 1 {
			t.Errorf("organization %d: %d tenant.created events, want 1", id, perTenant[id])
		}
	}
	if len(got) != orgs {
		t.Errorf("%d tenant.created events, want %d", len(got), orgs)
	}
}

// TestProvisioningWithLimitedAdmin provisions and deletes tenants through
// an admin role that is no superuser, only CREATEROLE and CREATEDB.
func TestProvisioningWithLimitedAdmin(t *testing.T) {
	t.Parallel()
	server := testenv.PostgresURL(t)
	role := fmt.Sprintf("cptest_admin_%d", rand.Int64N(1_000_000_000))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE ROLE "+pgx.Identifier{role}.Sanitize()+" LOGIN CREATEROLE CREATEDB"); err != nil {
		t.Fatal(err)
	}
	// Registered before the core database: runs after its tenants are dropped.
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), server)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{role}.Sanitize()); err != nil {
			t.Errorf("drop %s: %v", role, err)
		}
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)

	cp := cptest.Start(t, cptest.Options{Configure: func(c *app.Config) { c.TenantDBAdminURL = config.Secret(u.String()) }})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	org := cp.CreateReadyOrganization(t, owner, "Least privilege")
	name := cp.DatabaseName(t, org.ID)
	var dbOwner string
	testenv.QueryRow(t, server, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, []any{name}, &dbOwner)
	if dbOwner != name {
		t.Fatalf("database owner %s, want %s", dbOwner, name)
	}
	var n int
	testenv.QueryRow(t, cptest.DSN(cp.Tenant(t, org.ID).Database), `SELECT count(*) FROM tenantuser`, nil, &n)

	cp.Do(t, http.MethodDelete, "/organizations/"+strconv.FormatInt(org.ID, 10), owner.AccessToken, nil).Expect(t, http.StatusAccepted)
	cp.WaitStatus(t, owner.AccessToken, org.ID, "deleted", readyTimeout)
	assertTenantDropped(t, cp, server, org.ID, name)
}

// childControlPlane is the control plane binary run as a child process, so
// that a test can kill it.
type childControlPlane struct {
	// Core is the core database, NATS the event server and API a client
	// of the child's listeners.
	Core string
	NATS *testenv.NATSServer
	API  *cptest.Client
	// Env is the environment the next start uses.
	Env []string

	bin       string
	logs      *os.File
	cmd       *exec.Cmd
	publicURL string
}

// startChildControlPlane builds the binary and starts it on a core
// database, NATS and mail server of its own, with the test settings and
// then extra (later ones win); it is stopped when the test ends, and its
// logs are printed if the test failed.
func startChildControlPlane(t *testing.T, extra ...string) *childControlPlane {
	t.Helper()
	c := &childControlPlane{Core: cptest.CoreDatabase(t), NATS: testenv.NATS(t), bin: buildControlPlane(t)}
	smtp := testenv.SMTP(t)
	publicAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	internalAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	logs, err := os.Create(filepath.Join(t.TempDir(), "control-plane.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.logs = logs
	c.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"ENV=test",
		"LOG_LEVEL=info",
		"DATABASE_URL=" + c.Core,
		"NATS_URL=" + c.NATS.URL(),
		"HTTP_ADDR=" + publicAddr,
		"INTERNAL_ADDR=" + internalAddr,
		"PUBLIC_URL=http://tenantbase.test",
		"KEYS_DIR=" + t.TempDir(),
		"BCRYPT_COST=4",
		"OWNER_MAX_ORGANIZATIONS=1000",
		"SMTP_ADDR=" + smtp.Addr(),
		"SMTP_REQUIRE_TLS=false",
		"SERVICE_TOKEN=" + cptest.ServiceToken,
		"BOOTSTRAP_ADMIN_EMAIL=" + cptest.AdminEmail,
		"BOOTSTRAP_ADMIN_PASSWORD=" + cptest.AdminPassword,
	}, extra...)
	t.Cleanup(func() {
		if c.cmd != nil && c.cmd.ProcessState == nil {
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logs.Name())
			t.Logf("child logs:\n%s", b)
		}
	})
	c.publicURL = "http://" + publicAddr
	c.start(t)
	c.API = cptest.NewClient(t, c.publicURL, "http://"+internalAddr, smtp)
	return c
}

func buildControlPlane(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "control-plane")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// start starts the binary with Env and waits until it is healthy.
func (c *childControlPlane) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(c.bin)
	cmd.Env = c.Env
	cmd.Stdout = c.logs
	cmd.Stderr = c.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.cmd = cmd
	testenv.Eventually(t, time.Minute, func() bool {
		res, err := http.Get(c.publicURL + "/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, "child control plane healthy")
}

func (c *childControlPlane) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.cmd.Wait()
}

// TestProvisioningCrashConverges kills the control plane process (SIGKILL)
// twenty times, each time at a step boundary it chose: the process writes
// a marker before every step and pauses, and the test kills it right
// after the marker of the step it waits for, four times before each step.
// Every kill hits a provisioning in flight. Restarted, every organization
// converges to ready with one database, one role and one tenant.created
// event each, and nothing left over.
func TestProvisioningCrashConverges(t *testing.T) {
	t.Parallel()
	const killsPerStep = 4
	kills := killsPerStep * len(provisioning.Steps)
	// One job at a time: each kill strands exactly the provisioning it hit
	// (until River rescues it), and the next process starts the next one.
	orgs := kills + 4
	marker := filepath.Join(t.TempDir(), "steps")
	base := []string{
		"WORKERS=1",
		"PROVISION_RETRY_BACKOFF=100ms",
		"PROVISION_STEP_MARKER=" + marker,
		// A killed attempt is rescued once a leader sees it running that long.
		"JOB_TIMEOUT=5s",
		"JOB_RESCUE_AFTER=5s",
	}
	// The pause after each marker is the moment a kill lands in.
	child := startChildControlPlane(t, append(slices.Clone(base), "PROVISION_STEP_DELAY=300ms")...)
	core, api := child.Core, child.API
	owner := api.SignUpOwner(t, "owner@example.com", ownerPassword)
	var ids []int64
	for i := range orgs {
		ids = append(ids, api.CreateOrganization(t, owner.AccessToken, fmt.Sprintf("Crash %d", i)).ID)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, core)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	markers := &stepMarkers{path: marker}
	hit := map[int64]string{}
	for k := range kills {
		step := provisioning.Steps[k/killsPerStep]
		pid := child.cmd.Process.Pid
		org := markers.await(t, pid, step, time.Minute)
		child.kill(t)
		var status string
		if err := conn.QueryRow(ctx, `SELECT status FROM organization WHERE id = $1`, org).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if status != "provisioning" {
			t.Fatalf("kill %d before %s of organization %d found it %s: no provisioning was in flight", k+1, step, org, status)
		}
		if prev, ok := hit[org]; ok {
			t.Fatalf("kill %d hit organization %d again (first before %s): a killed provisioning must wait for its rescue", k+1, org, prev)
		}
		hit[org] = step
		child.start(t)
	}
	t.Logf("%d kills, each before a step of an organization in flight: %v", kills, hit)

	// The last process runs without pauses; once it leads (the killed
	// leader's lease runs out first), it rescues the stranded attempts.
	child.kill(t)
	child.Env = append(child.Env, "PROVISION_STEP_DELAY=0s")
	child.start(t)
	for _, id := range ids {
		api.WaitStatus(t, owner.AccessToken, id, "ready", 3*time.Minute)
	}

	// Refills of spare databases were killed too; once those rescued and
	// those asked for since have run, the server holds the spares wanted.
	testenv.Eventually(t, time.Minute, func() bool {
		var n int
		testenv.QueryRow(t, core, `SELECT count(*) FROM river_job WHERE kind = 'refill_spare_databases'
			AND state NOT IN ('completed', 'cancelled', 'discarded')`, nil, &n)
		return n == 0
	}, "spare refills done")

	server := testenv.PostgresURL(t)
	dep := cptest.Deployment(t, core)
	perTag := map[string]int{}
	for _, o := range cptest.TaggedObjects(t, server, dep) {
		perTag[o.Tag]++
	}
	for _, id := range ids {
		var name string
		testenv.QueryRow(t, core, `SELECT db_name FROM organization WHERE id = $1`, []any{id}, &name)
		var dbOwner string
		var roles, admins, outbox int
		testenv.QueryRow(t, server, `SELECT coalesce((SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1), ''),
			(SELECT count(*) FROM pg_roles WHERE rolname = $1)`, []any{name}, &dbOwner, &roles)
		testenv.QueryRow(t, cptest.DSN(api.Tenant(t, id).Database), `SELECT count(*) FROM tenantuser WHERE role = 'admin'`, nil, &admins)
		testenv.QueryRow(t, core, `SELECT count(*) FROM event_outbox WHERE subject = 'tenant.created' AND payload->'data'->>'tenant_id' = $1`,
			[]any{strconv.FormatInt(id, 10)}, &outbox)
		if dbOwner != name || roles != 1 || admins != 1 || outbox != 1 {
			t.Errorf("%s: database owner %q, %d roles, %d admins, %d tenant.created in the outbox; want itself, 1, 1, 1",
				name, dbOwner, roles, admins, outbox)
		}
		if n := perTag[cptest.Tag(dep, id)]; n != 2 {
			t.Errorf("organization %d: %d tagged objects, want its database and its role", id, n)
		}
		delete(perTag, cptest.Tag(dep, id))
	}
	// Beside them, the server's template database and its role.
	if perTag[provisioning.TemplateTag(dep, tenantdb.LatestVersion())] != 1 || perTag[provisioning.TemplateTag(dep, 0)] != 1 {
		t.Errorf("template objects %v, want the template database and its role", perTag)
	}
	delete(perTag, provisioning.TemplateTag(dep, tenantdb.LatestVersion()))
	delete(perTag, provisioning.TemplateTag(dep, 0))
	// And the default two spares, ready: each a role and its database.
	if perTag[provisioning.SpareTag(dep, tenantdb.LatestVersion())] != 2 || perTag[provisioning.SpareTag(dep, 0)] != 2 {
		t.Errorf("spare objects %v, want two ready spares and their roles", perTag)
	}
	delete(perTag, provisioning.SpareTag(dep, tenantdb.LatestVersion()))
	delete(perTag, provisioning.SpareTag(dep, 0))
	var spareDBs int
	testenv.QueryRow(t, server, `SELECT count(*) FROM pg_database WHERE starts_with(datname, $1)`,
		[]any{provisioning.SparePrefix(dep)}, &spareDBs)
	if spareDBs != 2 {
		t.Errorf("%d databases named as spares, want the two ready ones: a killed build was left behind", spareDBs)
	}
	if logs, err := os.ReadFile(child.logs.Name()); err == nil {
		t.Logf("%d of %d organizations took a spare", strings.Count(string(logs), `"from_spare":true`), orgs)
	}
	if len(perTag) > 0 {
		t.Errorf("orphans tagged by this deployment: %v", perTag)
	}

	created := cptest.Subscribe(t, child.NATS.URL(), events.TenantCreated)
	created.WaitFor(t, orgs, time.Minute)
	cptest.OutboxDrained(t, core, 30*time.Second)
	got := created.Drain(t, 30*time.Second)
	if len(got) != orgs {
		var b bytes.Buffer
		for _, r := range got {
			fmt.Fprintf(&b, "%s %d\n", r.Envelope.ID, r.Envelope.Data.TenantID)
		}
		t.Fatalf("%d tenant.created on the stream, want %d:\n%s", len(got), orgs, b.String())
	}
}

// stepMarkers reads the markers a control plane writes before each
// provisioning step (PROVISION_STEP_MARKER): "<pid> <organization> <step>".
type stepMarkers struct {
	path string
	read int // lines already consumed
}

// await waits for the next marker of process pid before step and returns
// its organization; markers of other steps and processes are skipped.
func (m *stepMarkers) await(t *testing.T, pid int, step string, timeout time.Duration) int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(m.path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		// The last element is an unfinished line, or empty.
		for ; m.read < len(lines)-1; m.read++ {
			var p int
			var org int64
			var s string
			if _, err := fmt.Sscanf(lines[m.read], "%d %d %s", &p, &org, &s); err != nil {
				t.Fatalf("marker %q: %v", lines[m.read], err)
			}
			if p == pid && s == step {
				m.read++
				return org
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no marker of process %d before %s within %s", pid, step, timeout)
	return 0
}

// TestProvisioningTimeoutFails gives provisioning less time than a step
// takes: the attempt is cancelled, and the organization ends failed with
// the reason rather than staying in provisioning.
func TestProvisioningTimeoutFails(t *testing.T) {
	t.Parallel()
	cp := cptest.Start(t, cptest.Options{Configure: func(c *app.Config) {
		c.ProvisionStepDelay = time.Hour
		c.JobTimeout = 200 * time.Millisecond
		c.JobRescueAfter = time.Second
		c.ProvisionMaxAttempts = 1
	}})
	owner := cp.SignUpOwner(t, "owner@example.com", ownerPassword)
	org := cp.CreateOrganization(t, owner.AccessToken, "Too slow")
	failed := cp.WaitStatus(t, owner.AccessToken, org.ID, "failed", time.Minute)
	if failed.StatusDetail == nil || !strings.Contains(*failed.StatusDetail, "after 1 attempt: step create_role failed: it took longer than allowed") {
		t.Fatalf("status_detail = %v, want the timeout of the first step", failed.StatusDetail)
	}
}
