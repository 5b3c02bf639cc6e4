package testenv

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"tenantbase/libs/natsembed"
)

// NATSClusterTimeout bounds how long NATSCluster waits for the cluster to
// elect its JetStream meta leader.
const NATSClusterTimeout = 30 * time.Second

// JetStreamCluster is a JetStream cluster of embedded servers owned by one
// test, each with its own store directory, all routed to each other.
type JetStreamCluster struct {
	// Servers are the members, named nats-0, nats-1, ...
	Servers []*NATSServer
}

// NATSCluster starts size clustered servers with JetStream on free ports
// and fsync on every write (sync_interval: always, as the Kubernetes base
// runs them), and returns once they have elected a meta leader that knows
// every member. They are shut down when the test ends.
func NATSCluster(tb testing.TB, size int) *JetStreamCluster {
	tb.Helper()
	if size < 3 {
		tb.Fatalf("testenv: a JetStream cluster needs at least 3 servers, not %d", size)
	}
	// Every member lists the routes of all, so the cluster ports are
	// chosen before any server starts.
	ports := freePorts(tb, size)
	routes := make([]string, size)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &JetStreamCluster{}
	for i := range size {
		c.Servers = append(c.Servers, startNATS(tb, natsembed.Options{
			Host:       "127.0.0.1",
			StoreDir:   tb.TempDir(),
			ServerName: fmt.Sprintf("nats-%d", i),
			SyncAlways: true,
			Cluster:    natsembed.Cluster{Name: "testenv", Port: ports[i], Routes: routes},
		}))
	}
	Eventually(tb, NATSClusterTimeout, func() bool {
		for _, n := range c.Servers {
			if s := n.server(); s != nil && s.JetStreamIsLeader() {
				return len(s.JetStreamClusterPeers()) == size
			}
		}
		return false
	}, "JetStream cluster meta leader knowing every server")
	return c
}

// freePorts reserves n distinct free ports on 127.0.0.1 and releases them
// for the caller to bind.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("testenv: free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// URL lists the client URLs of every member, comma-separated, as NATS_URL
// takes them: a client fails over among them.
func (c *JetStreamCluster) URL() string {
	return c.urls(func(*NATSServer) bool { return true })
}

// RunningURL lists the client URLs of the members that run.
func (c *JetStreamCluster) RunningURL() string {
	return c.urls((*NATSServer).Running)
}

func (c *JetStreamCluster) urls(keep func(*NATSServer) bool) string {
	var urls []string
	for _, n := range c.Servers {
		if keep(n) {
			urls = append(urls, n.URL())
		}
	}
	return strings.Join(urls, ",")
}

// StreamLeader is the running member that leads stream (of the global
// account, where users without an account of their own are), nil when
// none does right now.
func (c *JetStreamCluster) StreamLeader(stream string) *NATSServer {
	for _, n := range c.Servers {
		if s := n.server(); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return n
		}
	}
	return nil
}

// WaitStreamLeader waits until a running member leads stream and returns it.
func (c *JetStreamCluster) WaitStreamLeader(tb testing.TB, stream string, timeout time.Duration) *NATSServer {
	tb.Helper()
	var leader *NATSServer
	Eventually(tb, timeout, func() bool {
		leader = c.StreamLeader(stream)
		return leader != nil
	}, "a leader of stream "+stream)
	return leader
}

// ShutdownStreamLeader shuts down the member that leads stream (waiting up
// to timeout for there to be one) and returns it. The others keep running
// and elect a new leader among themselves (see WaitStreamLeader).
func (c *JetStreamCluster) ShutdownStreamLeader(tb testing.TB, stream string, timeout time.Duration) *NATSServer {
	tb.Helper()
	leader := c.WaitStreamLeader(tb, stream, timeout)
	leader.Shutdown()
	return leader
}

// ServerOf is the running member that the client connection named name
// (nats.Name) is connected to, nil when there is none.
func (c *JetStreamCluster) ServerOf(name string) *NATSServer {
	for _, n := range c.Servers {
		s := n.server()
		if s == nil {
			continue
		}
		connz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, conn := range connz.Conns {
			if conn.Name == name {
				return n
			}
		}
	}
	return nil
}

// MoveStreamLeader makes to the leader of stream: the current leader steps
// down in its favour. It returns once to leads.
func (c *JetStreamCluster) MoveStreamLeader(tb testing.TB, stream string, to *NATSServer, timeout time.Duration) {
	tb.Helper()
	if c.WaitStreamLeader(tb, stream, timeout) == to {
		return
	}
	nc, err := nats.Connect(to.URL())
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	defer nc.Close()
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to.Name()}})
	res, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, timeout)
	if err != nil {
		tb.Fatalf("testenv: step down the leader of %s: %v", stream, err)
	}
	var answer struct {
		Success bool `json:"success"`
	}
	if err := json.Unmarshal(res.Data, &answer); err != nil || !answer.Success {
		tb.Fatalf("testenv: step down the leader of %s: %s", stream, res.Data)
	}
	Eventually(tb, timeout, func() bool { return c.StreamLeader(stream) == to }, to.Name()+" leading "+stream)
}
