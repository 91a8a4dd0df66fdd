package codepages

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFile is the process's resident file-backed memory in KiB.
func rssFile(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RssFile:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return kib
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

func TestReleaseShrinksResidentCode(t *testing.T) {
	before := rssFile(t)
	if before < 1024 {
		// An executable on tmpfs is shared memory, not a file mapping.
		t.Skipf("RssFile is %d KiB: the test binary is not file-backed", before)
	}
	if err := Release(); err != nil {
		t.Skipf("kernel refused MADV_PAGEOUT: %v", err)
	}
	after := rssFile(t)
	t.Logf("RssFile %d KiB -> %d KiB", before, after)
	if after >= before {
		t.Errorf("RssFile %d KiB after Release, want less than the %d KiB before", after, before)
	}
}
