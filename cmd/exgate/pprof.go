package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
)

// startProfiler serves Go's profiles (/debug/pprof/) on addr, which must be
// a loopback address: a development aid for measuring exgate, enabled only
// by the EXGATE_PPROF environment variable and never by configuration.
func startProfiler(addr string, log *slog.Logger) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		log.Error("EXGATE_PPROF must be a loopback host:port; profiler not started", "addr", addr)
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("profiler not started", "error", err)
		return
	}
	log.Warn("profiler serving /debug/pprof/ (EXGATE_PPROF)", "addr", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
}
