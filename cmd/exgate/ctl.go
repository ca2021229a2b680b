package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/exgate/exgate/internal/apikey"
)

// apiClient talks to a running exgate's management API.
type apiClient struct {
	base, user, pass string
	out              string // "table" or "json"
	stdout           io.Writer
}

// resolve fills in the API address and credentials that flags left out.
func (a *apiClient) resolve(cfgPath, apiKey string) error {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	if a.base == "" {
		a.base = "http://" + clientAddress(cfg.API.Bind)
	}
	if apiKey == "" {
		apiKey = os.Getenv("EXGATE_API_KEY")
	}
	switch {
	case a.user != "":
	case apiKey != "":
		var ok bool
		if a.user, a.pass, ok = strings.Cut(apiKey, ":"); !ok {
			return fmt.Errorf("--api-key: want key:secret")
		}
	case cfg.API.Auth != "none":
		// The bootstrap key, when this user may read it: a missing file
		// is not an error here; the API will say what it needs.
		a.user, a.pass, _ = apikey.ReadCredentials(apikey.BootstrapFile(cfg.API.Keys()))
	}
	return nil
}

// clientAddress turns a bind address into one to connect to.
func clientAddress(bind string) string {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return bind
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (a *apiClient) do(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(a.base, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	if a.user != "" {
		req.SetBasicAuth(a.user, a.pass)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is exgate running with its API on %s?)", path, err, a.base)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var e struct{ Code, Message string }
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			return nil, fmt.Errorf("%s %s", e.Code, e.Message)
		}
		return nil, fmt.Errorf("%s: HTTP %d", path, resp.StatusCode)
	}
	return b, nil
}

// show prints b as JSON, or as a table of the given columns.
func (a *apiClient) show(b []byte, rows func(any) [][]string, header ...string) error {
	if a.out == "json" {
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows(v) {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func field(m any, k string) string {
	if mm, ok := m.(map[string]any); ok {
		switch v := mm[k].(type) {
		case nil:
			return ""
		case float64:
			return fmt.Sprintf("%.0f", v)
		default:
			return fmt.Sprint(v)
		}
	}
	return ""
}

// addAPICommands adds clients, subscriptions, status and metrics. They
// find the API and its credentials in the configuration file given with -c
// (api.bind, and the bootstrap key beside api.keys_file), or in the
// defaults, unless flags or EXGATE_API_KEY say otherwise.
func addAPICommands(root *cobra.Command, stdout io.Writer, cfgPath *string) {
	a := &apiClient{stdout: stdout}
	var apiKey string
	flags := func(c *cobra.Command) *cobra.Command {
		c.PersistentFlags().StringVar(&a.base, "api", "", "the management API (default: from -c's api.bind, else http://127.0.0.1:18083)")
		c.PersistentFlags().StringVar(&apiKey, "api-key", "", "API key as key:secret (default: $EXGATE_API_KEY, else the bootstrap key beside api.keys_file)")
		c.PersistentFlags().StringVar(&a.user, "username", "", "API username (api.username)")
		c.PersistentFlags().StringVar(&a.pass, "password", "", "API password")
		c.PersistentFlags().StringVarP(&a.out, "output", "o", "table", "table or json")
		c.PersistentPreRunE = func(*cobra.Command, []string) error { return a.resolve(*cfgPath, apiKey) }
		return c
	}
	const gw = "/api/v5/gateways/exproto"
	clientRows := func(v any) [][]string {
		var out [][]string
		list, _ := v.(map[string]any)["data"].([]any)
		for _, c := range list {
			out = append(out, []string{field(c, "clientid"), field(c, "username"), field(c, "conn_state"),
				field(c, "ip_address") + ":" + field(c, "port"), field(c, "subscriptions_cnt"), field(c, "connected_at")})
		}
		return out
	}
	clients := flags(&cobra.Command{Use: "clients", Short: "List, show and kick devices"})
	var filter []string
	list := &cobra.Command{Use: "list", Short: "List devices (filters: clientid=, username=, like_clientid=, conn_state=, …)", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			q := url.Values{"limit": {"10000"}}
			for _, f := range filter {
				k, v, _ := strings.Cut(f, "=")
				q.Set(k, v)
			}
			b, err := a.do("GET", gw+"/clients?"+q.Encode(), nil)
			if err != nil {
				return err
			}
			return a.show(b, clientRows, "CLIENTID", "USERNAME", "STATE", "PEER", "SUBS", "CONNECTED AT")
		}}
	list.Flags().StringSliceVarP(&filter, "filter", "f", nil, "key=value filters")
	show := &cobra.Command{Use: "show CLIENTID", Short: "Show one device", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			b, err := a.do("GET", gw+"/clients/"+url.PathEscape(args[0]), nil)
			if err != nil {
				return err
			}
			return a.show(b, func(v any) [][]string {
				m, _ := v.(map[string]any)
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				var rows [][]string
				for _, k := range keys {
					rows = append(rows, []string{k, field(m, k)})
				}
				return rows
			}, "FIELD", "VALUE")
		}}
	kick := &cobra.Command{Use: "kick CLIENTID", Short: "Disconnect a device ({shutdown,kicked})", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if _, err := a.do("DELETE", gw+"/clients/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "kicked %s\n", args[0])
			return nil
		}}
	clients.AddCommand(list, show, kick)

	subs := flags(&cobra.Command{Use: "subscriptions", Short: "List, add and delete a device's subscriptions"})
	subRows := func(v any) [][]string {
		var out [][]string
		l, _ := v.([]any)
		for _, s := range l {
			out = append(out, []string{field(s, "topic"), field(s, "qos")})
		}
		return out
	}
	var qos int
	sadd := &cobra.Command{Use: "add CLIENTID TOPIC", Short: "Subscribe a device", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			b, err := a.do("POST", gw+"/clients/"+url.PathEscape(args[0])+"/subscriptions", map[string]any{"topic": args[1], "qos": qos})
			if err != nil {
				return err
			}
			return a.show([]byte("["+string(b)+"]"), subRows, "TOPIC", "QOS")
		}}
	sadd.Flags().IntVar(&qos, "qos", 0, "0, 1 or 2")
	subs.AddCommand(&cobra.Command{Use: "list CLIENTID", Short: "A device's subscriptions", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			b, err := a.do("GET", gw+"/clients/"+url.PathEscape(args[0])+"/subscriptions", nil)
			if err != nil {
				return err
			}
			return a.show(b, subRows, "TOPIC", "QOS")
		}}, sadd, &cobra.Command{Use: "delete CLIENTID TOPIC", Short: "Unsubscribe a device", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			if _, err := a.do("DELETE", gw+"/clients/"+url.PathEscape(args[0])+"/subscriptions/"+url.PathEscape(args[1]), nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "unsubscribed %s from %s\n", args[0], args[1])
			return nil
		}})

	status := flags(&cobra.Command{Use: "status", Short: "Gateway status, connections and listeners", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			b, err := a.do("GET", gw, nil)
			if err != nil {
				return err
			}
			return a.show(b, func(v any) [][]string {
				rows := [][]string{{"gateway", field(v, "status"), field(v, "current_connections"), field(v, "max_connections")}}
				ls, _ := v.(map[string]any)["listeners"].([]any)
				for _, l := range ls {
					addr := field(l, "address")
					if addr == "" {
						addr = field(l, "bind") + " (stopped)"
					}
					rows = append(rows, []string{field(l, "id"), addr, field(l, "current_connections"), field(l, "max_connections")})
				}
				return rows
			}, "NAME", "STATUS/BIND", "CONNECTIONS", "MAX")
		}})
	metrics := flags(&cobra.Command{Use: "metrics", Short: "Print the Prometheus metrics (exgate_*)", Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			b, err := a.do("GET", "/metrics", nil)
			if err != nil {
				return err
			}
			for _, line := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(line, "exgate_") {
					fmt.Fprintln(stdout, line)
				}
			}
			return nil
		}})
	ban := flags(&cobra.Command{Use: "banned", Short: "List, add and lift bans (clientid, username or peerhost)"})
	banRows := func(v any) [][]string {
		var out [][]string
		list, _ := v.(map[string]any)["data"].([]any)
		for _, e := range list {
			out = append(out, []string{field(e, "as"), field(e, "who"), field(e, "by"), field(e, "reason"), field(e, "until")})
		}
		return out
	}
	var reason, until string
	badd := &cobra.Command{Use: "add clientid|username|peerhost WHO", Short: "Ban a client; connected devices it matches are kicked", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			body := map[string]any{"as": args[0], "who": args[1], "reason": reason}
			if until != "" {
				d, err := time.ParseDuration(until)
				if err != nil {
					return fmt.Errorf("--for: %w", err)
				}
				body["until"] = time.Now().Add(d).UTC().Format(time.RFC3339)
			}
			b, err := a.do("POST", "/api/v5/banned", body)
			if err != nil {
				return err
			}
			return a.show([]byte(`{"data":[`+string(b)+`]}`), banRows, "AS", "WHO", "BY", "REASON", "UNTIL")
		}}
	badd.Flags().StringVar(&reason, "reason", "", "why")
	badd.Flags().StringVar(&until, "for", "", "how long (e.g. 1h); default: until lifted")
	ban.AddCommand(&cobra.Command{Use: "list", Short: "The bans in force", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b, err := a.do("GET", "/api/v5/banned?limit=10000", nil)
			if err != nil {
				return err
			}
			return a.show(b, banRows, "AS", "WHO", "BY", "REASON", "UNTIL")
		}}, badd, &cobra.Command{Use: "delete clientid|username|peerhost WHO", Short: "Lift a ban", Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			if _, err := a.do("DELETE", "/api/v5/banned/"+url.PathEscape(args[0])+"/"+url.PathEscape(args[1]), nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "lifted the ban of %s %s\n", args[0], args[1])
			return nil
		}})
	root.AddCommand(clients, subs, status, metrics, ban)
}
