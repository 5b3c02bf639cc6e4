package pools

import (
	"io"
	"net"
	"sync"
	"time"
)

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
