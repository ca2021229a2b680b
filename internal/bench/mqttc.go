package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/exgate/exgate/internal/mqttwire"
)

// mqttConn is a lean MQTT 3.1.1 client for the load tool: paho tops out
// near 40–50k messages/s, below what a broker baseline needs. It encodes
// and decodes with mochi-mqtt's packets package and does nothing else.
type mqttConn struct {
	c   net.Conn
	r   *bufio.Reader
	wmu sync.Mutex
	id  uint16
}

// dialMQTT connects and sends CONNECT with a clean session.
func dialMQTT(addr, clientID string) (*mqttConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1} // as dialDevice
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	m := &mqttConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Clean: true, Keepalive: 300}}
	if err := m.write(&pk); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack, err := m.read()
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connack: %w", err)
	}
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		c.Close()
		return nil, fmt.Errorf("connack refused: %d", ack.ReasonCode)
	}
	return m, nil
}

func (m *mqttConn) write(pk *packets.Packet) error {
	var buf bytes.Buffer
	if err := mqttwire.Encode(pk, &buf); err != nil {
		return err
	}
	m.wmu.Lock()
	defer m.wmu.Unlock()
	_, err := m.c.Write(buf.Bytes())
	return err
}

// read reads one packet.
func (m *mqttConn) read() (packets.Packet, error) {
	pk, err := mqttwire.Read(m.r, 4)
	if pk == nil {
		return packets.Packet{}, err
	}
	return *pk, err
}

func (m *mqttConn) subscribe(filter string, qos byte) error {
	m.id++
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: m.id,
		Filters: packets.Subscriptions{{Filter: filter, Qos: qos}}}
	if err := m.write(&pk); err != nil {
		return err
	}
	for {
		ack, err := m.read()
		if err != nil {
			return err
		}
		if ack.FixedHeader.Type == packets.Suback {
			if len(ack.ReasonCodes) == 1 && ack.ReasonCodes[0] >= 0x80 {
				return errors.New("subscription refused")
			}
			return nil
		}
	}
}

// publish sends one message; with QoS 1 the caller reads the PUBACK.
func (m *mqttConn) publish(topic string, qos byte, payload []byte) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: 4, TopicName: topic, Payload: payload}
	if qos > 0 {
		m.id++
		if m.id == 0 {
			m.id = 1
		}
		pk.PacketID = m.id
	}
	return m.write(&pk)
}

func (m *mqttConn) puback(id uint16) error {
	return m.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: 4, PacketID: id})
}

// SetWriteDeadline bounds writes, as net.Conn's does.
func (m *mqttConn) SetWriteDeadline(t time.Time) error { return m.c.SetWriteDeadline(t) }

func (m *mqttConn) Close() error {
	_ = m.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 4})
	return m.c.Close()
}
