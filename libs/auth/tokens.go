package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// NewOpaqueToken returns a random token for the client and the hash to store.
func NewOpaqueToken() (token, hash string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("auth: crypto/rand failed: " + err.Error())
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken is how opaque tokens are stored and looked up.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header.
func BearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return token, true
}

// Tokens answer a login, a refresh or a password change on either plane.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// Session signs claims, an access token valid for ttl, and pairs it with
// the session's refresh token.
func (k *Keys) Session(claims jwt.Claims, ttl time.Duration, refresh string) (Tokens, error) {
	access, err := k.Sign(claims)
	if err != nil {
		return Tokens{}, fmt.Errorf("sign access token: %w", err)
	}
	return Tokens{AccessToken: access, TokenType: "bearer", ExpiresIn: int64(ttl / time.Second), RefreshToken: refresh}, nil
}

// RefreshRequest is the body of POST /auth/refresh and /auth/logout on both planes.
type RefreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}
