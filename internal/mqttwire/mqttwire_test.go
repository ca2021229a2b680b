package mqttwire

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Parse, fed a stream in pieces of any size, finds the packets Read finds,
// and says "not yet" (n 0) rather than failing on a packet cut short.
func TestParseInPieces(t *testing.T) {
	var stream bytes.Buffer
	big := bytes.Repeat([]byte("p"), 300) // a two-byte remaining length
	for _, pk := range []*packets.Packet{
		{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", PacketID: 7, Payload: big},
		{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 9},
		{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}},
		{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "c", Payload: []byte("x")},
	} {
		pk.ProtocolVersion = 5
		if err := Encode(pk, &stream); err != nil {
			t.Fatal(err)
		}
	}
	var want []*packets.Packet
	r := bufio.NewReader(bytes.NewReader(stream.Bytes()))
	for range 4 {
		pk, err := Read(r, 5)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, pk)
	}
	for piece := 1; piece <= stream.Len(); piece += 7 {
		var pending []byte
		var got []*packets.Packet
		for off := 0; off < stream.Len(); off += piece {
			pending = append(pending, stream.Bytes()[off:min(off+piece, stream.Len())]...)
			for {
				pk, n, err := Parse(pending, 5)
				if err != nil {
					t.Fatalf("pieces of %d: %v", piece, err)
				}
				if n == 0 {
					break
				}
				got = append(got, pk)
				pending = pending[n:]
			}
		}
		if len(pending) != 0 || len(got) != len(want) {
			t.Fatalf("pieces of %d: %d packets and %d bytes left, want %d and none", piece, len(got), len(pending), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.FixedHeader != w.FixedHeader || g.PacketID != w.PacketID || g.TopicName != w.TopicName || !bytes.Equal(g.Payload, w.Payload) {
				t.Fatalf("pieces of %d: packet %d is %+v, want %+v", piece, i, g.FixedHeader, w.FixedHeader)
			}
		}
	}
}

func TestParseRefusesBrokenLengths(t *testing.T) {
	if _, _, err := Parse([]byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, 5); !errors.Is(err, packets.ErrMalformedVariableByteInteger) {
		t.Fatalf("a five-byte length: %v", err)
	}
	if _, _, err := Parse([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}, 5); err == nil {
		t.Fatal("a 256 MiB packet was accepted")
	}
}
