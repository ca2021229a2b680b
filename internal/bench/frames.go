package bench

import (
	"fmt"
	"io"
)

// frameReader reads the JSON demo protocol's frames from a device's
// connection and returns the two fields the load tool acts on, "type" and
// "code", without encoding/json. A device that decoded every frame with
// encoding/json spent more of the two shared cores than exgate's own
// handler did per delivered message (a 10,000-device publish: half of the
// load tool's CPU in the decoder and in growing the fresh stack of each
// device's goroutine for it), which the MQTT baselines' devices, reading
// with mochi's packet codec, do not pay.
type frameReader struct {
	r    io.Reader
	buf  []byte
	head int // buf[head:] is unread
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: r, buf: make([]byte, 0, 512)}
}

// next returns the next frame's "type" and "code" (-1 where a frame has
// none, or not an integer).
func (fr *frameReader) next() (typ, code int, err error) {
	for {
		if end, t, c := scanFrame(fr.buf[fr.head:]); end > 0 {
			fr.head += end
			return t, c, nil
		}
		// Keep the unread part at the front, then grow if it fills buf.
		n := copy(fr.buf[:cap(fr.buf)], fr.buf[fr.head:])
		fr.buf, fr.head = fr.buf[:n], 0
		if n == cap(fr.buf) {
			if n >= 1<<20 {
				return 0, 0, fmt.Errorf("frame over %d bytes", n)
			}
			fr.buf = append(fr.buf, make([]byte, n)...)[:n]
		}
		m, err := fr.r.Read(fr.buf[n:cap(fr.buf)])
		fr.buf = fr.buf[:n+m]
		if m == 0 && err != nil {
			return 0, 0, err
		}
	}
}

// scanFrame finds the first complete JSON object in b. It returns the
// offset just past it (0 if b holds no complete object yet) and the integer
// values of its top-level "type" and "code" members (-1 when absent). Bytes
// before the object (newlines between frames) are skipped; strings are
// scanned with their escapes, so braces or quotes inside them do not count.
func scanFrame(b []byte) (end, typ, code int) {
	typ, code = -1, -1
	depth, str := 0, -1 // str: where the string being scanned starts, or -1
	var key []byte      // the last string that ended: a member's name at its ':'
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case str >= 0:
			if c == '\\' {
				i++
			} else if c == '"' {
				key, str = b[str:i], -1
			}
		case c == '"':
			str = i + 1
		case c == '{' || c == '[':
			depth++
		case (c == '}' || c == ']') && depth > 0:
			depth--
			if depth == 0 {
				return i + 1, typ, code
			}
		case c == ':' && depth == 1:
			switch string(key) {
			case "type":
				typ = leadingInt(b[i+1:])
			case "code":
				code = leadingInt(b[i+1:])
			}
		}
	}
	return 0, -1, -1
}

// leadingInt parses the non-negative integer at the start of b, after
// spaces; -1 if there is none.
func leadingInt(b []byte) int {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	n, digits := 0, 0
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9' && digits < 9; i++ {
		n = n*10 + int(b[i]-'0')
		digits++
	}
	if digits == 0 {
		return -1
	}
	return n
}
