package emqxconf

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/exgate/exgate/internal/config"
)

// importV4 maps EMQX 4.x's emqx_exproto.conf:
//
//	exproto.server.http.port = 9100
//	exproto.listener.protoname = tcp://0.0.0.0:7993
//	exproto.listener.protoname.connection_handler_url = http://127.0.0.1:9001
//	exproto.listener.protoname.max_connections = 1024000
func importV4(b []byte) (*Result, error) {
	im := newImporter("emqx4")
	kv := map[string]string{}
	var order []string
	s := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = value", n)
		}
		k, v = strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`)
		if _, seen := kv[k]; !seen {
			order = append(order, k)
		}
		kv[k] = v
	}
	// Listeners first: "exproto.listener.<name> = scheme://bind" says the type.
	types := map[string]string{}
	for _, k := range order {
		name, ok := strings.CutPrefix(k, "exproto.listener.")
		if !ok || strings.Contains(name, ".") {
			continue
		}
		u, err := url.Parse(kv[k])
		if err != nil || u.Host == "" {
			im.unmapped(k, kv[k], "expected tcp|ssl|udp|dtls://host:port")
			continue
		}
		typ := u.Scheme
		if l := im.listener(typ, name); l != nil {
			l.Bind = u.Host
			types[name] = typ
		} else {
			im.unmapped(k, kv[k], "unknown listener scheme "+typ)
		}
	}
	handlers := map[string]string{} // listener → handler URL
	for _, k := range order {
		v := kv[k]
		switch {
		case k == "exproto.server.http.port":
			im.x.Server.Bind = "0.0.0.0:" + v
			im.changed(k, v, "kept on all interfaces as EMQX had it; anyone who reaches it can publish anything: consider 127.0.0.1, server.auth_token or ssl_options")
		case strings.HasPrefix(k, "exproto.server.https."):
			im.unmapped(k, v, "exgate serves one adapter port; give it ssl_options under gateway.exproto.server")
		case strings.HasPrefix(k, "exproto.listener."):
			rest := strings.TrimPrefix(k, "exproto.listener.")
			name, field, ok := strings.Cut(rest, ".")
			if !ok {
				continue // the listener itself, done above
			}
			typ, known := types[name]
			if !known {
				im.unmapped(k, v, "a setting of listener "+name+", which is not declared")
				continue
			}
			l := im.listener(typ, name)
			im.v4Listener(l, typ, name, field, k, v, handlers)
		default:
			im.unmapped(k, v, "no exgate equivalent")
		}
	}
	// One handler for all listeners becomes the gateway's; otherwise each
	// listener gets its own, as EMQX 4 had.
	distinct := map[string]bool{}
	for _, h := range handlers {
		distinct[h] = true
	}
	if len(distinct) == 1 {
		for h := range distinct {
			im.x.Handler.Address = config.Addresses{h}
		}
	} else {
		names := make([]string, 0, len(handlers))
		for n := range handlers {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			im.listener(types[n], n).Handler = &config.Handler{Address: config.Addresses{handlers[n]}}
		}
	}
	if len(distinct) > 0 {
		im.x.Handler.ServiceName = "ConnectionHandler"
		im.changed("exproto.listener.*.connection_handler_url", "", "EMQX 4 called the streaming ConnectionHandler service: service_name ConnectionHandler, one stream per event")
	}
	im.finish()
	return im.r, nil
}

// v4Listener maps one exproto.listener.<name>.<field> setting.
func (im *importer) v4Listener(l *config.Listener, typ, name, field, key, v string, handlers map[string]string) {
	// EMQX 4 names that differ from EMQX 5's.
	rename := map[string]string{
		"connection_handler_url": "", "access": "", "rate_limit": "",
		"keyfile": "ssl_options.keyfile", "certfile": "ssl_options.certfile", "cacertfile": "ssl_options.cacertfile",
		"verify": "ssl_options.verify", "fail_if_no_peer_cert": "ssl_options.fail_if_no_peer_cert",
		"tls_versions": "ssl_options.versions", "dtls_versions": "ssl_options.versions", "ciphers": "ssl_options.ciphers",
		"nodelay": "tcp_options.nodelay", "backlog": "tcp_options.backlog", "send_timeout": "tcp_options.send_timeout",
		"send_timeout_close": "tcp_options.send_timeout_close", "recbuf": "tcp_options.recbuf", "sndbuf": "tcp_options.sndbuf",
		"buffer": "tcp_options.buffer", "reuseaddr": "tcp_options.reuseaddr", "tune_buffer": "tcp_options.tune_buffer",
		"high_watermark": "tcp_options.high_watermark", "active_n": "tcp_options.active_n",
	}
	f := field
	if r, ok := rename[strings.SplitN(field, ".", 2)[0]]; ok {
		f = r
	}
	switch {
	case field == "connection_handler_url":
		handlers[name] = v
	case strings.HasPrefix(field, "access."):
		l.AccessRules = append(l.AccessRules, v)
	case field == "rate_limit":
		im.unmapped(key, v, `EMQX 4's "bytes,burst" form: use bytes_rate: "<n>B/s" on the listener`)
	case f == "":
		im.unmapped(key, v, "no exgate equivalent")
	default:
		if strings.HasPrefix(f, "ssl_options.") && typ == "dtls" {
			f = "dtls_options." + strings.TrimPrefix(f, "ssl_options.")
		}
		if strings.HasPrefix(f, "tcp_options.") && (typ == "udp" || typ == "dtls") {
			f = "udp_options." + strings.TrimPrefix(f, "tcp_options.")
		}
		im.listenerKey(l, typ, f, key, v)
	}
}
