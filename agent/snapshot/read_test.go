package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// TestReadFilesNeverTears: readers of a certificate and its key through
// ReadFiles never get a pair from two snapshots, across more than 100,000
// reads and as many rotations as the writer manages meanwhile (back to back,
// far faster than any refresh). Readers that open the two links one after
// the other are counted for comparison: they can tear, and the docs say so.
func TestReadFilesNeverTears(t *testing.T) {
	if testing.Short() {
		t.Skip("100,000 reads")
	}
	dir := t.TempDir()
	w := &Writer{Dir: dir}
	pair := func(g int) []File {
		return []File{
			{Name: "tls.crt", Mode: 0o440, Data: content(g, "tls.crt")},
			{Name: "tls.key", Mode: 0o440, Data: content(g, "tls.key")},
		}
	}
	if _, err := w.Write(pair(0)); err != nil {
		t.Fatal(err)
	}
	const reads = 100_000
	var (
		done              atomic.Bool
		good, naive, torn atomic.Int64
		wg                sync.WaitGroup
		errMu             sync.Mutex
		firstErr          error
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
		done.Store(true)
	}
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() && good.Load() < reads {
				files, err := ReadFiles(dir, "tls.crt", "tls.key")
				if err != nil {
					fail(err)
					return
				}
				c, err1 := parse("tls.crt", files["tls.crt"])
				k, err2 := parse("tls.key", files["tls.key"])
				if err := errors.Join(err1, err2); err != nil {
					fail(err)
					return
				}
				if c != k {
					fail(fmt.Errorf("ReadFiles paired tls.crt of generation %d with tls.key of %d", c, k))
					return
				}
				good.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() { // the naive reader: one link, then the other
		defer wg.Done()
		for !done.Load() && good.Load() < reads {
			c, err1 := os.ReadFile(filepath.Join(dir, "tls.crt"))
			k, err2 := os.ReadFile(filepath.Join(dir, "tls.key"))
			if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
				continue
			}
			gc, _ := parse("tls.crt", c)
			gk, _ := parse("tls.key", k)
			naive.Add(1)
			if gc != gk {
				torn.Add(1)
			}
		}
	}()
	rotations := 0
	for !done.Load() && good.Load() < reads {
		rotations++
		if _, err := w.Write(pair(rotations)); err != nil {
			t.Fatal(err)
		}
	}
	done.Store(true)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	if rotations < 1000 {
		t.Errorf("only %d rotations during the reads", rotations)
	}
	t.Logf("%d consistent pair reads through ReadFiles across %d rotations; the naive reader tore %d of %d pairs",
		good.Load(), rotations, torn.Load(), naive.Load())
}
