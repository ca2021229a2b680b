package channel

import "errors"

// Errors of the adapter-facing methods. The adapter maps them to result
// codes with errors.Is (spec §2 "Result codes"); the text is the message.
var (
	// ErrNotAlive: the connection is closed (CONN_PROCESS_NOT_ALIVE).
	ErrNotAlive = errors.New("connection is not alive")
	// ErrNotConnected: pub/sub before Authenticate (UNKNOWN, as EMQX).
	ErrNotConnected = errors.New("not authenticated yet")
	// ErrBadParam: an invalid qos, topic, timer type or interval (UNKNOWN).
	ErrBadParam = errors.New("invalid parameter")
	// ErrParamsType: a value of the right type but out of its range, such
	// as a keepalive beyond MQTT's 65535 s (PARAMS_TYPE_ERROR).
	ErrParamsType = errors.New("parameter out of range")
	// ErrDenied: authentication or authorization refused, a duplicated
	// Authenticate, or Authenticate on a closed socket (PERMISSION_DENY).
	ErrDenied = errors.New("permission denied")
)

// denied wraps ErrDenied with the human reason a handler sees.
type deniedError struct{ msg string }

func (e *deniedError) Error() string        { return e.msg }
func (e *deniedError) Is(target error) bool { return target == ErrDenied }

func denied(msg string) error { return &deniedError{msg: msg} }
