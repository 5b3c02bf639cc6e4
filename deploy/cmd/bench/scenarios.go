package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/bcrypt"
)

// profileRequest is GET /profile for t on the server at addr (with the
// tenant's header and token: the bare handler ignores both).
func profileRequest(addr string, t tenant) *http.Request {
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/profile", nil)
	req.Header.Set("X-TENANT", strconv.FormatInt(t.ID, 10))
	req.Header.Set("Authorization", "Bearer "+t.Token)
	return req
}

// provisioning (P3) times POST /organizations to tenant.created against a
// bare CREATE DATABASE on the same server, one at a time, then 50 posted
// at once. The control plane keeps its default spare databases; between
// two sequential posts the bench waits for the refill to finish, as with
// sign-ups that come slower than one CREATE DATABASE, so that neither the
// bare CREATE DATABASE nor the next provisioning shares the server with it.
func (b *bench) provisioning(ctx context.Context) error {
	s := b.stack
	if b.events == nil {
		ev, err := s.followCreated()
		if err != nil {
			return err
		}
		b.events = ev
	}
	const sequential, burst = 10, 50
	conn, err := pgx.Connect(ctx, s.tenant.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var bare, plane, answered []time.Duration
	var ids []int64
	for i := range sequential {
		if err := s.refillsDone(ctx); err != nil {
			return err
		}
		name := pgx.Identifier{fmt.Sprintf("bench_bare_%d", i)}.Sanitize()
		began := time.Now()
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			return err
		}
		bare = append(bare, time.Since(began))
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name); err != nil {
			return err
		}

		began = time.Now()
		id, err := s.createOrganization(ctx, fmt.Sprintf("Sequential %d", i))
		if err != nil {
			return err
		}
		answered = append(answered, time.Since(began))
		got, err := b.events.wait(ctx, []int64{id}, time.Minute)
		if err != nil {
			return err
		}
		plane = append(plane, got[id].Sub(began))
		ids = append(ids, id)
	}
	slices.Sort(bare)
	slices.Sort(plane)
	slices.Sort(answered)
	bareP50, planeP50 := bare[len(bare)/2], plane[len(plane)/2]
	// Where the time went, from the core database's own records: the job's
	// wait to be picked up, its run, and the event's wait in the outbox.
	var pickup, work, relay float64
	if err := pgxQueryRow(ctx, s.core.DSN("core"), `SELECT
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.attempted_at - j.created_at)),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM j.finalized_at - j.attempted_at)),
			(SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at))
				FROM event_outbox WHERE subject = 'tenant.created' AND (payload->'data'->>'tenant_id')::bigint = ANY($1))
		FROM river_job j WHERE j.kind = 'provision_tenant' AND (j.args->>'organization_id')::bigint = ANY($1)`,
		[]any{ids}, &pickup, &work, &relay); err != nil {
		return err
	}
	b.note("P3 one at a time, p50 of each part: POST answered after %s, job picked up after %.1f ms, provisioning ran %.1f ms, tenant.created waited %.1f ms in the outbox",
		ms(answered[len(answered)/2]), pickup*1000, work*1000, relay*1000)
	b.add(row{"P3", "POST -> tenant.created, p50 of 10 one at a time", ms(planeP50), ms(bareP50) + " bare CREATE DATABASE",
		ratio(float64(planeP50), float64(bareP50)), "<= 1.5x", verdict(float64(planeP50) <= 1.5*float64(bareP50))})

	posted := make([]time.Time, burst)
	burstIDs := make([]int64, burst)
	errs := make(chan error, burst)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range burst {
		wg.Go(func() {
			posted[i] = time.Now()
			id, err := s.createOrganization(ctx, fmt.Sprintf("Burst %d", i))
			if err != nil {
				errs <- err
			}
			burstIDs[i] = id
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	got, err := b.events.wait(ctx, burstIDs, 5*time.Minute)
	if err != nil {
		return err
	}
	var lat []time.Duration
	last := began
	for i, id := range burstIDs {
		lat = append(lat, got[id].Sub(posted[i]))
		if got[id].After(last) {
			last = got[id]
		}
	}
	slices.Sort(lat)
	perMinute := float64(burst) / last.Sub(began).Minutes()
	b.add(row{"P3", fmt.Sprintf("%d posted at once: all ready; p50 / p95", burst),
		ms(lat[len(lat)/2]) + " / " + ms(lat[len(lat)*95/100]), "-", "-", "all ready", verdict(len(got) == burst)})
	b.add(row{"P3", fmt.Sprintf("%d posted at once: organizations per minute", burst), fmt.Sprintf("%.0f", perMinute), "-", "-", "-", "-"})
	ready, err := s.prepare(ctx, append(ids, burstIDs...), 8)
	if err != nil {
		return err
	}
	b.tenants = append(b.tenants, ready...)
	return nil
}

// oneTenant (P1) alternates the bare handler and the tenant plane on one
// tenant's GET /profile.
func (b *bench) oneTenant(ctx context.Context) error {
	ts, err := b.fleet(ctx, 1)
	if err != nil {
		return err
	}
	t := ts[0]
	bare, err := b.stack.startBare("bare-one", map[int64]bareTenant{t.ID: {DSN: t.DSN, UserID: t.UserID}}, false)
	if err != nil {
		return err
	}
	defer bare.stop()
	cfg, err := pgx.ParseConfig(t.DSN)
	if err != nil {
		return err
	}
	var bares, planes []result
	var barePeak, planePeak int
	for range b.o.rounds {
		sampler := b.stack.sampleConnections(ctx, cfg.Database)
		bares = append(bares, load(ctx, loadOptions{clients: b.o.clients, warmup: time.Second, duration: b.o.duration, server: bare,
			request: func(int) *http.Request { return profileRequest(bare.public, t) }}))
		n, err := sampler.finish()
		if err != nil {
			return err
		}
		barePeak = max(barePeak, n)
		sampler = b.stack.sampleConnections(ctx, cfg.Database)
		planes = append(planes, load(ctx, loadOptions{clients: b.o.clients, warmup: time.Second, duration: b.o.duration, server: b.stack.tp,
			request: func(int) *http.Request { return profileRequest(b.stack.tp.public, t) }}))
		if n, err = sampler.finish(); err != nil {
			return err
		}
		planePeak = max(planePeak, n)
	}
	b.note("P1 sessions on the tenant database at most: %d with the plane, %d with the bare handler (both may hold 5)", planePeak, barePeak)
	br, pr := median(bares), median(planes)
	b.planeOne = pr
	b.add(row{"P1", "1 tenant, GET /profile, requests/s", fmt.Sprintf("%.0f", pr.perSecond()), fmt.Sprintf("%.0f bare echo+pgx", br.perSecond()),
		ratio(pr.perSecond(), br.perSecond()), ">= 0.9x", verdict(pr.perSecond() >= 0.9*br.perSecond())})
	b.add(row{"P1", "1 tenant, p99", ms(pr.quantile(0.99)), ms(br.quantile(0.99)),
		ratio(float64(pr.quantile(0.99)), float64(br.quantile(0.99))), "<= 1.5x", verdict(float64(pr.quantile(0.99)) <= 1.5*float64(br.quantile(0.99)))})
	b.add(row{"P1", "server CPU per request", us(pr.cpuPerRequest), us(br.cpuPerRequest), ratio(float64(pr.cpuPerRequest), float64(br.cpuPerRequest)), "-", "-"})
	if n := pr.errors(http.StatusOK) + br.errors(http.StatusOK); n > 0 {
		b.note("P1: %d requests failed", n)
	}
	return nil
}

// workingSetFits (P2a) spreads requests uniformly over 20 tenants, which
// fit in the budget; after a warm-up no new sessions should be needed.
func (b *bench) workingSetFits(ctx context.Context) error {
	ts, err := b.fleet(ctx, 20)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(7, 11))
	seq := make([]int, 1<<20)
	for i := range seq {
		seq[i] = rng.IntN(len(ts))
	}
	request := func(i int) *http.Request { return profileRequest(b.stack.tp.public, ts[seq[i%len(seq)]]) }
	load(ctx, loadOptions{clients: b.o.clients, duration: 3 * time.Second, request: request}) // warm-up
	before, err := b.stack.sessions(ctx)
	if err != nil {
		return err
	}
	r := load(ctx, loadOptions{clients: b.o.clients, warmup: 0, duration: b.o.duration, request: request, server: b.stack.tp})
	after, err := b.stack.sessions(ctx)
	if err != nil {
		return err
	}
	perSession := "no new session"
	ok := after == before
	if after > before {
		perSession = fmt.Sprintf("%.0f", float64(r.requests)/float64(after-before))
		ok = float64(r.requests)/float64(after-before) >= 100
	}
	ref := b.planeOne
	b.add(row{"P2a", "20 tenants, budget 40, requests/s", fmt.Sprintf("%.0f", r.perSecond()), fmt.Sprintf("%.0f P1 plane", ref.perSecond()),
		ratio(r.perSecond(), ref.perSecond()), ">= 0.9x", verdict(ref.requests == 0 || r.perSecond() >= 0.9*ref.perSecond())})
	b.add(row{"P2a", "requests per new Postgres session after warm-up", perSession, "-", "-", ">= 100", verdict(ok)})
	if n := r.errors(http.StatusOK); n > 0 {
		b.note("P2a: %d of %d requests failed", n, r.requests)
	}
	return nil
}

// zipfSequence is a fixed Zipf (s = 1.1) draw over n tenants, and the
// requests per new session of an ideal cache holding single connections
// to the budget most requested tenants over the first requests.
func zipfSequence(n, length int) []int {
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, uint64(n-1))
	seq := make([]int, length)
	for i := range seq {
		seq[i] = int(z.Uint64())
	}
	return seq
}

func idealPerSession(seq []int, requests, budget int) float64 {
	counts := map[int]int{}
	for _, t := range seq[:min(requests, len(seq))] {
		counts[t]++
	}
	var c []int
	for _, n := range counts {
		c = append(c, n)
	}
	slices.Sort(c)
	slices.Reverse(c)
	outside := 0
	for i, n := range c {
		if i >= budget {
			outside += n
		}
	}
	if outside == 0 {
		return 0
	}
	return float64(min(requests, len(seq))) / float64(outside)
}

// manyTenants (P2) sends Zipf-skewed traffic over 200 tenants under the
// budget, the naive design beside it, then again against a server with
// room for exactly the budget.
func (b *bench) manyTenants(ctx context.Context) error {
	const n = 200
	ts, err := b.fleet(ctx, n)
	if err != nil {
		return err
	}
	s := b.stack
	seq := zipfSequence(n, 1<<21)
	planeReq := func(i int) *http.Request { return profileRequest(s.tp.public, ts[seq[i%len(seq)]]) }

	before, err := s.sessions(ctx)
	if err != nil {
		return err
	}
	sampler := s.sampleConnections(ctx, `tenant\_%`)
	r := load(ctx, loadOptions{clients: b.o.clients, duration: b.o.duration, request: planeReq, server: s.tp})
	peak, err := sampler.finish()
	if err != nil {
		return err
	}
	after, err := s.sessions(ctx)
	if err != nil {
		return err
	}
	perSession := float64(r.requests) / float64(max(after-before, 1))
	ideal := idealPerSession(seq, r.requests, b.o.budget)
	b.add(row{"P2", fmt.Sprintf("%d tenants, Zipf 1.1, budget %d: requests per new session", n, b.o.budget), fmt.Sprintf("%.1f", perSession),
		fmt.Sprintf("%.1f ideal", ideal), ratio(perSession, ideal), ">= 4", verdict(perSession >= 4)})
	b.add(row{"P2", "requests/s, errors, peak server sessions", fmt.Sprintf("%.0f, %d, %d", r.perSecond(), r.errors(http.StatusOK), peak),
		"-", "-", fmt.Sprintf("0 errors, <= %d", b.o.budget), verdict(r.errors(http.StatusOK) == 0 && peak <= b.o.budget)})

	// The naive design on the same traffic.
	bareTenants := map[int64]bareTenant{}
	for _, t := range ts {
		bareTenants[t.ID] = bareTenant{DSN: t.DSN, UserID: t.UserID}
	}
	naive, err := s.startBare("naive", bareTenants, true)
	if err != nil {
		return err
	}
	sampler = s.sampleConnections(ctx, `tenant\_%`)
	nr := load(ctx, loadOptions{clients: b.o.clients, duration: b.o.duration, server: naive,
		request: func(i int) *http.Request { return profileRequest(naive.public, ts[seq[i%len(seq)]]) }})
	naivePeak, err := sampler.finish()
	naive.stop()
	if err != nil {
		return err
	}
	b.add(row{"P2", "the naive design (one pgx pool per tenant): requests/s, errors, peak server sessions",
		fmt.Sprintf("%.0f, %d, %d", nr.perSecond(), nr.errors(http.StatusOK), naivePeak), "-", ratio(r.perSecond(), nr.perSecond()) + " plane/naive", "-", "-"})

	return b.tightServer(ctx, ts, planeReq)
}

// superuserReserved is PostgreSQL's default superuser_reserved_connections.
const superuserReserved = 3

// tightServer restarts the tenant server with room for exactly the budget
// of tenant sessions (beside the reserved superuser slots and the bench's
// one monitoring session), runs the P2 traffic again, and then shows the
// room is exact: the sessions the plane does not hold can be opened, and
// one more is refused.
func (b *bench) tightServer(ctx context.Context, ts []tenant, request func(int) *http.Request) error {
	s := b.stack
	maxConns := b.o.budget + superuserReserved + 1
	say("restarting the tenant server with max_connections %d", maxConns)
	if err := s.restartTenantServer(ctx, maxConns); err != nil {
		return err
	}
	defer func() {
		if err := s.restartTenantServer(context.Background(), b.o.maxConnections); err != nil {
			say("restoring the tenant server: %v", err)
		}
	}()
	// The plane's connections were cut: the warm-up lets it notice.
	load(ctx, loadOptions{clients: b.o.clients, duration: 3 * time.Second, request: request})
	sampler := s.sampleConnections(ctx, `tenant\_%`)
	r := load(ctx, loadOptions{clients: b.o.clients, duration: b.o.duration, request: request})
	peak, err := sampler.finish()
	if err != nil {
		return err
	}
	// Fill the room the plane leaves, then one more.
	monitor, err := pgx.Connect(ctx, s.tenant.DSN("postgres"))
	if err != nil {
		return err
	}
	defer monitor.Close(context.Background())
	var used int
	if err := monitor.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&used); err != nil {
		return err
	}
	var extra []*pgx.Conn
	defer func() {
		for _, c := range extra {
			c.Close(context.Background())
		}
	}()
	var refused error
	for i := 0; i < maxConns; i++ {
		c, err := pgx.Connect(ctx, ts[i%len(ts)].DSN)
		if err != nil {
			refused = err
			break
		}
		extra = append(extra, c)
	}
	var pgErr *pgconn.PgError
	exact := errors.As(refused, &pgErr) && pgErr.Code == "53300"
	b.add(row{"P2", fmt.Sprintf("on a server with room for exactly %d tenant sessions (max_connections %d): errors, peak sessions", b.o.budget, maxConns),
		fmt.Sprintf("%d, %d", r.errors(http.StatusOK), peak), "-", "-", "0 errors", verdict(r.errors(http.StatusOK) == 0)})
	b.add(row{"P2", "beside the plane's idle sessions, more opened until refused (53300)",
		fmt.Sprintf("%d opened, then refused: %v", len(extra), exact), fmt.Sprintf("%d client sessions before", used), "-",
		"the next one fails", verdict(exact)})
	return nil
}

// thousandTenants (P5) serves every tenant of the fleet over a rotating
// working set, reads the plane's memory with all of them resolved, and
// times migration runs over the fleet.
func (b *bench) thousandTenants(ctx context.Context) error {
	ts, err := b.fleet(ctx, b.o.tenants)
	if err != nil {
		return err
	}
	s := b.stack
	const window = 100
	var total result
	total.statuses = map[int]int{}
	for start := 0; start < len(ts); start += window {
		set := ts[start:min(start+window, len(ts))]
		r := load(ctx, loadOptions{clients: b.o.clients, duration: time.Second,
			request: func(i int) *http.Request { return profileRequest(s.tp.public, set[i%len(set)]) }})
		total.requests += r.requests
		for k, v := range r.statuses {
			total.statuses[k] += v
		}
	}
	rss, peak := s.tp.rssMB()
	b.add(row{"P5", fmt.Sprintf("%d tenants served, windows of %d: requests, errors", len(ts), window),
		fmt.Sprintf("%d, %d", total.requests, total.errors(http.StatusOK)), "-", "-", "0 errors", verdict(total.errors(http.StatusOK) == 0)})
	b.add(row{"P5", fmt.Sprintf("tenant-plane RSS with all %d resolved (peak)", len(ts)), fmt.Sprintf("%.0f MB (%.0f MB)", rss, peak),
		"150 MB", ratio(rss, 150), "<= 150 MB", verdict(rss <= 150)})
	return b.fleetRuns(ctx, len(ts))
}

// fleetRuns times migration runs over the fleet: one with nothing to do,
// then the newest migration rolled back and forward again.
func (b *bench) fleetRuns(ctx context.Context, n int) error {
	s := b.stack
	runFor := func(body map[string]any) (time.Duration, int64, error) {
		before, err := s.sessions(ctx)
		if err != nil {
			return 0, 0, err
		}
		began := time.Now()
		var run struct {
			ID            int64  `json:"id"`
			Status        string `json:"status"`
			TargetVersion int    `json:"target_version"`
		}
		if err := call(ctx, http.MethodPost, "http://"+s.cp.public+"/admin/migrations", s.admin.token, 0, body, http.StatusAccepted, &run); err != nil {
			return 0, 0, err
		}
		for run.Status == "running" {
			time.Sleep(20 * time.Millisecond)
			if err := call(ctx, http.MethodGet, "http://"+s.cp.public+"/admin/migrations/"+strconv.FormatInt(run.ID, 10), s.admin.token, 0, nil, http.StatusOK, &run); err != nil {
				return 0, 0, err
			}
		}
		took := time.Since(began)
		if run.Status != "completed" {
			return took, 0, fmt.Errorf("migration run %d ended %s", run.ID, run.Status)
		}
		after, err := s.sessions(ctx)
		return took, after - before, err
	}
	noop, sessions, err := runFor(map[string]any{})
	if err != nil {
		return err
	}
	b.add(row{"P5", fmt.Sprintf("migration run with nothing to do over %d tenants: time, tenant sessions", n),
		fmt.Sprintf("%s, %d", noop.Round(time.Millisecond), sessions), "-", "-", "< 2 s, 0", verdict(noop < 2*time.Second && sessions == 0)})
	var current struct {
		Items []struct {
			TargetVersion int `json:"target_version"`
		} `json:"items"`
	}
	if err := call(ctx, http.MethodGet, "http://"+s.cp.public+"/admin/migrations?limit=1", s.admin.token, 0, nil, http.StatusOK, &current); err != nil {
		return err
	}
	top := current.Items[0].TargetVersion
	back, _, err := runFor(map[string]any{"target_version": top - 1})
	if err != nil {
		return err
	}
	forward, _, err := runFor(map[string]any{"target_version": top})
	if err != nil {
		return err
	}
	b.add(row{"P5", fmt.Sprintf("newest tenant migration rolled back, then forward, over %d tenants (default concurrency)", n),
		back.Round(100*time.Millisecond).String() + ", " + forward.Round(100*time.Millisecond).String(), "-", "-", "< 60 s each",
		verdict(back < time.Minute && forward < time.Minute)})
	return nil
}

// logins (P6) measures login throughput at the tenant plane's configured
// bcrypt cost against what the cores can hash, then a burst larger than
// that.
func (b *bench) logins(ctx context.Context) error {
	ts, err := b.fleet(ctx, 1)
	if err != nil {
		return err
	}
	s := b.stack
	t := ts[0]
	const email, password = "p6-user@bench.test", "p6-password-123"
	if err := call(ctx, http.MethodPost, "http://"+s.tp.public+"/auth/register", "", t.ID,
		map[string]string{"email": email, "password": password}, http.StatusCreated, nil); err != nil {
		return err
	}
	// One hash's time at the stored cost, here, one at a time.
	var hash string
	if err := pgxQueryRow(ctx, t.DSN, `SELECT password_hash FROM tenantuser WHERE email = $1`, []any{email}, &hash); err != nil {
		return err
	}
	cost, err := bcrypt.Cost([]byte(hash))
	if err != nil {
		return err
	}
	var one []time.Duration
	for range 5 {
		began := time.Now()
		bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
		one = append(one, time.Since(began))
	}
	slices.Sort(one)
	hashTime := one[len(one)/2]
	capacity := float64(runtime.NumCPU()) / hashTime.Seconds()
	login := func(int) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, "http://"+s.tp.public+"/auth/login",
			strings.NewReader(`{"email":"`+email+`","password":"`+password+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-TENANT", strconv.FormatInt(t.ID, 10))
		return req
	}
	r := load(ctx, loadOptions{clients: 8, warmup: time.Second, duration: b.o.duration, request: login})
	b.add(row{"P6", fmt.Sprintf("logins/s at bcrypt cost %d, 8 clients", cost), fmt.Sprintf("%.1f", r.perSecond()),
		fmt.Sprintf("%.1f = %d cores / %s", capacity, runtime.NumCPU(), ms(hashTime)), ratio(r.perSecond(), capacity), ">= 0.9x",
		verdict(r.perSecond() >= 0.9*capacity)})
	burst := load(ctx, loadOptions{clients: 64, duration: b.o.duration, request: login, retryAfter: true})
	b.add(row{"P6", "64 clients, each waiting as Retry-After asks: answered 200 / 503 busy / other; p50, p99",
		fmt.Sprintf("%d / %d / %d; %s, %s", burst.statuses[http.StatusOK], burst.statuses[http.StatusServiceUnavailable],
			burst.requests-burst.statuses[http.StatusOK]-burst.statuses[http.StatusServiceUnavailable], ms(burst.quantile(0.5)), ms(burst.quantile(0.99))),
		"-", "-", "shed, p99 bounded", verdict(burst.statuses[http.StatusServiceUnavailable] > 0 && burst.quantile(0.99) < 5*time.Second)})
	return nil
}

// outboxLag suspends and resumes tenants at a steady rate and reads, for
// each event, the time from its row's insertion (the transaction's start:
// now()) to the relay's PubAck (published_at).
func (b *bench) outboxLag(ctx context.Context) error {
	ts, err := b.fleet(ctx, 20)
	if err != nil {
		return err
	}
	s := b.stack
	const rate = 50
	start := time.Now()
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	var wg sync.WaitGroup
	suspended := map[int64]bool{}
	var mu sync.Mutex
	errs := make(chan error, rate*int(b.o.duration.Seconds())+1)
	for i := 0; time.Since(start) < b.o.duration; i++ {
		<-tick.C
		t := ts[i%len(ts)]
		mu.Lock()
		action := "suspend"
		if suspended[t.ID] {
			action = "resume"
		}
		suspended[t.ID] = !suspended[t.ID]
		mu.Unlock()
		wg.Go(func() {
			if err := call(ctx, http.MethodPost, "http://"+s.cp.public+"/admin/organizations/"+strconv.FormatInt(t.ID, 10)+"/"+action,
				s.admin.token, 0, nil, http.StatusOK, nil); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Resume the ones left suspended, for the scenarios after.
	for id, sus := range suspended {
		if sus {
			if err := call(ctx, http.MethodPost, "http://"+s.cp.public+"/admin/organizations/"+strconv.FormatInt(id, 10)+"/resume",
				s.admin.token, 0, nil, http.StatusOK, nil); err != nil {
				return err
			}
		}
	}
	time.Sleep(2 * time.Second)
	var p50, p99 float64
	var n int
	if err := pgxQueryRow(ctx, s.core.DSN("core"), `SELECT count(*),
			coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at)), 0),
			coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at)), 0)
		FROM event_outbox WHERE created_at >= $1 AND subject IN ('tenant.suspended', 'tenant.resumed') AND published_at IS NOT NULL`,
		[]any{start}, &n, &p50, &p99); err != nil {
		return err
	}
	b.add(row{"outbox", fmt.Sprintf("relay lag, commit to PubAck, %d events at %d/s: p50 / p99", n, rate),
		fmt.Sprintf("%.1f ms / %.1f ms", p50*1000, p99*1000), "-", "-", "-", "-"})
	return nil
}

// refillsDone waits until no refill of spare databases waits or runs.
func (s *stack) refillsDone(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		if err := pgxQueryRow(ctx, s.core.DSN("core"), `SELECT count(*) FROM river_job WHERE kind = 'refill_spare_databases'
			AND state IN ('available', 'pending', 'running', 'retryable', 'scheduled')`, nil, &n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("spare databases still refilling after a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pgxQueryRow(ctx context.Context, dsn, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}
