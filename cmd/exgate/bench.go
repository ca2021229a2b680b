package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/exgate/exgate/internal/bench"
)

// newBenchCmd is `exgate bench`: the load tool (internal/bench).
func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Load-test an exgate (echo, fan-in, fan-out, connect storm) or run the benchmark suite"}
	var asJSON bool
	var pid int
	var metricsURL string
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.PersistentFlags().IntVar(&pid, "gateway-pid", 0, "read this gateway process's CPU and RSS from /proc during the run")
	var handlerPID int
	cmd.PersistentFlags().IntVar(&handlerPID, "handler-pid", 0, "read this handler process's CPU and RSS from /proc during the run too")
	var holdFor time.Duration
	cmd.PersistentFlags().DurationVar(&holdFor, "hold", 0, "echo, storm: keep the devices connected this long after the load, before they close (to measure or profile the gateway)")
	cmd.PersistentFlags().StringVar(&metricsURL, "gateway-metrics", "", "read the gateway's goroutines (and, in fanout, when its handler had answered every delivery) from this /metrics URL (e.g. http://127.0.0.1:18083/metrics)")
	printJSON := func(v any) error {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	report := func(r bench.Result, w *bench.Watch, devices int) error {
		if r.Procs == nil { // a run may have read the processes itself
			w.Done(&r, devices)
		}
		if metricsURL != "" {
			if r.Procs == nil {
				r.Procs = map[string]bench.ProcUsage{}
			}
			if p := r.Procs["gateway"]; p.Goroutines == 0 { // not read while the devices were held
				p.Goroutines = bench.Goroutines(metricsURL)
				r.Procs["gateway"] = p
			}
		}
		if asJSON {
			return printJSON(r)
		}
		if r.Pairs > 0 {
			fmt.Fprintf(stdout, "%s: %d devices, median %.0f/s (the last run: %d ops in %.1fs)", r.Scenario, r.Devices, r.Rate, r.Ops, r.Seconds)
		} else {
			fmt.Fprintf(stdout, "%s: %d devices, %d ops in %.1fs = %.0f/s", r.Scenario, r.Devices, r.Ops, r.Seconds, r.Rate)
		}
		if r.P50 > 0 {
			fmt.Fprintf(stdout, "; latency p50 %.0fµs p90 %.0fµs p99 %.0fµs p99.9 %.0fµs", r.P50, r.P90, r.P99, r.P999)
		}
		fmt.Fprintln(stdout)
		if r.Ratio > 0 {
			fmt.Fprintf(stdout, "  %.2f × %s\n", r.Ratio, r.Baseline)
		}
		if r.HandlerMS > 0 {
			fmt.Fprintf(stdout, "  the handler had answered every delivery %.0f ms after the first publish\n", r.HandlerMS)
		}
		for c, n := range r.Errors {
			fmt.Fprintf(stdout, "  errors %-20s %d\n", c, n)
		}
		for name, p := range r.Procs {
			fmt.Fprintf(stdout, "  %s: CPU %.2fs (%.1fµs/op), RSS %.1f MiB, %d goroutines", name, p.CPUSeconds, p.CPUPerOpUS, float64(p.RSSBytes)/(1<<20), p.Goroutines)
			if p.RSSPerDevice != 0 {
				fmt.Fprintf(stdout, "; with the devices connected: RSS +%.1f KiB per device", p.RSSPerDevice/1024)
			}
			if p.SettledRSSPerDevice != 0 {
				fmt.Fprintf(stdout, ", +%.1f KiB after they idled %v", p.SettledRSSPerDevice/1024, holdFor)
			}
			fmt.Fprintln(stdout)
		}
		if r.Note != "" {
			fmt.Fprintln(stdout, " ", r.Note)
		}
		return nil
	}
	watch := func() *bench.Watch {
		pids := map[string]int{}
		if pid != 0 {
			pids["gateway"] = pid
		}
		if handlerPID != 0 {
			pids["handler"] = handlerPID
		}
		if len(pids) == 0 {
			return nil
		}
		return bench.NewWatch(pids)
	}

	// hold returns what a run calls while its devices are still connected:
	// it reads the gateway's memory and goroutines per device into held,
	// then waits --hold.
	hold := func(ctx context.Context, w *bench.Watch, held *bench.Result, devices int) func() {
		return func() {
			w.Done(held, devices)
			if metricsURL != "" {
				p := held.Procs["gateway"]
				p.Goroutines = bench.Goroutines(metricsURL)
				if held.Procs == nil {
					held.Procs = map[string]bench.ProcUsage{}
				}
				held.Procs["gateway"] = p
			}
			select {
			case <-time.After(holdFor):
			case <-ctx.Done():
				return
			}
			if holdFor > 0 { // and again once the devices idled that long
				var settled bench.Result
				w.Done(&settled, devices)
				for name, p := range settled.Procs {
					q := held.Procs[name]
					q.SettledRSSPerDevice = p.RSSPerDevice
					held.Procs[name] = q
				}
			}
		}
	}

	// withHold runs a load whose devices stay connected while *hook runs,
	// and reports the memory read then with the whole run's CPU.
	withHold := func(ctx context.Context, w *bench.Watch, devices int, hook *func(), run func() (bench.Result, error)) (bench.Result, error) {
		var held bench.Result
		*hook = hold(ctx, w, &held, devices)
		r, err := run()
		w.Done(&r, 0)
		r.KeepMemory(held)
		return r, err
	}

	// load makes a subcommand that runs one load, watching the gateway.
	load := func(use, short string, run func(ctx context.Context, w *bench.Watch) (bench.Result, error)) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				w := watch()
				r, err := run(cmd.Context(), w)
				if err != nil {
					return err
				}
				return report(r, w, 0)
			}}
	}

	var eo bench.EchoOptions
	var insecure bool
	var baseline string
	var pairs int
	echo := load("echo", "Devices send frames that the handler echoes back (use examples/jsondemo -echo)",
		func(ctx context.Context, w *bench.Watch) (bench.Result, error) {
			if eo.Transport == "tls" {
				eo.TLS = &tls.Config{InsecureSkipVerify: insecure}
			}
			eo.Progress = stderr
			if baseline == "" && pairs != 0 {
				return bench.Result{}, errors.New("--pairs needs --baseline: the echo server to pair each run with")
			}
			if baseline != "" {
				if w != nil || holdFor > 0 {
					return bench.Result{}, errors.New("--baseline runs 2 × --pairs loads: --gateway-pid, --handler-pid and --hold read one")
				}
				return bench.PairedEcho(ctx, eo, baseline, cmp.Or(pairs, 5))
			}
			return withHold(ctx, w, eo.Devices, &eo.Hold, func() (bench.Result, error) { return bench.Echo(ctx, eo) })
		})
	echo.Flags().StringVar(&baseline, "baseline", "", "also run against this echo server (e.g. `exgate bench echo-server`), in --pairs interleaved pairs, and report the median of the pairs' ratios")
	echo.Flags().IntVar(&pairs, "pairs", 0, "with --baseline: pairs of runs, each side running --duration (default 5)")
	echo.Flags().StringVar(&eo.Addr, "addr", "127.0.0.1:7993", "device listener")
	echo.Flags().StringVar(&eo.Transport, "transport", "tcp", "tcp, tls or udp")
	echo.Flags().BoolVar(&insecure, "insecure", false, "tls: do not verify the gateway's certificate")
	echo.Flags().IntVar(&eo.Devices, "devices", 100, "devices")
	echo.Flags().IntVar(&eo.Payload, "payload", 64, "bytes per frame")
	echo.Flags().DurationVar(&eo.Duration, "duration", 10*time.Second, "how long")
	echo.Flags().Float64Var(&eo.Rate, "rate", 0, "round trips per second over all devices (0: as fast as possible)")
	echo.Flags().Float64Var(&eo.ConnectRate, "connect-rate", 0, "connects per second (0: all at once)")
	echo.Flags().IntVar(&eo.SourceIPs, "source-ips", 0, "spread devices over this many 127.0.x.y source addresses")

	var fi bench.FanInOptions
	fanin := load("fanin", "JSON-protocol devices publish to one MQTT subscriber (use examples/jsondemo)",
		func(ctx context.Context, _ *bench.Watch) (bench.Result, error) {
			fi.Progress = stderr
			return bench.FanIn(ctx, fi)
		})
	fanin.Flags().StringVar(&fi.Gateway, "gateway", "127.0.0.1:7993", "device listener (empty: publish to --broker directly, the baseline)")
	fanin.Flags().StringVar(&fi.Broker, "broker", "127.0.0.1:1883", "MQTT broker of the subscriber")
	fanin.Flags().IntVar(&fi.Devices, "devices", 100, "publishers")
	fanin.Flags().IntVar(&fi.QoS, "qos", 0, "0 or 1")
	fanin.Flags().IntVar(&fi.Payload, "payload", 64, "bytes per message")
	fanin.Flags().DurationVar(&fi.Duration, "duration", 10*time.Second, "how long")
	fanin.Flags().IntVar(&fi.Window, "window", 0, "at most this many messages sent and not yet received: publishers wait for the subscriber (0: no bound; make bench uses 1000 at QoS 1)")

	var fo bench.FanOutOptions
	var fanPairs int
	fanout := load("fanout", "One MQTT publisher to many subscribed JSON-protocol devices",
		func(ctx context.Context, w *bench.Watch) (bench.Result, error) {
			if fanPairs != 0 {
				if w != nil || metricsURL != "" {
					return bench.Result{}, errors.New("--pairs runs 2 × --pairs loads: --gateway-pid, --handler-pid and --gateway-metrics read one")
				}
				fo.Progress = stderr
				return bench.PairedFanOut(ctx, fo, fanPairs)
			}
			fo.Progress, fo.Metrics, fo.Watch = stderr, metricsURL, w // CPU per delivery, not per connect
			return bench.FanOut(ctx, fo)
		})
	fanout.Flags().IntVar(&fanPairs, "pairs", 0, "run through --gateway and to MQTT subscribers of --broker in this many interleaved pairs, and report the median of the pairs' ratios")
	fanout.Flags().StringVar(&fo.Gateway, "gateway", "127.0.0.1:7993", "device listener (empty: MQTT subscribers, the baseline)")
	fanout.Flags().StringVar(&fo.Broker, "broker", "127.0.0.1:1883", "MQTT broker of the publisher")
	fanout.Flags().IntVar(&fo.Devices, "devices", 1000, "subscribed devices")
	fanout.Flags().IntVar(&fo.Messages, "messages", 50, "messages published")
	fanout.Flags().IntVar(&fo.Payload, "payload", 64, "bytes per message")

	var so bench.StormOptions
	storm := load("storm", "Many JSON-protocol devices connect, authenticate and subscribe at once",
		func(ctx context.Context, w *bench.Watch) (bench.Result, error) {
			so.Progress = stderr
			return withHold(ctx, w, so.Devices, &so.Hold, func() (bench.Result, error) { return bench.Storm(ctx, so) })
		})
	storm.Flags().StringVar(&so.Gateway, "gateway", "127.0.0.1:7993", "device listener")
	storm.Flags().IntVar(&so.Devices, "devices", 10000, "devices")
	storm.Flags().IntVar(&so.Concurrency, "concurrency", 64, "connects in flight")
	storm.Flags().IntVar(&so.SourceIPs, "source-ips", 0, "spread devices over this many 127.0.x.y source addresses")

	var su bench.SuiteOptions
	suite := &cobra.Command{
		Use:   "suite",
		Short: "Start exgate, handlers and baselines on loopback and run every scenario (what `make bench` does)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if su.ExgateBin == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				su.ExgateBin = exe
			}
			if su.Mosquitto == "auto" {
				su.Mosquitto = ""
				for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
					if _, err := os.Stat(p); err == nil {
						su.Mosquitto = p
					}
				}
				if p, err := exec.LookPath("mosquitto"); err == nil {
					su.Mosquitto = p
				}
			}
			su.Progress = stderr
			rep, err := bench.Suite(cmd.Context(), su)
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, rep.Markdown())
			return nil
		},
	}
	suite.Flags().StringVar(&su.HandlerBin, "handler-bin", "bin/jsondemo", "examples/jsondemo, built")
	suite.Flags().StringVar(&su.ExgateBin, "exgate-bin", "", "exgate binary to test (default: this one)")
	suite.Flags().StringVar(&su.Mosquitto, "mosquitto", "auto", "mosquitto binary for the baselines (empty: skip them)")
	suite.Flags().StringVar(&su.OutDir, "out", "bench/results", "where the JSON and Markdown reports go")
	suite.Flags().IntVar(&su.Scale, "scale", 1, "divide device counts and durations by this (10: a quick smoke run)")

	var co bench.ChurnOptions
	var churnEcho bench.EchoOptions
	churn := &cobra.Command{Use: "churn", Short: "Devices connect, authenticate, subscribe and leave at a steady rate; samples the gateway's RSS and goroutines", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			co.Progress, co.GatewayPID, co.MetricsURL = stderr, pid, metricsURL
			if churnEcho.Addr != "" {
				churnEcho.Transport = "tcp"
				co.Echo = &churnEcho
			}
			r, err := bench.Churn(cmd.Context(), co)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(r)
			}
			fmt.Fprintf(stdout, "churn: %d connects in %.0fs = %.0f/s; connect latency p50 %.0fµs p99 %.0fµs\n", r.Ops, r.Seconds, r.Rate, r.P50, r.P99)
			for c, n := range r.Errors {
				fmt.Fprintf(stdout, "  errors %-20s %d\n", c, n)
			}
			var peak bench.Sample
			for _, s := range r.Samples {
				if s.RSSBytes > peak.RSSBytes {
					peak = s
				}
			}
			first, last := r.Samples[0], r.Samples[len(r.Samples)-1]
			fmt.Fprintf(stdout, "  gateway RSS %.1f MiB before, %.1f MiB peak (at %.0fs), %.1f MiB after settling; goroutines %d before, %d after; OnSocketClosed failed %d\n",
				float64(first.RSSBytes)/(1<<20), float64(peak.RSSBytes)/(1<<20), peak.At, float64(last.RSSBytes)/(1<<20), first.Goroutines, last.Goroutines, last.CloseFailed)
			if e := r.Echo; e != nil {
				fmt.Fprintf(stdout, "  echo beside it: %d devices, %d round trips = %.0f/s, p50 %.0fµs p99 %.0fµs, errors %v %s\n", e.Devices, e.Ops, e.Rate, e.P50, e.P99, e.Errors, e.Note)
			}
			if pid > 0 {
				fmt.Fprint(stdout, "\n", bench.Plot("gateway RSS, MiB", r.Samples, func(s bench.Sample) float64 { return float64(s.RSSBytes) / (1 << 20) }, "MiB", 60, 8))
			}
			if metricsURL != "" {
				fmt.Fprint(stdout, "\n", bench.Plot("gateway goroutines", r.Samples, func(s bench.Sample) float64 { return float64(s.Goroutines) }, "", 60, 8))
			}
			return nil
		}}
	churn.Flags().StringVar(&co.Gateway, "gateway", "127.0.0.1:7993", "device listener")
	churn.Flags().Float64Var(&co.Rate, "rate", 500, "connects per second")
	churn.Flags().DurationVar(&co.Duration, "duration", 10*time.Minute, "how long")
	churn.Flags().DurationVar(&co.Hold, "stay", time.Second, "how long each device stays connected")
	churn.Flags().DurationVar(&co.Settle, "settle", 60*time.Second, "how long to keep sampling after the last device left")
	churn.Flags().IntVar(&co.SourceIPs, "source-ips", 4, "spread devices over this many 127.0.x.y source addresses")
	churn.Flags().DurationVar(&co.Every, "every", 10*time.Second, "sampling interval")
	churn.Flags().StringVar(&churnEcho.Addr, "echo-addr", "", "also run steady echo traffic against this listener (examples/jsondemo -echo)")
	churn.Flags().IntVar(&churnEcho.Devices, "echo-devices", 100, "echo devices that stay connected")
	churn.Flags().Float64Var(&churnEcho.Rate, "echo-rate", 1000, "echo round trips per second over all echo devices")
	churn.Flags().IntVar(&churnEcho.Payload, "echo-payload", 64, "bytes per echo frame")

	var bo bench.BurstOptions
	burst := &cobra.Command{Use: "burst", Short: "Devices subscribe at QoS 1; one MQTT client publishes a QoS 1 burst: PUBACK latency, deliveries, drops by reason", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bo.Progress, bo.MetricsURL = stderr, metricsURL
			r, err := bench.Burst(cmd.Context(), bo)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(r)
			}
			fmt.Fprintf(stdout, "burst: %d QoS 1 messages published, %d acknowledged (PUBACK p50 %.0fµs p99 %.0fµs max %.0fµs); %d of %d deliveries reached %d devices in %.1fs\n",
				r.Published, r.Acked, r.AckP50US, r.AckP99US, r.AckMaxUS, r.Delivered, r.Expected, r.Devices, r.Seconds)
			if r.Dropped != nil {
				fmt.Fprintf(stdout, "  dropped by the gateway, by reason: %v\n", r.Dropped)
			}
			for c, n := range r.Errors {
				fmt.Fprintf(stdout, "  errors %-20s %d\n", c, n)
			}
			return nil
		}}
	burst.Flags().StringVar(&bo.Gateway, "gateway", "127.0.0.1:7993", "device listener (examples/jsondemo)")
	burst.Flags().StringVar(&bo.Broker, "broker", "127.0.0.1:1883", "MQTT listener of the publisher")
	burst.Flags().IntVar(&bo.Devices, "devices", 20, "subscribed devices")
	burst.Flags().IntVar(&bo.Messages, "messages", 5000, "QoS 1 messages in the burst")
	burst.Flags().IntVar(&bo.Payload, "payload", 64, "bytes per message")
	burst.Flags().IntVar(&bo.Inflight, "inflight", 100, "PUBLISHes awaiting their PUBACK at most")
	var echoAddr string
	echoServer := &cobra.Command{Use: "echo-server", Short: "A raw TCP echo server, the baseline for echo: run it as its own process, as a gateway is", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := bench.StartEchoServer(echoAddr)
			if err != nil {
				return fmt.Errorf("echo server: %w", err)
			}
			fmt.Fprintln(stdout, "echoing on", s.Addr())
			<-ctx.Done()
			s.Close()
			return nil
		}}
	echoServer.Flags().StringVar(&echoAddr, "listen", "127.0.0.1:7990", "address to listen on")
	cmd.AddCommand(echo, fanin, fanout, storm, churn, burst, suite, echoServer)
	return cmd
}
