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
	tb       testing.TB
	storeDir string
	port     int

	mu  sync.Mutex
	srv *server.Server
}

// NATS starts an embedded server on a random port with JetStream on file
// storage in a temporary directory, shut down when the test ends.
func NATS(tb testing.TB) *NATSServer {
	tb.Helper()
	n := &NATSServer{tb: tb, storeDir: tb.TempDir()}
	srv, err := natsembed.Start(natsembed.Options{Host: "127.0.0.1", StoreDir: n.storeDir})
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	n.srv = srv
	n.port = srv.Addr().(*net.TCPAddr).Port
	tb.Cleanup(n.Shutdown)
	return n
}

// URL is the client URL; it stays the same across Restart.
func (n *NATSServer) URL() string {
	return "nats://127.0.0.1:" + strconv.Itoa(n.port)
}

// Shutdown stops the server, closing every client connection; it is a no-op
// when the server is already down.
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
	srv, err := natsembed.Start(natsembed.Options{Host: "127.0.0.1", Port: n.port, StoreDir: n.storeDir})
	if err != nil {
		n.tb.Fatalf("testenv: restart NATS on port %d: %v", n.port, err)
	}
	n.srv = srv
}
