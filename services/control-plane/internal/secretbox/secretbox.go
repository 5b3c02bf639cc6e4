// Package secretbox encrypts small secrets at rest (tenant database
// passwords) with AES-256-GCM under one key.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"

	"tenantbase/libs/config"
)

// KeySize is the key length in bytes (AES-256).
const KeySize = 32

// ErrOpen is returned when a ciphertext does not decrypt under the key:
// a wrong key, a different context or tampered bytes.
var ErrOpen = errors.New("secretbox: message does not decrypt")

// Box seals and opens secrets. Ciphertexts are nonce || sealed bytes.
type Box struct {
	aead cipher.AEAD
}

// New returns a Box for a 32-byte key.
func New(key []byte) (*Box, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secretbox: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext bound to context (authenticated, not encrypted):
// a ciphertext sealed for one context does not open for another, so rows
// cannot be swapped between records.
func (b *Box) Seal(plaintext, context []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic("secretbox: crypto/rand failed: " + err.Error())
	}
	return b.aead.Seal(nonce, nonce, plaintext, context)
}

// Open decrypts a ciphertext made by Seal with the same context.
func (b *Box) Open(ciphertext, context []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(ciphertext) < n+b.aead.Overhead() {
		return nil, ErrOpen
	}
	out, err := b.aead.Open(nil, ciphertext[:n], ciphertext[n:], context)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}

// LoadKey returns the key from keyB64 (base64 of 32 bytes), or from
// dir/name.key, generated there the first time, so local runs can read the
// credentials they stored before.
func LoadKey(keyB64, dir, name string) ([]byte, error) {
	return config.LoadKey(keyB64, KeySize, dir, name)
}
