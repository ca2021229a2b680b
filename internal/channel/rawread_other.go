//go:build !(linux || darwin || freebsd)

package channel

const canRawRead = false

func rawRead(uintptr, []byte) (int, error) { panic("unreachable") }
