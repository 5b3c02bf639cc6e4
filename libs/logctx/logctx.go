// Package logctx carries a request's logger (with its request_id, and
// tenant_id where there is one) in a context, so that domain code logs
// with the request's attributes without knowing about HTTP.
package logctx

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns ctx carrying log.
func With(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, key{}, log)
}

// From returns the logger in ctx, or fallback when there is none.
func From(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(key{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}
