package pools

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// attempt is one connection attempt, holding one budget slot of its
// server from the moment the manager granted it. pgconn may dial more than
// once in an attempt (sslmode=prefer falls back to plain after a refused
// TLS handshake), one socket after the other: each socket carries the slot
// while it is open and hands it back to the attempt when the server has
// ended its session. When the attempt is over, the slot stays with the
// connection's socket, or goes back to the server if there is none.
type attempt struct {
	m   *Manager
	srv *server

	mu   sync.Mutex
	held bool // the slot is not carried by an open socket
	done bool
}

type attemptKey struct{}

// dial opens a socket for the attempt named by ctx. The only dials without
// one are pgconn's cancel requests, which the server answers and hangs up
// before any session exists, so they need no slot.
func (m *Manager) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	a, ok := ctx.Value(attemptKey{}).(*attempt)
	if !ok {
		return m.dialer.DialContext(ctx, network, addr)
	}
	if !a.take() {
		return nil, errSecondDial
	}
	c, err := m.dialer.DialContext(ctx, network, addr)
	if err != nil {
		a.giveBack()
		return nil, err
	}
	return &budgetConn{Conn: c, release: a.giveBack}, nil
}

func (a *attempt) take() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ok := a.held && !a.done
	a.held = false
	return ok
}

// giveBack is called once the attempt's socket is closed.
func (a *attempt) giveBack() {
	a.mu.Lock()
	if !a.done {
		a.held = true
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	a.m.slotFreed(a.srv)
}

// finish ends the attempt, freeing its slot unless a socket carries it.
func (a *attempt) finish() {
	a.mu.Lock()
	held := a.held
	a.done, a.held = true, false
	a.mu.Unlock()
	if held {
		a.m.slotFreed(a.srv)
	}
}

// budgetConn is a server connection holding a budget slot.
type budgetConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close gives the slot back only once the server has ended the session. A
// backend stays in pg_stat_activity (and counts against max_connections)
// until it exits, and it closes its socket only after leaving
// pg_stat_activity; so this half-closes, waits for the server's EOF, and
// then frees the slot. pgconn has sent Terminate before closing, and the
// half-close ends sessions that are closed without one.
func (c *budgetConn) Close() error {
	var err error
	c.once.Do(func() {
		defer c.release()
		if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok && hc.CloseWrite() == nil {
			if c.Conn.SetReadDeadline(time.Now().Add(drainTimeout)) == nil {
				_, _ = io.Copy(io.Discard, c.Conn)
			}
		}
		err = c.Conn.Close()
	})
	return err
}
