// Package apikey is the management API's credentials: EMQX-style API keys
// (a key and a secret, sent as HTTP basic auth), kept hashed in a file that
// `exgate api-keys` edits and a running gateway re-reads when it changes.
//
// Secrets are 32 random bytes, so an unsalted SHA-256 is enough to keep
// the file useless to a reader (there is no dictionary to try), and a
// check costs a microsecond, not a bcrypt: the API answers every request.
package apikey

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Key is one API key as stored: never its secret.
type Key struct {
	Name    string
	Key     string
	Hash    string // hex SHA-256 of the secret
	Created time.Time
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Load reads a keys file; a missing file is no keys.
func Load(path string) ([]Key, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	defer f.Close()
	var keys []Key
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 4 {
			return nil, fmt.Errorf("api keys: %s line %d: want \"<key> <sha256 of secret> <name> <created>\"", path, n)
		}
		created, err := time.Parse(time.RFC3339, fs[3])
		if err != nil {
			return nil, fmt.Errorf("api keys: %s line %d: %w", path, n, err)
		}
		keys = append(keys, Key{Key: fs[0], Hash: fs[1], Name: fs[2], Created: created})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	return keys, nil
}

// save writes keys to path atomically, readable only by its owner.
func save(path string, keys []Key) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	var b strings.Builder
	b.WriteString("# exgate API keys: <key> <sha256 of secret> <name> <created>. Edit with `exgate api-keys`.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s %s %s\n", k.Key, k.Hash, k.Name, k.Created.UTC().Format(time.RFC3339))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	return nil
}

// Add creates a key named name in the file at path and returns
// "key:secret", the only time the secret exists in clear.
func Add(path, name string) (string, error) {
	if !nameRE.MatchString(name) {
		return "", fmt.Errorf("api keys: name %q: use 1-64 of A-Z a-z 0-9 _ . -", name)
	}
	keys, err := Load(path)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if k.Name == name {
			return "", fmt.Errorf("api keys: a key named %q exists", name)
		}
	}
	key, secret := "ek_"+random(9), random(32)
	keys = append(keys, Key{Name: name, Key: key, Hash: hash(secret), Created: time.Now()})
	if err := save(path, keys); err != nil {
		return "", err
	}
	return key + ":" + secret, nil
}

// Delete removes the key whose name or key is nameOrKey.
func Delete(path, nameOrKey string) error {
	keys, err := Load(path)
	if err != nil {
		return err
	}
	kept := keys[:0]
	for _, k := range keys {
		if k.Name != nameOrKey && k.Key != nameOrKey {
			kept = append(kept, k)
		}
	}
	if len(kept) == len(keys) {
		return fmt.Errorf("api keys: no key %q", nameOrKey)
	}
	return save(path, kept)
}

// Bootstrap makes sure the file at path has a key. With none, it creates
// one and writes its "key:secret" to path+".bootstrap" (owner-only), which
// it returns; otherwise it returns "".
func Bootstrap(path string) (string, error) {
	keys, err := Load(path)
	if err != nil || len(keys) > 0 {
		return "", err
	}
	cred, err := Add(path, "bootstrap")
	if err != nil {
		return "", err
	}
	bf := BootstrapFile(path)
	if err := os.WriteFile(bf, []byte(cred+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("api keys: %w", err)
	}
	return bf, nil
}

// BootstrapFile is where Bootstrap leaves the first key's credentials.
func BootstrapFile(keysFile string) string { return keysFile + ".bootstrap" }

// ReadCredentials reads "key:secret" from a bootstrap (or any) file.
func ReadCredentials(path string) (key, secret string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	key, secret, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		return "", "", fmt.Errorf("%s: want key:secret", path)
	}
	return key, secret, nil
}

func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return base64.RawURLEncoding.EncodeToString(b)
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Store checks credentials against a keys file, re-reading it when it
// changed (at most once a second). Safe for concurrent use.
type Store struct {
	path string

	mu      sync.Mutex
	keys    []Key
	mod     time.Time
	checked time.Time
}

// NewStore reads the keys file at path.
func NewStore(path string) (*Store, error) {
	s := &Store{path: path}
	if err := s.refresh(time.Now(), true); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) refresh(now time.Time, force bool) error {
	if !force && now.Sub(s.checked) < time.Second {
		return nil
	}
	s.checked = now
	var mod time.Time
	if fi, err := os.Stat(s.path); err == nil {
		mod = fi.ModTime()
	}
	if !force && mod.Equal(s.mod) {
		return nil
	}
	keys, err := Load(s.path)
	if err != nil {
		return err
	}
	s.keys, s.mod = keys, mod
	return nil
}

// Check returns the name of the key that key and secret match, or false.
// A secret is compared in constant time, and a wrong key costs the same.
func (s *Store) Check(key, secret string) (string, bool) {
	s.mu.Lock()
	_ = s.refresh(time.Now(), false) // a broken edit keeps the keys read before
	keys := s.keys
	s.mu.Unlock()
	h := hash(secret)
	name, ok := "", false
	for _, k := range keys {
		kk := subtle.ConstantTimeCompare([]byte(k.Key), []byte(key))
		hh := subtle.ConstantTimeCompare([]byte(k.Hash), []byte(h))
		if kk&hh == 1 {
			name, ok = k.Name, true
		}
	}
	return name, ok
}
