// Package logctx carries a request's logger (with its request_id, and
// tenant_id where there is one) in a context, so that domain code logs
// with the request's attributes without knowing about HTTP.
package logctx

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

type key struct{}

// scope is one request's logger: a base logger and the attributes added
// to it since, turned into a logger only when something logs. Adding an
// attribute is then an append, not a new logger and a new context.
type scope struct {
	mu    sync.Mutex
	base  *slog.Logger
	attrs []any
	built *slog.Logger
}

// With returns ctx carrying log with the attributes args (key, value
// pairs), to which Add can add more.
func With(ctx context.Context, log *slog.Logger, args ...any) context.Context {
	return context.WithValue(ctx, key{}, &scope{base: log, attrs: args})
}

// Add adds attributes (key, value pairs) to the logger ctx carries, for
// every later From and Line of it. It reports false when ctx carries none.
func Add(ctx context.Context, args ...any) bool {
	s, ok := ctx.Value(key{}).(*scope)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attrs = append(s.attrs, args...)
	s.built = nil
	return true
}

// From returns the logger in ctx with every attribute added, or fallback
// when there is none.
func From(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	s, ok := ctx.Value(key{}).(*scope)
	if !ok {
		return fallback
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.built == nil {
		s.built = s.base.With(s.attrs...)
	}
	return s.built
}

// Line logs msg at level with the added attributes and attrs, without
// building a logger: for the one line every request writes. It hands one
// record straight to the handler, without the caller's source position
// (which the JSON handler leaves out anyway).
func Line(ctx context.Context, fallback *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	s, ok := ctx.Value(key{}).(*scope)
	if !ok {
		fallback.LogAttrs(ctx, level, msg, attrs...)
		return
	}
	h := s.base.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	s.mu.Lock()
	r.Add(s.attrs...)
	s.mu.Unlock()
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r)
}
