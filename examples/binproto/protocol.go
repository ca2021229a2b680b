// Package binproto is an example of a realistic binary device protocol in
// the spirit of vehicle terminal protocols such as JT/T 808, and its exgate
// handler. A frame is
//
//	0x7E | msg id (2) | body length (2) | serial (2) | body | checksum (1)
//
// big endian, the checksum being the XOR of every byte from the msg id to
// the end of the body. Terminals send LOGIN, HEARTBEAT and TELEMETRY; the
// platform answers each with an ACK and may send COMMANDs.
package binproto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/exgate/exgate/sdk/framing"
)

// Message ids.
const (
	Login     uint16 = 0x0100
	Heartbeat uint16 = 0x0002
	Telemetry uint16 = 0x0200
	Ack       uint16 = 0x8001
	Command   uint16 = 0x8300
)

// ACK results.
const (
	ResultOK       byte = 0
	ResultFailed   byte = 1
	ResultBadFrame byte = 2
)

const (
	magic     = 0x7E
	headerLen = 7
	// MaxBody caps a frame's body.
	MaxBody = 1024
)

// Frame is one decoded frame.
type Frame struct {
	ID     uint16
	Serial uint16
	Body   []byte
}

// ErrChecksum: a frame whose checksum does not match.
var ErrChecksum = errors.New("bad checksum")

// NewSplitter cuts a byte stream into frames (whatever the chunking).
func NewSplitter() framing.Splitter {
	s, err := framing.NewLength(framing.LengthField{Offset: 3, Size: 2, Order: binary.BigEndian, HeaderLen: headerLen, Adjust: 1, Max: headerLen + MaxBody + 1})
	if err != nil {
		panic(err) // constant arguments
	}
	return s
}

// Encode builds a frame.
func Encode(f Frame) []byte {
	b := make([]byte, headerLen, headerLen+len(f.Body)+1)
	b[0] = magic
	binary.BigEndian.PutUint16(b[1:], f.ID)
	binary.BigEndian.PutUint16(b[3:], uint16(len(f.Body)))
	binary.BigEndian.PutUint16(b[5:], f.Serial)
	b = append(b, f.Body...)
	return append(b, checksum(b[1:]))
}

// Decode checks and parses one whole frame (from NewSplitter).
func Decode(b []byte) (Frame, error) {
	if len(b) < headerLen+1 || b[0] != magic {
		return Frame{}, fmt.Errorf("not a frame: % x", b)
	}
	if checksum(b[1:len(b)-1]) != b[len(b)-1] {
		return Frame{}, ErrChecksum
	}
	return Frame{ID: binary.BigEndian.Uint16(b[1:]), Serial: binary.BigEndian.Uint16(b[5:]), Body: b[headerLen : len(b)-1]}, nil
}

func checksum(b []byte) byte {
	var c byte
	for _, x := range b {
		c ^= x
	}
	return c
}

// AckBody answers serial of msg id with result.
func AckBody(serial, id uint16, result byte) []byte {
	b := make([]byte, 5)
	binary.BigEndian.PutUint16(b, serial)
	binary.BigEndian.PutUint16(b[2:], id)
	b[4] = result
	return b
}

// Position is a TELEMETRY body: latitude and longitude in millionths of a
// degree, speed in 0.1 km/h.
type Position struct {
	Lat, Lon int32
	Speed    uint16
}

// EncodePosition makes a TELEMETRY body.
func EncodePosition(p Position) []byte {
	b := make([]byte, 10)
	binary.BigEndian.PutUint32(b, uint32(p.Lat))
	binary.BigEndian.PutUint32(b[4:], uint32(p.Lon))
	binary.BigEndian.PutUint16(b[8:], p.Speed)
	return b
}

// DecodePosition reads a TELEMETRY body.
func DecodePosition(b []byte) (Position, error) {
	if len(b) != 10 {
		return Position{}, fmt.Errorf("telemetry body of %d bytes, want 10", len(b))
	}
	return Position{Lat: int32(binary.BigEndian.Uint32(b)), Lon: int32(binary.BigEndian.Uint32(b[4:])), Speed: binary.BigEndian.Uint16(b[8:])}, nil
}
