package snapshot

import "syscall"

// Capacity is the size of the file system that holds dir (for the agent's
// tmpfs volume: its sizeLimit), or 0 when it cannot be told.
func Capacity(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * int64(st.Bsize)
}
