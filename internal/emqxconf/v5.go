package emqxconf

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/exgate/exgate/internal/config"
)

// importer accumulates one import.
type importer struct {
	r *Result
	c *config.Config
	x *config.ExProto
	// disabled are TLS blocks with enable = false, dropped at the end
	// (their other keys may come after "enable").
	disabled []func()
	// offAuth are authenticators EMQX had with enable = false, by chain:
	// dropped at the end, so they never become active.
	offAuth map[*[]config.Authenticator][]int
}

func newImporter(format string) *importer {
	c := config.Default()
	c.Gateway.ExProto.Listeners = config.Listeners{}
	return &importer{r: &Result{Config: c, Format: format}, c: c, x: &c.Gateway.ExProto}
}

func (im *importer) unmapped(key string, val any, why string) {
	im.r.Unmapped = append(im.r.Unmapped, Note{key, str(val), why})
}

func (im *importer) changed(key string, val any, why string) {
	im.r.Changed = append(im.r.Changed, Note{key, str(val), why})
}

// setBool, setDuration, setInt and setSize store a parsed value, or report
// why it could not be read; infinity leaves the target at "no limit".
func (im *importer) setBool(full string, v any, dst *bool) {
	if b, err := boolean(v); err != nil {
		im.bad(full, v, err)
	} else {
		*dst = b
	}
}

func (im *importer) setBoolPtr(full string, v any, dst **bool) {
	if b, err := boolean(v); err != nil {
		im.bad(full, v, err)
	} else {
		*dst = ptr(b)
	}
}

func (im *importer) setDuration(full string, v any, dst *time.Duration) {
	if d, inf, err := duration(v); err != nil {
		im.bad(full, v, err)
	} else if !inf {
		*dst = d
	}
}

func (im *importer) setInt(full string, v any, dst *int) {
	if n, inf, err := integer(v); err != nil {
		im.bad(full, v, err)
	} else if !inf {
		*dst = n
	}
}

func (im *importer) setSize(full string, v any, dst *config.Size) {
	if n, err := size(v); err != nil {
		im.bad(full, v, err)
	} else {
		*dst = n
	}
}

// bad reports a value exgate could not read.
func (im *importer) bad(key string, val any, err error) {
	im.unmapped(key, val, "could not read the value: "+err.Error())
}

func (im *importer) listener(typ, name string) *config.Listener {
	ls := &im.x.Listeners
	var m *map[string]*config.Listener
	switch typ {
	case "tcp":
		m = &ls.TCP
	case "ssl":
		m = &ls.SSL
	case "udp":
		m = &ls.UDP
	case "dtls":
		m = &ls.DTLS
	default:
		return nil
	}
	if *m == nil {
		*m = map[string]*config.Listener{}
	}
	if (*m)[name] == nil {
		(*m)[name] = &config.Listener{}
	}
	return (*m)[name]
}

func importV5(root any) (*Result, error) {
	im := newImporter("emqx5")
	if top, ok := root.(map[string]any); ok {
		if gw, ok := top["gateway"].(map[string]any); ok {
			if x, ok := gw["exproto"].(map[string]any); ok {
				im.pre50(x)
			}
		}
	}
	var leaves []leaf
	flatten("", root, &leaves)
	found := false
	for _, lf := range leaves {
		rest, ok := strings.CutPrefix(lf.key, "gateway.exproto.")
		if !ok {
			if top := strings.SplitN(lf.key, ".", 2)[0]; top != "gateway" {
				im.unmapped(lf.key, lf.val, whyOutside)
			} else {
				im.unmapped(lf.key, lf.val, whyOtherGateway)
			}
			continue
		}
		found = true
		im.v5(rest, lf.key, lf.val)
	}
	if !found {
		return nil, fmt.Errorf("no gateway.exproto block found")
	}
	im.finish()
	return im.r, nil
}

// pre50 rewrites the layout of EMQX 5.0's pre-releases (its
// emqx_gateway.conf) into the released one, noting each rewrite:
// listener.<type>.<name> is listeners.<type>.<name>, server.ssl and
// handler.ssl are ssl_options, and authentication {enable, authenticators:
// [...]} is the list of authenticators, or none when enable is false.
func (im *importer) pre50(x map[string]any) {
	const at = "gateway.exproto."
	if old, ok := x["listener"].(map[string]any); ok {
		delete(x, "listener")
		ls, _ := x["listeners"].(map[string]any)
		if ls == nil {
			ls = map[string]any{}
			x["listeners"] = ls
		}
		for _, typ := range sortedKeys(old) {
			names, _ := old[typ].(map[string]any)
			byName, _ := ls[typ].(map[string]any)
			if byName == nil {
				byName = map[string]any{}
				ls[typ] = byName
			}
			for _, name := range sortedKeys(names) {
				if _, taken := byName[name]; taken {
					im.unmapped(at+"listener."+typ+"."+name, "", "listeners."+typ+"."+name+" is given too: kept that one")
					continue
				}
				byName[name] = names[name]
				im.changed(at+"listener."+typ+"."+name, "", "EMQX 5.0 pre-release layout: read as listeners."+typ+"."+name)
			}
		}
	}
	for _, part := range []string{"server", "handler"} {
		m, _ := x[part].(map[string]any)
		if s, ok := m["ssl"]; ok {
			if _, both := m["ssl_options"]; !both {
				m["ssl_options"] = s
				delete(m, "ssl")
				im.changed(at+part+".ssl", "", "EMQX 5.0 pre-release layout: read as "+part+".ssl_options")
			}
		}
	}
	im.pre50Auth(x, at)
	if ls, ok := x["listeners"].(map[string]any); ok {
		for typ, names := range ls {
			if byName, ok := names.(map[string]any); ok {
				for name, l := range byName {
					if lm, ok := l.(map[string]any); ok {
						im.pre50Auth(lm, at+"listeners."+typ+"."+name+".")
					}
				}
			}
		}
	}
}

// pre50Auth rewrites a pre-release authentication block of holder.
func (im *importer) pre50Auth(holder map[string]any, at string) {
	a, ok := holder["authentication"].(map[string]any)
	if !ok {
		return
	}
	list, hasList := a["authenticators"]
	if on, ok := a["enable"]; ok && (hasList || len(a) == 1) {
		if b, _ := boolean(on); !b {
			delete(holder, "authentication")
			im.changed(at+"authentication.enable", on, "authentication was off in EMQX: none imported")
			return
		}
	}
	if hasList {
		holder["authentication"] = list
		im.changed(at+"authentication.authenticators", "", "EMQX 5.0 pre-release layout: read as the authentication list")
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// v5 maps one key under gateway.exproto.
func (im *importer) v5(key, full string, v any) {
	x := im.x
	p := strings.Split(key, ".")
	switch {
	case key == "server.bind":
		x.Server.Bind = str(v)
		if !strings.HasPrefix(x.Server.Bind, "127.") && !strings.HasPrefix(x.Server.Bind, "localhost") {
			im.changed(full, v, "kept, but anyone who reaches the adapter can publish anything: exgate binds 127.0.0.1 by default; consider it, or server.auth_token / ssl_options")
		}
	case p[0] == "server" && len(p) == 3 && p[1] == "ssl_options":
		if x.Server.SSLOptions == nil {
			x.Server.SSLOptions = &config.TLSOptions{}
		}
		im.tlsOption(x.Server.SSLOptions, p[2], full, v, &x.Server.SSLOptions)
	case key == "handler.address":
		x.Handler.Address = config.Addresses(strList(v))
	case key == "handler.service_name":
		x.Handler.ServiceName = str(v)
	case p[0] == "handler" && len(p) == 3 && p[1] == "ssl_options":
		im.clientTLSOption(&x.Handler.SSLOptions, p[2], full, v)
	case key == "idle_timeout":
		d, inf, err := duration(v)
		switch {
		case err != nil:
			im.bad(full, v, err)
		case inf:
			x.IdleTimeout = 365 * 24 * time.Hour
			im.changed(full, v, "exgate needs a finite idle_timeout: set to 8760h")
		default:
			x.IdleTimeout = d
		}
	case key == "mountpoint":
		x.Mountpoint = str(v)
	case key == "enable":
		if b, _ := boolean(v); !b {
			x.Enable = &b
			im.changed(full, v, "the gateway was disabled in EMQX: kept disabled (gateway.exproto.enable: false); no device listener opens until it is true")
		}
	case key == "enable_stats":
		im.unmapped(full, v, "exgate always keeps statistics")
	case p[0] == "authentication":
		im.authentication(&x.Authentication, strings.TrimPrefix(key, "authentication"), full, v)
	case p[0] == "listeners" && len(p) >= 4:
		l := im.listener(p[1], p[2])
		if l == nil {
			im.unmapped(full, v, "unknown listener type "+p[1])
			return
		}
		im.listenerKey(l, p[1], strings.Join(p[3:], "."), full, v)
	default:
		im.unmapped(full, v, "no exgate equivalent")
	}
}

// listenerKey maps one key of a listener (EMQX 5 names).
func (im *importer) listenerKey(l *config.Listener, typ, key, full string, v any) {
	p := strings.Split(key, ".")
	switch {
	case key == "bind":
		l.Bind = str(v)
	case key == "enable":
		im.setBoolPtr(full, v, &l.Enable)
	case key == "max_connections":
		im.setInt(full, v, &l.MaxConnections)
	case key == "max_conn_rate":
		var n int // infinity: no limit
		im.setInt(full, strings.TrimSuffix(str(v), "/s"), &n)
		l.MaxConnRate = &n
	case key == "access_rules":
		l.AccessRules = strList(v)
	case key == "proxy_protocol":
		im.setBool(full, v, &l.ProxyProtocol)
	case key == "proxy_protocol_timeout":
		im.setDuration(full, v, &l.ProxyProtocolTimeout)
	case key == "idle_timeout":
		im.setDuration(full, v, &l.IdleTimeout)
	case key == "mountpoint":
		l.Mountpoint = ptr(str(v))
	case key == "enable_authn":
		im.setBoolPtr(full, v, &l.EnableAuthn)
	case key == "acceptors" || key == "zone" || key == "limiter" || strings.HasPrefix(key, "limiter."):
		im.unmapped(full, v, "not needed: Go accepts on one goroutine per listener; use bytes_rate/messages_rate for limits")
	case p[0] == "tcp_options" && len(p) == 2:
		if l.TCPOptions == nil {
			l.TCPOptions = &config.TCPOptions{}
		}
		o := l.TCPOptions
		switch p[1] {
		case "nodelay":
			im.setBoolPtr(full, v, &o.Nodelay)
		case "backlog":
			im.setInt(full, v, &o.Backlog)
		case "send_timeout":
			im.setDuration(full, v, &o.SendTimeout)
		case "recbuf":
			im.setSize(full, v, &o.Recbuf)
		case "sndbuf":
			im.setSize(full, v, &o.Sndbuf)
		case "keepalive":
			o.Keepalive = str(v)
		case "send_timeout_close":
			im.unmapped(full, v, "exgate always closes a connection whose send times out")
		default:
			im.unmapped(full, v, "an Erlang socket option with no Go equivalent")
		}
	case p[0] == "udp_options" && len(p) == 2:
		if l.UDPOptions == nil {
			l.UDPOptions = &config.UDPOptions{}
		}
		switch p[1] {
		case "recbuf":
			im.setSize(full, v, &l.UDPOptions.Recbuf)
		case "sndbuf":
			im.setSize(full, v, &l.UDPOptions.Sndbuf)
		default:
			im.unmapped(full, v, "an Erlang socket option with no Go equivalent")
		}
	case (p[0] == "ssl_options" || p[0] == "dtls_options") && len(p) == 2:
		target := &l.SSLOptions
		if p[0] == "dtls_options" {
			target = &l.DTLSOptions
		}
		if *target == nil {
			*target = &config.TLSOptions{}
		}
		im.tlsOption(*target, p[1], full, v, target)
	case p[0] == "authentication":
		im.authentication(&l.Authentication, strings.TrimPrefix(key, "authentication"), full, v)
	default:
		im.unmapped(full, v, "no exgate equivalent")
	}
}

// tlsOption maps one ssl_options/dtls_options key; enable = false drops
// the whole block (where it is optional, the adapter's).
// tlsFiles maps the keys server and client TLS options share; it reports
// whether key was one of them.
func tlsFiles(key string, v any, ca, cert, keyf, verify *string) bool {
	dst := map[string]*string{"cacertfile": ca, "certfile": cert, "keyfile": keyf, "verify": verify}[key]
	if dst == nil {
		return false
	}
	*dst = str(v)
	return true
}

func (im *importer) tlsOption(o *config.TLSOptions, key, full string, v any, holder **config.TLSOptions) {
	if tlsFiles(key, v, &o.Cacertfile, &o.Certfile, &o.Keyfile, &o.Verify) {
		return
	}
	switch key {
	case "fail_if_no_peer_cert":
		im.setBool(full, v, &o.FailIfNoPeerCert)
	case "versions", "tls_versions", "dtls_versions":
		for _, ver := range strList(v) {
			switch ver {
			case "tlsv1.2", "tlsv1.3", "dtlsv1.2":
				o.Versions = append(o.Versions, ver)
			default:
				im.changed(full, ver, "dropped: exgate supports TLS 1.2/1.3 and DTLS 1.2 only")
			}
		}
	case "ciphers":
		o.Ciphers = strList(v)
		if len(o.Ciphers) > 0 && !strings.HasPrefix(o.Ciphers[0], "TLS_") {
			im.changed(full, v, "EMQX uses OpenSSL cipher names; exgate takes IANA names (TLS_ECDHE_…): ciphers dropped, Go's secure defaults apply")
			o.Ciphers = nil
		}
	case "enable":
		if b, _ := boolean(v); !b {
			im.r.Changed = append(im.r.Changed, Note{full, str(v), "TLS disabled here: the block is ignored"})
			im.disabled = append(im.disabled, func() { *holder = nil })
		}
	default:
		im.unmapped(full, v, "a TLS option exgate does not offer")
	}
}

func (im *importer) clientTLSOption(holder **config.ClientTLSOptions, key, full string, v any) {
	if *holder == nil {
		*holder = &config.ClientTLSOptions{}
	}
	o := *holder
	if tlsFiles(key, v, &o.Cacertfile, &o.Certfile, &o.Keyfile, &o.Verify) {
		return
	}
	switch key {
	case "enable":
		if b, _ := boolean(v); !b {
			im.disabled = append(im.disabled, func() { *holder = nil })
		}
	case "server_name_indication":
		if s := str(v); s != "disable" {
			o.ServerNameIndication = s
		}
	default:
		im.unmapped(full, v, "a TLS option exgate does not offer")
	}
}

// authentication maps EMQX's authentication value: one object, or a list
// (key is what follows "authentication": "" for the whole value at a leaf,
// or ".field" when flatten went into an object).
func (im *importer) authentication(chain *[]config.Authenticator, key, full string, v any) {
	if key == "" {
		// A list of authenticators arrives whole.
		list, ok := v.([]any)
		if !ok {
			im.unmapped(full, v, "expected an object or a list")
			return
		}
		for i, item := range list {
			m, ok := item.(map[string]any)
			if !ok {
				im.unmapped(fmt.Sprintf("%s[%d]", full, i), item, "expected an object")
				continue
			}
			*chain = append(*chain, config.Authenticator{})
			if on, ok := m["enable"]; ok {
				if b, _ := boolean(on); !b {
					im.dropAuth(chain, len(*chain)-1)
				}
			}
			var leaves []leaf
			flatten("", m, &leaves)
			for _, lf := range leaves {
				im.authField(&(*chain)[len(*chain)-1], lf.key, fmt.Sprintf("%s[%d].%s", full, i, lf.key), lf.val)
			}
		}
		return
	}
	// A single object, flattened: its fields arrive one by one.
	if len(*chain) == 0 {
		*chain = append(*chain, config.Authenticator{})
	}
	if strings.TrimPrefix(key, ".") == "enable" {
		if b, _ := boolean(v); !b {
			im.dropAuth(chain, 0)
		}
	}
	im.authField(&(*chain)[0], strings.TrimPrefix(key, "."), full, v)
}

func (im *importer) authField(a *config.Authenticator, key, full string, v any) {
	p := strings.Split(key, ".")
	switch {
	case key == "mechanism":
		a.Mechanism = strings.ReplaceAll(str(v), "-", "_") // pre-5.0: password-based
	case key == "backend" || key == "server_type": // server_type: pre-5.0
		a.Backend = strings.ReplaceAll(str(v), "-", "_")
		if a.Backend == "built_in_database" {
			im.changed(full, v, "EMQX kept these users in its own database: export them and add them with `exgate users add` to the users_file")
			a.UsersFile = "users.yaml"
		} else if a.Backend != "http" {
			im.unmapped(full, v, "exgate's password_based backends are built_in_database and http")
		}
	case key == "method":
		a.Method = strings.ToLower(str(v))
	case key == "url":
		a.URL = str(v)
	case p[0] == "headers" && len(p) == 2:
		if a.Headers == nil {
			a.Headers = map[string]string{}
		}
		a.Headers[p[1]] = str(v)
	case p[0] == "body" && len(p) == 2:
		if a.Body == nil {
			a.Body = map[string]string{}
		}
		a.Body[p[1]] = str(v)
	case key == "request_timeout":
		im.setDuration(full, v, &a.RequestTimeout)
	case key == "pool_size":
		im.setInt(full, v, &a.PoolSize)
	case p[0] == "ssl" && len(p) == 2:
		im.clientTLSOption(&a.SSLOptions, p[1], full, v)
	case key == "user_id_type":
		a.UserIDType = str(v)
	case key == "algorithm":
		a.Algorithm = str(v)
	case key == "secret":
		a.Secret = str(v)
	case key == "secret_base64_encoded":
		a.SecretBase64Encoded, _ = boolean(v)
	case p[0] == "verify_claims" && len(p) == 2:
		if a.VerifyClaims == nil {
			a.VerifyClaims = map[string]string{}
		}
		a.VerifyClaims[p[1]] = str(v)
	case key == "enable":
		if b, _ := boolean(v); !b {
			im.changed(full, v, "this authenticator was disabled in EMQX: not imported")
		}
	case key == "name":
		im.unmapped(full, v, "a label (EMQX 5.0 pre-release); exgate's authenticators have none")
	case key == "from":
		if s := str(v); s != "password" {
			im.unmapped(full, v, "exgate reads JWTs from the password only")
		}
	default:
		im.unmapped(full, v, "an authenticator setting exgate does not offer")
	}
}

// dropAuth marks authenticator i of chain as disabled in EMQX: finish
// drops it, so it never becomes active.
func (im *importer) dropAuth(chain *[]config.Authenticator, i int) {
	if im.offAuth == nil {
		im.offAuth = map[*[]config.Authenticator][]int{}
	}
	if !slices.Contains(im.offAuth[chain], i) {
		im.offAuth[chain] = append(im.offAuth[chain], i)
	}
}

// finish fills what EMQX leaves to defaults and drops disabled TLS blocks
// and authenticators.
func (im *importer) finish() {
	for _, drop := range im.disabled {
		drop()
	}
	if o := im.x.Server.SSLOptions; o != nil && o.Certfile == "" && o.Keyfile == "" {
		// EMQX's shipped gateway.exproto.conf.example has ssl_options
		// {verify = verify_none} alone: a config check would refuse it.
		im.x.Server.SSLOptions = nil
		im.changed("gateway.exproto.server.ssl_options", "", "no certfile or keyfile, and TLS needs a certificate: imported WITHOUT TLS on the adapter; give certfile and keyfile to serve TLS, or set server.auth_token")
	}
	for chain, off := range im.offAuth {
		slices.Sort(off)
		for k := len(off) - 1; k >= 0; k-- {
			*chain = slices.Delete(*chain, off[k], off[k]+1)
		}
		if len(*chain) == 0 {
			*chain = nil
		}
	}
	im.x.Listeners.Each(func(typ, name string, l *config.Listener) {
		if l.Bind == "" {
			l.Bind = map[string]string{"tcp": "0.0.0.0:7993", "ssl": "0.0.0.0:7993", "udp": "0.0.0.0:7993", "dtls": "0.0.0.0:7993"}[typ]
			im.changed("gateway.exproto.listeners."+typ+"."+name+".bind", "", "no bind given: 0.0.0.0:7993")
		}
	})
}
