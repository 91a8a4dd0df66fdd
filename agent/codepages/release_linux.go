//go:build linux

package codepages

import (
	"bufio"
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Release asks the kernel to reclaim the resident pages of the executable's
// read-only mappings (code and read-only data) with MADV_PAGEOUT. The pages
// are clean and file-backed: whatever the process touches next is faulted
// back in from the page cache. Kernels before 5.4 (no MADV_PAGEOUT) and
// sandboxes that refuse it return an error and leave things as they were.
func Release() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// "00400000-017d5000 r-xp 00000000 fe:00 10022545   /path/to/kvinject"
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || string(f[5]) != exe || bytes.IndexByte(f[1], 'w') >= 0 {
			continue
		}
		lo, hi, ok := bytes.Cut(f[0], []byte("-"))
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_PAGEOUT); errno != 0 {
			return errno
		}
	}
	return sc.Err()
}
