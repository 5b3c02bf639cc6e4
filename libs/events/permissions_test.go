package events_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/natsembed"
	"tenantbase/libs/testenv"
)

// client is one user's connection, with the permission errors the server
// sent it.
type client struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	errs   chan error
	server *testenv.NATSServer
}

func login(t *testing.T, srv *testenv.NATSServer, user string) *client {
	t.Helper()
	c := &client{errs: make(chan error, 64), server: srv}
	nc, err := nats.Connect(srv.URL(), nats.UserInfo(user, user+"-password"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("login as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	c.js, _ = jetstream.New(nc)
	return c
}

// quick is long enough for any answer of an idle local server; a denied
// request never gets one.
func quick(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

// denied runs op, which must fail, and expects the server to report a
// permission violation on subject.
func (c *client) denied(t *testing.T, what, subject string, op func() error) {
	t.Helper()
	for len(c.errs) > 0 {
		<-c.errs
	}
	if err := op(); err == nil {
		t.Errorf("%s: allowed", what)
		return
	}
	deadline := time.After(2 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), strconv.Quote(subject)) {
				return
			}
		case <-deadline:
			t.Errorf("%s: failed, but the server reported no permission violation on %s", what, subject)
			return
		}
	}
}

func TestPermissions(t *testing.T) {
	for _, ch := range []events.Channel{
		events.DefaultChannel,
		{Stream: "STAGING_TENANT_EVENTS", Prefix: "staging.tenant"},
	} {
		t.Run(ch.Stream, func(t *testing.T) {
			user := func(name string, p events.Permissions) natsembed.User {
				return natsembed.User{Name: name, Password: name + "-password", Publish: p.Publish, Subscribe: p.Subscribe}
			}
			srv := testenv.NATSWithUsers(t,
				natsembed.User{Name: "admin", Password: "admin-password"},
				user("control-plane", ch.PublisherPermissions()),
				user("tenant-plane", ch.FollowerPermissions()),
				user("billing", ch.SubscriberPermissions("billing")),
			)
			if nc, err := nats.Connect(srv.URL(), nats.UserInfo("tenant-plane", "wrong")); err == nil {
				nc.Close()
				t.Fatal("logged in with a wrong password")
			}
			admin := login(t, srv, "admin")
			msgs := func() uint64 {
				t.Helper()
				info, err := admin.js.Stream(context.Background(), ch.Stream)
				if err != nil {
					t.Fatalf("stream %s: %v", ch.Stream, err)
				}
				return info.CachedInfo().State.Msgs
			}
			created := ch.Subject(events.TenantCreated)
			cfg := jetstream.StreamConfig{Name: ch.Stream, Subjects: []string{ch.All()}, Storage: jetstream.FileStorage, MaxAge: time.Hour}

			t.Run("control plane", func(t *testing.T) {
				cp := login(t, srv, "control-plane")
				ctx := quick(t)
				if _, err := cp.js.CreateOrUpdateStream(ctx, cfg); err != nil {
					t.Fatalf("create the stream: %v", err)
				}
				longer := cfg
				longer.MaxAge = 2 * time.Hour
				if _, err := cp.js.CreateOrUpdateStream(ctx, longer); err != nil {
					t.Fatalf("update the stream: %v", err)
				}
				if _, err := cp.js.Publish(ctx, created, []byte(`{}`), jetstream.WithMsgID("event-1"), jetstream.WithExpectStream(ch.Stream)); err != nil {
					t.Fatalf("publish %s: %v", created, err)
				}
				cp.denied(t, "delete the stream", "$JS.API.STREAM.DELETE."+ch.Stream, func() error { return cp.js.DeleteStream(quick(t), ch.Stream) })
				cp.denied(t, "read the stream", "$JS.API.CONSUMER.CREATE."+ch.Stream+".peek", func() error {
					_, err := cp.js.CreateOrUpdateConsumer(quick(t), ch.Stream, jetstream.ConsumerConfig{Name: "peek"})
					return err
				})
				cp.denied(t, "publish outside the prefix", "other."+created, func() error {
					_, err := cp.js.Publish(quick(t), "other."+created, []byte(`{}`))
					return err
				})
				if n := msgs(); n != 1 {
					t.Fatalf("%d messages, want the one event", n)
				}
			})

			t.Run("durable subscriber", func(t *testing.T) {
				b := login(t, srv, "billing")
				cons, err := b.js.CreateOrUpdateConsumer(quick(t), ch.Stream, jetstream.ConsumerConfig{
					Durable: "billing", FilterSubject: ch.All(), AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
				})
				if err != nil {
					t.Fatalf("durable consumer: %v", err)
				}
				msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
				if err != nil {
					t.Fatalf("fetch: %v", err)
				}
				if err := msg.DoubleAck(quick(t)); err != nil {
					t.Fatalf("ack: %v", err)
				}
				info, err := admin.js.Consumer(quick(t), ch.Stream, "billing")
				if err != nil || info.CachedInfo().AckFloor.Stream != 1 {
					t.Fatalf("billing's consumer %+v, %v: want the event acknowledged", info, err)
				}
				b.denied(t, "create another consumer", "$JS.API.CONSUMER.CREATE."+ch.Stream+".other."+ch.All(), func() error {
					_, err := b.js.CreateOrUpdateConsumer(quick(t), ch.Stream, jetstream.ConsumerConfig{Durable: "other", FilterSubject: ch.All()})
					return err
				})
				b.denied(t, "publish "+created, created, func() error {
					_, err := b.js.Publish(quick(t), created, []byte(`{}`))
					return err
				})
			})

			t.Run("tenant plane", func(t *testing.T) {
				tp := login(t, srv, "tenant-plane")
				cons, err := tp.js.OrderedConsumer(quick(t), ch.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{ch.All()}})
				if err != nil {
					t.Fatalf("ordered consumer: %v", err)
				}
				msg, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
				if err != nil || msg.Subject() != created {
					t.Fatalf("ordered consumer got %v, %v; want the event on %s", msg, err, created)
				}
				tp.denied(t, "publish "+created, created, func() error {
					_, err := tp.js.Publish(quick(t), created, []byte(`{}`))
					return err
				})
				tp.denied(t, "update the stream", "$JS.API.STREAM.UPDATE."+ch.Stream, func() error {
					_, err := tp.js.UpdateStream(quick(t), cfg)
					return err
				})
				tp.denied(t, "delete the stream", "$JS.API.STREAM.DELETE."+ch.Stream, func() error { return tp.js.DeleteStream(quick(t), ch.Stream) })
				tp.denied(t, "purge the stream", "$JS.API.STREAM.PURGE."+ch.Stream, func() error {
					_, err := tp.nc.Request("$JS.API.STREAM.PURGE."+ch.Stream, nil, 300*time.Millisecond)
					return err
				})
				tp.denied(t, "delete billing's consumer", "$JS.API.CONSUMER.DELETE."+ch.Stream+".billing", func() error {
					return tp.js.DeleteConsumer(quick(t), ch.Stream, "billing")
				})
				tp.denied(t, "subscribe to the events directly", ch.All(), func() error {
					sub, err := tp.nc.SubscribeSync(ch.All())
					if err != nil {
						return err
					}
					_, err = sub.NextMsg(300 * time.Millisecond)
					return err
				})
				if n := msgs(); n != 1 {
					t.Fatalf("%d messages after the tenant plane's attempts, want 1", n)
				}
			})

		})
	}
}
