package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"tenantbase/libs/auth"
)

const issuer = "test-issuer"

func TestKeysParse(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	keys := auth.NewKeys(issuer, priv)
	pub := priv.Public().(ed25519.PublicKey)
	kid := auth.KeyID(pub)

	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		c := jwt.MapClaims{"iss": issuer, "aud": auth.CoreAudience, "sub": "42", "exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "is_admin": false}
		if change != nil {
			change(c)
		}
		return c
	}
	sign := func(method jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := func(change func(jwt.MapClaims)) string {
		return sign(jwt.SigningMethodEdDSA, priv, kid, claims(change))
	}
	issued, err := keys.Sign(auth.CoreClaims{RegisteredClaims: keys.Registered("42", auth.CoreAudience, time.Minute), IsAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(issued, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"test-issuer","aud":["core"],"sub":"1","exp":9999999999,"is_admin":true}`)) + "." + parts[2]

	cases := []struct {
		name  string
		token string
		aud   string
		ok    bool
	}{
		{name: "issued by Sign", token: issued, ok: true},
		{name: "signed elsewhere with the key", token: good(nil), ok: true},
		{name: "expired within leeway", token: good(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Second).Unix() }), ok: true},
		{name: "alg none", token: sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims(nil))},
		{name: "HS256 with the public key as secret", token: sign(jwt.SigningMethodHS256, []byte(pub), kid, claims(nil))},
		{name: "wrong audience", token: good(nil), aud: auth.TenantAudience(3)},
		{name: "tenant token on core", token: good(func(c jwt.MapClaims) { c["aud"] = auth.TenantAudience(3) })},
		{name: "missing aud", token: good(func(c jwt.MapClaims) { delete(c, "aud") })},
		{name: "wrong issuer", token: good(func(c jwt.MapClaims) { c["iss"] = "evil" })},
		{name: "missing issuer", token: good(func(c jwt.MapClaims) { delete(c, "iss") })},
		{name: "missing exp", token: good(func(c jwt.MapClaims) { delete(c, "exp") })},
		{name: "expired", token: good(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() })},
		{name: "not valid yet", token: good(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })},
		{name: "issued in the future", token: good(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() })},
		{name: "tampered payload", token: tampered},
		{name: "unknown kid", token: sign(jwt.SigningMethodEdDSA, other, auth.KeyID(other.Public().(ed25519.PublicKey)), claims(nil))},
		{name: "known kid, other key", token: sign(jwt.SigningMethodEdDSA, other, kid, claims(nil))},
		{name: "no kid", token: sign(jwt.SigningMethodEdDSA, priv, "", claims(nil))},
		{name: "garbage", token: "a.b.c"},
		{name: "empty", token: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			aud := tc.aud
			if aud == "" {
				aud = auth.CoreAudience
			}
			// The second time, a token whose signature checked out is
			// remembered: the answer must be the same.
			for range 2 {
				var got auth.CoreClaims
				err := keys.Parse(tc.token, aud, &got)
				if tc.ok {
					if err != nil || got.Subject != "42" {
						t.Fatalf("Parse = %v, subject %q", err, got.Subject)
					}
					continue
				}
				if !errors.Is(err, auth.ErrInvalidToken) {
					t.Fatalf("Parse = %v, want ErrInvalidToken", err)
				}
			}
		})
	}
}

func TestKeysRotation(t *testing.T) {
	_, old, _ := ed25519.GenerateKey(rand.Reader)
	_, current, _ := ed25519.GenerateKey(rand.Reader)
	before := auth.NewKeys(issuer, old)
	after := auth.NewKeys(issuer, current, old.Public().(ed25519.PublicKey))

	tok, err := before.Sign(before.Registered("7", auth.CoreAudience, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.RegisteredClaims
	if err := after.Parse(tok, auth.CoreAudience, &c); err != nil {
		t.Fatalf("a token of the previous key is refused during rotation: %v", err)
	}
	tok, err = after.Sign(after.Registered("7", auth.CoreAudience, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := before.Parse(tok, auth.CoreAudience, &c); err == nil {
		t.Fatal("the old key set accepts a token of a key it never knew")
	}
	if n := len(after.JWKS().Keys); n != 2 {
		t.Fatalf("JWKS during rotation holds %d keys, want 2", n)
	}
}

func TestRegistered(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keys := auth.NewKeys(issuer, priv)
	a := keys.Registered("9", auth.CoreAudience, 15*time.Minute)
	b := keys.Registered("9", auth.CoreAudience, 15*time.Minute)
	if a.Issuer != issuer || a.Subject != "9" || len(a.Audience) != 1 || a.Audience[0] != auth.CoreAudience ||
		a.ExpiresAt.Sub(a.IssuedAt.Time) != 15*time.Minute || a.ID == "" || a.ID == b.ID {
		t.Fatalf("registered claims %+v (second jti %q)", a, b.ID)
	}
}

func TestLoadSigningKey(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	b64 := base64.StdEncoding.EncodeToString(seed)

	t.Run("from configuration", func(t *testing.T) {
		key, err := auth.LoadSigningKey(b64, "", "jwt")
		if err != nil || !key.Equal(ed25519.NewKeyFromSeed(seed)) {
			t.Fatalf("LoadSigningKey = %v", err)
		}
	})

	bad := []struct{ name, seed string }{
		{"not base64", "***"},
		{"short seed", base64.StdEncoding.EncodeToString(seed[:16])},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := auth.LoadSigningKey(tc.seed, t.TempDir(), "jwt"); err == nil {
				t.Fatal("accepted")
			}
		})
	}

	t.Run("neither key nor directory", func(t *testing.T) {
		if _, err := auth.LoadSigningKey("", "", "jwt"); err == nil {
			t.Fatal("accepted")
		}
	})

	t.Run("generated once and kept", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "keys")
		first, err := auth.LoadSigningKey("", dir, "jwt")
		if err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(dir, "jwt.key"))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Fatalf("key file %v (%v), want mode 0600", info, err)
		}
		again, err := auth.LoadSigningKey("", dir, "jwt")
		if err != nil || !again.Equal(first) {
			t.Fatalf("second load returned another key (%v)", err)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("keys directory holds %d files, want 1", len(entries))
		}
	})

	t.Run("processes starting together agree", func(t *testing.T) {
		dir := t.TempDir()
		keys := make([]ed25519.PrivateKey, 8)
		errs := make([]error, len(keys))
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() { keys[i], errs[i] = auth.LoadSigningKey("", dir, "jwt") })
		}
		wg.Wait()
		for i := range keys {
			if errs[i] != nil || !keys[i].Equal(keys[0]) {
				t.Fatalf("load %d: %v, same key as load 0: %v", i, errs[i], keys[i].Equal(keys[0]))
			}
		}
	})
}
