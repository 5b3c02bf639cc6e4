package secretbox_test

import (
	"bytes"
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
