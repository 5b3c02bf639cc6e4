// Package natsembed runs a NATS server with JetStream inside the calling
// process, for local runs and tests.
package natsembed

import (
	"errors"
	"fmt"
	"net/url"
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
	// ServerName names the server; the members of a cluster need distinct
	// names. Empty means nats-server's generated id.
	ServerName string
	// Cluster, when its Name is set, makes the server a member of a
	// JetStream cluster.
	Cluster Cluster
	// SyncAlways fsyncs every JetStream write before it is acknowledged,
	// as sync_interval: always does in a configuration file.
	SyncAlways bool
	// Users, when there are any, must log in; each may publish and
	// subscribe only where its permissions allow.
	Users []User
}

// Cluster is a server's part in a JetStream cluster.
type Cluster struct {
	// Name is the cluster's name, the same on every member.
	Name string
	// Port accepts the routes of the other members; it must be a fixed
	// port, since every member lists it in its Routes.
	Port int
	// Routes are the route URLs (nats-route://host:port) of every member,
	// this server's own included: JetStream sizes its quorum from them.
	Routes []string
}

// User is a login with the subjects it may use. A nil Publish or
// Subscribe list leaves that direction unrestricted; an empty one allows
// nothing.
type User struct {
	Name      string
	Password  string
	Publish   []string
	Subscribe []string
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
	sopts := &server.Options{
		ServerName: opts.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		SyncAlways: opts.SyncAlways,
		NoLog:      true,
		// The embedding process owns signal handling.
		NoSigs: true,
	}
	if c := opts.Cluster; c.Name != "" {
		if c.Port <= 0 || len(c.Routes) == 0 {
			return nil, errors.New("natsembed: a cluster member needs a fixed cluster port and the routes of every member")
		}
		sopts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: c.Port}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("natsembed: route %q: %w", r, err)
			}
			sopts.Routes = append(sopts.Routes, u)
		}
	}
	for _, u := range opts.Users {
		sopts.Users = append(sopts.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: permissions(u)})
	}
	ns, err := server.NewServer(sopts)
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

func permissions(u User) *server.Permissions {
	if u.Publish == nil && u.Subscribe == nil {
		return nil
	}
	p := &server.Permissions{}
	if u.Publish != nil {
		p.Publish = &server.SubjectPermission{Allow: u.Publish}
	}
	if u.Subscribe != nil {
		p.Subscribe = &server.SubjectPermission{Allow: u.Subscribe}
	}
	return p
}
