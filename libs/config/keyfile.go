package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadKey returns size secret bytes from b64 (base64). When b64 is empty it
// reads dir/name.key, generating and saving it (0600) the first time, so a
// local run keeps its keys across restarts without any configuration.
func LoadKey(b64 string, size int, dir, name string) ([]byte, error) {
	if b64 != "" {
		return decodeKey(b64, size, name)
	}
	if dir == "" {
		return nil, fmt.Errorf("config: no %s key configured and no keys directory", name)
	}
	path := filepath.Join(dir, name+".key")
	if b, err := os.ReadFile(path); err == nil {
		return decodeKey(strings.TrimSpace(string(b)), size, name)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, size)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Written aside and linked into place, so a process starting at the same
	// moment reads either no file or a whole one, and only one key wins.
	tmp, err := os.CreateTemp(dir, name+".key.*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return LoadKey("", size, dir, name)
	} else if err != nil {
		return nil, err
	}
	return key, nil
}

func decodeKey(b64 string, size int, name string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) != size {
		return nil, fmt.Errorf("config: %s key must be base64 of %d bytes", name, size)
	}
	return key, nil
}

// ParseKeys decodes a comma-separated list of base64 keys of size bytes,
// such as the previous keys of a rotation; "" is none.
func ParseKeys(list string, size int, name string) ([][]byte, error) {
	var keys [][]byte
	for _, part := range strings.Split(list, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, err := decodeKey(part, size, name)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}
