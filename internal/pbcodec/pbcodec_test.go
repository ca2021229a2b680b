package pbcodec

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // grpc-go's codec, for the benchmark
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pb "github.com/exgate/exgate/exprotopb"
	"github.com/exgate/exgate/nativepb"
)

// samples returns every message type of exprotopb and nativepb, filled: each
// type once per member of its oneofs (a oneof holds one at a time), with
// nested messages, repeated fields and non-ASCII text.
func samples(t testing.TB) []proto.Message {
	var out []proto.Message
	for _, fd := range []protoreflect.FileDescriptor{pb.File_exproto_proto, nativepb.File_exgate_proto} {
		mds := fd.Messages()
		for i := range mds.Len() {
			md := mds.Get(i)
			variants := 1
			for j := range md.Oneofs().Len() {
				variants = max(variants, md.Oneofs().Get(j).Fields().Len())
			}
			for k := range variants {
				m := newMessage(t, md)
				fill(m.ProtoReflect(), k, 2)
				out = append(out, m)
			}
		}
	}
	return out
}

func newMessage(t testing.TB, md protoreflect.MessageDescriptor) proto.Message {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}

// fill sets every field of m (member k of each oneof), nesting depth levels.
func fill(m protoreflect.Message, k, depth int) {
	fds := m.Descriptor().Fields()
	for i := range fds.Len() {
		fd := fds.Get(i)
		if o := fd.ContainingOneof(); o != nil && o.Fields().Get(k%o.Fields().Len()) != fd {
			continue
		}
		if fd.Kind() == protoreflect.MessageKind && depth == 0 {
			continue
		}
		one := func() protoreflect.Value {
			switch fd.Kind() {
			case protoreflect.StringKind:
				return protoreflect.ValueOfString("héllo/wörld/" + string(fd.Name()))
			case protoreflect.BytesKind:
				return protoreflect.ValueOfBytes([]byte{0, 0xff, 0xc3, 'x'})
			case protoreflect.BoolKind:
				return protoreflect.ValueOfBool(true)
			case protoreflect.EnumKind:
				vs := fd.Enum().Values()
				return protoreflect.ValueOfEnum(vs.Get(vs.Len() - 1).Number())
			case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
				return protoreflect.ValueOfInt32(-7)
			case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
				return protoreflect.ValueOfInt64(-1 << 40)
			case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
				return protoreflect.ValueOfUint32(300)
			case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
				return protoreflect.ValueOfUint64(1 << 50)
			case protoreflect.FloatKind:
				return protoreflect.ValueOfFloat32(1.5)
			case protoreflect.DoubleKind:
				return protoreflect.ValueOfFloat64(-2.25)
			case protoreflect.MessageKind:
				v := m.NewField(fd)
				fill(v.Message(), k, depth-1)
				return v
			}
			panic("kind " + fd.Kind().String())
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			mp.Set(protoreflect.ValueOfString("k").MapKey(), protoreflect.ValueOfString("v"))
		case fd.IsList():
			l := m.Mutable(fd).List()
			if fd.Kind() == protoreflect.MessageKind {
				for range 2 {
					v := l.NewElement()
					fill(v.Message(), k, depth-1)
					l.Append(v)
				}
			} else {
				l.Append(one())
				l.Append(one())
			}
		default:
			m.Set(fd, one())
		}
	}
}

func encode(t testing.TB, v any) []byte {
	t.Helper()
	bs, err := Codec.Marshal(v)
	if err != nil {
		t.Fatalf("Marshal %T: %v", v, err)
	}
	defer bs.Free()
	return bs.Materialize()
}

func decode(b []byte, v any) error {
	return Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, v)
}

// TestSameWireAsProtobufGo: every message encodes to protobuf-go's bytes
// and decodes to what protobuf-go decodes.
func TestSameWireAsProtobufGo(t *testing.T) {
	ms := samples(t)
	if len(ms) < 40 {
		t.Fatalf("only %d sample messages", len(ms))
	}
	for _, m := range ms {
		name := string(m.ProtoReflect().Descriptor().FullName())
		if _, ok := m.(fast); !ok {
			t.Fatalf("%s has no generated fast code: run make proto", name)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if got := encode(t, m); !bytes.Equal(got, want) {
			t.Errorf("%s: encoded\n%x\nprotobuf-go\n%x", name, got, want)
		}
		back := m.ProtoReflect().New().Interface()
		if err := decode(want, back); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !proto.Equal(back, m) {
			t.Errorf("%s: decoded %v, want %v", name, back, m)
		}
	}
}

// TestUnmarshalReplaces: decoding into a message that holds fields leaves
// none of them behind, as proto.Unmarshal.
func TestUnmarshalReplaces(t *testing.T) {
	m := &pb.SendBytesRequest{Conn: "old", Bytes: []byte("old")}
	if err := decode(encode(t, &pb.SendBytesRequest{Bytes: []byte("new")}), m); err != nil {
		t.Fatal(err)
	}
	if m.Conn != "" || string(m.Bytes) != "new" {
		t.Fatalf("got %v", m)
	}
}

// TestInvalidUTF8 is refused both ways with protobuf-go's error, at any
// depth: in a repeated string, in a oneof's message's message.
func TestInvalidUTF8(t *testing.T) {
	bad := string([]byte{'a', 0xc3, 0x28})
	for _, m := range []proto.Message{
		&pb.PublishRequest{Conn: "c", Topic: bad},
		&nativepb.Up{Hello: &nativepb.Hello{Features: []string{"ok", bad}}},
		&nativepb.Down{Actions: []*nativepb.Action{
			{Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: "c", Bytes: []byte{0xc3}}}},
			{Ref: 3, Action: &nativepb.Action_Authenticate{Authenticate: &pb.AuthenticateRequest{Conn: "c", Clientinfo: &pb.ClientInfo{Clientid: "id", Username: bad}}}},
		}},
	} {
		_, want := proto.Marshal(m)
		if want == nil {
			t.Fatalf("%T: protobuf-go encoded it", m)
		}
		if _, err := Codec.Marshal(m); err == nil || err.Error() != want.Error() {
			t.Errorf("Marshal %T: %v, want %v", m, err, want)
		}
		wire := withoutCheck(t, m)
		want = proto.Unmarshal(wire, m.ProtoReflect().New().Interface())
		if want == nil {
			t.Fatalf("%T: protobuf-go decoded it", m)
		}
		if err := decode(wire, m.ProtoReflect().New().Interface()); err == nil || err.Error() != want.Error() {
			t.Errorf("Unmarshal %T: %v, want %v", m, err, want)
		}
	}
}

// withoutCheck encodes m as a peer that does not check UTF-8 would: with
// the generated encoder.
func withoutCheck(t *testing.T, m proto.Message) []byte {
	t.Helper()
	f := m.(fast)
	b := make([]byte, f.SizeVT())
	if _, err := f.MarshalToSizedBufferVT(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOtherMessages (health, reflection: not generated here) go through
// protobuf-go; what is no message is an error.
func TestOtherMessages(t *testing.T) {
	in := wrapperspb.String("ünïcode")
	out := new(wrapperspb.StringValue)
	if err := decode(encode(t, in), out); err != nil || out.Value != in.Value {
		t.Fatalf("%v %v", out, err)
	}
	if _, err := Codec.Marshal(struct{}{}); err == nil || !strings.Contains(err.Error(), "not a protobuf message") {
		t.Fatalf("Marshal: %v", err)
	}
	if err := decode([]byte{}, new(int)); err == nil || !strings.Contains(err.Error(), "not a protobuf message") {
		t.Fatalf("Unmarshal: %v", err)
	}
}

// TestLarge: a message above gRPC's pooling threshold goes in a pooled
// buffer and comes back whole.
func TestLarge(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	in := &pb.PublishRequest{Conn: "c", Topic: "t", Payload: payload}
	bs, err := Codec.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if mem.IsBelowBufferPoolingThreshold(bs.Len()) {
		t.Fatalf("%d bytes: below the pooling threshold", bs.Len())
	}
	out := new(pb.PublishRequest)
	if err := Codec.Unmarshal(bs, out); err != nil || !proto.Equal(in, out) {
		t.Fatalf("round trip: %v", err)
	}
	bs.Free()
}

// FuzzUnmarshal: on any input the codec decides as protobuf-go does, and
// decodes to the same message (the known fields). `go test -fuzz FuzzUnmarshal ./internal/pbcodec`.
func FuzzUnmarshal(f *testing.F) {
	for _, m := range samples(f) {
		b, _ := proto.Marshal(m)
		f.Add(string(m.ProtoReflect().Descriptor().FullName()), b)
	}
	// A known field with another wire type: an unknown field to protobuf-go.
	f.Add("emqx.exproto.v1.SendBytesRequest", []byte{0x08, 0x01, 0x12, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
		if err != nil {
			return
		}
		want := mt.New().Interface()
		werr := proto.Unmarshal(b, want)
		got := mt.New().Interface()
		gerr := decode(b, got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%s %x: codec %v, protobuf-go %v", name, b, gerr, werr)
		}
		// Unknown fields are kept by both, but protobuf-go re-encodes a
		// tag written with needless bytes; exgate ignores them either way.
		discardUnknown(got.ProtoReflect())
		discardUnknown(want.ProtoReflect())
		if werr == nil && !proto.Equal(got, want) {
			t.Fatalf("%s %x: codec %v, protobuf-go %v", name, b, got, want)
		}
	})
}

// BenchmarkCodec: this codec against grpc-go's own on what a native stream
// carries: an Up of ten ReceivedBytes events and a Down of ten Sends.
func BenchmarkCodec(b *testing.B) {
	up, down := &nativepb.Up{}, &nativepb.Down{}
	for i := range 10 {
		conn := "exgate@node1-" + strings.Repeat(string(rune('a'+i)), 8)
		p := bytes.Repeat([]byte{byte(i)}, 64)
		up.Events = append(up.Events, &nativepb.Event{Seq: uint64(1000 + i), Event: &nativepb.Event_ReceivedBytes{ReceivedBytes: &pb.ReceivedBytesRequest{Conn: conn, Bytes: p}}})
		down.Actions = append(down.Actions, &nativepb.Action{Action: &nativepb.Action_Send{Send: &pb.SendBytesRequest{Conn: conn, Bytes: p}}})
	}
	for _, c := range []struct {
		name  string
		codec interface {
			Marshal(any) (mem.BufferSlice, error)
			Unmarshal(mem.BufferSlice, any) error
		}
	}{{"pbcodec", Codec}, {"grpc", encoding.GetCodecV2("proto")}} {
		for _, m := range []proto.Message{up, down} {
			kind := string(m.ProtoReflect().Descriptor().Name())
			b.Run(c.name+"/Marshal"+kind, func(b *testing.B) {
				for b.Loop() {
					bs, err := c.codec.Marshal(m)
					if err != nil {
						b.Fatal(err)
					}
					bs.Free()
				}
			})
			wire, _ := proto.Marshal(m)
			b.Run(c.name+"/Unmarshal"+kind, func(b *testing.B) {
				for b.Loop() {
					if err := c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, m.ProtoReflect().New().Interface()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func discardUnknown(m protoreflect.Message) {
	m.SetUnknown(nil)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool { discardUnknown(v.Message()); return true })
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				for i := range v.List().Len() {
					discardUnknown(v.List().Get(i).Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			discardUnknown(v.Message())
		}
		return true
	})
}
