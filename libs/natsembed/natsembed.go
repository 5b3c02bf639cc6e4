// Package natsembed runs a NATS server with JetStream inside the calling
// process, for local runs and tests.
package natsembed

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says where the server listens and keeps its JetStream data.
type Options struct {
	// Host defaults to 127.0.0.1.
	Host string
	// Port 0 or -1 picks a free port (for nats-server itself 0 means 4222).
	Port int
	// StoreDir holds JetStream's file storage; it survives restarts.
	StoreDir string
}

// Start runs a server with JetStream on file storage and returns once it
// accepts connections. Stop it with Shutdown and WaitForShutdown.
func Start(opts Options) (*server.Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("natsembed: StoreDir is required")
	}
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := opts.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  opts.StoreDir,
		NoLog:     true,
		// The embedding process owns signal handling.
		NoSigs: true,
	})
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsembed: server on %s:%d not ready within 10s", host, opts.Port)
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, fmt.Errorf("natsembed: JetStream did not start with store dir %s", opts.StoreDir)
	}
	return ns, nil
}
