package framing

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
)

// feedSplit feeds data cut at the given points and collects the frames.
func feedSplit(t testing.TB, s Splitter, data []byte, cuts []int) [][]byte {
	var out [][]byte
	prev := 0
	for _, c := range append(cuts, len(data)) {
		if c < prev || c > len(data) {
			continue
		}
		frames, err := s.Feed(data[prev:c])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, frames...)
		prev = c
	}
	return out
}

func cutsFrom(seed uint64, n int) []int {
	r := rand.New(rand.NewPCG(seed, 42))
	var cuts []int
	for i := 0; i < n; i++ {
		if r.IntN(4) == 0 {
			cuts = append(cuts, i)
		}
	}
	return cuts
}

func TestDelimiter(t *testing.T) {
	d := NewDelimiter([]byte("##"), 100)
	frames := feedSplit(t, d, []byte("a##bb###c##"), []int{1, 2, 3, 6})
	want := [][]byte{[]byte("a"), []byte("bb"), []byte("#c")}
	if len(frames) != 3 || !bytes.Equal(frames[0], want[0]) || !bytes.Equal(frames[1], want[1]) || !bytes.Equal(frames[2], want[2]) {
		t.Fatalf("%q", frames)
	}
	if _, err := NewDelimiter([]byte("\n"), 4).Feed([]byte("too long line")); !errors.Is(err, ErrTooLong) {
		t.Fatal(err)
	}
	// Buffered is what waits for its delimiter: a half-sent one included.
	for _, step := range []struct {
		chunk    string
		frames   int
		buffered int
	}{{"ab", 0, 2}, {"c#", 0, 4}, {"#d", 1, 1}, {"##", 1, 0}} {
		frames, err := d.Feed([]byte(step.chunk))
		if err != nil || len(frames) != step.frames || d.Buffered() != step.buffered {
			t.Fatalf("after %q: %q %v, Buffered %d; want %d frames, %d buffered", step.chunk, frames, err, d.Buffered(), step.frames, step.buffered)
		}
	}
}

func TestLengthPrefixes(t *testing.T) {
	for _, c := range []struct {
		size  int
		order binary.ByteOrder
	}{{1, binary.BigEndian}, {2, binary.BigEndian}, {2, binary.LittleEndian}, {4, binary.BigEndian}, {4, binary.LittleEndian}} {
		l, err := NewPrefix(c.size, c.order, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		var data []byte
		bodies := [][]byte{[]byte("x"), {}, []byte("hello world")}
		for _, b := range bodies {
			data = append(data, prefix(c.size, c.order, len(b))...)
			data = append(data, b...)
		}
		frames := feedSplit(t, l, data, []int{0, 1, 3, 5})
		if len(frames) != 3 || !bytes.Equal(frames[2][c.size:], bodies[2]) || l.Buffered() != 0 {
			t.Fatalf("size %d: %q", c.size, frames)
		}
	}
	if l, _ := NewPrefix(2, binary.BigEndian, 100); true { // Buffered: the header and what came of the body
		if frames, _ := l.Feed([]byte{0, 5, 'a'}); len(frames) != 0 || l.Buffered() != 3 {
			t.Fatalf("half a frame: %q, Buffered %d, want 3", frames, l.Buffered())
		}
		if frames, _ := l.Feed([]byte("bcde")); len(frames) != 1 || l.Buffered() != 0 {
			t.Fatalf("the rest: %q, Buffered %d, want 0", frames, l.Buffered())
		}
	}
	if l, _ := NewPrefix(2, binary.BigEndian, 10); true {
		if _, err := l.Feed([]byte{0, 50}); !errors.Is(err, ErrTooLong) {
			t.Fatal("max not enforced", err)
		}
	}
}

func TestLengthFieldAtOffset(t *testing.T) {
	// A JT/T 808-like header: 2-byte id, 2-byte body length, 4-byte serial;
	// then the body and a 1-byte checksum (Adjust 1).
	l, err := NewLength(LengthField{Offset: 2, Size: 2, Order: binary.BigEndian, HeaderLen: 8, Adjust: 1, Max: 1024})
	if err != nil {
		t.Fatal(err)
	}
	frame := []byte{0x01, 0x02, 0x00, 0x03, 0, 0, 0, 7, 'a', 'b', 'c', 0x5a}
	frames := feedSplit(t, l, append(append([]byte(nil), frame...), frame...), []int{5, 13})
	if len(frames) != 2 || !bytes.Equal(frames[0], frame) {
		t.Fatalf("%x", frames)
	}
}

func prefix(size int, order binary.ByteOrder, n int) []byte {
	b := make([]byte, size)
	switch size {
	case 1:
		b[0] = byte(n)
	case 2:
		order.PutUint16(b, uint16(n))
	case 4:
		order.PutUint32(b, uint32(n))
	}
	return b
}

// FuzzSplitters: any frames, cut at any points, come out whole and in order.
func FuzzSplitters(f *testing.F) {
	f.Add([]byte("hello"), []byte("world"), uint64(1))
	f.Add([]byte{}, []byte("x"), uint64(7))
	f.Fuzz(func(t *testing.T, a, b []byte, seed uint64) {
		if len(a) > 200 || len(b) > 200 {
			return
		}
		bodies := [][]byte{a, b, a}
		// Length prefix, 2 bytes little endian.
		l, _ := NewPrefix(2, binary.LittleEndian, 0)
		var data []byte
		for _, body := range bodies {
			data = append(data, prefix(2, binary.LittleEndian, len(body))...)
			data = append(data, body...)
		}
		frames := feedSplit(t, l, data, cutsFrom(seed, len(data)))
		if len(frames) != 3 {
			t.Fatalf("%d frames", len(frames))
		}
		for i, fr := range frames {
			if !bytes.Equal(fr[2:], bodies[i]) {
				t.Fatalf("frame %d: %q, want %q", i, fr[2:], bodies[i])
			}
		}
		// Delimiter: bodies without the delimiter.
		delim := []byte("\r\n")
		var ddata []byte
		var want [][]byte
		for _, body := range bodies {
			clean := bytes.ReplaceAll(body, []byte("\r"), nil)
			clean = bytes.ReplaceAll(clean, []byte("\n"), nil)
			want = append(want, clean)
			ddata = append(append(ddata, clean...), delim...)
		}
		dframes := feedSplit(t, NewDelimiter(delim, 0), ddata, cutsFrom(seed+1, len(ddata)))
		if len(dframes) != 3 {
			t.Fatalf("%d delimited frames", len(dframes))
		}
		for i := range want {
			if !bytes.Equal(dframes[i], want[i]) {
				t.Fatalf("delimited frame %d: %q, want %q", i, dframes[i], want[i])
			}
		}
	})
}
