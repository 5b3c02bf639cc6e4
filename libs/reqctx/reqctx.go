// Package reqctx carries what is known of the request a piece of work
// serves (its id and the client's address) in a context, so that domain
// code records them (in audit rows) without knowing about HTTP.
package reqctx

import "context"

// Info is what a service knows of a request.
type Info struct {
	// ID is the request id (X-Request-ID).
	ID string
	// ClientIP is the client's address: the peer's, or the one the trusted
	// ingress reported (see httpx.Options.TrustedProxies); "" if unknown.
	ClientIP string
}

type key struct{}

// With returns ctx carrying info.
func With(ctx context.Context, info Info) context.Context {
	return context.WithValue(ctx, key{}, info)
}

// From returns the request info in ctx; ok is false outside a request
// (background jobs, start-up).
func From(ctx context.Context) (info Info, ok bool) {
	info, ok = ctx.Value(key{}).(Info)
	return info, ok
}
