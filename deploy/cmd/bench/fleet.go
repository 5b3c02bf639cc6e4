package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
)

// tenant is a ready bench tenant: its organization id, how the bare
// handler reaches its database, and its owner's tenant token and user id.
type tenant struct {
	ID     int64
	DSN    string
	UserID int64
	Token  string
}

// createdEvents follows tenant.created on NATS: when each organization's
// event arrived.
type createdEvents struct {
	sub *nats.Subscription
	nc  *nats.Conn

	mu   sync.Mutex
	at   map[int64]time.Time
	wake chan struct{}
}

func (s *stack) followCreated() (*createdEvents, error) {
	nc, err := nats.Connect(s.nats.ClientURL())
	if err != nil {
		return nil, err
	}
	c := &createdEvents{nc: nc, at: map[int64]time.Time{}, wake: make(chan struct{}, 1)}
	c.sub, err = nc.Subscribe("tenant.created", func(m *nats.Msg) {
		var ev struct {
			Data struct {
				TenantID int64 `json:"tenant_id"`
			} `json:"data"`
		}
		if json.Unmarshal(m.Data, &ev) != nil {
			return
		}
		c.mu.Lock()
		if _, ok := c.at[ev.Data.TenantID]; !ok {
			c.at[ev.Data.TenantID] = time.Now()
		}
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	})
	return c, err
}

func (c *createdEvents) close() { c.nc.Close() }

// wait returns when tenant.created of id arrived, or fails after timeout.
func (c *createdEvents) wait(ctx context.Context, ids []int64, timeout time.Duration) (map[int64]time.Time, error) {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		got := map[int64]time.Time{}
		for _, id := range ids {
			if at, ok := c.at[id]; ok {
				got[id] = at
			}
		}
		c.mu.Unlock()
		if len(got) == len(ids) {
			return got, nil
		}
		select {
		case <-c.wake:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return got, fmt.Errorf("%d of %d tenant.created within %s", len(got), len(ids), timeout)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// createOrganization posts a new organization as the admin and returns
// its id.
func (s *stack) createOrganization(ctx context.Context, name string) (int64, error) {
	var org struct {
		ID int64 `json:"id"`
	}
	err := call(ctx, http.MethodPost, "http://"+s.cp.public+"/organizations", s.admin.token, 0,
		map[string]string{"name": name}, http.StatusAccepted, &org)
	return org.ID, err
}

// provision creates n organizations, parallel at a time, and waits until
// every one is ready (its tenant.created arrived).
func (s *stack) provision(ctx context.Context, events *createdEvents, n, parallel int, prefix string) ([]int64, error) {
	ids := make([]int64, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i := range n {
		g.Go(func() (err error) {
			ids[i], err = s.createOrganization(gctx, fmt.Sprintf("%s %d", prefix, i))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	_, err := events.wait(ctx, ids, time.Duration(n)*time.Second+time.Minute)
	return ids, err
}

// prepare makes ids usable by the bench: the owner's tenant token and user
// id, from a login on the tenant plane, and the tenant database's DSN for
// the bare handler, from the internal API.
func (s *stack) prepare(ctx context.Context, ids []int64, parallel int) ([]tenant, error) {
	out := make([]tenant, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, id := range ids {
		g.Go(func() (err error) {
			if out[i], err = s.prepareOne(gctx, id); err != nil {
				return fmt.Errorf("tenant %d: %w", id, err)
			}
			return nil
		})
	}
	return out, g.Wait()
}

func (s *stack) prepareOne(ctx context.Context, id int64) (tenant, error) {
	t := tenant{ID: id}
	var info struct {
		Database struct {
			Host     string `json:"host"`
			Port     int    `json:"port"`
			Name     string `json:"name"`
			User     string `json:"user"`
			Password string `json:"password"`
		} `json:"database"`
	}
	if err := call(ctx, http.MethodGet, "http://"+s.cp.internal+"/internal/tenants/"+strconv.FormatInt(id, 10),
		s.serviceToken, 0, nil, http.StatusOK, &info); err != nil {
		return t, err
	}
	d := info.Database
	t.DSN = (&url.URL{Scheme: "postgres", User: url.UserPassword(d.User, d.Password),
		Host: d.Host + ":" + strconv.Itoa(d.Port), Path: "/" + d.Name, RawQuery: "sslmode=disable"}).String()
	var tok tokens
	if err := call(ctx, http.MethodPost, "http://"+s.tp.public+"/auth/login", "", id,
		map[string]string{"email": s.admin.email, "password": s.admin.password}, http.StatusOK, &tok); err != nil {
		return t, err
	}
	t.Token = tok.AccessToken
	var me struct {
		ID int64 `json:"id"`
	}
	if err := call(ctx, http.MethodGet, "http://"+s.tp.public+"/profile", t.Token, id, nil, http.StatusOK, &me); err != nil {
		return t, err
	}
	t.UserID = me.ID
	return t, nil
}

// tenantServerQuery runs one query on the tenant server as its superuser.
func (s *stack) tenantServerQuery(ctx context.Context, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, s.tenant.DSN("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// sessions is the number of sessions the tenant databases have had:
// pg_stat_database.sessions, which a backend reports when it flushes its
// statistics (within PGSTAT_IDLE_INTERVAL, 10 s, of going idle), hence
// the wait.
func (s *stack) sessions(ctx context.Context) (int64, error) {
	select {
	case <-time.After(11 * time.Second):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	var n int64
	err := s.tenantServerQuery(ctx, `SELECT coalesce(sum(sessions), 0)::bigint FROM pg_stat_database WHERE datname LIKE 'tenant\_%'`, nil, &n)
	return n, err
}

// connectionSampler counts the sessions on tenant databases every 20 ms
// and keeps the highest count.
type connectionSampler struct {
	stop chan struct{}
	done chan struct{}
	peak int
	err  error
}

func (s *stack) sampleConnections(ctx context.Context, databases string) *connectionSampler {
	c := &connectionSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		conn, err := pgx.Connect(ctx, s.tenant.DSN("postgres"))
		if err != nil {
			c.err = err
			return
		}
		defer conn.Close(context.Background())
		for {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname LIKE $1 AND backend_type = 'client backend'`, databases).Scan(&n); err != nil {
				c.err = err
				return
			}
			c.peak = max(c.peak, n)
			select {
			case <-c.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return c
}

func (c *connectionSampler) finish() (int, error) {
	close(c.stop)
	<-c.done
	return c.peak, c.err
}
