// Package framing turns the arbitrary chunks of OnReceivedBytes into whole
// frames: a socket read may hold half a frame, or three. A Splitter keeps
// what is left over for the next chunk; keep one per connection.
package framing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTooLong: a frame (or the data waiting for a delimiter) exceeds the
// maximum; the connection should be closed, its stream is out of step.
var ErrTooLong = errors.New("frame too long")

// Splitter collects chunks and returns complete frames.
type Splitter interface {
	// Feed adds a chunk and returns the frames it completed, in order.
	// Frames are copies the caller may keep.
	Feed(chunk []byte) ([][]byte, error)
	// Buffered is how many bytes wait for the rest of a frame.
	Buffered() int
}

// Delimiter splits on a delimiter such as "\n" or "##"; frames exclude it.
type Delimiter struct {
	delim []byte
	max   int
	buf   []byte
}

// NewDelimiter splits on delim; a frame longer than max bytes is an error
// (0: no limit).
func NewDelimiter(delim []byte, max int) *Delimiter {
	return &Delimiter{delim: append([]byte(nil), delim...), max: max}
}

func (d *Delimiter) Feed(chunk []byte) ([][]byte, error) {
	d.buf = append(d.buf, chunk...)
	var frames [][]byte
	for {
		i := bytes.Index(d.buf, d.delim)
		if i < 0 {
			break
		}
		if d.max > 0 && i > d.max {
			return frames, fmt.Errorf("%w: %d bytes before the delimiter", ErrTooLong, i)
		}
		frames = append(frames, append([]byte(nil), d.buf[:i]...))
		d.buf = d.buf[i+len(d.delim):]
	}
	if d.max > 0 && len(d.buf) > d.max+len(d.delim) {
		return frames, fmt.Errorf("%w: %d bytes without a delimiter", ErrTooLong, len(d.buf))
	}
	d.buf = compact(d.buf)
	return frames, nil
}

func (d *Delimiter) Buffered() int { return len(d.buf) }

// LengthField describes a length field inside a fixed-size header.
type LengthField struct {
	// Offset of the field in the header, Size 1, 2 or 4 bytes, Order its byte order.
	Offset, Size int
	Order        binary.ByteOrder
	// HeaderLen is the header's size; the frame is HeaderLen + length +
	// Adjust bytes (Adjust makes up for lengths that count the header, a
	// checksum after the body, and the like).
	HeaderLen int
	Adjust    int
	// Max caps a frame (0: no limit).
	Max int
}

// Length splits frames whose header carries their length; frames include
// the header.
type Length struct {
	f   LengthField
	buf []byte
}

// NewLength makes a splitter for f.
func NewLength(f LengthField) (*Length, error) {
	if f.Size != 1 && f.Size != 2 && f.Size != 4 {
		return nil, fmt.Errorf("length field size %d: must be 1, 2 or 4", f.Size)
	}
	if f.Offset < 0 || f.Offset+f.Size > f.HeaderLen {
		return nil, errors.New("the length field must lie inside the header")
	}
	if f.Order == nil {
		f.Order = binary.BigEndian
	}
	return &Length{f: f}, nil
}

// NewPrefix is the common case: a size-byte length prefix counting the body.
func NewPrefix(size int, order binary.ByteOrder, max int) (*Length, error) {
	return NewLength(LengthField{Offset: 0, Size: size, Order: order, HeaderLen: size, Max: max})
}

func (l *Length) Feed(chunk []byte) ([][]byte, error) {
	l.buf = append(l.buf, chunk...)
	var frames [][]byte
	f := l.f
	for len(l.buf) >= f.HeaderLen {
		var n int
		field := l.buf[f.Offset : f.Offset+f.Size]
		switch f.Size {
		case 1:
			n = int(field[0])
		case 2:
			n = int(f.Order.Uint16(field))
		case 4:
			n = int(f.Order.Uint32(field))
		}
		total := f.HeaderLen + n + f.Adjust
		if total < f.HeaderLen {
			return frames, fmt.Errorf("length %d with adjust %d makes a frame shorter than its header", n, f.Adjust)
		}
		if f.Max > 0 && total > f.Max {
			return frames, fmt.Errorf("%w: %d bytes", ErrTooLong, total)
		}
		if len(l.buf) < total {
			break
		}
		frames = append(frames, append([]byte(nil), l.buf[:total]...))
		l.buf = l.buf[total:]
	}
	l.buf = compact(l.buf)
	return frames, nil
}

func (l *Length) Buffered() int { return len(l.buf) }

// compact lets a consumed prefix's memory go.
func compact(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if cap(b) > 4*len(b)+64 {
		return append([]byte(nil), b...)
	}
	return b
}
