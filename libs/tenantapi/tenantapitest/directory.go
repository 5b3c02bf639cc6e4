// Package tenantapitest serves the tenantapi contract in tests, so that
// services which look tenants up (the tenant plane) can be tested without
// a control plane: a Directory answers GET /internal/tenants/{id} as the
// control plane's internal API does, and a Publisher puts tenant events on
// a JetStream stream as the control plane's relay does. Only tests import it.
package tenantapitest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"tenantbase/libs/auth"
	"tenantbase/libs/events"
	"tenantbase/libs/problem"
	"tenantbase/libs/tenantapi"
)

// ServiceToken is the token a Directory requires unless told another.
const ServiceToken = "tenantapitest-service-token"

// Directory is an HTTP server on 127.0.0.1 answering tenant lookups from
// the tenants put into it, exactly as the control plane's internal API
// answers them:
//
//   - the service token as bearer is required: 401 problem "unauthorized"
//     with WWW-Authenticate otherwise, before anything about the tenant;
//   - an unknown id, or one that is not a positive integer: 404 problem
//     "tenant_not_found" (tenantapi.CodeNotFound); any other path: 404
//     problem "not_found";
//   - a known tenant: 200 with the tenantapi.Tenant as JSON, its database
//     only while it is ready, and Cache-Control: no-store.
//
// It can be taken down (connections refused, as with a stopped control
// plane) and brought back on the same address. Its methods are safe for
// concurrent use.
type Directory struct {
	// URL is the base URL (what CONTROL_PLANE_URL points at); it stays the
	// same across Down and Up.
	URL string
	// Deployment is the deployment id of every answer.
	Deployment string
	// Token is the service token callers must present: ServiceToken
	// unless changed before the first request.
	Token string

	tb   testing.TB
	addr string

	mu      sync.Mutex
	srv     *http.Server
	tenants map[int64]tenantapi.Tenant
	lookups map[int64]int
}

// NewDirectory starts an empty directory with a random deployment id that
// requires ServiceToken; it is closed when the test ends.
func NewDirectory(tb testing.TB) *Directory {
	tb.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	d := &Directory{
		Deployment: "test-" + hex.EncodeToString(b),
		Token:      ServiceToken,
		tb:         tb,
		tenants:    map[int64]tenantapi.Tenant{},
		lookups:    map[int64]int{},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("tenantapitest: %v", err)
	}
	d.addr = l.Addr().String()
	d.URL = "http://" + d.addr
	d.serve(l)
	tb.Cleanup(d.Down)
	return d
}

func (d *Directory) serve(l net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(d.handle), ReadHeaderTimeout: 10 * time.Second}
	d.mu.Lock()
	d.srv = srv
	d.mu.Unlock()
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.tb.Errorf("tenantapitest: directory stopped: %v", err)
		}
	}()
}

// Put adds tenant t or replaces the tenant of its id. An empty Deployment
// becomes the directory's. A database may stay with a tenant that is not
// ready; it is answered only while the tenant is ready, as the control
// plane answers. Put panics when t is no valid answer (tenantapi.Validate):
// the test would be wrong, not the code under test.
func (d *Directory) Put(t tenantapi.Tenant) {
	if t.Deployment == "" {
		t.Deployment = d.Deployment
	}
	if err := answer(t).Validate(t.ID); err != nil {
		panic("tenantapitest: Put: " + err.Error())
	}
	if t.Database != nil {
		db := *t.Database
		t.Database = &db
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tenants[t.ID] = t
}

// SetStatus changes the status of tenant id, keeping its database, and
// returns the tenant as it is now. It panics when id is unknown or the
// change leaves a ready tenant without a database.
func (d *Directory) SetStatus(id int64, s tenantapi.Status) tenantapi.Tenant {
	t, ok := d.Tenant(id)
	if !ok {
		panic(fmt.Sprintf("tenantapitest: SetStatus: no tenant %d", id))
	}
	t.Status = s
	d.Put(t)
	return t
}

// Remove forgets tenant id: lookups answer 404 tenant_not_found.
func (d *Directory) Remove(id int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.tenants, id)
}

// Tenant returns tenant id as stored (its database included whatever the
// status) and whether it is known.
func (d *Directory) Tenant(id int64) (tenantapi.Tenant, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.tenants[id]
	if ok && t.Database != nil {
		db := *t.Database
		t.Database = &db
	}
	return t, ok
}

// Lookups counts the requests for tenant id's path that reached the
// directory, answered or refused.
func (d *Directory) Lookups(id int64) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookups[id]
}

// Event is an envelope of type typ about tenant id from this directory's
// deployment, its data as the tenant is now: what the control plane
// publishes once it has committed the change.
func (d *Directory) Event(typ string, id int64) events.Envelope {
	t, _ := d.Tenant(id)
	return events.New(typ, d.Deployment, events.TenantData{TenantID: id, Status: string(t.Status), SchemaVersion: t.SchemaVersion})
}

// Down stops answering: the listener and every open connection are
// closed, so callers get connection errors as with a stopped control
// plane. It is a no-op when the directory is down already.
func (d *Directory) Down() {
	d.mu.Lock()
	srv := d.srv
	d.srv = nil
	d.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Up answers again on the same address, with the tenants it held. It is a
// no-op when the directory is up. Call it from the test's goroutine.
func (d *Directory) Up() {
	d.tb.Helper()
	d.mu.Lock()
	up := d.srv != nil
	d.mu.Unlock()
	if up {
		return
	}
	l, err := net.Listen("tcp", d.addr)
	if err != nil {
		d.tb.Fatalf("tenantapitest: bring the directory back on %s: %v", d.addr, err)
	}
	d.serve(l)
}

// answer is t as the API shows it.
func answer(t tenantapi.Tenant) tenantapi.Tenant {
	if t.Status != tenantapi.StatusReady {
		t.Database = nil
	}
	return t
}

func (d *Directory) handle(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, tenantapi.PathPrefix)
	if !ok || strings.Contains(rest, "/") {
		writeProblem(w, problem.New(http.StatusNotFound, "not_found", "no such resource"))
		return
	}
	if r.Method != http.MethodGet {
		writeProblem(w, problem.New(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this resource"))
		return
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err == nil {
		d.mu.Lock()
		d.lookups[id]++
		d.mu.Unlock()
	}
	token, ok := auth.BearerToken(r)
	got, want := sha256.Sum256([]byte(token)), sha256.Sum256([]byte(d.Token))
	if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="internal"`)
		writeProblem(w, problem.New(http.StatusUnauthorized, "unauthorized", "a valid service token is required"))
		return
	}
	notFound := problem.New(http.StatusNotFound, tenantapi.CodeNotFound, "no tenant with this id")
	if err != nil || id < 1 {
		writeProblem(w, notFound)
		return
	}
	t, ok := d.Tenant(id)
	if !ok {
		writeProblem(w, notFound)
		return
	}
	body, err := json.Marshal(answer(t))
	if err != nil {
		writeProblem(w, problem.New(http.StatusInternalServerError, "internal_error", ""))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(append(body, '\n'))
}

func writeProblem(w http.ResponseWriter, p *problem.Problem) {
	w.Header().Set("Content-Type", problem.ContentType)
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
