//go:build !(linux || darwin || freebsd)

package channel

const canPeek = false

func peek(uintptr) error { return nil }
