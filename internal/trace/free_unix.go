//go:build linux || darwin || freebsd

package trace

import "syscall"

// freeBytes is the space left for an unprivileged writer under dir.
func freeBytes(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
