package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// expiryMargin is how long before its expiry an access token is refreshed
// rather than sent: a request must not arrive with a token that expired on
// the way.
const expiryMargin = 10 * time.Second

// File is what the session file holds: one session per control plane,
// keyed by its URL, so a token is only ever sent to the control plane that
// issued it.
type File struct {
	// Current is the control plane of the last login, used when neither
	// --url nor TENANTCTL_URL names one.
	Current  string              `json:"current,omitempty"`
	Sessions map[string]*Session `json:"sessions"`
}

// Session is one login.
type Session struct {
	Email        string    `json:"email"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	ExpiresAt    time.Time `json:"expires_at"`
}

func newSession(email string, tok Tokens) *Session {
	return &Session{
		Email: email, AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken,
		ExpiresAt: time.Now().Add(time.Duration(tok.ExpiresIn) * time.Second).UTC(),
	}
}

func (s *Session) expiring() bool { return time.Until(s.ExpiresAt) < expiryMargin }

// Store is the session file. It holds bearer credentials: it is written
// with mode 0600 in a directory of mode 0700, replaced atomically, and
// changed only under an exclusive lock on that directory.
type Store struct {
	Path string
}

// DefaultPath is session.json in $XDG_CONFIG_HOME/tenantctl, or in
// ~/.config/tenantctl when XDG_CONFIG_HOME is unset or not absolute (the
// XDG rule).
func DefaultPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no place for the session file: set XDG_CONFIG_HOME or HOME (%w)", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "tenantctl", "session.json"), nil
}

// Load reads the file; a missing one holds no session.
func (s *Store) Load() (*File, error) {
	f := &File{}
	b, err := os.ReadFile(s.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, f); err != nil {
			return nil, fmt.Errorf("the session file %s is unreadable (%w); remove it and log in again", s.Path, err)
		}
	}
	if f.Sessions == nil {
		f.Sessions = map[string]*Session{}
	}
	return f, nil
}

// Session is the session with the control plane at baseURL.
func (s *Store) Session(baseURL string) (*Session, error) {
	f, err := s.Load()
	if err != nil {
		return nil, err
	}
	sess := f.Sessions[baseURL]
	if sess == nil {
		return nil, notLoggedIn(baseURL)
	}
	return sess, nil
}

// Update changes the file under the lock: fn gets what the file holds now
// and the file is replaced with what fn leaves, unless fn fails. A file
// left without sessions is removed.
func (s *Store) Update(fn func(*File) error) error {
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("lock %s: %w", dir, err)
	}
	defer unlock()
	f, err := s.Load()
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		return err
	}
	if len(f.Sessions) == 0 {
		if err := os.Remove(s.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	return s.write(f)
}

func (s *Store) write(f *File) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	// CreateTemp makes the file with mode 0600 before anything is written.
	tmp, err := os.CreateTemp(filepath.Dir(s.Path), ".session-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.Path)
}
