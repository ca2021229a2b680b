package auth

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/exgate/exgate/internal/config"
)

// builtin is the built_in_database backend: users in the configuration
// and in a users file that is read again when it changes.
type builtin struct {
	byClientID bool
	inline     map[string]config.User
	file       string
	log        *slog.Logger

	// slots bounds the password hashes checked at once: bcrypt costs tens
	// of milliseconds of a core, and a storm of wrong passwords must not
	// starve device traffic.
	slots chan struct{}

	mu       sync.Mutex
	fromFile map[string]config.User
	checked  time.Time // last time the file's stamp was looked at
	stamp    string    // size and mtime of the file last read
}

func newBuiltin(c config.Authenticator, log *slog.Logger) (*builtin, error) {
	b := &builtin{byClientID: c.UserIDType == "clientid", inline: map[string]config.User{}, file: c.UsersFile, log: log,
		slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))}
	for _, u := range c.Users {
		b.inline[u.UserID] = u
	}
	if b.file != "" {
		if err := b.reload(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (b *builtin) close() {}

// reload reads the users file if it changed; called with mu held or at start.
func (b *builtin) reload() error {
	st, err := os.Stat(b.file)
	if err != nil {
		return fmt.Errorf("users_file: %w", err)
	}
	stamp := fmt.Sprintf("%d/%d", st.Size(), st.ModTime().UnixNano())
	if stamp == b.stamp {
		return nil
	}
	users, err := ReadUsersFile(b.file)
	if err != nil {
		return fmt.Errorf("users_file: %w", err)
	}
	m := make(map[string]config.User, len(users))
	for _, u := range users {
		m[u.UserID] = u
	}
	b.fromFile, b.stamp = m, stamp
	return nil
}

func (b *builtin) lookup(id string) (config.User, bool) {
	if u, ok := b.inline[id]; ok {
		return u, true
	}
	if b.file == "" {
		return config.User{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if time.Since(b.checked) > time.Second {
		b.checked = time.Now()
		if err := b.reload(); err != nil {
			b.log.Warn("users file not reloaded; keeping the previous users", "file", b.file, "error", err)
		}
	}
	u, ok := b.fromFile[id]
	return u, ok
}

func (b *builtin) authenticate(ctx context.Context, r Request) (Result, bool, error) {
	id := r.Username
	if b.byClientID {
		id = r.ClientID
	}
	u, found := b.lookup(id)
	stored := u.Password
	if !found {
		// An unknown user costs what a known one does (a hash of the same
		// kind is checked and the answer ignored): the time of an answer
		// must not tell which users exist.
		if stored = b.anyHash(); stored == "" {
			return Result{}, false, nil
		}
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{}, false, fmt.Errorf("password check: %w", context.Cause(ctx))
	}
	ok := CheckPassword(stored, r.Password)
	<-b.slots
	if !found {
		return Result{}, false, nil
	}
	if !ok {
		return Result{}, false, ErrBadPassword
	}
	return Result{Superuser: u.IsSuperuser}, true, nil
}

// anyHash is a stored hash to check an unknown user's password against.
func (b *builtin) anyHash() string {
	for _, u := range b.inline {
		return u.Password
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range b.fromFile {
		return u.Password
	}
	return ""
}

// CheckPassword compares in constant time for every stored form
// config.CheckPasswordHash accepts.
func CheckPassword(stored, given string) bool {
	switch {
	case strings.HasPrefix(stored, "$2"):
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(given)) == nil
	case strings.HasPrefix(stored, "pbkdf2:"):
		p := strings.Split(stored, ":")
		iter, err := strconv.Atoi(p[2])
		want, herr := hex.DecodeString(p[4])
		if err != nil || herr != nil || iter < 1 {
			return false
		}
		h := func() hash.Hash { return sha256.New() }
		if p[1] == "sha512" {
			h = func() hash.Hash { return sha512.New() }
		}
		got, err := pbkdf2.Key(h, given, []byte(p[3]), iter, len(want))
		return err == nil && subtle.ConstantTimeCompare(got, want) == 1
	case strings.HasPrefix(stored, "sha256:"):
		parts := strings.SplitN(stored, ":", 3)
		sum := sha256.Sum256([]byte(parts[1] + given))
		want, err := hex.DecodeString(parts[2])
		return err == nil && subtle.ConstantTimeCompare(sum[:], want) == 1
	}
	return false
}

// HashPassword makes the bcrypt form stored in users files.
func HashPassword(pw string) (string, error) {
	b, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	return string(b), err
}

// usersDoc is the YAML users file.
type usersDoc struct {
	Users []config.User `yaml:"users"`
}

// ReadUsersFile reads a YAML or (by its .csv extension) CSV users file.
func ReadUsersFile(path string) ([]config.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var users []config.User
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
		if err != nil {
			return nil, err
		}
		for i, rec := range recs {
			if i == 0 && len(rec) > 0 && rec[0] == "user_id" {
				continue // header
			}
			if len(rec) < 2 {
				return nil, fmt.Errorf("line %d: expected user_id,password_hash[,is_superuser]", i+1)
			}
			u := config.User{UserID: rec[0], Password: rec[1]}
			if len(rec) > 2 {
				u.IsSuperuser, _ = strconv.ParseBool(rec[2])
			}
			users = append(users, u)
		}
	} else {
		var doc usersDoc
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&doc); err != nil && len(bytes.TrimSpace(b)) > 0 {
			return nil, err
		}
		users = doc.Users
	}
	for _, u := range users {
		if u.UserID == "" {
			return nil, errors.New("a user without user_id")
		}
		if err := config.CheckPasswordHash(u.Password); err != nil {
			return nil, fmt.Errorf("user %q: %w", u.UserID, err)
		}
	}
	return users, nil
}

// WriteUsersFile writes users in the file's format, atomically.
func WriteUsersFile(path string, users []config.User) error {
	var b bytes.Buffer
	if strings.EqualFold(filepath.Ext(path), ".csv") {
		w := csv.NewWriter(&b)
		_ = w.Write([]string{"user_id", "password_hash", "is_superuser"})
		for _, u := range users {
			_ = w.Write([]string{u.UserID, u.Password, strconv.FormatBool(u.IsSuperuser)})
		}
		w.Flush()
	} else {
		out, err := yaml.Marshal(usersDoc{Users: users})
		if err != nil {
			return err
		}
		b.Write(out)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
