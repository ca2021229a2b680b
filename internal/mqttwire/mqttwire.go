// Package mqttwire frames MQTT packets (3.1.1 and 5) on mochi-mqtt's packet
// codec, the embedded broker's: Encode writes one packet, Read reads and
// decodes one. exgate's own MQTT clients use it: the devices' upstream
// sessions in external-broker mode and the load tool's baseline clients.
package mqttwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/mochi-mqtt/server/v2/packets"
)

// MaxPacket bounds a packet Read accepts, so a broken peer cannot make a
// reader allocate without limit.
const MaxPacket = 64 << 20

// V3Connack is Read's error for an MQTT 3.1.1 CONNACK read while speaking
// MQTT 5 (it has no properties): its return code. A server that speaks
// 3.1.1 only may refuse an MQTT 5 CONNECT with one.
type V3Connack byte

func (e V3Connack) Error() string {
	return fmt.Sprintf("an MQTT 3.1.1 CONNACK (return code %d)", byte(e))
}

// Encode appends pk, encoded in pk.ProtocolVersion, to b.
func Encode(pk *packets.Packet, b *bytes.Buffer) error {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		return pk.ConnectEncode(b)
	case packets.Connack:
		return pk.ConnackEncode(b)
	case packets.Publish:
		return pk.PublishEncode(b)
	case packets.Puback:
		return pk.PubackEncode(b)
	case packets.Pubrec:
		return pk.PubrecEncode(b)
	case packets.Pubrel:
		return pk.PubrelEncode(b)
	case packets.Pubcomp:
		return pk.PubcompEncode(b)
	case packets.Subscribe:
		return pk.SubscribeEncode(b)
	case packets.Suback:
		return pk.SubackEncode(b)
	case packets.Unsubscribe:
		return pk.UnsubscribeEncode(b)
	case packets.Unsuback:
		return pk.UnsubackEncode(b)
	case packets.Pingreq:
		return pk.PingreqEncode(b)
	case packets.Pingresp:
		return pk.PingrespEncode(b)
	case packets.Disconnect:
		return pk.DisconnectEncode(b)
	}
	return fmt.Errorf("cannot encode packet type %d", pk.FixedHeader.Type)
}

// Read reads one packet of protocol version v (4 or 5), from either side
// of a connection.
func Read(r *bufio.Reader, v byte) (*packets.Packet, error) {
	pk := &packets.Packet{ProtocolVersion: v}
	hb, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return nil, err
	}
	n, _, err := packets.DecodeLength(r)
	if err != nil {
		return nil, err
	}
	if n > MaxPacket {
		return nil, fmt.Errorf("a packet of %d bytes (at most %d)", n, MaxPacket)
	}
	pk.FixedHeader.Remaining = n // the decoders tell optional fields by it
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return pk, decode(pk, body, v)
}

// Parse decodes the packet at the start of b, for a reader that is told
// when bytes arrived instead of waiting for them: n is how many bytes of b
// it took, 0 (with no error) while b holds only part of a packet. The
// packet does not keep b.
func Parse(b []byte, v byte) (pk *packets.Packet, n int, err error) {
	if len(b) < 2 {
		return nil, 0, nil
	}
	size, lenBytes, err := packets.DecodeLength(bytes.NewReader(b[1:]))
	if errors.Is(err, io.EOF) {
		return nil, 0, nil // the length itself is cut short
	}
	if err != nil {
		return nil, 0, err
	}
	i := 1 + lenBytes
	if size > MaxPacket {
		return nil, 0, fmt.Errorf("a packet of %d bytes (at most %d)", size, MaxPacket)
	}
	if len(b) < i+size {
		return nil, 0, nil
	}
	pk = &packets.Packet{ProtocolVersion: v}
	if err := pk.FixedHeader.Decode(b[0]); err != nil {
		return nil, 0, err
	}
	pk.FixedHeader.Remaining = size
	// The decoders keep slices of the body (a payload, a topic): their own copy.
	return pk, i + size, decode(pk, bytes.Clone(b[i:i+size]), v)
}

// decode decodes a packet's body by its fixed header's type.
func decode(pk *packets.Packet, body []byte, v byte) error {
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(body)
	case packets.Connack:
		if v == 5 && len(body) == 2 {
			return V3Connack(body[1])
		}
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Subscribe:
		err = pk.SubscribeDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(body)
	case packets.Unsuback:
		err = pk.UnsubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Pingreq, packets.Pingresp:
	default:
		err = fmt.Errorf("unknown packet type %d", pk.FixedHeader.Type)
	}
	return err
}
