// Parts built from configuration, kept by the configuration they came from.

package gateway

import (
	"log/slog"

	"go.yaml.in/yaml/v3"

	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/handler"
)

// parts holds what the gateway builds from configuration (authentication
// chains, authorizers, handler clients) by the configuration they were
// built from. A reload reuses every part whose configuration it leaves
// alone, so an unchanged reload dials and starts nothing; a refused reload
// closes what it built (rollback). Parts a reload replaced stay open for
// the devices that started with them and are closed at shutdown. Used only
// under the gateway's reloadMu, or by New before anything runs.
type parts struct {
	authns   map[string]*auth.Authenticator
	authzs   map[string]*auth.Authorizer
	handlers map[string]*handler.Client
	// fresh undoes, newest first, what the current attempt built.
	fresh []func()
}

func newParts() parts {
	return parts{authns: map[string]*auth.Authenticator{}, authzs: map[string]*auth.Authorizer{}, handlers: map[string]*handler.Client{}}
}

// partKey names a part by where it is used and the YAML it was built from.
func partKey(scope string, v any) string {
	b, _ := yaml.Marshal(v) // plain structs always marshal
	return scope + "\n" + string(b)
}

func (p *parts) authn(scope string, chain []config.Authenticator, log *slog.Logger) (*auth.Authenticator, error) {
	k := partKey(scope, chain)
	if a, ok := p.authns[k]; ok {
		return a, nil
	}
	a, err := auth.NewAuthenticator(chain, log)
	if err != nil {
		return nil, err
	}
	p.authns[k] = a
	p.fresh = append(p.fresh, func() { delete(p.authns, k); a.Close() })
	return a, nil
}

func (p *parts) authz(c config.Authorization, log *slog.Logger) (*auth.Authorizer, error) {
	k := partKey("", c)
	if a, ok := p.authzs[k]; ok {
		return a, nil
	}
	a, err := auth.NewAuthorizer(c, log)
	if err != nil {
		return nil, err
	}
	p.authzs[k] = a
	p.fresh = append(p.fresh, func() { delete(p.authzs, k); a.Close() })
	return a, nil
}

func (p *parts) handler(c config.Handler, make func(config.Handler) (*handler.Client, error)) (*handler.Client, error) {
	k := partKey("", c)
	if h, ok := p.handlers[k]; ok {
		return h, nil
	}
	h, err := make(c)
	if err != nil {
		return nil, err
	}
	p.handlers[k] = h
	p.fresh = append(p.fresh, func() { delete(p.handlers, k); _ = h.Close() })
	return h, nil
}

// commit keeps what the current attempt built.
func (p *parts) commit() { p.fresh = nil }

// rollback closes and forgets what the current attempt built.
func (p *parts) rollback() {
	for i := len(p.fresh) - 1; i >= 0; i-- {
		p.fresh[i]()
	}
	p.fresh = nil
}

// close closes every part (at shutdown): handlers first, so nothing calls
// out any more.
func (p *parts) close() {
	for _, h := range p.handlers {
		_ = h.Close()
	}
	for _, a := range p.authns {
		a.Close()
	}
	for _, a := range p.authzs {
		a.Close()
	}
}
