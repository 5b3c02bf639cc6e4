package app_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"tenantbase/libs/auth"
	"tenantbase/libs/config"
	"tenantbase/services/control-plane/app"
)

// TestJWT forges every kind of bad token against the real router: each must
// get a 401, while a token signed correctly gets in. The service signs with
// a key from its configuration, which the test knows too.
func TestJWT(t *testing.T) {
	t.Parallel()
	seed := make([]byte, ed25519.SeedSize)
	rand.Read(seed)
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	kid := auth.KeyID(pub)
	h := startControlPlane(t, harnessOptions{Config: func(c *app.Config) {
		c.JWTSigningKey = config.Secret(base64.StdEncoding.EncodeToString(seed))
	}})
	u, _ := h.signUp(t, "user@example.com", password, false)
	sub := strconv.FormatInt(u.ID, 10)

	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	claims := func(change func(jwt.MapClaims)) jwt.MapClaims {
		now := time.Now()
		c := jwt.MapClaims{
			"iss": h.Config.JWTIssuer, "aud": auth.CoreAudience, "sub": sub,
			"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "jti": uuid.NewString(),
			"is_owner": false, "is_admin": false,
		}
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
			t.Fatalf("sign: %v", err)
		}
		return s
	}
	eddsa := func(change func(jwt.MapClaims)) string {
		return sign(jwt.SigningMethodEdDSA, priv, kid, claims(change))
	}
	valid := eddsa(nil)

	cases := []struct {
		name   string
		token  string
		path   string
		status int
	}{
		{name: "valid", token: valid, status: 200},
		{name: "alg none", token: sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims(nil)), status: 401},
		{name: "alg none without signature part", token: strings.TrimSuffix(sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, claims(nil)), "."), status: 401},
		{name: "HS256 signed with the public key", token: sign(jwt.SigningMethodHS256, []byte(pub), kid, claims(nil)), status: 401},
		{name: "HS256 signed with the JWKS x value", token: sign(jwt.SigningMethodHS256, []byte(base64.RawURLEncoding.EncodeToString(pub)), kid, claims(nil)), status: 401},
		{name: "wrong aud", token: eddsa(func(c jwt.MapClaims) { c["aud"] = auth.TenantAudience(1) }), status: 401},
		{name: "aud list without core", token: eddsa(func(c jwt.MapClaims) { c["aud"] = []string{"tenant:1", "billing"} }), status: 401},
		{name: "missing aud", token: eddsa(func(c jwt.MapClaims) { delete(c, "aud") }), status: 401},
		{name: "wrong iss", token: eddsa(func(c jwt.MapClaims) { c["iss"] = "someone-else" }), status: 401},
		{name: "missing iss", token: eddsa(func(c jwt.MapClaims) { delete(c, "iss") }), status: 401},
		{name: "missing exp", token: eddsa(func(c jwt.MapClaims) { delete(c, "exp") }), status: 401},
		{name: "expired", token: eddsa(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), status: 401},
		{name: "exp as a string", token: eddsa(func(c jwt.MapClaims) { c["exp"] = "never" }), status: 401},
		{name: "issued in the future", token: eddsa(func(c jwt.MapClaims) { c["iat"] = time.Now().Add(time.Hour).Unix() }), status: 401},
		{name: "tampered payload", token: tamper(t, valid, func(c map[string]any) { c["is_admin"] = true }), path: "/admin/users", status: 401},
		{name: "tampered subject", token: tamper(t, valid, func(c map[string]any) { c["sub"] = "1" }), status: 401},
		{name: "signature removed", token: valid[:strings.LastIndexByte(valid, '.')+1], status: 401},
		{name: "unknown kid", token: sign(jwt.SigningMethodEdDSA, otherKey, auth.KeyID(otherKey.Public().(ed25519.PublicKey)), claims(nil)), status: 401},
		{name: "other key with our kid", token: sign(jwt.SigningMethodEdDSA, otherKey, kid, claims(nil)), status: 401},
		{name: "no kid", token: sign(jwt.SigningMethodEdDSA, priv, "", claims(nil)), status: 401},
		{name: "subject not a user id", token: eddsa(func(c jwt.MapClaims) { c["sub"] = "admin" }), status: 401},
		{name: "missing subject", token: eddsa(func(c jwt.MapClaims) { delete(c, "sub") }), status: 401},
		{name: "tenant token", token: eddsa(func(c jwt.MapClaims) { c["aud"] = auth.TenantAudience(7); c["tid"] = 7 }), status: 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = "/auth/me"
			}
			res := h.do(t, http.MethodGet, path, nil, withToken(tc.token))
			if tc.status == http.StatusOK {
				res.expect(t, http.StatusOK, "")
				return
			}
			res.expect(t, tc.status, "unauthorized")
		})
	}

	t.Run("JWKS publishes the configured key", func(t *testing.T) {
		res := h.do(t, http.MethodGet, "/.well-known/jwks.json", nil)
		res.expect(t, http.StatusOK, "")
		var set auth.JWKS
		res.Decode(t, &set)
		if len(set.Keys) != 1 || set.Keys[0].Kid != kid || set.Keys[0].X != base64.RawURLEncoding.EncodeToString(pub) {
			t.Fatalf("JWKS %+v, want the one key %s", set, kid)
		}
	})

	t.Run("issued tokens name the key", func(t *testing.T) {
		tok := h.login(t, "user@example.com", password)
		parsed, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, jwt.MapClaims{})
		if err != nil {
			t.Fatal(err)
		}
		if parsed.Header["alg"] != "EdDSA" || parsed.Header["kid"] != kid {
			t.Fatalf("token header %v, want EdDSA with kid %s", parsed.Header, kid)
		}
	})
}

// tamper rewrites a token's payload and keeps its header and signature.
func tamper(t *testing.T, token string, change func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	change(c)
	raw, err = json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// TestJWTLocalKeyKeptAcrossRestarts covers local runs without a configured
// key: one is generated into KeysDir the first time (readable by the owner
// only) and used again after a restart, so sessions survive it.
func TestJWTLocalKeyKeptAcrossRestarts(t *testing.T) {
	t.Parallel()
	keysDir := t.TempDir()
	withDir := harnessOptions{Config: func(c *app.Config) { c.KeysDir = keysDir }}
	first := startControlPlane(t, withDir)
	tok := first.loginAdmin(t)
	kid := jwksKid(t, first)
	first.stop(t)

	info, err := os.Stat(filepath.Join(keysDir, "control-plane-jwt.key"))
	if err != nil {
		t.Fatalf("no key file was written: %v", err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", info.Mode().Perm())
	}

	withDir.DatabaseURL = first.DatabaseURL
	second := startControlPlane(t, withDir)
	if got := jwksKid(t, second); got != kid {
		t.Fatalf("kid after restart %s, want %s", got, kid)
	}
	second.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).expect(t, http.StatusOK, "")

	other := startControlPlane(t, harnessOptions{})
	if jwksKid(t, other) == kid {
		t.Fatal("a fresh keys directory produced the same key")
	}
	other.do(t, http.MethodGet, "/auth/me", nil, withToken(tok.AccessToken)).expect(t, http.StatusUnauthorized, "unauthorized")
}

func jwksKid(t *testing.T, h *harness) string {
	t.Helper()
	res := h.do(t, http.MethodGet, "/.well-known/jwks.json", nil)
	res.expect(t, http.StatusOK, "")
	var set auth.JWKS
	res.Decode(t, &set)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS holds %d keys, want 1", len(set.Keys))
	}
	return set.Keys[0].Kid
}
