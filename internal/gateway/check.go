// Check: what `exgate config check` adds to validation, without binding
// or dialling anything.

package gateway

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/exgate/exgate/internal/auth"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/tlsconfig"
)

// Check loads every certificate, key, CA file and PSK file a valid
// configuration names (device listeners, the adapter server, the handler,
// the external broker, cluster peers, HTTP authentication and
// authorization), as starting would, so that a missing or unreadable file
// is found before the start fails. It binds and dials nothing.
func Check(cfg *config.Config) error {
	g := &Gateway{log: slog.New(slog.DiscardHandler)}
	x := cfg.Gateway.ExProto
	var errs []error
	add := func(where string, err error) {
		switch {
		case err == nil:
		case where == "": // the error names its key already
			errs = append(errs, err)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if x.Server.SSLOptions != nil {
		_, err := tlsconfig.Server("gateway.exproto.server.ssl_options", x.Server.SSLOptions)
		add("gateway.exproto.server", err)
	}
	for name, l := range map[string]config.MQTTListener{"ssl": cfg.Broker.Embedded.Listeners.SSL, "ws": cfg.Broker.Embedded.Listeners.WS} {
		if l.Serving() && l.SSLOptions != nil {
			_, err := tlsconfig.Server("broker.embedded.listeners."+name+".ssl_options", l.SSLOptions)
			add("", err)
		}
	}
	client := func(where string, o *config.ClientTLSOptions) {
		if o != nil {
			_, err := tlsconfig.Client(o)
			add(where+".ssl_options", err)
		}
	}
	client("gateway.exproto.handler", x.Handler.SSLOptions)
	client("broker.mqtt", cfg.Broker.MQTT.SSLOptions)
	client("cluster", cfg.Cluster.SSLOptions)
	x.Listeners.Each(func(typ, name string, l *config.Listener) {
		if !l.Enabled() {
			return
		}
		_, err := g.listenerOptions(typ, name, l)
		add("", err)
		if l.Handler != nil {
			client(fmt.Sprintf("gateway.exproto.listeners.%s.%s.handler", typ, name), l.Handler.Over(x.Handler).SSLOptions)
		}
		if len(l.Authentication) > 0 {
			a, err := auth.NewAuthenticator(l.Authentication, nil)
			add(fmt.Sprintf("gateway.exproto.listeners.%s.%s", typ, name), err)
			a.Close()
		}
	})
	a, err := auth.NewAuthenticator(x.Authentication, nil)
	add("gateway.exproto", err)
	a.Close()
	z, err := auth.NewAuthorizer(x.Authorization, nil)
	add("gateway.exproto", err)
	z.Close()
	return errors.Join(errs...)
}
