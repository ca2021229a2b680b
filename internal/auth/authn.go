// Package auth decides who may connect (authentication) and what they may
// publish and subscribe to (authorization), for devices and for the
// embedded broker's MQTT clients alike, with EMQX's contracts so existing
// auth services keep working. Passwords are never logged or kept.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// Request is what an authenticator sees.
type Request struct {
	ClientID, Username, Password string
	ProtoName                    string
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
	close()
}

// Authenticator is a chain of sources, tried in order; the first that does
// not ignore the request decides, and a request all ignore is refused.
type Authenticator struct {
	chain []source
}

// NewAuthenticator builds the chain; an empty config returns nil, which
// callers treat as "allow everyone".
func NewAuthenticator(cfgs []config.Authenticator, log *slog.Logger) (*Authenticator, error) {
	if len(cfgs) == 0 {
		return nil, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{}
	for i, c := range cfgs {
		var s source
		var err error
		switch {
		case c.Mechanism == "jwt":
			s, err = newJWT(c)
		case c.Backend == "http":
			s, err = newHTTPAuth(c, log)
		default:
			s, err = newBuiltin(c, log)
		}
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("authentication[%d]: %w", i, err)
		}
		a.chain = append(a.chain, s)
	}
	return a, nil
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

// Close releases idle connections of HTTP authenticators.
func (a *Authenticator) Close() {
	if a == nil {
		return
	}
	for _, s := range a.chain {
		s.close()
	}
}

// String describes the chain for the startup log.
func (a *Authenticator) String() string {
	if a == nil {
		return "none (every client is allowed)"
	}
	return fmt.Sprintf("%d authenticator(s)", len(a.chain))
}
