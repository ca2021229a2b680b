package pbcodec

import (
	"errors"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// protobuf-go rejects a proto3 string field that is not valid UTF-8 (an
// adapter request with such a topic or client id fails to decode), and the
// generated vtprotobuf decoders do not check; so after a fast decode the
// wire bytes are walked once more for the string fields of the message and
// of the messages inside it. The walk allocates nothing: the fields to look
// at come from a table made once per message type.

// errInvalidUTF8 has protobuf-go's words, so a peer sees the error it saw
// before.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

var errFieldNumber = errors.New("invalid field number")

// shape is, for one message type, what its fields hold, by field number.
type shape struct {
	fields []fieldShape                    // by field number (numbers are small here)
	more   map[protowire.Number]fieldShape // numbers from 64 on; nil if none
}

func (s *shape) field(num protowire.Number) fieldShape {
	if int(num) < len(s.fields) {
		return s.fields[num]
	}
	return s.more[num]
}

type fieldShape struct {
	text bool   // a string: must be UTF-8
	msg  *shape // a message (or a map entry): look inside
}

var shapes sync.Map // protoreflect.FullName → *shape

func shapeOf(md protoreflect.MessageDescriptor) *shape {
	if s, ok := shapes.Load(md.FullName()); ok {
		return s.(*shape)
	}
	s := buildShape(md, map[protoreflect.FullName]*shape{})
	shapes.Store(md.FullName(), s)
	return s
}

// buildShape makes md's table; seen breaks cycles of message types.
func buildShape(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*shape) *shape {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &shape{}
	seen[md.FullName()] = s
	fds := md.Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		var f fieldShape
		switch fd.Kind() {
		case protoreflect.StringKind:
			f.text = true
		case protoreflect.MessageKind:
			f.msg = buildShape(fd.Message(), seen)
		default:
			continue
		}
		if n := fd.Number(); n < 64 {
			if int(n) >= len(s.fields) {
				s.fields = append(s.fields, make([]fieldShape, int(n)+1-len(s.fields))...)
			}
			s.fields[n] = f
		} else {
			if s.more == nil {
				s.more = map[protowire.Number]fieldShape{}
			}
			s.more[n] = f
		}
	}
	return s
}

// checkUTF8 reports the first string field in b (a message of shape s,
// already decoded without error) that is not valid UTF-8, or a field the
// generated decoder let through and protobuf-go would not (a field number
// beyond protobuf's range).
func checkUTF8(b []byte, s *shape) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return errFieldNumber
		}
		b = b[n:]
		f := s.field(num)
		if (!f.text && f.msg == nil) || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case f.text:
			if !utf8.Valid(v) {
				return errInvalidUTF8
			}
		default:
			if err := checkUTF8(v, f.msg); err != nil {
				return err
			}
		}
	}
	return nil
}
