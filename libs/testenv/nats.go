package testenv

import (
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"tenantbase/libs/natsembed"
)

// NATSServer is an embedded NATS server with JetStream owned by one test.
type NATSServer struct {
	tb testing.TB
	// opts start the server again on Restart: same ports, store and users.
	opts natsembed.Options

	mu  sync.Mutex
	srv *server.Server
}

// NATS starts an embedded server on a random port with JetStream on file
// storage in a temporary directory, shut down when the test ends.
func NATS(tb testing.TB) *NATSServer {
	tb.Helper()
	return startNATS(tb, natsembed.Options{Host: "127.0.0.1", StoreDir: tb.TempDir()})
}

// NATSWithUsers is NATS with authentication: clients must log in as one of
// users and may use only the subjects their permissions allow.
func NATSWithUsers(tb testing.TB, users ...natsembed.User) *NATSServer {
	tb.Helper()
	return startNATS(tb, natsembed.Options{Host: "127.0.0.1", StoreDir: tb.TempDir(), Users: users})
}

func startNATS(tb testing.TB, opts natsembed.Options) *NATSServer {
	tb.Helper()
	n := &NATSServer{tb: tb}
	srv, err := natsembed.Start(opts)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	// Restarts keep the client port that was picked at random.
	opts.Port = srv.Addr().(*net.TCPAddr).Port
	n.opts, n.srv = opts, srv
	tb.Cleanup(n.Shutdown)
	return n
}

// URL is the client URL; it stays the same across Restart.
func (n *NATSServer) URL() string {
	return "nats://127.0.0.1:" + strconv.Itoa(n.opts.Port)
}

// Name is the server's name (its generated id when none was given).
func (n *NATSServer) Name() string {
	if n.opts.ServerName != "" {
		return n.opts.ServerName
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return ""
	}
	return n.srv.Name()
}

// Running reports whether the server runs (it is not shut down).
func (n *NATSServer) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv != nil
}

// server is the running server, nil when it is down.
func (n *NATSServer) server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server, closing every client connection; it is a no-op
// when the server is already down. A member of a cluster first hands the
// leadership of its JetStream groups to a peer, as nats-server does on
// SIGTERM.
func (n *NATSServer) Shutdown() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Restart stops the server if it runs and starts it again on the same port
// with the same store directory, so streams and consumers survive.
func (n *NATSServer) Restart() {
	n.tb.Helper()
	n.Shutdown()
	n.mu.Lock()
	defer n.mu.Unlock()
	srv, err := natsembed.Start(n.opts)
	if err != nil {
		n.tb.Fatalf("testenv: restart NATS on port %d: %v", n.opts.Port, err)
	}
	n.srv = srv
}
