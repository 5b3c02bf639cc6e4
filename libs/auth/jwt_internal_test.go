package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
	"time"
)

// TestRememberedTokensAreStillValidated parses a token once, so that its
// signature is remembered, and checks that later uses still validate its
// claims: another audience is refused, and so is the same token once it
// has expired; neither is served from what was remembered.
func TestRememberedTokensAreStillValidated(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	k := NewKeys("test-issuer", priv)
	clock := time.Now()
	k.now = func() time.Time { return clock }
	tok, err := k.Sign(TenantClaims{RegisteredClaims: k.Registered("5", TenantAudience(1), time.Minute), TenantID: 1})
	if err != nil {
		t.Fatal(err)
	}
	var c TenantClaims
	if err := k.Parse(tok, TenantAudience(1), &c); err != nil || c.TenantID != 1 || c.Subject != "5" {
		t.Fatalf("first parse: %v, claims %+v", err, c)
	}
	if !k.verified.Contains(sha256.Sum256([]byte(tok))) {
		t.Fatal("a verified token was not remembered")
	}
	c = TenantClaims{}
	if err := k.Parse(tok, TenantAudience(1), &c); err != nil || c.TenantID != 1 || c.Subject != "5" {
		t.Fatalf("remembered parse: %v, claims %+v", err, c)
	}
	if err := k.Parse(tok, TenantAudience(2), &c); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a remembered token for tenant 1 used for tenant 2: %v", err)
	}
	clock = clock.Add(time.Minute + 6*time.Second) // past exp and the leeway
	if err := k.Parse(tok, TenantAudience(1), &c); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a remembered token past its expiry: %v", err)
	}
	// A forged token is never remembered, however often it is tried.
	forged := tok[:len(tok)-4] + "AAAA"
	for range 2 {
		if err := k.Parse(forged, TenantAudience(1), &c); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("forged signature: %v", err)
		}
	}
	if k.verified.Contains(sha256.Sum256([]byte(forged))) {
		t.Fatal("a token whose signature failed was remembered")
	}
}
