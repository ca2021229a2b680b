package channel

import (
	"net"
	"strings"

	pb "github.com/exgate/exgate/exprotopb"
)

// Mount prefixes a filter with the mountpoint, inside "$share/<group>/" and
// "$queue/" too (spec §2: exgate makes shared subscriptions work).
func Mount(mp, filter string) string {
	if mp == "" {
		return filter
	}
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		if i := strings.IndexByte(rest, '/'); i > 0 {
			return "$share/" + rest[:i+1] + mp + rest[i+1:]
		}
	}
	if rest, ok := strings.CutPrefix(filter, "$queue/"); ok {
		return "$queue/" + mp + rest
	}
	return mp + filter
}

// ValidTopic reports whether name can be published to.
func ValidTopic(name string) bool {
	return name != "" && len(name) <= 65535 && !strings.ContainsAny(name, "+#\x00")
}

// ValidFilter reports whether filter is a well-formed MQTT topic filter,
// shared subscriptions included.
func ValidFilter(filter string) bool {
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		i := strings.IndexByte(rest, '/')
		if i <= 0 || strings.ContainsAny(rest[:i], "+#") {
			return false
		}
		filter = rest[i+1:]
	} else if rest, ok := strings.CutPrefix(filter, "$queue/"); ok {
		filter = rest
	}
	if filter == "" || len(filter) > 65535 || strings.ContainsRune(filter, 0) {
		return false
	}
	for {
		l, rest, more := strings.Cut(filter, "/")
		if strings.Contains(l, "#") && (l != "#" || more) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
		if !more {
			return true
		}
		filter = rest
	}
}

func tcpAddr(a *pb.Address) net.Addr {
	if a == nil {
		return nil
	}
	return &net.TCPAddr{IP: net.ParseIP(a.Host), Port: int(a.Port)}
}
