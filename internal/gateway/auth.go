// Authentication and authorization glue: the chain and rules the gateway
// builds, applied to devices and to the embedded broker's MQTT clients.

package gateway

import (
	"context"
	"fmt"
	"net"

	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/config"
)

// newAuth returns the gateway's authentication chain and authorizer: the
// ones in use when their configuration did not change.
func (g *Gateway) newAuth(x config.ExProto) (*auth.Authenticator, *auth.Authorizer, error) {
	authLog := g.log.With("component", "auth")
	authn, err := g.parts.authn("gateway", x.Authentication, authLog)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway.exproto.%w", err)
	}
	authz, err := g.parts.authz(x.Authorization, authLog)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway.exproto.%w", err)
	}
	return authn, authz, nil
}

// mqttAuthn and mqttAuthz apply the current gateway chain and rules to the
// embedded broker's own MQTT clients.
func (g *Gateway) mqttAuthn(clientID, username, password string, peer net.Addr) bool {
	if _, ok := g.Banned.Banned(clientID, username, peer); ok {
		g.Stats.Banned.Add(1)
		return false
	}
	a := g.gwAuthn.Load()
	if a == nil {
		return true
	}
	_, err := a.Authenticate(context.Background(), auth.Request{ClientID: clientID, Username: username, Password: password, Peer: peer})
	if err != nil {
		if e, banned := g.Banned.Failed(clientID, peer); banned {
			g.log.Warn("client banned after failed authentications", "as", e.As, "who", e.Who, "until", e.Until)
		}
	}
	return err == nil
}

func (g *Gateway) mqttAuthz(clientID, username, topic string, write bool, peer net.Addr) bool {
	// mochi's ACL hook has no context: the HTTP authorizer's own timeout bounds it.
	return g.gwAuthz.Load().Allow(context.Background(), auth.Who{ClientID: clientID, Username: username, Peer: peer}, write, topic)
}
