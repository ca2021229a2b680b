package binproto

import (
	"fmt"
	"io"
	"net"
	"time"
)

// Terminal is a simulated device: it logs in, sends heartbeats and
// telemetry, and reads ACKs and COMMANDs.
type Terminal struct {
	ID     string
	conn   net.Conn
	frames interface {
		Feed([]byte) ([][]byte, error)
	}
	serial uint16
	queue  []Frame
}

// DialTerminal connects a terminal to addr.
func DialTerminal(addr, id string) (*Terminal, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &Terminal{ID: id, conn: c, frames: NewSplitter()}, nil
}

// Conn is the terminal's connection (to send raw bytes).
func (t *Terminal) Conn() net.Conn { return t.conn }

// Close hangs up.
func (t *Terminal) Close() error { return t.conn.Close() }

// Send writes a frame (split in two writes, as real networks do).
func (t *Terminal) Send(id uint16, body []byte) (uint16, error) {
	t.serial++
	b := Encode(Frame{ID: id, Serial: t.serial, Body: body})
	half := len(b) / 2
	if _, err := t.conn.Write(b[:half]); err != nil {
		return 0, err
	}
	if _, err := t.conn.Write(b[half:]); err != nil {
		return 0, err
	}
	return t.serial, nil
}

// Next reads the next frame from the platform.
func (t *Terminal) Next(timeout time.Duration) (Frame, error) {
	_ = t.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 512)
	for len(t.queue) == 0 {
		n, err := t.conn.Read(buf)
		if n > 0 {
			raws, ferr := t.frames.Feed(buf[:n])
			if ferr != nil {
				return Frame{}, ferr
			}
			for _, r := range raws {
				f, derr := Decode(r)
				if derr != nil {
					return Frame{}, derr
				}
				t.queue = append(t.queue, f)
			}
		}
		if err != nil && len(t.queue) == 0 {
			if err == io.EOF {
				return Frame{}, fmt.Errorf("platform closed the connection")
			}
			return Frame{}, err
		}
	}
	f := t.queue[0]
	t.queue = t.queue[1:]
	return f, nil
}

// Request sends a frame and waits for its ACK, returning the result.
func (t *Terminal) Request(id uint16, body []byte) (byte, error) {
	serial, err := t.Send(id, body)
	if err != nil {
		return 0, err
	}
	for {
		f, err := t.Next(5 * time.Second)
		if err != nil {
			return 0, err
		}
		if f.ID == Ack && len(f.Body) == 5 && uint16(f.Body[0])<<8|uint16(f.Body[1]) == serial {
			return f.Body[4], nil
		}
		t.queue = append(t.queue, f) // a COMMAND meanwhile: keep it for later
		if len(t.queue) > 100 {
			return 0, fmt.Errorf("no ACK for serial %d", serial)
		}
	}
}
