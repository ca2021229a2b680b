package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/testcert"
	"github.com/exgate/exgate/internal/testhandler"
)

// The embedded broker serves MQTT over TLS and over WebSocket when asked:
// a real MQTT client on each reaches devices and the other clients.
func TestEmbeddedMQTTOverTLSAndWebSocket(t *testing.T) {
	wsAddr := freeAddr(t)
	certs := testcert.New(t)
	e := start(t, func(c *config.Config) {
		ls := &c.Broker.Embedded.Listeners
		ls.SSL = config.MQTTListener{Bind: "127.0.0.1:0", SSLOptions: &config.TLSOptions{Certfile: certs.ServerCert, Keyfile: certs.ServerKey}}
		ls.WS = config.MQTTListener{Bind: wsAddr}
	})
	tlsAddr := e.g.MQTTTLSAddr()
	if tlsAddr == nil || e.g.MQTTWSAddr() != wsAddr {
		t.Fatalf("listeners: ssl %v, ws %q", tlsAddr, e.g.MQTTWSAddr())
	}
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(ca)
	connect := func(url, id string, tc *tls.Config) pahov3.Client {
		t.Helper()
		o := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
		if tc != nil {
			o.SetTLSConfig(tc)
		}
		c := pahov3.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", url, tok.Error())
		}
		t.Cleanup(func() { c.Disconnect(100) })
		return c
	}
	overTLS := connect("ssl://"+tlsAddr.String(), "over-tls", &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	overWS := connect("ws://"+wsAddr+"/mqtt", "over-ws", nil)

	got := make(chan string, 4)
	if tok := overWS.Subscribe("mqtt/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe over ws: %v", tok.Error())
	}
	d := e.dial()
	d.connect("dev-mqtt", 0)
	d.subscribe("mqtt/#", 1)
	if tok := overTLS.Publish("mqtt/x", 1, false, "from tls"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish over tls: %v", tok.Error())
	}
	select {
	case p := <-got:
		if p != "from tls" {
			t.Fatalf("ws client got %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the WebSocket client did not get the TLS client's message")
	}
	if f := d.expect(testhandler.Publish, 0); f.Payload != "from tls" {
		t.Fatalf("device got %+v", f)
	}
}
