// Package auth decides who may connect (authentication) and what they may
// publish and subscribe to (authorization), for devices and for the
// embedded broker's MQTT clients alike.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/exgate/exgate/internal/config"
)

// Request is what an authenticator sees.
type Request struct {
	ClientID, Username, Password string
	Peer                         net.Addr
}

// Result is a successful authentication.
type Result struct {
	Superuser bool
	ExpireAt  time.Time // zero: never
}

// Errors of Authenticate.
var (
	ErrBadPassword = errors.New("bad username or password")
	ErrNoUser      = errors.New("not authorized: no authenticator knows this client")
)

// source is one authenticator of a chain: it allows, denies (error), or
// ignores (ok=false) a request, as EMQX's authenticators do.
type source interface {
	authenticate(ctx context.Context, r Request) (res Result, ok bool, err error)
}

// Authenticator is a chain of sources, tried in order; the first that does
// not ignore the request decides, and a request all ignore is refused.
type Authenticator struct {
	chain []source
}

// NewAuthenticator builds the chain; an empty config returns nil, which
// callers treat as "allow everyone".
func NewAuthenticator(cfgs []config.Authenticator) *Authenticator {
	if len(cfgs) == 0 {
		return nil
	}
	a := &Authenticator{}
	for _, c := range cfgs {
		a.chain = append(a.chain, newBuiltin(c))
	}
	return a
}

// Authenticate runs the chain.
func (a *Authenticator) Authenticate(ctx context.Context, r Request) (Result, error) {
	for _, s := range a.chain {
		res, ok, err := s.authenticate(ctx, r)
		if err != nil {
			return Result{}, err
		}
		if ok {
			return res, nil
		}
	}
	return Result{}, ErrNoUser
}

// builtin is the built_in_database backend: users in the configuration.
type builtin struct {
	byClientID bool
	users      map[string]config.User
}

func newBuiltin(c config.Authenticator) *builtin {
	b := &builtin{byClientID: c.UserIDType == "clientid", users: map[string]config.User{}}
	for _, u := range c.Users {
		b.users[u.UserID] = u
	}
	return b
}

func (b *builtin) authenticate(_ context.Context, r Request) (Result, bool, error) {
	id := r.Username
	if b.byClientID {
		id = r.ClientID
	}
	u, found := b.users[id]
	if !found {
		return Result{}, false, nil
	}
	if !checkPassword(u.Password, r.Password) {
		return Result{}, false, ErrBadPassword
	}
	return Result{Superuser: u.IsSuperuser}, true, nil
}

// checkPassword compares in constant time for every stored form
// config.CheckPasswordHash accepts.
func checkPassword(stored, given string) bool {
	switch {
	case strings.HasPrefix(stored, "$2"):
		return bcrypt.CompareHashAndPassword([]byte(stored), []byte(given)) == nil
	case strings.HasPrefix(stored, "sha256:"):
		parts := strings.SplitN(stored, ":", 3)
		sum := sha256.Sum256([]byte(parts[1] + given))
		want, err := hex.DecodeString(parts[2])
		return err == nil && subtle.ConstantTimeCompare(sum[:], want) == 1
	case strings.HasPrefix(stored, "plain:"):
		return subtle.ConstantTimeCompare([]byte(stored[len("plain:"):]), []byte(given)) == 1
	}
	return false
}

// String describes the chain for the startup log.
func (a *Authenticator) String() string {
	if a == nil {
		return "none (every client is allowed)"
	}
	return fmt.Sprintf("%d built-in database(s)", len(a.chain))
}
