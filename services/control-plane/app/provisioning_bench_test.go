package app_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"tenantbase/libs/events"
	"tenantbase/libs/testenv"
	"tenantbase/services/control-plane/cptest"
)

// BenchmarkProvisioning posts 20 organizations at once and measures, for
// each, the time from its POST to its tenant.created reaching a durable
// consumer; a bare CREATE DATABASE on the same server, timed in the same
// run, shows how much of it Postgres alone costs.
//
//	go test ./app -run '^$' -bench Provisioning -benchtime 1x
func BenchmarkProvisioning(b *testing.B) {
	const orgs = 20
	cp := cptest.Start(b, cptest.Options{})
	owner := cp.SignUpOwner(b, "bench@example.com", ownerPassword)

	nc, err := nats.Connect(cp.NATS.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	var (
		mu      sync.Mutex
		arrived = map[int64]time.Time{}
		got     = make(chan struct{}, 1024)
	)
	var cons jetstream.Consumer
	testenv.Eventually(b, 30*time.Second, func() bool {
		cons, err = js.CreateOrUpdateConsumer(ctx, events.DefaultStream, jetstream.ConsumerConfig{
			Durable: "bench", FilterSubject: events.TenantCreated, AckPolicy: jetstream.AckExplicitPolicy,
		})
		return err == nil
	}, "stream ready")
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		at := time.Now()
		if e, err := events.Decode(msg.Data()); err == nil {
			mu.Lock()
			arrived[e.Data.TenantID] = at
			mu.Unlock()
			got <- struct{}{}
		}
		_ = msg.Ack()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	// post creates count organizations back to back and returns each one's
	// time from POST to tenant.created.
	post := func(count int) []time.Duration {
		posted := map[int64]time.Time{}
		for i := range count {
			start := time.Now()
			var org cptest.Organization
			cp.Do(b, http.MethodPost, "/organizations", owner.AccessToken, map[string]string{"name": fmt.Sprintf("Bench %d", i)}).
				Expect(b, http.StatusAccepted).Decode(b, &org)
			posted[org.ID] = start
		}
		deadline := time.After(5 * time.Minute)
		for {
			mu.Lock()
			n := 0
			for id := range posted {
				if _, ok := arrived[id]; ok {
					n++
				}
			}
			mu.Unlock()
			if n == count {
				break
			}
			select {
			case <-got:
			case <-deadline:
				b.Fatalf("%d of %d tenant.created within 5 minutes", n, count)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		var out []time.Duration
		for id, start := range posted {
			out = append(out, arrived[id].Sub(start))
		}
		return out
	}

	var latencies, alone, createDB []time.Duration
	b.ResetTimer()
	for range b.N {
		latencies = append(latencies, post(orgs)...)
		for range 5 {
			alone = append(alone, post(1)...)
		}
		createDB = append(createDB, bareCreateDatabase(b, 5)...)
	}
	b.StopTimer()

	p50, p95 := percentile(latencies, 50), percentile(latencies, 95)
	c50 := percentile(createDB, 50)
	b.ReportMetric(float64(p50.Milliseconds()), "p50-ms")
	b.ReportMetric(float64(p95.Milliseconds()), "p95-ms")
	b.ReportMetric(float64(c50.Milliseconds()), "createdb-p50-ms")
	b.Logf("POST -> tenant.created for %d organizations posted at once: p50 %s, p95 %s, max %s",
		len(latencies), p50.Round(time.Millisecond), p95.Round(time.Millisecond), slices.Max(latencies).Round(time.Millisecond))
	b.Logf("POST -> tenant.created for one organization at a time (%d runs): p50 %s, max %s",
		len(alone), percentile(alone, 50).Round(time.Millisecond), slices.Max(alone).Round(time.Millisecond))
	b.Logf("bare CREATE DATABASE (%d runs): p50 %s, max %s",
		len(createDB), c50.Round(time.Millisecond), slices.Max(createDB).Round(time.Millisecond))
}

// bareCreateDatabase times n CREATE DATABASE statements, one after the
// other, dropping each database again.
func bareCreateDatabase(b *testing.B, n int) []time.Duration {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresURL(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var out []time.Duration
	for range n {
		name := pgx.Identifier{fmt.Sprintf("bench_createdb_%d", rand.Int64())}.Sanitize()
		start := time.Now()
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(start))
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			b.Fatal(err)
		}
	}
	return out
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
