package bench

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// TestFrameReader: the load tool's frame reader finds the frames a JSON
// demo handler writes and their "type" and "code" as encoding/json would,
// however the stream is cut into reads, and is not fooled by braces,
// quotes or member names inside strings or nested objects.
func TestFrameReader(t *testing.T) {
	frames := []string{
		`{"type":2,"code":0}`,
		`{"payload":"\"}","type":7}`,
		`{"type":3,"topic":"a/{b}","qos":1,"payload":"\"type\":9, \\\"code\": 7 } {"}`,
		`{"type":6,"code":3,"clientinfo":{"type":8,"code":5}}`,
		` { "type" : 4 , "payload" : "[[[" }`,
		`{"type":5,"payload":"` + strings.Repeat("z", 3000) + `"}`,
		`{"type":"x","code":null}`,
		`{}`,
	}
	stream := strings.Join(frames, "\n") + "\n"
	readers := map[string]func() io.Reader{
		"whole":        func() io.Reader { return strings.NewReader(stream) },
		"byte by byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(stream)) },
		"halves":       func() io.Reader { return iotest.HalfReader(strings.NewReader(stream)) },
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			fr := newFrameReader(r())
			for i, f := range frames {
				var want struct {
					Type any `json:"type"`
					Code any `json:"code"`
				}
				if err := json.Unmarshal([]byte(f), &want); err != nil {
					t.Fatalf("frame %d is not JSON: %v", i, err)
				}
				typ, code, err := fr.next()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if typ != asInt(want.Type) || code != asInt(want.Code) {
					t.Errorf("frame %d: type %d code %d, want %d and %d", i, typ, code, asInt(want.Type), asInt(want.Code))
				}
			}
			if _, _, err := fr.next(); !errors.Is(err, io.EOF) {
				t.Errorf("after the last frame: %v, want EOF", err)
			}
		})
	}
}

// asInt is what frameReader reports for a decoded member: the number, or
// -1 for anything else.
func asInt(v any) int {
	if f, ok := v.(float64); ok {
		return int(f)
	}
	return -1
}
