package emqxconf

import (
	"bufio"
	"bytes"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/exgate/exgate/internal/config"
)

// importV4 maps EMQX 4.x's emqx_exproto.conf:
//
//	exproto.server.http.port = 9100
//	exproto.listener.protoname = tcp://0.0.0.0:7993
//	exproto.listener.protoname.connection_handler_url = http://127.0.0.1:9001
//	exproto.listener.protoname.max_connections = 1024000
//
// EMQX 4.2 named the handler's keys proto_handler_url, proto_handler_certfile…;
// the plugin's first releases ran handlers inside EMQX (driver = python3 |
// java), which have no gRPC service to call: reported, never guessed.
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
		typ, bind := "tcp", "0.0.0.0:"+kv[k] // a bare port is TCP on all interfaces
		if _, err := strconv.Atoi(kv[k]); err != nil {
			u, err := url.Parse(kv[k])
			if err != nil || u.Host == "" {
				im.unmapped(k, kv[k], "expected tcp|ssl|udp|dtls://host:port")
				continue
			}
			typ, bind = u.Scheme, u.Host
		}
		if l := im.listener(typ, name); l != nil {
			l.Bind = bind
			types[name] = typ
		} else {
			im.unmapped(k, kv[k], "unknown listener scheme "+typ)
		}
	}
	handlers := map[string]*v4Handler{} // by listener
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
	distinct := map[v4Handler]bool{}
	for _, h := range handlers {
		distinct[*h] = true
	}
	names := make([]string, 0, len(handlers))
	for n := range handlers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := handlers[n]
		if h.url == "" {
			im.unmapped("exproto.listener."+n+".connection_handler_url", "", "not given: set handler.address to the listener's ConnectionHandler")
		}
	}
	if len(distinct) == 1 {
		for h := range distinct {
			im.x.Handler.Address, im.x.Handler.SSLOptions = h.config()
		}
	} else {
		for _, n := range names {
			c := &config.Handler{}
			c.Address, c.SSLOptions = handlers[n].config()
			im.listener(types[n], n).Handler = c
		}
	}
	if len(distinct) > 0 {
		im.x.Handler.ServiceName = "ConnectionHandler"
		im.changed("exproto.listener.*.connection_handler_url", "", "EMQX 4 called the streaming ConnectionHandler service: service_name ConnectionHandler, one stream per event")
	}
	im.finish()
	return im.r, nil
}

// v4Handler is what EMQX 4 said of a listener's handler.
type v4Handler struct{ url, certfile, keyfile, cacertfile string }

func (h v4Handler) config() (config.Addresses, *config.ClientTLSOptions) {
	var addr config.Addresses
	if h.url != "" {
		addr = config.Addresses{h.url}
	}
	if h.certfile == "" && h.keyfile == "" && h.cacertfile == "" {
		return addr, nil
	}
	return addr, &config.ClientTLSOptions{Certfile: h.certfile, Keyfile: h.keyfile, Cacertfile: h.cacertfile}
}

// v4Listener maps one exproto.listener.<name>.<field> setting.
func (im *importer) v4Listener(l *config.Listener, typ, name, field, key, v string, handlers map[string]*v4Handler) {
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
	handler := func() *v4Handler {
		if handlers[name] == nil {
			handlers[name] = &v4Handler{}
		}
		return handlers[name]
	}
	if old, ok := strings.CutPrefix(field, "proto_handler_"); ok {
		field = "connection_handler_" + old
		im.changed(key, v, "EMQX 4.2's name: read as connection_handler_"+old)
	}
	switch {
	case field == "connection_handler_url":
		handler().url = v
	case field == "connection_handler_certfile":
		handler().certfile = v
	case field == "connection_handler_keyfile":
		handler().keyfile = v
	case field == "connection_handler_cacertfile":
		handler().cacertfile = v
	case field == "driver" || field == "driver_search_path" || field == "driver_callback_module":
		im.unmapped(key, v, "the plugin's first releases ran the handler inside EMQX (python3/java drivers): exgate calls a gRPC ConnectionHandler; port the handler to it (see docs/handlers.md)")
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
