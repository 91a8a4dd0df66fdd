//go:build linux

package agent

import (
	"bufio"
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// releaseCode asks the kernel to reclaim the resident pages of the
// executable's read-only mappings (code and read-only data, MADV_PAGEOUT).
// The binary also carries the webhook (client-go, controller-runtime), and
// Go runs every package's init at start, so a fresh agent has most of its
// 40 MiB executable resident although an idle sidecar touches almost none
// of it. The pages are clean and file-backed: whatever the next cycle needs
// is faulted back in from the page cache. Best effort: kernels before 5.4
// (no MADV_PAGEOUT) and sandboxes that refuse it leave things as they were.
func releaseCode() error {
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
