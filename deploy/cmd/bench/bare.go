package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"tenantbase/libs/pgcluster"
)

// bareTenant is what the bare handler needs to serve a tenant's profile:
// its database and the user whose row it reads.
type bareTenant struct {
	DSN    string `json:"dsn"`
	UserID int64  `json:"user_id"`
}

// profileQuery is the tenant plane's GET /profile query (tenantdb.UserByID).
const profileQuery = `SELECT id, email, role, is_active, display_name, bio, avatar_url, created_at, updated_at, token_version
	FROM tenantuser WHERE id = $1`

type profile struct {
	ID           int64     `json:"id"`
	Email        string    `json:"email"`
	Role         string    `json:"role"`
	IsActive     bool      `json:"is_active"`
	DisplayName  *string   `json:"display_name"`
	Bio          *string   `json:"bio"`
	AvatarURL    *string   `json:"avatar_url"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	TokenVersion int       `json:"-"`
}

// runBare is the bench's own child process: a bare echo + pgx server
// answering GET /profile with the same query and body as the tenant plane,
// and nothing else (no token, no tenant lookup, no log line). With
// -naive it is the design the tenant plane replaces: one pgx pool per
// tenant, chosen by X-TENANT, created on first use and never closed, each
// as large as maxConns.
func runBare(args []string) error {
	fs := flag.NewFlagSet("bare", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	tenantsFile := fs.String("tenants", "", "JSON file: tenant id -> {dsn, user_id}")
	naive := fs.Bool("naive", false, "one pool per tenant, chosen by X-TENANT")
	maxConns := fs.Int("max-conns", 5, "connections per pool")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*tenantsFile)
	if err != nil {
		return err
	}
	var tenants map[int64]bareTenant
	if err := json.Unmarshal(b, &tenants); err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		pools = map[int64]*pgxpool.Pool{}
	)
	poolOf := func(ctx context.Context, id int64) (*pgxpool.Pool, error) {
		mu.Lock()
		defer mu.Unlock()
		if p, ok := pools[id]; ok {
			return p, nil
		}
		t, ok := tenants[id]
		if !ok {
			return nil, echo.ErrNotFound
		}
		cfg, err := pgxpool.ParseConfig(t.DSN)
		if err != nil {
			return nil, err
		}
		cfg.MaxConns = int32(*maxConns)
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		pools[id] = p
		return p, nil
	}
	var only int64
	for id := range tenants {
		only = id
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/profile", func(c echo.Context) error {
		id := only
		if *naive {
			var err error
			if id, err = strconv.ParseInt(c.Request().Header.Get("X-TENANT"), 10, 64); err != nil {
				return echo.ErrBadRequest
			}
		}
		ctx := c.Request().Context()
		pool, err := poolOf(ctx, id)
		if err != nil {
			return err
		}
		var p profile
		if err := pool.QueryRow(ctx, profileQuery, tenants[id].UserID).Scan(&p.ID, &p.Email, &p.Role, &p.IsActive,
			&p.DisplayName, &p.Bio, &p.AvatarURL, &p.CreatedAt, &p.UpdatedAt, &p.TokenVersion); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, p)
	})
	e.GET("/health", func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Println(l.Addr().String())
	return http.Serve(l, e)
}

// startBare runs the bare server as a child process of the bench binary
// over tenants, and returns it once it answers.
func (s *stack) startBare(name string, tenants map[int64]bareTenant, naive bool) (*proc, error) {
	b, err := json.Marshal(tenants)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(s.dir, name+".json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, log: filepath.Join(s.dir, name+".log"), public: "127.0.0.1:" + strconv.Itoa(port), done: make(chan struct{})}
	out, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	args := []string{"bare", "-listen", p.public, "-tenants", file}
	if naive {
		args = append(args, "-naive")
	}
	p.cmd = exec.Command(self, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res, err := http.Get("http://" + p.public + "/health"); err == nil {
			res.Body.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited: %v\n%s", name, p.err, tail(p.log, 20))
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s did not answer within 30s", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
