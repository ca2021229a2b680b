package gateway

import (
	"fmt"

	"github.com/exgate/exgate/internal/channel"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/listener"
)

// Reload applies a new configuration without dropping connected devices:
// limits, access rules, rates, mountpoint, idle_timeout, authentication,
// authorization and the handler address apply to new connections at once;
// connected devices keep what they started with. A listener whose bind or
// TLS settings changed is rebound alone (its TCP devices stay connected; a
// UDP listener's peers start again); a listener removed stops accepting,
// its devices stay. Disabling the gateway (gateway.exproto.enable: false)
// closes every listener and device, as EMQX's does; enabling it opens the
// listeners again. Everything new is built before anything old is touched:
// if any part fails, nothing changes and the error says why. Parts that
// need a restart (node, broker, cluster, api, the adapter server) are kept
// as they were and listed in the result.
func (g *Gateway) Reload(nc *config.Config) (needsRestart []string, err error) {
	if err := nc.Validate(); err != nil {
		return nil, err
	}
	enabled := 0
	nc.Gateway.ExProto.Listeners.Each(func(_, _ string, l *config.Listener) {
		if l.Enabled() {
			enabled++
		}
	})
	if enabled == 0 && nc.Gateway.ExProto.Enabled() {
		return nil, fmt.Errorf("refused: the new configuration has no enabled listener, which would disconnect every device (disable the gateway instead: gateway.exproto.enable: false)")
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
		if !config.Same(part.a, part.b) {
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
		if err != nil || !l.Enabled() || !x.Enabled() {
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
	if old.Gateway.ExProto.Enabled() && !x.Enabled() {
		g.log.Warn("gateway disabled: every listener closed, every device disconnected")
		g.kickAll(channel.ReasonGatewayStopped)
	}
	g.log.Info("configuration reloaded", "gateway_enabled", x.Enabled(), "listeners", len(next), "rebound", len(fresh), "needs_restart", needsRestart)
	return needsRestart, nil
}

// sameSocket reports whether a listener can keep its socket: the same
// bind, TLS/DTLS settings, PROXY protocol and socket options.
func sameSocket(a, b *config.Listener) bool {
	return a.Bind == b.Bind && config.Same(a.SSLOptions, b.SSLOptions) && config.Same(a.DTLSOptions, b.DTLSOptions) &&
		a.ProxyProtocol == b.ProxyProtocol && a.ProxyProtocolTimeout == b.ProxyProtocolTimeout &&
		config.Same(a.TCPOptions, b.TCPOptions) && config.Same(a.UDPOptions, b.UDPOptions)
}
