// Package config is exgate's configuration: a plain struct read from YAML,
// its defaults, and the checks that run before anything starts.
//
// Key names mirror EMQX's gateway.exproto block so users can carry theirs over.
// Unknown keys, wrong types and impossible values are errors that name the
// key's path. Zero values mean "use the default" unless a field says otherwise.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole of exgate's configuration.
type Config struct {
	Node    Node    `yaml:"node"`
	Log     Log     `yaml:"log"`
	Broker  Broker  `yaml:"broker"`
	Cluster Cluster `yaml:"cluster"`
	API     API     `yaml:"api"`
	Trace   Trace   `yaml:"trace"`
	Gateway Gateway `yaml:"gateway"`
}

// Trace is where per-client traces (POST /api/v5/gateways/exproto/trace) go.
type Trace struct {
	// Dir holds one <name>.log per trace. Default "trace".
	Dir string `yaml:"dir"`
	// MaxActive traces at once. Default 30.
	MaxActive int `yaml:"max_active,omitempty"`
	// MaxBytes a trace may write before it stops with a note. Default 100 MiB.
	MaxBytes Size `yaml:"max_bytes,omitempty"`
}

// API is the management REST API, Prometheus metrics and health checks.
type API struct {
	// Enable defaults to true.
	Enable *bool `yaml:"enable,omitempty"`
	// Bind is host:port. Default "127.0.0.1:18083" (EMQX's dashboard port).
	Bind string `yaml:"bind"`
	// Auth is "api_key" (the default: every call but /healthz, /readyz and
	// the dashboard page needs an API key as HTTP basic auth, as EMQX's
	// /api/v5 does) or "none" (no credentials; refused unless Bind is a
	// loopback address).
	Auth string `yaml:"auth,omitempty"`
	// KeysFile holds the API keys, hashed (`exgate api-keys`). Default:
	// "api_keys" beside the configuration file, or data/api_keys without
	// one. With no key in it, the first start creates one and leaves its
	// credentials in KeysFile + ".bootstrap", readable only by exgate's user.
	KeysFile string `yaml:"keys_file,omitempty"`
	// ChangesFile keeps what was changed through the API (the gateway's
	// enable, its listeners), applied over this file at every start and
	// reload. Default: api_changes.yaml beside KeysFile.
	ChangesFile string `yaml:"changes_file,omitempty"`
	// MetricsPublic serves /metrics without credentials (for a Prometheus
	// that cannot send basic auth).
	MetricsPublic bool `yaml:"metrics_public,omitempty"`
	// AllowedHosts are the Host header values accepted besides IP
	// addresses and localhost: a defence against DNS rebinding. List the
	// names operators use to reach the API.
	AllowedHosts []string `yaml:"allowed_hosts,omitempty"`
	// SubscriptionsFollowACL applies the device's authorization rules to
	// the subscriptions an operator adds for it (POST …/subscriptions);
	// by default they are an administrative act that bypasses them.
	SubscriptionsFollowACL bool `yaml:"subscriptions_follow_acl,omitempty"`
	// Username and Password, when set, are one more credential accepted
	// besides the API keys (an EMQX-style fixed pair).
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty"`
}

// Keys is the API keys file: KeysFile, or its default without a
// configuration file.
func (a API) Keys() string {
	if a.KeysFile != "" {
		return a.KeysFile
	}
	return DefaultKeysFile("")
}

// DefaultKeysFile is where the API keys are kept when api.keys_file is not
// set: beside the configuration file at cfgPath, or under ./data.
func DefaultKeysFile(cfgPath string) string {
	if cfgPath == "" {
		return filepath.Join("data", "api_keys")
	}
	return filepath.Join(filepath.Dir(cfgPath), "api_keys")
}

// Loopback reports whether a bind address only listens on this machine.
func Loopback(bind string) bool {
	host, _, err := net.SplitHostPort(bind)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Enabled reports whether the API runs (nil means on).
func (a API) Enabled() bool { return a.Enable == nil || *a.Enable }

// Node names this gateway instance and sets its Go runtime's memory rules.
type Node struct {
	// Name is reported as Message.node in every delivery. Default "exgate@127.0.0.1".
	Name string `yaml:"name"`
	// GCPercent is Go's GOGC: the heap may grow this many percent over the
	// live heap before a collection. Higher costs memory and saves CPU
	// (400: ~20% less gateway CPU per unary echo, ~7% native, at up to
	// 5× the live heap). Default 100 (Go's); the GOGC variable, if set,
	// wins. Read at start.
	GCPercent int `yaml:"gc_percent"`
	// GCMinHeap lets the heap grow to this size before a collection
	// whatever gc_percent says, while the process allocates fast enough
	// that gc_percent would collect more than once a second: a gateway
	// with few devices and much traffic has a small live heap and would
	// collect it very often (GC was ~10% of the gateway's CPU at 100
	// devices echoing). Costs up to this much RSS while busy; a quiet
	// gateway, and a fleet whose heap is larger, collect as gc_percent
	// says. Default 32MiB; 0 turns it off; ignored when the GOGC variable
	// is set. Read at start.
	GCMinHeap Size `yaml:"gc_min_heap"`
	// MemoryLimit is Go's GOMEMLIMIT, a soft limit on the process's memory:
	// near it, the collector runs more often whatever gc_percent says. 0
	// (default) sets none; the GOMEMLIMIT variable, if set, wins. Read at
	// start.
	MemoryLimit Size `yaml:"memory_limit"`
	// ReleaseIdleMemory hands the heap's free memory back to the OS after
	// 10 s without device traffic, connects or closes (at most once a
	// minute): after a connect storm the heap holds up to twice its live
	// size, which idle devices do not need. Default true.
	ReleaseIdleMemory *bool `yaml:"release_idle_memory,omitempty"`
}

// ReleasesIdleMemory reports whether idle memory goes back to the OS (nil means yes).
func (n Node) ReleasesIdleMemory() bool { return n.ReleaseIdleMemory == nil || *n.ReleaseIdleMemory }

// Log sets up log/slog.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// Broker chooses the pub/sub engine. Only the embedded broker exists so far.
type Broker struct {
	Embedded Embedded `yaml:"embedded"`
	// MQTT, when it names servers, replaces the embedded broker with an
	// existing MQTT broker or cluster: each device becomes its own session
	// there (see docs/deployment.md).
	MQTT External `yaml:"mqtt"`
}

// External is an upstream MQTT broker (EMQX, HiveMQ, VerneMQ, Mosquitto…).
type External struct {
	// Servers are tried in order, moving on when one cannot be reached:
	// "tcp://host:1883", "ssl://host:8883" (or "mqtt://", "mqtts://").
	Servers []string `yaml:"servers,omitempty"`
	// ProtocolVersion is auto (default: MQTT 5, and MQTT 3.1.1 with a server
	// that refuses MQTT 5, as RabbitMQ and NATS do), 5, or 4 (MQTT 3.1.1:
	// no publisher id in deliveries, no reason codes).
	ProtocolVersion MQTTVersion `yaml:"protocol_version,omitempty"`
	// ClientIDPrefix is put before every device's clientid upstream, and
	// taken off again; "" by default.
	ClientIDPrefix string `yaml:"clientid_prefix,omitempty"`
	// Keepalive of every upstream session. Default 60s.
	Keepalive time.Duration `yaml:"keepalive,omitempty"`
	// ConnectTimeout bounds one connection attempt to one server. Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout,omitempty"`
	// Reconnect keeps a device whose upstream connection is lost (a broker
	// node dies or restarts): its session is opened again on the
	// configured servers and its subscriptions renewed, while its socket
	// stays open. false closes the device with broker_session_lost at once.
	// Default true. A takeover or a kick always closes the device.
	Reconnect *bool `yaml:"reconnect,omitempty"`
	// ReconnectTimeout is how long a device's session is tried again before
	// the device is closed. Default 30s.
	ReconnectTimeout time.Duration `yaml:"reconnect_timeout,omitempty"`
	// ReconnectsPerSecond caps the sessions opened again per second for
	// the whole gateway, so the devices of a lost node do not stampede the
	// survivors. Default 200.
	ReconnectsPerSecond int `yaml:"reconnects_per_second,omitempty"`
	// MaxQoS is the highest QoS the upstream takes from a publisher: a
	// device's publish above it goes at MaxQoS, as an MQTT 5 client does
	// with a server's Maximum QoS. NATS 2.9 closes a session that
	// publishes QoS 2: set 1 there. Default 2.
	MaxQoS *int `yaml:"max_qos,omitempty"`
	// SharedSubscriptions false answers a device's $share/… subscription
	// with PARAMS_TYPE_ERROR, instead of passing it to a broker that takes
	// it for an ordinary topic and delivers nothing (RabbitMQ 3.x, NATS
	// 2.9). Default true.
	SharedSubscriptions *bool `yaml:"shared_subscriptions,omitempty"`
	// Username and Password of the gateway's own session, used for RawPublish.
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty"`
	// SSLOptions apply to ssl:// servers.
	SSLOptions *ClientTLSOptions `yaml:"ssl_options,omitempty"`
}

// Enabled reports whether an upstream broker replaces the embedded one.
func (e External) Enabled() bool { return len(e.Servers) > 0 }

// MaxPublishQoS is MaxQoS, 2 when not set.
func (e External) MaxPublishQoS() byte {
	if e.MaxQoS == nil {
		return 2
	}
	return byte(*e.MaxQoS)
}

// Shared reports whether the upstream has shared subscriptions (nil means yes).
func (e External) Shared() bool { return e.SharedSubscriptions == nil || *e.SharedSubscriptions }

// Reconnects reports whether lost device sessions are opened again (nil
// means yes).
func (e External) Reconnects() bool { return e.Reconnect == nil || *e.Reconnect }

// Cluster lets several exgate nodes serve one handler fleet.
type Cluster struct {
	// Peers maps the other nodes' names (node.name) to their adapter
	// addresses: an adapter call for a device of another node is forwarded
	// there, so a handler may call any node.
	Peers map[string]string `yaml:"peers,omitempty"`
	// SSLOptions are used to call peers whose adapters serve TLS.
	SSLOptions *ClientTLSOptions `yaml:"ssl_options,omitempty"`
	// Discovery finds peers by DNS as well: nodes that come and go (a
	// Kubernetes StatefulSet behind a headless Service) need no list.
	Discovery Discovery `yaml:"discovery,omitempty"`
}

// Port is the port of Bind, 0 if none is fixed.
func (s Server) Port() int {
	_, port, err := net.SplitHostPort(BindAddress(s.Bind))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n
}

// Discovery finds the other nodes' adapters by DNS, again every Interval;
// each address found is asked its node name (exgate.v1.Node, on the
// adapter port, behind server.auth_token), and this node's own is skipped.
type Discovery struct {
	// DNS is the name to resolve; "" turns discovery off. Its A/AAAA
	// records are the nodes' addresses, on Port.
	DNS string `yaml:"dns,omitempty"`
	// SRV reads the name's SRV records instead: each target's addresses,
	// on the target's port.
	SRV bool `yaml:"srv,omitempty"`
	// Port of the peers' adapters with A/AAAA records. Default: the port of
	// gateway.exproto.server.bind.
	Port int `yaml:"port,omitempty"`
	// Interval between lookups. Default 30s.
	Interval time.Duration `yaml:"interval,omitempty"`
	// Resolver is a DNS server's host:port; default: the system's.
	Resolver string `yaml:"resolver,omitempty"`
}

// Embedded configures the in-process MQTT broker.
type Embedded struct {
	Listeners EmbeddedListeners `yaml:"listeners"`
	// AllowAnonymous lets MQTT clients from other machines in without
	// credentials: a listener bound off loopback is refused at start when
	// gateway.exproto.authentication is empty (and, for ssl, client
	// certificates are not required), unless this is true. Anyone who
	// reaches such a listener can publish to the devices and read what
	// they send.
	AllowAnonymous bool `yaml:"allow_anonymous,omitempty"`
}

// EmbeddedListeners are the embedded broker's MQTT listeners for ordinary
// clients: plain TCP (on by default), MQTT over TLS and MQTT over
// WebSocket (off until given a bind).
type EmbeddedListeners struct {
	TCP MQTTListener `yaml:"tcp"`
	// SSL is MQTT over TLS, usually on 8883; it needs ssl_options.
	SSL MQTTListener `yaml:"ssl,omitempty"`
	// WS is MQTT over WebSocket (path /mqtt, any path accepted), usually on
	// 8083; with ssl_options it is wss.
	WS MQTTListener `yaml:"ws,omitempty"`
}

// MQTTListener is one MQTT listener of the embedded broker.
type MQTTListener struct {
	// Enable defaults to true; ssl and ws run only once they have a bind.
	Enable *bool `yaml:"enable,omitempty"`
	// Bind is host:port (tcp: default "127.0.0.1:1883": off loopback it
	// needs authentication, see Embedded.AllowAnonymous).
	Bind string `yaml:"bind,omitempty"`
	// SSLOptions: certificate and key (ssl, ws); with cacertfile and
	// verify_peer, clients must present a certificate.
	SSLOptions *TLSOptions `yaml:"ssl_options,omitempty"`
}

// Gateway holds the gateways; ExProto is the only one.
type Gateway struct {
	ExProto ExProto `yaml:"exproto"`
}

// ExProto is EMQX's gateway.exproto block, plus exgate's extensions.
type ExProto struct {
	// Enable, false, starts exgate without the gateway: no device
	// listener opens (the embedded broker and the API run), as EMQX's
	// gateway.exproto.enable = false. A reload or the API
	// (PUT …/enable/{bool}) changes it.
	// Default true.
	Enable  *bool   `yaml:"enable,omitempty"`
	Server  Server  `yaml:"server"`
	Handler Handler `yaml:"handler"`
	// IdleTimeout closes a connection that sends nothing this long after it was
	// accepted (spec §2). Default 30s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AuthTimeout, when set, closes a device that has not authenticated
	// this long after it connected, with {shutdown,auth_timeout}: a guard
	// beyond EMQX, whose idle rule lets a device that sent one byte hold a
	// connection slot for ever. Default 0 (off).
	AuthTimeout time.Duration `yaml:"auth_timeout,omitempty"`
	// LoginFailureBan bans (see /api/v5/banned) a clientid or a peer host
	// that fails to authenticate too often, as EMQX's flapping detection
	// does for connects. On by default with generous limits.
	LoginFailureBan LoginFailureBan `yaml:"login_failure_ban"`
	// Mountpoint prefixes every topic a device publishes or subscribes to; it
	// may contain ${clientid} and ${username}. Default "".
	Mountpoint string `yaml:"mountpoint"`
	// MaxMessagesPerDelivery caps the messages in one OnReceivedMessages
	// (what queued while the device's previous event was with the handler).
	// Default 0, by service: 1 for the EMQX services, because the handlers
	// people copy (EMQX's Go and Python examples) read only messages[0] and
	// a batch would lose the rest; NativeMaxMessagesPerDelivery for the
	// native service, whose handlers are new and whose protocol says to
	// handle every message of a batch. A value set here applies to both.
	MaxMessagesPerDelivery int `yaml:"max_messages_per_delivery"`
	// EventQueue is how many socket reads may wait for the handler per
	// connection before the gateway stops reading that socket. Default 64.
	EventQueue int `yaml:"event_queue"`
	// MaxMqueueLen is how many messages may wait for the handler per
	// connection, as EMQX's mqtt.max_mqueue_len. When it is full, the
	// oldest queued QoS 0 message is dropped to make room; with none, a new
	// QoS 0 message is dropped, else the oldest message (EMQX's order).
	// Every drop is counted by reason. Default 1000.
	MaxMqueueLen int `yaml:"max_mqueue_len"`
	// DeliveryQueue is MaxMqueueLen's name before 0.2; when given it wins.
	DeliveryQueue int `yaml:"delivery_queue,omitempty"`
	// CloseFlushTimeout bounds how long queued events are still delivered to
	// the handler after a connection closed. Default 15s.
	CloseFlushTimeout time.Duration `yaml:"close_flush_timeout"`
	// Authentication runs on every Authenticate; empty allows everyone.
	Authentication []Authenticator `yaml:"authentication"`
	// Authorization checks Publish and Subscribe topics.
	Authorization Authorization `yaml:"authorization"`
	Listeners     Listeners     `yaml:"listeners"`
}

// Server is the ConnectionAdapter gRPC server that handlers call.
type Server struct {
	// Bind is host:port. Default "127.0.0.1:9100": whoever reaches it can
	// publish anything, so keep it off public interfaces.
	Bind string `yaml:"bind"`
	// SSLOptions serve the adapter over TLS; with verify_peer and
	// fail_if_no_peer_cert only handlers with a trusted client certificate
	// may call it (EMQX never applied this option).
	SSLOptions *TLSOptions `yaml:"ssl_options,omitempty"`
	// MaxRecvMessageSize caps one adapter request. Default 4MB.
	MaxRecvMessageSize Size `yaml:"max_recv_message_size"`
	// AuthToken, when set, must come with every adapter call as gRPC
	// metadata "authorization: Bearer <token>" (else UNAUTHENTICATED).
	AuthToken string `yaml:"auth_token,omitempty"`
}

// Open reports whether the adapter takes calls from other machines without
// credentials: bound off loopback, with no auth_token and no client
// certificates required. EMQX's default (0.0.0.0:9100), and so what
// imported configurations often keep: allowed, and warned about at start.
func (s Server) Open() bool {
	return !Loopback(s.Bind) && s.AuthToken == "" && !s.SSLOptions.ClientCertRequired()
}

// Handler is the user's ConnectionHandler service.
type Handler struct {
	// Address is "http://host:port", "https://host:port" or "host:port";
	// several (a list, or comma-separated) spread devices over handlers,
	// each device pinned to one. Default "http://127.0.0.1:9001".
	Address Addresses `yaml:"address"`
	// ServiceName is ConnectionUnaryHandler (default), ConnectionHandler
	// (EMQX's ExProto services), or native: exgate.v1.Handler, one batched
	// stream per handler connection (docs/handlers.md).
	ServiceName string `yaml:"service_name"`
	// Streaming applies to ConnectionHandler: per_event (default: one short
	// client stream per event; keeps per-connection order and works with
	// unary-era handlers) or long_lived (EMQX 5 style: streams kept open,
	// order across different callbacks not guaranteed).
	Streaming string `yaml:"streaming"`
	// RequestTimeout is the deadline of one handler call; a call past it
	// closes that device. Default 30s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// MaxRequestBytes caps one OnReceivedMessages request: a larger batch is
	// split, never truncated. Default 1MB (gRPC's own limit is 4 MiB).
	MaxRequestBytes Size `yaml:"max_request_bytes"`
	// SSLOptions call the handler over TLS (also implied by https://).
	SSLOptions *ClientTLSOptions `yaml:"ssl_options,omitempty"`
}

// Native is the service_name of exgate's batched handler stream.
const Native = "native"

// ClientTLSOptions are the TLS settings of a gRPC client.
type ClientTLSOptions struct {
	// Cacertfile verifies the server; empty uses the system's roots.
	Cacertfile string `yaml:"cacertfile"`
	// Certfile and Keyfile are a client certificate for mutual TLS.
	Certfile string `yaml:"certfile"`
	Keyfile  string `yaml:"keyfile"`
	// ServerNameIndication overrides the name checked in the server's certificate.
	ServerNameIndication string `yaml:"server_name_indication"`
	// Verify is verify_peer (default) or verify_none.
	Verify string `yaml:"verify"`
}

// Addresses is one address or several; YAML may give a string (also
// comma-separated) or a list.
type Addresses []string

// UnmarshalYAML accepts a scalar or a sequence.
func (a *Addresses) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*a = nil
		for _, s := range strings.Split(n.Value, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*a = append(*a, s)
			}
		}
		return nil
	case yaml.SequenceNode:
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		*a = l
		return nil
	}
	return fmt.Errorf("line %d: expected an address or a list of addresses", n.Line)
}

// MarshalYAML writes a single address as a string.
func (a Addresses) MarshalYAML() (any, error) {
	if len(a) == 1 {
		return a[0], nil
	}
	return []string(a), nil
}

// String joins the addresses with commas.
func (a Addresses) String() string { return strings.Join(a, ",") }

// LoginFailureBan is the failure limiter: MaxFailures failed
// authentications of one clientid (MaxHostFailures from one peer host)
// within Window ban it for BanTime. 0 turns a limit off.
type LoginFailureBan struct {
	MaxFailures     int           `yaml:"max_failures"`
	MaxHostFailures int           `yaml:"max_host_failures"`
	Window          time.Duration `yaml:"window"`
	BanTime         time.Duration `yaml:"ban_time"`
}

// Listeners are the device listeners by type and name
// (gateway.exproto.listeners.<type>.<name>).
type Listeners struct {
	TCP  map[string]*Listener `yaml:"tcp,omitempty"`
	SSL  map[string]*Listener `yaml:"ssl,omitempty"`
	UDP  map[string]*Listener `yaml:"udp,omitempty"`
	DTLS map[string]*Listener `yaml:"dtls,omitempty"`
}

// Each calls f for every listener, by type then name.
func (ls Listeners) Each(f func(typ, name string, l *Listener)) {
	for _, t := range []struct {
		typ string
		m   map[string]*Listener
	}{{"tcp", ls.TCP}, {"ssl", ls.SSL}, {"udp", ls.UDP}, {"dtls", ls.DTLS}} {
		names := make([]string, 0, len(t.m))
		for n := range t.m {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f(t.typ, n, t.m[n])
		}
	}
}

// Listener is one named device listener. Fields that do not apply to its
// type are refused by Validate.
type Listener struct {
	// Enable defaults to true.
	Enable *bool `yaml:"enable,omitempty"`
	// Bind is host:port or a bare port (all interfaces); IPv6 as [::1]:7993.
	Bind string `yaml:"bind"`
	// MaxConnections refuses connections (UDP: new peers) beyond this many;
	// 0 means no limit.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnRate refuses new connections (UDP: new peers) at accept beyond
	// this many per second (a burst of as many is let through); 0 means no
	// limit. Default 1000, EMQX's listener default: a connect costs the
	// handler a few calls, and a storm beyond what it can answer would only
	// pile up work. Use ConnRate to read it.
	MaxConnRate *int `yaml:"max_conn_rate,omitempty"`
	// AccessRules are "allow|deny <ip>|<CIDR>|all", first match wins, no
	// match allows. A denied connection is closed before any handler event;
	// a denied datagram is dropped.
	AccessRules []string `yaml:"access_rules,omitempty"`
	// ProxyProtocol expects a PROXY v1 or v2 header first (tcp, ssl); the
	// peer address then comes from it.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// ProxyProtocolTimeout bounds the wait for that header. Default 3s.
	ProxyProtocolTimeout time.Duration `yaml:"proxy_protocol_timeout,omitempty"`
	// IdleTimeout overrides the gateway's idle_timeout when set.
	IdleTimeout time.Duration `yaml:"idle_timeout,omitempty"`
	// Mountpoint overrides the gateway's mountpoint when set.
	Mountpoint *string `yaml:"mountpoint,omitempty"`
	// EnableAuthn false lets every device of this listener authenticate.
	EnableAuthn *bool `yaml:"enable_authn,omitempty"`
	// Authentication, when set, is this listener's chain, tried before the
	// gateway's.
	Authentication []Authenticator `yaml:"authentication,omitempty"`
	// Handler gives this listener its own handler (as EMQX 4 had one per
	// listener); keys it leaves out come from gateway.exproto.handler (Over).
	Handler *Handler `yaml:"handler,omitempty"`
	// BytesRate limits what one connection may send, e.g. "64KB/s"; the
	// gateway reads slower (TCP back pressure) or drops datagrams. "" is no limit.
	BytesRate string `yaml:"bytes_rate,omitempty"`
	// MessagesRate limits socket reads (datagrams) per connection, e.g. "100/s".
	MessagesRate string `yaml:"messages_rate,omitempty"`
	// ListenerBytesRate limits all connections of the listener together.
	ListenerBytesRate string `yaml:"listener_bytes_rate,omitempty"`

	TCPOptions  *TCPOptions `yaml:"tcp_options,omitempty"`  // tcp, ssl
	UDPOptions  *UDPOptions `yaml:"udp_options,omitempty"`  // udp, dtls
	SSLOptions  *TLSOptions `yaml:"ssl_options,omitempty"`  // ssl
	DTLSOptions *TLSOptions `yaml:"dtls_options,omitempty"` // dtls
}

// TCPOptions tune a stream listener's sockets.
type TCPOptions struct {
	// Nodelay disables Nagle's algorithm; default true.
	Nodelay *bool `yaml:"nodelay"`
	// Backlog is the accept queue length; 0 uses the system's.
	Backlog int `yaml:"backlog"`
	// SendTimeout closes a connection whose write blocks this long. Default 15s.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// Recbuf and Sndbuf set the socket buffers; 0 leaves the system's.
	Recbuf Size `yaml:"recbuf"`
	Sndbuf Size `yaml:"sndbuf"`
	// Keepalive is the sockets' TCP keepalive, as EMQX writes it:
	// "Idle,Interval,Probes" in seconds (e.g. "240,30,5"), or "none", the
	// default (as EMQX's): a silent device is found by idle_timeout and the
	// handler's keepalive, which cost no probes and no setsockopt per accept.
	Keepalive string `yaml:"keepalive,omitempty"`
}

// TCPKeepalive parses keepalive: enabled false for "" and "none".
func (o TCPOptions) TCPKeepalive() (net.KeepAliveConfig, error) {
	if o.Keepalive == "" || o.Keepalive == "none" {
		return net.KeepAliveConfig{}, nil
	}
	parts := strings.Split(o.Keepalive, ",")
	var n [3]int
	if len(parts) != 3 {
		return net.KeepAliveConfig{}, fmt.Errorf("keepalive %q: want \"none\" or \"Idle,Interval,Probes\" in seconds, e.g. \"240,30,5\"", o.Keepalive)
	}
	for i, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v <= 0 {
			return net.KeepAliveConfig{}, fmt.Errorf("keepalive %q: %q is not a positive whole number", o.Keepalive, p)
		}
		n[i] = v
	}
	return net.KeepAliveConfig{Enable: true, Idle: time.Duration(n[0]) * time.Second,
		Interval: time.Duration(n[1]) * time.Second, Count: n[2]}, nil
}

// UDPOptions tune a datagram listener's socket.
type UDPOptions struct {
	// Recbuf is the socket's receive buffer, where datagrams wait while
	// exgate is busy (a burst of new peers). Default 8MB, forced past
	// net.core.rmem_max when the process may (CAP_NET_ADMIN); otherwise the
	// kernel caps it and exgate warns at start. What the kernel still drops
	// is exgate_listener_kernel_drops_total.
	Recbuf Size `yaml:"recbuf"`
	Sndbuf Size `yaml:"sndbuf"`
}

// TLSOptions are ssl_options and dtls_options.
type TLSOptions struct {
	Certfile   string `yaml:"certfile"`
	Keyfile    string `yaml:"keyfile"`
	Cacertfile string `yaml:"cacertfile"`
	// Verify is verify_none (default) or verify_peer: ask for and check a
	// client certificate against cacertfile.
	Verify string `yaml:"verify"`
	// FailIfNoPeerCert, with verify_peer, refuses clients without a certificate.
	FailIfNoPeerCert bool `yaml:"fail_if_no_peer_cert"`
	// Versions: tlsv1.2, tlsv1.3 (ssl); dtlsv1.2 (dtls). Empty: all supported.
	Versions []string `yaml:"versions,omitempty"`
	// Ciphers are IANA suite names (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256…);
	// empty: the library's secure defaults.
	Ciphers []string `yaml:"ciphers,omitempty"`
	// PSKFile (dtls only) holds "identity:secret" lines; with it the listener
	// speaks DTLS-PSK instead of certificates.
	PSKFile string `yaml:"psk_file,omitempty"`
}

// ClientCertRequired reports whether every client must show a certificate
// cacertfile vouches for: credentials, as a password is (o may be nil).
func (o *TLSOptions) ClientCertRequired() bool {
	return o != nil && o.Verify == "verify_peer" && o.FailIfNoPeerCert
}

// Authenticator is one authentication source, in EMQX's shape. The chain
// is tried in order: the first that does not ignore a client decides.
type Authenticator struct {
	// Mechanism is password_based or jwt.
	Mechanism string `yaml:"mechanism"`
	// Backend (password_based) is built_in_database or http.
	Backend string `yaml:"backend,omitempty"`

	// built_in_database:
	// UserIDType is username (default) or clientid.
	UserIDType string `yaml:"user_id_type,omitempty"`
	// Users are accounts given here. Passwords are bcrypt hashes ("$2a$…"),
	// "pbkdf2:sha256:<iterations>:<salt>:<hex>" or "sha256:<salt>:<hex>"
	// (hex of SHA-256 of salt+password); never the password itself.
	Users []User `yaml:"users,omitempty"`
	// UsersFile is a YAML ({users: [...]}) or CSV (user_id,password_hash,is_superuser)
	// file of accounts, read again when it changes; `exgate users` edits it.
	UsersFile string `yaml:"users_file,omitempty"`

	// http: EMQX's HTTP authenticator contract.
	Method  string            `yaml:"method,omitempty"` // post (default) or get
	URL     string            `yaml:"url,omitempty"`
	Headers map[string]string `yaml:"headers,omitempty"`
	// Body is sent as JSON (post) or as query parameters (get); values may
	// use ${clientid}, ${username}, ${password}, ${peerhost}, ${proto_name}.
	Body           map[string]string `yaml:"body,omitempty"`
	RequestTimeout time.Duration     `yaml:"request_timeout,omitempty"` // default 5s
	PoolSize       int               `yaml:"pool_size,omitempty"`       // idle connections kept; default 8
	SSLOptions     *ClientTLSOptions `yaml:"ssl_options,omitempty"`

	// jwt: the password carries the token.
	// Algorithm is hmac-based (HS256/384/512, Secret) or public-key
	// (RS256/384/512 and ES256, PublicKeyFile or JWKSFile).
	Algorithm           string `yaml:"algorithm,omitempty"`
	Secret              string `yaml:"secret,omitempty"`
	SecretBase64Encoded bool   `yaml:"secret_base64_encoded,omitempty"`
	PublicKeyFile       string `yaml:"public_key_file,omitempty"`
	JWKSFile            string `yaml:"jwks_file,omitempty"`
	// VerifyClaims must match, e.g. {clientid: "${clientid}"}.
	VerifyClaims map[string]string `yaml:"verify_claims,omitempty"`
}

// User is one account of the built-in database.
type User struct {
	UserID      string `yaml:"user_id"`
	Password    string `yaml:"password"`
	IsSuperuser bool   `yaml:"is_superuser,omitempty"`
}

// Authorization decides what clients may publish and subscribe to: inline
// rules, then an EMQX acl.conf file, then an HTTP service; the first that
// has an answer decides, else no_match. Superusers are never checked.
type Authorization struct {
	// NoMatch is allow (default) or deny.
	NoMatch string `yaml:"no_match"`
	Rules   []Rule `yaml:"rules"`
	// File is an EMQX acl.conf: {allow|deny, Who, Action, Topics}. terms.
	File string `yaml:"file,omitempty"`
	// HTTP is EMQX's HTTP authorizer contract.
	HTTP *HTTPAuthorizer `yaml:"http,omitempty"`
}

// HTTPAuthorizer asks a service: 200 with {"result": "allow"|"deny"|"ignore"}
// (204 allows); anything else, or no answer in time, is "ignore".
type HTTPAuthorizer struct {
	Method  string            `yaml:"method,omitempty"`
	URL     string            `yaml:"url"`
	Headers map[string]string `yaml:"headers,omitempty"`
	// Body values may use ${clientid}, ${username}, ${peerhost}, ${action}, ${topic}.
	Body           map[string]string `yaml:"body,omitempty"`
	RequestTimeout time.Duration     `yaml:"request_timeout,omitempty"`
	SSLOptions     *ClientTLSOptions `yaml:"ssl_options,omitempty"`
}

// Rule allows or denies an action on topics to some clients. First match wins.
type Rule struct {
	Permission string `yaml:"permission"` // allow | deny
	// Who is all (default), or one of clientid/username/ipaddr.
	ClientID string `yaml:"clientid"`
	Username string `yaml:"username"`
	IPAddr   string `yaml:"ipaddr"`
	Action   string `yaml:"action"` // publish | subscribe | all
	// Topics are filters; ${clientid} and ${username} are replaced; "eq t"
	// matches t literally.
	Topics []string `yaml:"topics"`
}

// NativeMaxMessagesPerDelivery is the native service's batch of deliveries
// when max_messages_per_delivery is 0. Batches of up to 16 took a fan-out
// to 10,000 devices from 42,000 to 115,000-138,000 deliveries/s here
// (fewer events, and a device's messages in one write).
const NativeMaxMessagesPerDelivery = 16

// MessagesPerDelivery is the batch of deliveries for a handler that speaks
// the native service or not.
func (x ExProto) MessagesPerDelivery(native bool) int {
	switch {
	case x.MaxMessagesPerDelivery > 0:
		return x.MaxMessagesPerDelivery
	case native:
		return NativeMaxMessagesPerDelivery
	}
	return 1
}

// Enabled reports whether l is on (nil means on).
func (l *Listener) Enabled() bool { return l.Enable == nil || *l.Enable }

// Over fills the keys h leaves out from base.
func (h Handler) Over(base Handler) Handler {
	if len(h.Address) == 0 {
		h.Address = base.Address
	}
	if h.ServiceName == "" {
		h.ServiceName = base.ServiceName
	}
	if h.Streaming == "" {
		h.Streaming = base.Streaming
	}
	if h.RequestTimeout == 0 {
		h.RequestTimeout = base.RequestTimeout
	}
	if h.MaxRequestBytes == 0 {
		h.MaxRequestBytes = base.MaxRequestBytes
	}
	if h.SSLOptions == nil {
		h.SSLOptions = base.SSLOptions
	}
	return h
}

// AuthnEnabled reports whether this listener authenticates devices.
func (l *Listener) AuthnEnabled() bool { return l.EnableAuthn == nil || *l.EnableAuthn }

// Enabled reports whether the gateway runs (nil means it does).
func (x ExProto) Enabled() bool { return x.Enable == nil || *x.Enable }

// Enabled reports whether the MQTT listener is on (nil means on).
func (l MQTTListener) Enabled() bool { return l.Enable == nil || *l.Enable }

// Serving reports whether an optional listener (ssl, ws) runs: it has a
// bind and is not disabled.
func (l MQTTListener) Serving() bool { return l.Bind != "" && l.Enabled() }

// Load reads and validates the YAML file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.API.KeysFile == "" {
		c.API.KeysFile = DefaultKeysFile(path)
	}
	return c, nil
}

// LoadForReload is Load for a running gateway: a file that is empty or
// holds nothing but comments is refused, since applying it would put every
// setting (listeners, authentication, the handler) back to its default.
func LoadForReload(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var top map[string]any
	if err := yaml.Unmarshal(b, &top); err == nil && len(top) == 0 {
		return nil, fmt.Errorf("%s: refused: the file sets nothing, and reloading it would put every setting back to its default", path)
	}
	return Load(path)
}

// Parse decodes YAML over the defaults and validates the result.
func Parse(b []byte) (*Config, error) {
	c := base()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, withPaths(b, err)
	}
	// The default TCP listener applies only to a file that says nothing
	// about listeners: "listeners: {}" or only TLS listeners mean what
	// they say.
	var said struct {
		Gateway struct {
			ExProto struct {
				Listeners *yaml.Node `yaml:"listeners"`
			} `yaml:"exproto"`
		} `yaml:"gateway"`
	}
	if _ = yaml.Unmarshal(b, &said); said.Gateway.ExProto.Listeners == nil {
		c.fillListeners()
	}
	if x := &c.Gateway.ExProto; x.DeliveryQueue != 0 {
		x.MaxMqueueLen, x.DeliveryQueue = x.DeliveryQueue, 0
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// YAML renders c as YAML.
func (c *Config) YAML() []byte {
	b, err := yaml.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("config: marshal: %v", err)) // plain structs always marshal
	}
	return b
}
