package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"

	"tenantbase/libs/config"
)

// ErrInvalidToken is returned for any token that fails verification; the
// reason is deliberately not told to the client.
var ErrInvalidToken = errors.New("invalid or expired token")

// CoreAudience is the aud of control-plane tokens.
const CoreAudience = "core"

// TenantAudience is the aud of a tenant's tokens: "tenant:<id>".
func TenantAudience(tenantID int64) string { return fmt.Sprintf("tenant:%d", tenantID) }

// CoreClaims are the claims of a control-plane access token.
type CoreClaims struct {
	jwt.RegisteredClaims
	IsOwner bool `json:"is_owner"`
	IsAdmin bool `json:"is_admin"`
}

// TenantClaims are the claims of a tenant-plane access token.
type TenantClaims struct {
	jwt.RegisteredClaims
	TenantID int64  `json:"tid"`
	Role     string `json:"role"`
}

// Keys signs tokens with one Ed25519 key and verifies tokens signed by any
// of its known public keys (the signing key's and older ones kept during a
// rotation), found by kid.
//
// A signature check costs about 60 µs of CPU and decoding the claims
// about 10 µs, more than the rest of a typical request; so the last
// verifiedTokens tokens whose signature checked out are remembered by
// digest with their decoded claims, and the same token presented again
// only has those claims validated (audience and expiry included, at every
// use). The set of keys never changes after NewKeys, so a remembered
// signature stays valid for the life of Keys.
type Keys struct {
	issuer string
	priv   ed25519.PrivateKey
	kid    string
	public map[string]ed25519.PublicKey
	// verified maps the SHA-256 of tokens whose signature was checked to
	// a copy of their decoded claims (a pointer, as Parse was given).
	verified *lru.Cache[[sha256.Size]byte, reflect.Value]
	// now is the clock claims are validated against.
	now func() time.Time
}

// verifiedTokens bounds the tokens remembered: 10,000 take a few MB.
const verifiedTokens = 10_000

// NewKeys returns Keys for issuer signing with priv; extra public keys are
// accepted for verification only.
func NewKeys(issuer string, priv ed25519.PrivateKey, extra ...ed25519.PublicKey) *Keys {
	verified, err := lru.New[[sha256.Size]byte, reflect.Value](verifiedTokens)
	if err != nil {
		panic(err) // only for a size below 1
	}
	k := &Keys{issuer: issuer, priv: priv, public: map[string]ed25519.PublicKey{}, verified: verified, now: time.Now}
	pub := priv.Public().(ed25519.PublicKey)
	k.kid = KeyID(pub)
	k.public[k.kid] = pub
	for _, p := range extra {
		k.public[KeyID(p)] = p
	}
	return k
}

// KeyID is the RFC 7638 thumbprint of an Ed25519 public key.
func KeyID(pub ed25519.PublicKey) string {
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Registered fills the standard claims for a token to subject, for aud,
// valid for ttl from now, with a fresh jti.
func (k *Keys) Registered(subject, aud string, ttl time.Duration) jwt.RegisteredClaims {
	now := time.Now()
	return jwt.RegisteredClaims{
		Issuer:    k.issuer,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{aud},
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        uuid.NewString(),
	}
}

// Sign returns the compact JWS of claims, with the signing key's kid.
func (k *Keys) Sign(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	t.Header["kid"] = k.kid
	return t.SignedString(k.priv)
}

// Parse verifies token for audience into claims: EdDSA only, a known kid,
// and exp, iss and aud required. Every failure is ErrInvalidToken.
func (k *Keys) Parse(token, audience string, claims jwt.Claims) error {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(k.issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5 * time.Second),
		jwt.WithTimeFunc(k.now),
	}
	digest := sha256.Sum256([]byte(token))
	dst := reflect.ValueOf(claims)
	if seen, ok := k.verified.Get(digest); ok && seen.Type() == dst.Type() && dst.Kind() == reflect.Pointer {
		// These exact bytes were signed by one of k's keys and decoded
		// into claims of this type: the claims are still validated, for
		// this audience and now.
		dst.Elem().Set(seen.Elem())
		if err := jwt.NewValidator(opts...).Validate(claims); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidToken, err)
		}
		return nil
	}
	_, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		pub, ok := k.public[kid]
		if !ok {
			return nil, errors.New("unknown kid")
		}
		return pub, nil
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if dst.Kind() == reflect.Pointer {
		seen := reflect.New(dst.Type().Elem())
		seen.Elem().Set(dst.Elem())
		k.verified.Add(digest, seen)
	}
	return nil
}

// JWK is one public key in a JWKS document.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS is the document served at /.well-known/jwks.json.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWKS lists every public key these Keys accept.
func (k *Keys) JWKS() JWKS {
	out := JWKS{Keys: []JWK{}}
	for kid, pub := range k.public {
		out.Keys = append(out.Keys, JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub), Kid: kid, Alg: "EdDSA", Use: "sig"})
	}
	return out
}

// LoadVerifyKeys returns the public keys of the comma-separated base64
// seeds in list: keys that signed before a rotation and whose tokens stay
// valid until they expire. "" is none.
func LoadVerifyKeys(list string) ([]ed25519.PublicKey, error) {
	seeds, err := config.ParseKeys(list, ed25519.SeedSize, "JWT_PREVIOUS_KEYS")
	if err != nil {
		return nil, err
	}
	pubs := make([]ed25519.PublicKey, len(seeds))
	for i, s := range seeds {
		pubs[i] = ed25519.NewKeyFromSeed(s).Public().(ed25519.PublicKey)
	}
	return pubs, nil
}

// LoadSigningKey returns the Ed25519 key from seedB64 (base64 of the 32-byte
// seed), or from dir/name.key, generated there the first time.
func LoadSigningKey(seedB64, dir, name string) (ed25519.PrivateKey, error) {
	seed, err := config.LoadKey(seedB64, ed25519.SeedSize, dir, name)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
