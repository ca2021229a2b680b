package binproto_test

import (
	"testing"
	"time"

	"github.com/exgate/exgate/examples/binproto"
	"github.com/exgate/exgate/sdk/handlertest"
)

// TestTerminal runs the handler against the real gateway and a simulated
// terminal: login, telemetry to MQTT, a bad checksum, a command back; over
// ConnectionUnaryHandler and over exgate's native stream, unchanged.
func TestTerminal(t *testing.T) {
	t.Run("unary", func(t *testing.T) { testTerminal(t, nil) })
	t.Run("native", func(t *testing.T) { testTerminal(t, handlertest.Native) })
}

func testTerminal(t *testing.T, mode handlertest.Option) {
	h := handlertest.New(t, binproto.Handler{}, mode)
	term, err := binproto.DialTerminal(h.Gateway.ListenerAddr("default").String(), "T000001")
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	if r, err := term.Request(binproto.Login, []byte("T000001")); err != nil || r != binproto.ResultOK {
		t.Fatalf("login: %d %v", r, err)
	}
	if r, err := term.Request(binproto.Telemetry, binproto.EncodePosition(binproto.Position{Lat: 59329300, Lon: 18068600, Speed: 523})); err != nil || r != binproto.ResultOK {
		t.Fatalf("telemetry: %d %v", r, err)
	}
	h.ExpectPublish("telemetry/T000001", []byte(`{"lat":59.3293,"lon":18.0686,"speed_kmh":52.3}`))
	if r, err := term.Request(binproto.Heartbeat, nil); err != nil || r != binproto.ResultOK {
		t.Fatalf("heartbeat: %d %v", r, err)
	}
	h.Publish("cmd/T000001", []byte("REBOOT"))
	f, err := term.Next(5 * time.Second)
	if err != nil || f.ID != binproto.Command || string(f.Body) != "REBOOT" {
		t.Fatalf("command: %+v %v", f, err)
	}
	// A corrupted frame gets a BadFrame ACK and the stream goes on.
	bad := binproto.Encode(binproto.Frame{ID: binproto.Heartbeat, Serial: 99})
	bad[len(bad)-1] ^= 0xFF
	if _, err := term.Conn().Write(bad); err != nil {
		t.Fatal(err)
	}
	ack, err := term.Next(5 * time.Second)
	if err != nil || ack.ID != binproto.Ack || ack.Body[4] != binproto.ResultBadFrame {
		t.Fatalf("bad frame: %+v %v", ack, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(binproto.Encode(binproto.Frame{ID: binproto.Login, Serial: 1, Body: []byte("T1")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := binproto.NewSplitter()
		frames, _ := s.Feed(b)
		for _, raw := range frames {
			if fr, err := binproto.Decode(raw); err == nil {
				if got := binproto.Encode(fr); string(got) != string(raw) {
					t.Fatalf("re-encode %x != %x", got, raw)
				}
			}
		}
	})
}
