// Package secretbox encrypts small secrets at rest (tenant database
// passwords) with AES-256-GCM. It seals under one current key and opens
// under the current and any previous one, so the key can be rotated
// without losing what was stored: a sealed value names the key it was
// sealed with.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"tenantbase/libs/config"
)

// KeySize is the key length in bytes (AES-256).
const KeySize = 32

// ErrOpen is returned when a ciphertext does not decrypt under any key:
// a wrong or retired key, a different context or tampered bytes.
var ErrOpen = errors.New("secretbox: message does not decrypt")

// version starts every value sealed with a key id: version || key id (4
// bytes) || nonce || sealed bytes. Values sealed before key ids were
// nonce || sealed bytes and are still opened.
const version = 0x01

const kidSize = 4

type key struct {
	id   [kidSize]byte
	aead cipher.AEAD
}

// Box seals with its current key and opens with every key it holds.
type Box struct {
	current key
	all     []key
}

// New returns a Box sealing with current (32 bytes) and opening with it
// and with previous keys too.
func New(current []byte, previous ...[]byte) (*Box, error) {
	b := &Box{}
	for i, raw := range append([][]byte{current}, previous...) {
		k, err := newKey(raw)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			b.current = k
		}
		b.all = append(b.all, k)
	}
	return b, nil
}

func newKey(raw []byte) (key, error) {
	if len(raw) != KeySize {
		return key{}, fmt.Errorf("secretbox: key must be %d bytes, got %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return key{}, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return key{}, err
	}
	sum := sha256.Sum256(raw)
	k := key{aead: aead}
	copy(k.id[:], sum[:kidSize])
	return k, nil
}

// Seal encrypts plaintext under the current key, bound to context
// (authenticated, not encrypted): a ciphertext sealed for one context does
// not open for another, so rows cannot be swapped between records.
func (b *Box) Seal(plaintext, context []byte) []byte {
	aead := b.current.aead
	head := 1 + kidSize + aead.NonceSize()
	out := make([]byte, head, head+len(plaintext)+aead.Overhead())
	out[0] = version
	copy(out[1:], b.current.id[:])
	nonce := out[1+kidSize : head]
	if _, err := rand.Read(nonce); err != nil {
		panic("secretbox: crypto/rand failed: " + err.Error())
	}
	return aead.Seal(out, nonce, plaintext, context)
}

// Open decrypts a ciphertext made by Seal with the same context, under
// whichever of the Box's keys sealed it.
func (b *Box) Open(ciphertext, context []byte) ([]byte, error) {
	if k, ok := b.keyOf(ciphertext); ok {
		if out, err := open(k.aead, ciphertext[1+kidSize:], context); err == nil {
			return out, nil
		}
	}
	// A value sealed before key ids: try every key.
	for _, k := range b.all {
		if out, err := open(k.aead, ciphertext, context); err == nil {
			return out, nil
		}
	}
	return nil, ErrOpen
}

// Current reports whether ciphertext is sealed with the current key; a
// value that is not should be sealed again before the old key is retired.
func (b *Box) Current(ciphertext []byte) bool {
	k, ok := b.keyOf(ciphertext)
	return ok && k.id == b.current.id
}

func (b *Box) keyOf(ciphertext []byte) (key, bool) {
	if len(ciphertext) < 1+kidSize || ciphertext[0] != version {
		return key{}, false
	}
	for _, k := range b.all {
		if [kidSize]byte(ciphertext[1:1+kidSize]) == k.id {
			return k, true
		}
	}
	return key{}, false
}

func open(aead cipher.AEAD, ciphertext, context []byte) ([]byte, error) {
	n := aead.NonceSize()
	if len(ciphertext) < n+aead.Overhead() {
		return nil, ErrOpen
	}
	return aead.Open(nil, ciphertext[:n], ciphertext[n:], context)
}

// LoadKey returns the key from keyB64 (base64 of 32 bytes), or from
// dir/name.key, generated there the first time, so local runs can read the
// credentials they stored before.
func LoadKey(keyB64, dir, name string) ([]byte, error) {
	return config.LoadKey(keyB64, KeySize, dir, name)
}

// ParseKeys decodes comma-separated base64 keys (the previous keys of a
// rotation).
func ParseKeys(list string) ([][]byte, error) {
	return config.ParseKeys(list, KeySize, "CREDENTIALS_PREVIOUS_KEYS")
}
