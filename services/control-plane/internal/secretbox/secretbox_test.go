package secretbox_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"tenantbase/services/control-plane/internal/secretbox"
)

func TestSealOpen(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, secretbox.KeySize)
	box, err := secretbox.New(key)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := secretbox.New(bytes.Repeat([]byte{8}, secretbox.KeySize))
	sealed := box.Seal([]byte("s3cret-password"), []byte("tenant:1"))

	if bytes.Contains(sealed, []byte("s3cret")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	if again := box.Seal([]byte("s3cret-password"), []byte("tenant:1")); bytes.Equal(again, sealed) {
		t.Fatal("two seals of the same secret are equal: the nonce is not random")
	}
	got, err := box.Open(sealed, []byte("tenant:1"))
	if err != nil || string(got) != "s3cret-password" {
		t.Fatalf("Open = %q, %v; want the plaintext", got, err)
	}

	tampered := append([]byte(nil), sealed...)
	tampered[len(tampered)-1] ^= 1
	cases := []struct {
		name    string
		box     *secretbox.Box
		msg     []byte
		context string
	}{
		{"other context", box, sealed, "tenant:2"},
		{"other key", other, sealed, "tenant:1"},
		{"tampered", box, tampered, "tenant:1"},
		{"truncated", box, sealed[:10], "tenant:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.box.Open(tc.msg, []byte(tc.context)); !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
}

func TestNewRejectsShortKeys(t *testing.T) {
	t.Parallel()
	if _, err := secretbox.New(make([]byte, 16)); err == nil {
		t.Fatal("New accepted a 16-byte key")
	}
}

func TestLoadKey(t *testing.T) {
	t.Parallel()
	t.Run("configured", func(t *testing.T) {
		want := bytes.Repeat([]byte{1}, secretbox.KeySize)
		got, err := secretbox.LoadKey(base64.StdEncoding.EncodeToString(want), "", "credentials")
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("LoadKey = %x, %v", got, err)
		}
	})
	t.Run("configured but malformed", func(t *testing.T) {
		if _, err := secretbox.LoadKey("c2hvcnQ=", "", "credentials"); err == nil {
			t.Fatal("accepted a 5-byte key")
		}
	})
	t.Run("generated once and kept", func(t *testing.T) {
		dir := t.TempDir()
		keys := make([][]byte, 8)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() {
				k, err := secretbox.LoadKey("", dir, "credentials")
				if err != nil {
					t.Error(err)
				}
				keys[i] = k
			})
		}
		wg.Wait()
		for _, k := range keys[1:] {
			if !bytes.Equal(k, keys[0]) || len(k) != secretbox.KeySize {
				t.Fatalf("concurrent loads disagree: %x vs %x", k, keys[0])
			}
		}
		again, err := secretbox.LoadKey("", dir, "credentials")
		if err != nil || !bytes.Equal(again, keys[0]) {
			t.Fatalf("reload = %x, %v; want the saved key", again, err)
		}
		fi, err := os.Stat(filepath.Join(dir, "credentials.key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("keys dir holds %d entries, want only the key", len(entries))
		}
	})
}

// TestRotation seals under one key and rotates to another: values sealed
// with the old key, or in the format from before key ids, still open while
// the old key is kept as a previous one, report that they are not sealed
// with the current key, and stop opening once it is retired.
func TestRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := bytes.Repeat([]byte{1}, secretbox.KeySize), bytes.Repeat([]byte{2}, secretbox.KeySize)
	before, _ := secretbox.New(oldKey)
	rotated, err := secretbox.New(newKey, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	retired, _ := secretbox.New(newKey)

	// The format before key ids: nonce || sealed bytes.
	block, _ := aes.NewCipher(oldKey)
	gcm, _ := cipher.NewGCM(block)
	nonce := bytes.Repeat([]byte{9}, gcm.NonceSize())
	legacy := gcm.Seal(append([]byte(nil), nonce...), nonce, []byte("legacy-secret"), []byte("ctx"))

	for name, c := range map[string]struct {
		sealed []byte
		want   string
	}{
		"sealed with the old key": {before.Seal([]byte("old-secret"), []byte("ctx")), "old-secret"},
		"sealed before key ids":   {legacy, "legacy-secret"},
	} {
		got, err := rotated.Open(c.sealed, []byte("ctx"))
		if err != nil || string(got) != c.want {
			t.Fatalf("%s: Open after the rotation = %q, %v", name, got, err)
		}
		if rotated.Current(c.sealed) {
			t.Fatalf("%s: reported as sealed with the current key", name)
		}
		if _, err := retired.Open(c.sealed, []byte("ctx")); !errors.Is(err, secretbox.ErrOpen) {
			t.Fatalf("%s: opened after the old key was retired: %v", name, err)
		}
	}
	fresh := rotated.Seal([]byte("new-secret"), []byte("ctx"))
	if !rotated.Current(fresh) || !retired.Current(fresh) {
		t.Fatal("a value sealed after the rotation is not reported as current")
	}
	if got, err := retired.Open(fresh, []byte("ctx")); err != nil || string(got) != "new-secret" {
		t.Fatalf("Open with the new key alone = %q, %v", got, err)
	}
}
