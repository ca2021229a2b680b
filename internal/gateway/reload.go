package gateway

import (
	"bytes"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/listener"
)

// Reload applies a new configuration without dropping connected devices:
// limits, access rules, rates, mountpoint, idle_timeout, authentication,
// authorization and the handler address apply to new connections at once;
// connected devices keep what they started with. A listener whose bind or
// TLS settings changed is rebound alone (its TCP devices stay connected; a
// UDP listener's peers start again). Everything new is built before
// anything old is touched: if any part fails, nothing changes and the error
// says why. Parts that need a restart (node, broker, cluster, api, the
// adapter server) are kept as they were and listed in the result.
func (g *Gateway) Reload(nc *config.Config) (needsRestart []string, err error) {
	if err := nc.Validate(); err != nil {
		return nil, err
	}
	if nc.Gateway.ExProto.Enabled() != g.Enabled() {
		return nil, fmt.Errorf("refused: gateway.exproto.enable changed; enabling or disabling the gateway needs a restart")
	}
	if !nc.Gateway.ExProto.Enabled() {
		return nil, fmt.Errorf("refused: the gateway is disabled (gateway.exproto.enable: false); enable it and restart")
	}
	enabled := 0
	nc.Gateway.ExProto.Listeners.Each(func(_, _ string, l *config.Listener) {
		if l.Enabled() {
			enabled++
		}
	})
	if enabled == 0 {
		return nil, fmt.Errorf("refused: the new configuration has no enabled listener, which would disconnect every device (stop exgate instead)")
	}
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	g.mu.RLock()
	old := g.cfg
	current := append([]*deviceListener(nil), g.listeners...)
	g.mu.RUnlock()

	for _, part := range []struct {
		name string
		a, b any
	}{{"node", old.Node, nc.Node}, {"log", old.Log, nc.Log}, {"broker", old.Broker, nc.Broker}, {"cluster", old.Cluster, nc.Cluster},
		{"api", old.API, nc.API}, {"gateway.exproto.server", old.Gateway.ExProto.Server, nc.Gateway.ExProto.Server}} {
		if !same(part.a, part.b) {
			needsRestart = append(needsRestart, part.name)
		}
	}
	// Keep what needs a restart as it runs.
	merged := *nc
	merged.Node, merged.Log, merged.Broker, merged.Cluster, merged.API = old.Node, old.Log, old.Broker, old.Cluster, old.API
	merged.Gateway.ExProto.Server = old.Gateway.ExProto.Server
	nc = &merged
	x := nc.Gateway.ExProto

	// Build: the gateway's chain and rules, the handler, every listener's
	// new config and any new socket. Nothing old is touched yet.
	// Parts whose configuration did not change are the running ones.
	authn, authz, err := g.newAuth(x)
	if err != nil {
		g.parts.rollback()
		return nil, err
	}
	h, err := g.parts.handler(x.Handler, g.newHandler)
	if err != nil {
		g.parts.rollback()
		return nil, err
	}
	type step struct {
		keep  *deviceListener // updated in place, with opts and conf
		opts  listener.Options
		conf  *config.Listener
		fresh *deviceListener // bound anew
	}
	var steps []step
	var fresh []*deviceListener
	undo := func() {
		for _, l := range fresh {
			_ = l.Close()
		}
		g.parts.rollback()
	}
	byName := map[string]*deviceListener{}
	for _, l := range current {
		byName[l.typ+":"+l.name] = l
	}
	x.Listeners.Each(func(typ, name string, l *config.Listener) {
		if err != nil || !l.Enabled() {
			return
		}
		prev := byName[typ+":"+name]
		if prev != nil && sameSocket(prev.conf, l) {
			var o listener.Options
			if o, err = g.listenerOptions(typ, name, l); err != nil {
				return
			}
			steps = append(steps, step{keep: prev, opts: o, conf: l})
			return
		}
		var dl *deviceListener
		if dl, err = g.listen(nc, typ, name, l, authn, authz, h); err != nil {
			return
		}
		fresh = append(fresh, dl)
		steps = append(steps, step{fresh: dl})
	})
	if err != nil {
		undo()
		return nil, fmt.Errorf("reload refused, nothing changed: %w", err)
	}
	configs := make(map[*deviceListener]*channel.Config, len(steps))
	for _, s := range steps {
		if s.keep == nil {
			continue
		}
		cc, cerr := g.deviceConfig(nc, s.opts.Kind, s.keep.name, s.conf, authn, authz, h)
		if cerr != nil {
			undo()
			return nil, fmt.Errorf("reload refused, nothing changed: %w", cerr)
		}
		configs[s.keep] = cc
	}

	// Commit.
	g.parts.commit()
	var next, retired []*deviceListener
	kept := map[*deviceListener]bool{}
	for _, s := range steps {
		if s.keep != nil {
			s.keep.Update(s.opts)
			s.keep.ch.Store(configs[s.keep])
			s.keep.conf = s.conf
			kept[s.keep] = true
			next = append(next, s.keep)
		} else {
			next = append(next, s.fresh)
		}
	}
	for _, l := range current {
		if !kept[l] {
			_ = l.Close() // its connections go on; a replacement may be bound already
			retired = append(retired, l)
		}
	}
	g.mu.Lock()
	g.cfg = nc
	g.listeners = next
	g.retired = append(g.retired, retired...)
	g.handler = h
	g.mu.Unlock()
	g.gwAuthn.Store(authn)
	g.gwAuthz.Store(authz)
	for _, l := range fresh {
		g.serve(l)
	}
	g.log.Info("configuration reloaded", "listeners", len(next), "rebound", len(fresh), "needs_restart", needsRestart)
	return needsRestart, nil
}

// same compares two configuration parts by their YAML.
func same(a, b any) bool {
	ya, erra := yaml.Marshal(a)
	yb, errb := yaml.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ya, yb)
}

// sameSocket reports whether a listener can keep its socket: the same
// bind, TLS/DTLS settings, PROXY protocol and socket options.
func sameSocket(a, b *config.Listener) bool {
	return a.Bind == b.Bind && same(a.SSLOptions, b.SSLOptions) && same(a.DTLSOptions, b.DTLSOptions) &&
		a.ProxyProtocol == b.ProxyProtocol && a.ProxyProtocolTimeout == b.ProxyProtocolTimeout &&
		same(a.TCPOptions, b.TCPOptions) && same(a.UDPOptions, b.UDPOptions)
}
