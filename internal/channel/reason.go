package channel

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Close reasons as EMQX formats them (spec §2 "Close"); handlers match on
// these strings.
const (
	ReasonNormal           = "{shutdown,normal}"
	ReasonKicked           = "{shutdown,kicked}"
	ReasonDiscarded        = "{shutdown,discarded}"
	ReasonKeepaliveTimeout = "{shutdown,keepalive_timeout}"
	ReasonIdleTimeout      = "{shutdown,idle_timeout}"
	ReasonAuthTimeout      = "{shutdown,auth_timeout}"
	ReasonExpired          = "{shutdown,expired}"
	ReasonGatewayStopped   = "{shutdown,gateway_stopped}"
	ReasonSendTimeout      = "{shutdown,send_timeout}"
)

// peerClosedReason names how the device side ended: tcp_closed/ssl_closed
// for an orderly close, the errno name for a socket error.
func peerClosedReason(err error, tls bool) string {
	if err == nil || errors.Is(err, io.EOF) {
		if tls {
			return "{shutdown,ssl_closed}"
		}
		return "{shutdown,tcp_closed}"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ECONNRESET:
			return "{shutdown,econnreset}"
		case syscall.ETIMEDOUT:
			return "{shutdown,etimedout}"
		case syscall.EPIPE:
			return "{shutdown,epipe}"
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return "{shutdown,timeout}"
	}
	if errors.Is(err, net.ErrClosed) {
		return "{shutdown,closed}"
	}
	return fmt.Sprintf("{shutdown,%s}", atom(err.Error()))
}

// handlerCaused reports a close caused by the handler itself: a failed
// callback (handlerFailedReason) or a lost handler connection or stream
// (handler_connection_lost, handler_stream_ended). Its OnSocketClosed is
// expected to fail too.
func handlerCaused(reason string) bool {
	return strings.HasPrefix(reason, "{shutdown,{error,{on_") || strings.HasPrefix(reason, "{shutdown,{error,handler_")
}

// handlerFailedReason is {shutdown,{error,{on_received_bytes,unavailable}}}:
// the failing callback and the gRPC status code name.
func handlerFailedReason(callback string, err error) string {
	code := status.Code(err)
	if errors.Is(err, errDeadline) {
		code = codes.DeadlineExceeded
	}
	return fmt.Sprintf("{shutdown,{error,{%s,%s}}}", callback, atom(code.String()))
}

// atom turns text into a lower_snake token safe inside the reason syntax.
func atom(s string) string {
	var b strings.Builder
	prevUnderscore := false
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			prevUnderscore = false
		case r >= 'A' && r <= 'Z':
			if b.Len() > 0 && !prevUnderscore && len(s) > 0 {
				// CamelCase → camel_case
				b.WriteByte('_')
			}
			b.WriteRune(r + 'a' - 'A')
			prevUnderscore = false
		default:
			if b.Len() > 0 && !prevUnderscore {
				b.WriteByte('_')
				prevUnderscore = true
			}
		}
	}
	return strings.TrimSuffix(b.String(), "_")
}
