// Package pbcodec is the gRPC codec of exgate's own connections (the
// handler client, the adapter server, calls between nodes) and of the Go
// SDK's. The wire is protobuf's, byte for byte, so any peer's codec reads
// it; only the work differs: the messages of exprotopb and nativepb are
// encoded and decoded by their generated vtprotobuf code instead of
// protobuf-go's reflection (an Up or Down of ten events, UTF-8 check
// included: ~1.6× faster to encode, ~1.5× to decode), and any other message
// (health, reflection) the way grpc-go's own codec does.
package pbcodec

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Codec encodes and decodes; its name is "proto", gRPC's default, so the
// content type on the wire is unchanged.
var Codec encoding.CodecV2 = codec{}

// ServerOption and CallOption put Codec on a server or a client connection
// (grpc.WithDefaultCallOptions). Not registered globally: a program that
// imports exgate's packages keeps its own codecs.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(Codec) }

// CallOption: see ServerOption.
func CallOption() grpc.CallOption { return grpc.ForceCodecV2(Codec) }

// fast is what protoc-gen-go-vtproto generates (features marshal, unmarshal
// and size).
type fast interface {
	SizeVT() int
	MarshalToSizedBufferVT([]byte) (int, error)
	UnmarshalVT([]byte) error
}

type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(fast)
	pm, isPM := v.(proto.Message)
	if !ok || !isPM {
		return marshalSlow(v)
	}
	size := m.SizeVT()
	// As grpc-go's codec: small messages in a buffer of their own, larger
	// ones in a pooled one that gRPC frees once written.
	var out mem.Buffer
	var b []byte
	if mem.IsBelowBufferPoolingThreshold(size) {
		b = make([]byte, size)
		out = mem.SliceBuffer(b)
	} else {
		pool := mem.DefaultBufferPool()
		buf := pool.Get(size)
		b = (*buf)[:size]
		out = mem.NewBuffer(buf, pool)
	}
	_, err := m.MarshalToSizedBufferVT(b)
	if err == nil {
		// protobuf-go refuses to encode such a string too.
		err = checkUTF8(b, shapeOf(pm.ProtoReflect().Descriptor()))
	}
	if err != nil {
		out.Free()
		return nil, err
	}
	return mem.BufferSlice{out}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	pm := messageOf(v)
	if pm == nil {
		return fmt.Errorf("pbcodec: cannot unmarshal into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free() // the decoders copy what they keep
	b := buf.ReadOnlyData()
	if m, ok := v.(fast); ok {
		proto.Reset(pm) // UnmarshalVT merges; proto.Unmarshal replaces
		if m.UnmarshalVT(b) == nil && checkUTF8(b, shapeOf(pm.ProtoReflect().Descriptor())) == nil {
			return nil
		}
		// The generated decoders differ from protobuf-go in corners (to
		// protobuf-go a known field with another wire type is an unknown
		// one, a field number beyond its range an error; they do not check
		// UTF-8): on anything but a clean decode the reference decoder
		// decides, as before, with its own error.
	}
	return proto.Unmarshal(b, pm)
}

func marshalSlow(v any) (mem.BufferSlice, error) {
	pm := messageOf(v)
	if pm == nil {
		return nil, fmt.Errorf("pbcodec: cannot marshal %T: not a protobuf message", v)
	}
	b, err := proto.Marshal(pm)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func messageOf(v any) proto.Message {
	switch m := v.(type) {
	case proto.Message:
		return m
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m)
	}
	return nil
}
