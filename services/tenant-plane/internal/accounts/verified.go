package accounts

import (
	"sync"
	"time"
)

// maxVerified bounds the verified-token cache (a few MB of tokens).
const maxVerified = 10_000

// verifiedTokens remembers access tokens whose signature and claims were
// checked, so that a client sending the same token again costs a map
// lookup instead of an Ed25519 verification, the largest CPU cost of a
// request. The key is the exact token and the tenant it was checked for,
// so nothing but those bytes, for that tenant, can hit an entry; expiry
// is checked again on every hit. What can change while a token lives
// (deactivation, password change, role) is checked against the database
// on every request anyway.
type verifiedTokens struct {
	mu      sync.Mutex
	entries map[verifiedKey]Claims
}

type verifiedKey struct {
	tenantID int64
	token    string
}

func (v *verifiedTokens) get(tenantID int64, token string) (Claims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.entries[verifiedKey{tenantID, token}]
	if !ok {
		return Claims{}, false
	}
	if c.ExpiresAt == nil || !time.Now().Before(c.ExpiresAt.Time) {
		delete(v.entries, verifiedKey{tenantID, token})
		return Claims{}, false
	}
	return c, true
}

func (v *verifiedTokens) put(tenantID int64, token string, c Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.entries == nil {
		v.entries = map[verifiedKey]Claims{}
	}
	if len(v.entries) >= maxVerified {
		// Any entry will do: map iteration starts at a random one.
		for k := range v.entries {
			delete(v.entries, k)
			break
		}
	}
	v.entries[verifiedKey{tenantID, token}] = c
}
