// Defaults: what a configuration holds before a file is read, and the
// per-listener defaults read through methods.

package config

import "time"

// SocketOpts returns the TCP options with defaults filled in.
func (l *Listener) SocketOpts() TCPOptions {
	o := TCPOptions{}
	if l.TCPOptions != nil {
		o = *l.TCPOptions
	}
	if o.Nodelay == nil {
		o.Nodelay = ptr(true)
	}
	if o.SendTimeout == 0 {
		o.SendTimeout = 15 * time.Second
	}
	return o
}

// DefaultMaxConnRate is max_conn_rate when a listener does not set it.
const DefaultMaxConnRate = 1000

// ConnRate is max_conn_rate with its default applied; 0 means no limit.
func (l *Listener) ConnRate() int {
	if l.MaxConnRate == nil {
		return DefaultMaxConnRate
	}
	return *l.MaxConnRate
}

// base is the default configuration without device listeners: decoding
// merges into it, and listeners must not merge with a default one.
func base() *Config {
	return &Config{
		Node:   Node{Name: "exgate@127.0.0.1", GCMinHeap: 32 << 20},
		Log:    Log{Level: "info", Format: "text"},
		API:    API{Bind: "127.0.0.1:18083", Auth: "api_key"},
		Trace:  Trace{Dir: "trace"},
		Broker: Broker{Embedded: Embedded{Listeners: EmbeddedListeners{TCP: MQTTListener{Enable: ptr(true), Bind: "127.0.0.1:1883"}}}},
		Gateway: Gateway{ExProto: ExProto{
			Server: Server{Bind: "127.0.0.1:9100", MaxRecvMessageSize: 4 << 20},
			Handler: Handler{
				Address:         Addresses{"http://127.0.0.1:9001"},
				ServiceName:     "ConnectionUnaryHandler",
				Streaming:       "per_event",
				RequestTimeout:  30 * time.Second,
				MaxRequestBytes: 1 << 20,
			},
			IdleTimeout:            30 * time.Second,
			LoginFailureBan:        LoginFailureBan{MaxFailures: 15, MaxHostFailures: 100, Window: time.Minute, BanTime: 5 * time.Minute},
			MaxMessagesPerDelivery: 0, // by service: 1 for EMQX's, 16 native
			EventQueue:             64,
			MaxMqueueLen:           1000,
			CloseFlushTimeout:      15 * time.Second,
			Authorization:          Authorization{NoMatch: "allow"},
		}},
	}
}

func ptr[T any](v T) *T { return &v }

// Default returns the full default configuration.
func Default() *Config {
	c := base()
	c.fillListeners()
	return c
}

func (c *Config) fillListeners() {
	if ls := c.Gateway.ExProto.Listeners; ls.TCP == nil && ls.SSL == nil && ls.UDP == nil && ls.DTLS == nil {
		c.Gateway.ExProto.Listeners.TCP = map[string]*Listener{"default": {Enable: ptr(true), Bind: "0.0.0.0:7993", MaxConnRate: ptr(DefaultMaxConnRate), EnableAuthn: ptr(true)}}
	}
}
