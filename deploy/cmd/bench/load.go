package main

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// result is what one load run measured.
type result struct {
	requests int
	// statuses counts answers by HTTP status; 0 counts transport errors.
	statuses map[int]int
	elapsed  time.Duration
	// latencies of every request, sorted.
	latencies []time.Duration
	// cpu is the CPU time the server process used during the run, per
	// request (0 when not measured).
	cpuPerRequest time.Duration
}

func (r result) perSecond() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(float64(len(r.latencies))*q))]
}

// errors counts the answers that are not want.
func (r result) errors(want int) int {
	n := 0
	for status, c := range r.statuses {
		if status != want {
			n += c
		}
	}
	return n
}

// loadOptions describe one closed-loop load run: clients each send a
// request, wait for its answer, and send the next, for warmup (not
// counted) and then duration.
type loadOptions struct {
	clients  int
	warmup   time.Duration
	duration time.Duration
	// request builds the i-th request of the run.
	request func(i int) *http.Request
	// server, when set, is the process whose CPU time is measured.
	server *proc
	// retryAfter makes each client wait as long as an answer's
	// Retry-After asks before its next request, as a polite client does.
	retryAfter bool
}

var loadTransport = &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 1024, IdleConnTimeout: time.Minute}

// load runs o and returns what it measured.
func load(ctx context.Context, o loadOptions) result {
	client := &http.Client{Transport: loadTransport, Timeout: 30 * time.Second}
	var (
		next     atomic.Int64
		counting atomic.Bool
		mu       sync.Mutex
		res      = result{statuses: map[int]int{}}
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	for range o.clients {
		wg.Go(func() {
			statuses := map[int]int{}
			var lat []time.Duration
			for {
				select {
				case <-stop:
					mu.Lock()
					for s, n := range statuses {
						res.statuses[s] += n
					}
					res.latencies = append(res.latencies, lat...)
					mu.Unlock()
					return
				default:
				}
				req := o.request(int(next.Add(1) - 1)).WithContext(ctx)
				began := time.Now()
				status := 0
				var wait time.Duration
				if r, err := client.Do(req); err == nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
					status = r.StatusCode
					if s, err := strconv.Atoi(r.Header.Get("Retry-After")); err == nil && o.retryAfter {
						wait = time.Duration(s) * time.Second
					}
				}
				if counting.Load() {
					lat = append(lat, time.Since(began))
					statuses[status]++
				}
				if wait > 0 {
					select {
					case <-stop:
					case <-time.After(wait):
					}
				}
			}
		})
	}
	time.Sleep(o.warmup)
	var cpu0 float64
	if o.server != nil {
		cpu0 = o.server.cpuSeconds()
	}
	began := time.Now()
	counting.Store(true)
	time.Sleep(o.duration)
	counting.Store(false)
	res.elapsed = time.Since(began)
	var cpu1 float64
	if o.server != nil {
		cpu1 = o.server.cpuSeconds()
	}
	close(stop)
	wg.Wait()
	for _, n := range res.statuses {
		res.requests += n
	}
	slices.Sort(res.latencies)
	if o.server != nil && res.requests > 0 {
		res.cpuPerRequest = time.Duration((cpu1 - cpu0) / float64(res.requests) * float64(time.Second))
	}
	return res
}

// median is the result with the median requests per second.
func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.perSecond() < b.perSecond():
			return -1
		case a.perSecond() > b.perSecond():
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}
