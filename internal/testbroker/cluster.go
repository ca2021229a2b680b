package testbroker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Cluster is a broker cluster of another engine than mosquitto, every node
// serving MQTT on a loopback port: Debian's nats-server (MQTT over
// JetStream) or rabbitmq-server (its MQTT plugin). Both speak MQTT 3.1.1
// only.
type Cluster struct {
	Engine string // "nats" or "rabbitmq"
	Nodes  []*Node
	dir    string
	epmd   int                      // RabbitMQ: the Erlang port mapper's port, to stop it
	env    func(...string) []string // RabbitMQ: the environment of its commands
}

// Node is one broker of a cluster.
type Node struct {
	Name   string
	Addr   string // MQTT, 127.0.0.1:port
	cmd    *exec.Cmd
	exited chan struct{}
	log    *syncBuffer
}

// Kill ends the node at once (SIGKILL to its process group): a broker
// node lost, its clients' connections cut.
func (n *Node) Kill() {
	if n.cmd.Process != nil {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-n.exited
}

// needBinary finds a broker binary: skip without it, except under CI
// (scripts/deps.sh installs it), where that is a failure.
func needBinary(t testing.TB, pkg string, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	err := fmt.Errorf("%s not found (Debian package %s; scripts/deps.sh installs it)", paths[0], pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(err)
	}
	t.Skip(err)
	return ""
}

// StartNATS runs an n-node NATS cluster with JetStream and MQTT; it stops
// when the test ends. Up in about a second.
func StartNATS(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := needBinary(t, "nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server")
	return retry(t, func() (*Cluster, error) { return startNATS(t, bin, n) })
}

// StartRabbitMQ runs an n-node RabbitMQ cluster with the MQTT plugin; it
// stops when the test ends. Erlang is slow to start: 15–20 s here.
func StartRabbitMQ(t testing.TB, n int) *Cluster {
	t.Helper()
	server := needBinary(t, "rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")
	return retry(t, func() (*Cluster, error) { return startRabbitMQ(t, server, n) })
}

// retry starts a cluster up to three times. The ports are picked free but
// only bound by the brokers a moment later, and under load another
// process (an outgoing connection's ephemeral port, a connection of
// another test in TIME_WAIT) takes one now and then: a node that will not
// bind ends the attempt, and the next one picks other ports.
func retry(t testing.TB, start func() (*Cluster, error)) *Cluster {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c, err := start()
		if err == nil {
			t.Cleanup(func() {
				c.stop()
				if t.Failed() {
					c.logTails(t)
				}
			})
			return c
		}
		c.stop()
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%s cluster did not start (attempt %d; again on other ports): %v", c.Engine, attempt, err)
	}
}

func startNATS(t testing.TB, bin string, n int) (*Cluster, error) {
	c := &Cluster{Engine: "nats", dir: t.TempDir()}
	routes := make([]string, n)
	routePorts := make([]int, n)
	for i := range n {
		routePorts[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i])
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(c.dir, name+".conf")
		mqttAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		body := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
cluster { name: exgate-test, listen: 127.0.0.1:%d, routes: [%s] }
jetstream { store_dir: %q }
mqtt { listen: %s }
`, name, freePort(t), routePorts[i], strings.Join(routes, ", "), filepath.Join(c.dir, name), mqttAddr)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return c, err
		}
		c.start(t, name, exec.Command(bin, "-c", conf)).Addr = mqttAddr
	}
	return c, c.waitReady(30 * time.Second)
}

func startRabbitMQ(t testing.TB, server string, n int) (*Cluster, error) {
	ctl := filepath.Join(filepath.Dir(server), "rabbitmqctl")
	c := &Cluster{Engine: "rabbitmq", dir: t.TempDir(), epmd: freePort(t)}
	if err := os.WriteFile(filepath.Join(c.dir, ".erlang.cookie"), []byte("exgate-test-cookie"), 0o400); err != nil {
		return c, err
	}
	plugins := filepath.Join(c.dir, "enabled_plugins")
	if err := os.WriteFile(plugins, []byte("[rabbitmq_mqtt].\n"), 0o644); err != nil {
		return c, err
	}
	// Every process (each node, each rabbitmqctl) needs a port of its own
	// for Erlang distribution: rabbitmqctl takes one from a range.
	ctlMin := freePort(t)
	c.env = func(extra ...string) []string {
		// ERL_CRASH_DUMP: an Erlang VM that dies (a rabbitmqctl that
		// cannot reach its node) writes its dump here, not into the
		// test's package directory.
		return append(append(os.Environ(), "HOME="+c.dir, "ERL_CRASH_DUMP="+filepath.Join(c.dir, "erl_crash.dump"), fmt.Sprintf("ERL_EPMD_PORT=%d", c.epmd),
			fmt.Sprintf("RABBITMQ_CTL_DIST_PORT_MIN=%d", ctlMin), fmt.Sprintf("RABBITMQ_CTL_DIST_PORT_MAX=%d", ctlMin)), extra...)
	}
	for i := range n {
		name := fmt.Sprintf("rabbit%d@localhost", i+1)
		dir := filepath.Join(c.dir, fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return c, err
		}
		mqttAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nmqtt.listeners.tcp.default = %s\nmqtt.allow_anonymous = true\nloopback_users = none\n", freePort(t), mqttAddr)
		if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
			return c, err
		}
		cmd := exec.Command(server)
		cmd.Env = c.env("RABBITMQ_NODENAME="+name, fmt.Sprintf("RABBITMQ_DIST_PORT=%d", freePort(t)),
			"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"), "RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
			"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"), "RABBITMQ_ENABLED_PLUGINS_FILE="+plugins)
		c.start(t, name, cmd).Addr = mqttAddr
	}
	for _, node := range c.Nodes {
		if !waitListening(node.Addr, node.exited, 90*time.Second) {
			return c, fmt.Errorf("RabbitMQ node %s did not start: %s", node.Name, node.log.String())
		}
	}
	first := c.Nodes[0].Name
	for _, node := range c.Nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", first}, {"start_app"}} {
			cmd := exec.Command(ctl, append([]string{"-n", node.Name}, args...)...)
			cmd.Env = c.env()
			if out, err := cmd.CombinedOutput(); err != nil {
				return c, fmt.Errorf("rabbitmqctl -n %s %s: %v\n%s", node.Name, strings.Join(args, " "), err, out)
			}
		}
	}
	return c, c.waitReady(60 * time.Second)
}

func (c *Cluster) start(t testing.TB, name string, cmd *exec.Cmd) *Node {
	t.Helper()
	node := &Node{Name: name, cmd: cmd, exited: make(chan struct{}), log: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = node.log, node.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(node.exited) }()
	c.Nodes = append(c.Nodes, node)
	return node
}

// waitReady waits until every node accepts an MQTT 3.1.1 session: a NATS
// node only does once JetStream has a leader, a RabbitMQ node once it
// runs in the cluster.
func (c *Cluster) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, node := range c.Nodes {
		for {
			err := probe(node.Addr)
			if err == nil {
				break
			}
			select {
			case <-node.exited:
				return fmt.Errorf("%s node %s exited: %s", c.Engine, node.Name, node.log.String())
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s node %s accepts no MQTT session after %v: %v\n%s", c.Engine, node.Name, d, err, node.log.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func probe(addr string) error {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("probe-%d", time.Now().UnixNano())).
		SetProtocolVersion(4).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false).SetConnectRetry(false)
	cl := mqtt.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(3 * time.Second) {
		return errors.New("no CONNACK")
	}
	if tok.Error() != nil {
		return tok.Error()
	}
	cl.Disconnect(0)
	return nil
}

// logTails logs the end of every node's log: what a broker said about a
// failed test (a JetStream leader lost, a session closed) is there.
func (c *Cluster) logTails(t testing.TB) {
	for _, node := range c.Nodes {
		l := node.log.String()
		if len(l) > 6000 {
			l = "…" + l[len(l)-6000:]
		}
		t.Logf("%s node %s, the end of its log:\n%s", c.Engine, node.Name, l)
	}
}

// stop ends every node and, for RabbitMQ, the Erlang port mapper the
// nodes started, so nothing outlives the test.
func (c *Cluster) stop() {
	for _, node := range c.Nodes {
		if node.cmd.Process != nil {
			_ = syscall.Kill(-node.cmd.Process.Pid, syscall.SIGKILL)
			<-node.exited
		}
	}
	if c.epmd != 0 {
		if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", c.epmd), time.Second); err == nil {
			// epmd's "kill" request: length 1, code 'k'.
			_, _ = conn.Write([]byte{0, 1, 'k'})
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = conn.Read(make([]byte, 2))
			conn.Close()
		}
	}
}
