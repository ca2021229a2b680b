// Command exgate runs the gateway and its tooling. It only wires: flags,
// configuration, logging and signals; the parts live in internal/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/exgate/exgate/internal/api"
	"github.com/exgate/exgate/internal/config"
	"github.com/exgate/exgate/internal/emqxconf"
	"github.com/exgate/exgate/internal/gateway"
)

// version, commit and date are set at build time (make dist) with
// -ldflags "-X main.version=… -X main.commit=… -X main.date=…"; a plain
// go build takes what the Go toolchain recorded (module version, VCS).
var version, commit, date = "dev", "", ""

// buildInfo is the version, commit and build date of this binary.
func buildInfo() (v, c, d string) {
	v, c, d = version, commit, date
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v, c, d
	}
	if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && c == "":
			c = s.Value
		case s.Key == "vcs.time" && d == "":
			d = s.Value
		}
	}
	return v, c, d
}

// versionLine is what `exgate version` and `exgate --version` print.
func versionLine() string {
	v, c, d := buildInfo()
	line := "exgate " + v
	if c != "" {
		line += " (commit " + c[:min(len(c), 12)]
		if d != "" {
			line += ", " + d
		}
		line += ")"
	}
	return line + " " + runtime.Version()
}

func main() {
	if err := newRoot(os.Stdin, os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "exgate:", err)
		os.Exit(1)
	}
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var cfgPath string
	root := &cobra.Command{
		Use:           "exgate",
		Short:         "exgate: an ExProto gateway that joins devices of any protocol to MQTT",
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), cfgPath, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVarP(&cfgPath, "config", "c", "", "configuration file (YAML); defaults apply when omitted")

	serveCmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway (the default command)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), cfgPath, stderr)
		},
	}
	cfgCmd := &cobra.Command{Use: "config", Short: "Check or print configuration"}
	cfgCmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate a configuration file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfgPath == "" {
				return errors.New("config check needs -c FILE")
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			// Certificates and key files too: a file that is missing or not
			// a certificate fails here, not at start.
			if err := gateway.Check(cfg); err != nil {
				return fmt.Errorf("%s: %w", cfgPath, err)
			}
			fmt.Fprintf(stdout, "%s: ok\n", cfgPath)
			return nil
		},
	}, &cobra.Command{
		Use:   "defaults",
		Short: "Print the full default configuration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := stdout.Write(config.Default().YAML())
			return err
		},
	})
	var importOut string
	var importVerbose bool
	importCmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Convert an EMQX ExProto configuration (emqx.conf 5.x/6.x or emqx_exproto.conf 4.x) to exgate's",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := emqxconf.Import(args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			out := res.Config.YAML()
			fmt.Fprintf(stderr, "%s: read as %s\n", args[0], res.Format)
			for _, n := range res.Changed {
				fmt.Fprintf(stderr, "changed:  %s\n", n)
			}
			// Settings outside the ExProto gateway (the node, the cluster,
			// other gateways) are many and never exgate's: one line unless -v.
			var elsewhere int
			for _, n := range res.Unmapped {
				if !importVerbose && emqxconf.Elsewhere(n) {
					elsewhere++
					continue
				}
				fmt.Fprintf(stderr, "not mapped: %s\n", n)
			}
			if elsewhere > 0 {
				fmt.Fprintf(stderr, "not mapped: %d settings outside gateway.exproto (node, cluster, listeners, other gateways…): not exgate's business; -v lists them\n", elsewhere)
			}
			if _, err := config.Parse(out); err != nil {
				fmt.Fprintf(stderr, "the result needs editing before it starts:\n%v\n", err)
			}
			if importOut == "" {
				_, err = stdout.Write(out)
				return err
			}
			if err := os.WriteFile(importOut, out, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "wrote %s\n", importOut)
			return nil
		},
	}
	importCmd.Flags().StringVarP(&importOut, "output", "o", "", "write the YAML here instead of standard output")
	importCmd.Flags().BoolVarP(&importVerbose, "verbose", "v", false, "list every setting outside gateway.exproto too")
	cfgCmd.AddCommand(importCmd)
	versionCmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(stdout, versionLine())
		},
	}
	root.Version = versionLine()
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(serveCmd, cfgCmd, versionCmd, newBenchCmd(stdout, stderr), newUsersCmd(stdin, stdout))
	addAPICommands(root, stdout, &cfgPath)
	root.AddCommand(newAPIKeysCmd(stdout, &cfgPath))
	return root
}

func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// overFile puts over the file's configuration c what the environment says
// (EXGATE_NODE_NAME is node.name, so that the pods of one StatefulSet share
// a configuration file and still have names of their own) and the changes
// made through the API (api.changes_file), and says which settings of the
// file those replace.
func overFile(c *config.Config) (notes []string, err error) {
	if n := os.Getenv("EXGATE_NODE_NAME"); n != "" {
		c.Node.Name = n
	}
	ch, err := config.LoadChanges(c.API.Changes())
	if err != nil {
		return nil, err
	}
	notes = ch.Apply(c)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("with EXGATE_NODE_NAME and the changes made through the API (%s): %w", c.API.Changes(), err)
	}
	return notes, nil
}

func logChanges(log *slog.Logger, file string, notes []string) {
	for _, n := range notes {
		log.Info(n, "kept_in", file)
	}
}

// newLogger returns the logger and its level, which the API can change.
func newLogger(c config.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redact}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

// redact hides the value of any attribute whose key names a secret, so no
// code path can log one by accident.
func redact(_ []string, a slog.Attr) slog.Attr {
	k := strings.ToLower(a.Key)
	for _, s := range []string{"password", "secret", "token", "passwd"} {
		if strings.Contains(k, s) {
			return slog.String(a.Key, "[redacted]")
		}
	}
	return a
}

// serve runs the gateway until SIGINT or SIGTERM, then shuts it down so that
// every device's OnSocketClosed reaches the handler.
func serve(ctx context.Context, cfgPath string, logw io.Writer) error {
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return err
	}
	changed, err := overFile(cfg)
	if err != nil {
		return err
	}
	log, level := newLogger(cfg.Log, logw)
	logChanges(log, cfg.API.Changes(), changed)
	if addr := os.Getenv("EXGATE_PPROF"); addr != "" {
		startProfiler(addr, log)
	}
	defer applyMemory(cfg.Node, log)()
	g, err := gateway.New(cfg, log)
	if err != nil {
		return err
	}
	v, c, d := buildInfo()
	g.Version = v
	g.Metrics.Gauge("exgate_build_info", "exgate's version, commit and build date, and the Go version (value 1).",
		prometheus.Labels{"version": v, "commit": c, "date": d, "goversion": runtime.Version()}, func() float64 { return 1 })
	// reload re-reads the file and applies what can change while running.
	var reload func() ([]string, error)
	if cfgPath != "" {
		reload = func() ([]string, error) {
			var notes []string
			nc, err := config.LoadForReload(cfgPath)
			if err == nil {
				notes, err = overFile(nc)
			}
			if err != nil {
				log.Error("reload refused: the old configuration stays", "error", err)
				return nil, err
			}
			logChanges(log, nc.API.Changes(), notes)
			needs, err := g.Reload(nc)
			if err != nil {
				log.Error("reload refused: the old configuration stays", "error", err)
			} else if len(needs) > 0 {
				log.Warn("these parts changed but need a restart", "parts", needs)
			}
			return needs, err
		}
	}
	var mgmt *api.Server
	if cfg.API.Enabled() {
		if mgmt, err = api.New(g, cfg.API, level, reload, log.With("component", "api")); err != nil {
			_ = g.Shutdown(context.Background())
			return err
		}
		go func() {
			if err := mgmt.Serve(); err != nil {
				log.Error("management API stopped", "error", err)
			}
		}()
	}
	// Signals are ours before the start line says exgate runs: a SIGHUP
	// sent as soon as it is logged would otherwise end the process.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	g.Start()
	if mgmt != nil {
		log.Info("management API", "api", mgmt.Addr().String())
	}
	if cfg.Node.ReleasesIdleMemory() {
		st := g.Stats
		activity := func() int64 {
			return st.BytesReceived.Load() + st.BytesSent.Load() + st.ClientConnect.Load() + st.Disconnected.Load() + st.MessagesDelivered.Load()
		}
		go releaseWhenIdle(ctx, 10*time.Second, time.Second, activity, func(n uint64) {
			log.Debug("idle: free heap memory handed back to the OS", "bytes", n)
		})
	}
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-hup:
			if reload == nil {
				log.Warn("SIGHUP ignored: exgate was started without a configuration file")
				continue
			}
			log.Info("SIGHUP: reloading", "config", cfgPath)
			_, _ = reload()
		}
	}
	stop()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if mgmt != nil {
		_ = mgmt.Shutdown(sctx)
	}
	if err := g.Shutdown(sctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
