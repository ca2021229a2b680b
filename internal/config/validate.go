// Validation: every key checked with its path, all problems reported at once.

package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Validate checks values and cross-field rules, naming the culprit key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	if c.Node.Name == "" {
		bad("node.name", "must not be empty")
	}
	if c.Node.GCPercent < 0 {
		bad("node.gc_percent", "must not be negative (0 means Go's default, 100)")
	}
	if c.Node.GCMinHeap < 0 {
		bad("node.gc_min_heap", "must not be negative (0 turns the floor off)")
	}
	if c.Node.MemoryLimit < 0 {
		bad("node.memory_limit", "must not be negative")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "warning", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if c.API.Enabled() {
		if err := checkBind(c.API.Bind); err != nil {
			bad("api.bind", "%v", err)
		}
		if (c.API.Username == "") != (c.API.Password == "") {
			bad("api", "username and password go together")
		}
		switch c.API.Auth {
		case "", "api_key":
		case "none":
			if !Loopback(c.API.Bind) {
				bad("api.auth", "none is only allowed on a loopback api.bind (got %s): anyone who reaches the API could kick devices and subscribe them to anything", c.API.Bind)
			}
		default:
			bad("api.auth", "%q is not one of api_key, none", c.API.Auth)
		}
	}
	if m := c.Broker.MQTT; m.Enabled() {
		for i, srv := range m.Servers {
			if _, _, err := ServerAddress(srv); err != nil {
				bad(fmt.Sprintf("broker.mqtt.servers[%d]", i), "%v", err)
			}
		}
		if m.ReconnectTimeout < 0 || m.ReconnectsPerSecond < 0 {
			bad("broker.mqtt", "reconnect_timeout and reconnects_per_second must not be negative")
		}
		if q := m.MaxQoS; q != nil && (*q < 0 || *q > 2) {
			bad("broker.mqtt.max_qos", "%d: must be 0, 1 or 2", *q)
		}
		if m.ProtocolVersion != 0 && m.ProtocolVersion != 4 && m.ProtocolVersion != 5 {
			bad("broker.mqtt.protocol_version", "%d is not auto, 4 or 5", m.ProtocolVersion)
		}
		if m.Keepalive < 0 || m.ConnectTimeout < 0 {
			bad("broker.mqtt", "keepalive and connect_timeout must not be negative")
		}
	} else if m.ProtocolVersion != 0 || m.ClientIDPrefix != "" || m.SSLOptions != nil {
		bad("broker.mqtt.servers", "must name at least one server when broker.mqtt is configured")
	}
	for name, addr := range c.Cluster.Peers {
		if name == c.Node.Name {
			bad("cluster.peers."+name, "is this node itself")
		}
		if err := checkBind(addr); err != nil {
			bad("cluster.peers."+name, "%v", err)
		}
	}
	if d := c.Cluster.Discovery; d != (Discovery{}) {
		switch {
		case d.DNS == "":
			bad("cluster.discovery.dns", "must name what to resolve when cluster.discovery is configured")
		case d.Port < 0 || d.Port > 65535:
			bad("cluster.discovery.port", "%d is not a port", d.Port)
		case d.Interval < 0:
			bad("cluster.discovery.interval", "must not be negative")
		case !d.SRV && d.Port == 0 && c.Gateway.ExProto.Server.Port() == 0:
			bad("cluster.discovery.port", "needed: gateway.exproto.server.bind has no fixed port to assume for the peers")
		}
		if d.Resolver != "" {
			if _, _, err := net.SplitHostPort(d.Resolver); err != nil {
				bad("cluster.discovery.resolver", "%q: want host:port", d.Resolver)
			}
		}
	}
	// An embedded MQTT listener other machines reach needs credentials:
	// the gateway's authentication chain, or client certificates; else the
	// operator says so (allow_anonymous), as mosquitto 2 asks.
	anonymous := func(key string, l MQTTListener) {
		if Loopback(l.Bind) || len(c.Gateway.ExProto.Authentication) > 0 || l.SSLOptions.ClientCertRequired() || c.Broker.Embedded.AllowAnonymous {
			return
		}
		bad(key, "%s takes MQTT clients from other machines without credentials: anyone who reaches it could publish to your devices and read what they send. "+
			"Configure gateway.exproto.authentication, bind it to 127.0.0.1, or set broker.embedded.allow_anonymous: true", l.Bind)
	}
	if l := c.Broker.Embedded.Listeners.TCP; l.Enabled() && !c.Broker.MQTT.Enabled() {
		if err := checkBind(l.Bind); err != nil {
			bad("broker.embedded.listeners.tcp.bind", "%v", err)
		}
		if l.SSLOptions != nil {
			bad("broker.embedded.listeners.tcp.ssl_options", "MQTT over TLS is the ssl listener (broker.embedded.listeners.ssl)")
		}
		anonymous("broker.embedded.listeners.tcp.bind", l)
	}
	for name, l := range map[string]MQTTListener{"ssl": c.Broker.Embedded.Listeners.SSL, "ws": c.Broker.Embedded.Listeners.WS} {
		k := "broker.embedded.listeners." + name
		if !l.Serving() {
			continue
		}
		if c.Broker.MQTT.Enabled() {
			bad(k, "the embedded broker does not run with an external broker (broker.mqtt.servers)")
			continue
		}
		if err := checkBind(l.Bind); err != nil {
			bad(k+".bind", "%v", err)
		}
		o := l.SSLOptions
		switch {
		case o == nil && name == "ssl":
			bad(k+".ssl_options", "MQTT over TLS needs certfile and keyfile")
		case o != nil && (o.Certfile == "" || o.Keyfile == ""):
			bad(k+".ssl_options", "needs certfile and keyfile")
		case o != nil && o.Verify == "verify_peer" && o.Cacertfile == "":
			bad(k+".ssl_options.cacertfile", "verify_peer needs the CA that signs client certificates")
		}
		anonymous(k+".bind", l)
	}
	x := &c.Gateway.ExProto
	const g = "gateway.exproto."
	if err := checkBind(x.Server.Bind); err != nil {
		bad(g+"server.bind", "%v", err)
	}
	for _, e := range x.Handler.validate() {
		bad(g+"handler."+e.key, "%s", e.msg)
	}
	if x.Server.MaxRecvMessageSize < 1024 {
		bad(g+"server.max_recv_message_size", "must be at least 1KB")
	}
	if o := x.Server.SSLOptions; o != nil {
		if o.Certfile == "" || o.Keyfile == "" {
			bad(g+"server.ssl_options", "needs certfile and keyfile")
		}
		if o.Verify == "verify_peer" && o.Cacertfile == "" {
			bad(g+"server.ssl_options.cacertfile", "verify_peer needs the CA that signs handler certificates")
		}
		if o.Verify != "" && o.Verify != "verify_peer" && o.Verify != "verify_none" {
			bad(g+"server.ssl_options.verify", "%q is not one of verify_peer, verify_none", o.Verify)
		}
	}
	if b := x.LoginFailureBan; b.MaxFailures < 0 || b.MaxHostFailures < 0 || b.Window < 0 || b.BanTime < 0 {
		bad(g+"login_failure_ban", "values must not be negative")
	}
	if x.AuthTimeout < 0 {
		bad(g+"auth_timeout", "must not be negative, got %v", x.AuthTimeout)
	}
	if x.IdleTimeout <= 0 {
		bad(g+"idle_timeout", "must be positive, got %v", x.IdleTimeout)
	}
	if x.CloseFlushTimeout <= 0 {
		bad(g+"close_flush_timeout", "must be positive, got %v", x.CloseFlushTimeout)
	}
	if x.MaxMessagesPerDelivery < 0 {
		bad(g+"max_messages_per_delivery", "must be 0 (by service) or more, got %d", x.MaxMessagesPerDelivery)
	}
	if x.EventQueue < 1 {
		bad(g+"event_queue", "must be at least 1, got %d", x.EventQueue)
	}
	if x.MaxMqueueLen < 1 {
		bad(g+"max_mqueue_len", "must be at least 1, got %d", x.MaxMqueueLen)
	}
	if err := CheckMountpoint(x.Mountpoint); err != nil {
		bad(g+"mountpoint", "%v", err)
	}
	for i, a := range x.Authentication {
		for _, e := range a.validate() {
			bad(fmt.Sprintf("%sauthentication[%d]%s", g, i, e.key), "%s", e.msg)
		}
	}
	if h := x.Authorization.HTTP; h != nil {
		if !strings.HasPrefix(h.URL, "http://") && !strings.HasPrefix(h.URL, "https://") {
			bad(g+"authorization.http.url", "%q is not an http(s) URL", h.URL)
		}
		if h.Method != "" && h.Method != "post" && h.Method != "get" {
			bad(g+"authorization.http.method", "%q is not post or get", h.Method)
		}
	}
	switch x.Authorization.NoMatch {
	case "allow", "deny":
	default:
		bad(g+"authorization.no_match", "%q is not one of allow, deny", x.Authorization.NoMatch)
	}
	for i, r := range x.Authorization.Rules {
		p := fmt.Sprintf("%sauthorization.rules[%d]", g, i)
		if r.Permission != "allow" && r.Permission != "deny" {
			bad(p+".permission", "%q is not one of allow, deny", r.Permission)
		}
		switch r.Action {
		case "publish", "subscribe", "all":
		default:
			bad(p+".action", "%q is not one of publish, subscribe, all", r.Action)
		}
		if len(r.Topics) == 0 {
			bad(p+".topics", "must list at least one topic filter")
		}
	}
	n := 0
	x.Listeners.Each(func(typ, name string, l *Listener) {
		n++
		p := g + "listeners." + typ + "." + name
		if l == nil {
			bad(p, "is empty")
			return
		}
		for _, e := range l.validate(typ, x.Handler) {
			bad(p+"."+e.key, "%s", e.msg)
		}
	})
	if n == 0 && x.Enabled() {
		bad(g+"listeners", "no device listener is configured (gateway.exproto.enable: false runs exgate without the gateway)")
	}
	return errors.Join(errs...)
}

type keyError struct{ key, msg string }

// validate checks one authenticator; keys start with "." or are empty.
func (a *Authenticator) validate() []keyError {
	var errs []keyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, keyError{key, fmt.Sprintf(format, args...)})
	}
	switch {
	case a.Mechanism == "password_based" && a.Backend == "built_in_database":
		switch a.UserIDType {
		case "", "username", "clientid":
		default:
			bad(".user_id_type", "%q is not one of username, clientid", a.UserIDType)
		}
		for j, u := range a.Users {
			if u.UserID == "" {
				bad(fmt.Sprintf(".users[%d].user_id", j), "must not be empty")
			}
			if err := CheckPasswordHash(u.Password); err != nil {
				bad(fmt.Sprintf(".users[%d].password", j), "%v", err)
			}
		}
	case a.Mechanism == "password_based" && a.Backend == "http":
		if !strings.HasPrefix(a.URL, "http://") && !strings.HasPrefix(a.URL, "https://") {
			bad(".url", "%q is not an http(s) URL", a.URL)
		}
		if a.Method != "" && a.Method != "post" && a.Method != "get" {
			bad(".method", "%q is not post or get", a.Method)
		}
		if a.RequestTimeout < 0 || a.PoolSize < 0 {
			bad("", "request_timeout and pool_size must not be negative")
		}
	case a.Mechanism == "password_based":
		bad(".backend", "%q is not one of built_in_database, http", a.Backend)
	case a.Mechanism == "jwt":
		switch a.Algorithm {
		case "hmac-based":
			if a.Secret == "" {
				bad(".secret", "hmac-based needs a secret")
			}
		case "public-key":
			if (a.PublicKeyFile == "") == (a.JWKSFile == "") {
				bad(".public_key_file", "public-key needs exactly one of public_key_file, jwks_file")
			}
		default:
			bad(".algorithm", "%q is not one of hmac-based, public-key", a.Algorithm)
		}
	default:
		bad(".mechanism", "%q is not one of password_based, jwt", a.Mechanism)
	}
	return errs
}

// validate checks a handler block.
func (h *Handler) validate() []keyError {
	var errs []keyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, keyError{key, fmt.Sprintf(format, args...)})
	}
	if len(h.Address) == 0 {
		bad("address", "must name at least one handler")
	}
	for _, a := range h.Address {
		if _, _, err := HandlerTarget(a); err != nil {
			bad("address", "%v", err)
		}
	}
	switch h.ServiceName {
	case "ConnectionUnaryHandler", "ConnectionHandler", Native:
	default:
		bad("service_name", "%q is not one of ConnectionUnaryHandler, ConnectionHandler, native", h.ServiceName)
	}
	switch h.Streaming {
	case "per_event", "long_lived":
	default:
		bad("streaming", "%q is not one of per_event, long_lived", h.Streaming)
	}
	if h.RequestTimeout <= 0 {
		bad("request_timeout", "must be positive, got %v", h.RequestTimeout)
	}
	if h.MaxRequestBytes < 1024 {
		bad("max_request_bytes", "must be at least 1KB")
	}
	if o := h.SSLOptions; o != nil {
		if (o.Certfile == "") != (o.Keyfile == "") {
			bad("ssl_options", "certfile and keyfile go together")
		}
		if o.Verify != "" && o.Verify != "verify_peer" && o.Verify != "verify_none" {
			bad("ssl_options.verify", "%q is not one of verify_peer, verify_none", o.Verify)
		}
	}
	return errs
}

// validate checks one listener of type typ.
func (l *Listener) validate(typ string, base Handler) []keyError {
	var errs []keyError
	bad := func(key, format string, args ...any) {
		errs = append(errs, keyError{key, fmt.Sprintf(format, args...)})
	}
	if !l.Enabled() && l.Bind == "" {
		return nil // a disabled listener needs no address (EMQX's enable = false)
	}
	if err := checkBind(l.Bind); err != nil {
		bad("bind", "%v", err)
	}
	if l.MaxConnections < 0 {
		bad("max_connections", "must not be negative")
	}
	if l.ConnRate() < 0 {
		bad("max_conn_rate", "must not be negative")
	}
	if l.IdleTimeout < 0 {
		bad("idle_timeout", "must not be negative")
	}
	if l.ProxyProtocolTimeout < 0 {
		bad("proxy_protocol_timeout", "must not be negative")
	}
	if l.Mountpoint != nil {
		if err := CheckMountpoint(*l.Mountpoint); err != nil {
			bad("mountpoint", "%v", err)
		}
	}
	for i, r := range l.AccessRules {
		if _, err := ParseAccessRule(r); err != nil {
			bad(fmt.Sprintf("access_rules[%d]", i), "%v", err)
		}
	}
	if _, err := ParseRate(l.BytesRate, true); err != nil {
		bad("bytes_rate", "%v", err)
	}
	if _, err := ParseRate(l.ListenerBytesRate, true); err != nil {
		bad("listener_bytes_rate", "%v", err)
	}
	if _, err := ParseRate(l.MessagesRate, false); err != nil {
		bad("messages_rate", "%v", err)
	}
	for i, a := range l.Authentication {
		for _, e := range a.validate() {
			bad(fmt.Sprintf("authentication[%d]%s", i, e.key), "%s", e.msg)
		}
	}
	if l.Handler != nil {
		merged := l.Handler.Over(base)
		for _, e := range merged.validate() {
			bad("handler."+e.key, "%s", e.msg)
		}
	}
	stream := typ == "tcp" || typ == "ssl"
	if !stream {
		if l.ProxyProtocol {
			bad("proxy_protocol", "applies to tcp and ssl listeners only")
		}
		if l.TCPOptions != nil {
			bad("tcp_options", "applies to tcp and ssl listeners only; use udp_options")
		}
	} else if l.UDPOptions != nil {
		bad("udp_options", "applies to udp and dtls listeners only; use tcp_options")
	}
	if l.TCPOptions != nil && (l.TCPOptions.Backlog < 0 || l.TCPOptions.SendTimeout < 0) {
		bad("tcp_options", "backlog and send_timeout must not be negative")
	}
	if l.TCPOptions != nil {
		if _, err := l.TCPOptions.TCPKeepalive(); err != nil {
			bad("tcp_options", "%v", err)
		}
	}
	if typ != "ssl" && l.SSLOptions != nil {
		bad("ssl_options", "applies to ssl listeners only")
	}
	if typ != "dtls" && l.DTLSOptions != nil {
		bad("dtls_options", "applies to dtls listeners only")
	}
	checkTLS := func(key string, o *TLSOptions, versions []string) {
		if o == nil {
			bad(key, "is required for a %s listener (certfile and keyfile)", typ)
			return
		}
		if o.PSKFile != "" && typ != "dtls" {
			bad(key+".psk_file", "applies to dtls listeners only")
		}
		if o.PSKFile == "" && (o.Certfile == "" || o.Keyfile == "") {
			bad(key, "needs certfile and keyfile")
		}
		switch o.Verify {
		case "", "verify_none", "verify_peer":
		default:
			bad(key+".verify", "%q is not one of verify_peer, verify_none", o.Verify)
		}
		if o.Verify == "verify_peer" && o.Cacertfile == "" {
			bad(key+".cacertfile", "verify_peer needs the CA that signs client certificates")
		}
		for i, v := range o.Versions {
			if !slices.Contains(versions, v) {
				bad(fmt.Sprintf("%s.versions[%d]", key, i), "%q is not one of %s", v, strings.Join(versions, ", "))
			}
		}
	}
	switch typ {
	case "ssl":
		checkTLS("ssl_options", l.SSLOptions, []string{"tlsv1.2", "tlsv1.3"})
	case "dtls":
		checkTLS("dtls_options", l.DTLSOptions, []string{"dtlsv1.2"})
	}
	return errs
}

func checkBind(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if _, err := strconv.Atoi(s); err == nil {
		s = ":" + s
	}
	_, port, err := splitHostPort(s)
	if err != nil {
		return err
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q has no valid port", s)
	}
	return nil
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", fmt.Errorf("%q is not host:port", s)
	}
	host := s[:i]
	if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
		return "", "", fmt.Errorf("%q has an unbalanced IPv6 bracket", s)
	}
	return strings.Trim(host, "[]"), s[i+1:], nil
}

// BindAddress turns a bind value ("7993", ":7993", "host:7993") into a
// host:port that net.Listen takes.
func BindAddress(s string) string {
	if _, err := strconv.Atoi(s); err == nil {
		return ":" + s
	}
	return s
}

// HandlerTarget turns a handler address ("http://h:p", "https://h:p",
// "h:p") into a gRPC dial target, and reports whether https asked for TLS.
func HandlerTarget(addr string) (target string, https bool, err error) {
	a := addr
	switch {
	case strings.HasPrefix(a, "http://"):
		a = strings.TrimPrefix(a, "http://")
	case strings.HasPrefix(a, "https://"):
		a, https = strings.TrimPrefix(a, "https://"), true
	case strings.Contains(a, "://"):
		return "", false, fmt.Errorf("%q: scheme must be http or https", addr)
	}
	a = strings.TrimSuffix(a, "/")
	if _, _, err := splitHostPort(a); err != nil {
		return "", false, err
	}
	if strings.Contains(a, "/") {
		return "", false, fmt.Errorf("%q: a path is not allowed", addr)
	}
	return a, https, nil
}

// ServerAddress parses an upstream MQTT server URL into host:port and
// whether it uses TLS; a bare host:port is plain TCP.
func ServerAddress(u string) (addr string, tls bool, err error) {
	a := u
	for _, p := range []struct {
		scheme string
		tls    bool
	}{{"tcp://", false}, {"mqtt://", false}, {"ssl://", true}, {"tls://", true}, {"mqtts://", true}} {
		if rest, ok := strings.CutPrefix(a, p.scheme); ok {
			a, tls = rest, p.tls
			break
		}
	}
	if strings.Contains(a, "://") {
		return "", false, fmt.Errorf("%q: scheme must be tcp, mqtt, ssl or mqtts", u)
	}
	if err := checkBind(a); err != nil {
		return "", false, err
	}
	return a, tls, nil
}

// CheckMountpoint rejects mountpoints that would make invalid topics.
func CheckMountpoint(m string) error {
	if strings.ContainsAny(m, "+#\x00") {
		return fmt.Errorf("%q must not contain wildcards or NUL", m)
	}
	rest := strings.NewReplacer("${clientid}", "", "${username}", "").Replace(m)
	if strings.Contains(rest, "${") {
		return fmt.Errorf("%q: only ${clientid} and ${username} may be used", m)
	}
	return nil
}

// CheckPasswordHash reports whether s is a password form the built-in
// database understands.
func CheckPasswordHash(s string) error {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		return nil
	case strings.HasPrefix(s, "sha256:"):
		if len(strings.Split(s, ":")) != 3 {
			return errors.New("sha256 form is sha256:<salt>:<hex digest of salt+password>")
		}
		return nil
	case strings.HasPrefix(s, "pbkdf2:"):
		if p := strings.Split(s, ":"); len(p) != 5 || (p[1] != "sha256" && p[1] != "sha512") {
			return errors.New("pbkdf2 form is pbkdf2:sha256|sha512:<iterations>:<salt>:<hex>")
		}
		return nil
	}
	return errors.New("must be a bcrypt hash, pbkdf2:sha256:<iterations>:<salt>:<hex> or sha256:<salt>:<hex>, never a password in clear")
}
