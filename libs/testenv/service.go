package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// LogBuffer collects log lines written from any goroutine.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines are the lines written so far, without their line ends.
func (b *LogBuffer) Lines() []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// JSONLines decodes every line written so far, failing the test for a
// line that is no JSON object.
func (b *LogBuffer) JSONLines(tb testing.TB) []map[string]any {
	tb.Helper()
	var lines []map[string]any
	for _, l := range b.Lines() {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			tb.Fatalf("testenv: log line is not JSON: %q", l)
		}
		lines = append(lines, line)
	}
	return lines
}

// Service is a service's Run function running in this process.
type Service struct {
	// Logs holds what the service logged, as JSON lines.
	Logs *LogBuffer

	name   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// StartService calls run on its own goroutine with a JSON logger at level
// that writes to Logs, and waits until run reports its addresses through
// ready. The test fails when run returns first or is not ready within two
// minutes. When the test ends the service is stopped (see Stop), and its
// logs are printed if the test failed.
func StartService[A any](tb testing.TB, name string, level slog.Level, run func(ctx context.Context, log *slog.Logger, ready func(A)) error) (*Service, A) {
	tb.Helper()
	s := &Service{Logs: &LogBuffer{}, name: name, done: make(chan error, 1)}
	log := slog.New(slog.NewJSONHandler(s.Logs, &slog.HandlerOptions{Level: level}))
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	ready := make(chan A, 1)
	go func() { s.done <- run(ctx, log, func(a A) { ready <- a }) }()
	var addrs A
	select {
	case addrs = <-ready:
	case err := <-s.done:
		cancel()
		tb.Fatalf("%s did not start: %v\nlogs:\n%s", name, err, s.Logs)
	case <-time.After(2 * time.Minute):
		cancel()
		tb.Fatalf("%s not ready after 2 minutes\nlogs:\n%s", name, s.Logs)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Error(err)
		}
		if tb.Failed() {
			tb.Logf("%s logs:\n%s", name, s.Logs)
		}
	})
	return s, addrs
}

// Stop cancels the service's context and waits up to a minute for run to
// return; the result is an error when run returned one or did not return.
// Later calls return the first result.
func (s *Service) Stop() error {
	s.once.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				s.err = fmt.Errorf("%s stopped with an error: %w", s.name, err)
			}
		case <-time.After(time.Minute):
			s.err = fmt.Errorf("%s did not stop within a minute", s.name)
		}
	})
	return s.err
}
