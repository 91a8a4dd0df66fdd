package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func readUserFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = string(b)
	}
	return got
}

func snapshotDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "..") {
			dirs = append(dirs, e.Name())
		}
	}
	return dirs
}

func TestWriteLayoutModesAndCleanup(t *testing.T) {
	dir := t.TempDir()
	w := &Writer{Dir: dir}
	changed, err := w.Write([]File{
		{Name: "a", Mode: 0o440, Data: []byte("one")},
		{Name: "b", Mode: 0o600, Data: []byte("two")},
	})
	if err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	if got := readUserFiles(t, dir); got["a"] != "one" || got["b"] != "two" || len(got) != 2 {
		t.Fatalf("files = %v", got)
	}
	for name, mode := range map[string]fs.FileMode{"a": 0o440, "b": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
		link, err := os.Readlink(filepath.Join(dir, name))
		if err != nil || link != filepath.Join(DataLink, name) {
			t.Errorf("%s: link %q (%v), want ..data/%s", name, link, err, name)
		}
	}
	first := snapshotDirs(t, dir)
	if len(first) != 1 || !strings.HasPrefix(first[0], "..20") {
		t.Fatalf("snapshot dirs = %v", first)
	}

	// Same content: no new snapshot.
	changed, err = w.Write([]File{
		{Name: "a", Mode: 0o440, Data: []byte("one")},
		{Name: "b", Mode: 0o600, Data: []byte("two")},
	})
	if err != nil || changed {
		t.Fatalf("unchanged write: changed=%v err=%v", changed, err)
	}
	if got := snapshotDirs(t, dir); !slices.Equal(got, first) {
		t.Fatalf("unchanged write made a snapshot: %v -> %v", first, got)
	}

	// A mode change alone is a change.
	changed, err = w.Write([]File{
		{Name: "a", Mode: 0o444, Data: []byte("one")},
		{Name: "b", Mode: 0o600, Data: []byte("two")},
	})
	if err != nil || !changed {
		t.Fatalf("mode change: changed=%v err=%v", changed, err)
	}

	// b goes away, c arrives; the old snapshot directory is removed.
	changed, err = w.Write([]File{
		{Name: "a", Mode: 0o440, Data: []byte("uno")},
		{Name: "c", Mode: 0o440, Data: nil},
	})
	if err != nil || !changed {
		t.Fatalf("third write: changed=%v err=%v", changed, err)
	}
	if got := readUserFiles(t, dir); len(got) != 2 || got["a"] != "uno" || got["c"] != "" {
		t.Fatalf("files = %v", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("link b still there: %v", err)
	}
	// The first snapshot is gone; the current and the previous one remain.
	if got := snapshotDirs(t, dir); len(got) != 2 || slices.Contains(got, first[0]) {
		t.Fatalf("snapshot dirs after rewrite = %v (first %v)", got, first)
	}
}

func TestWriteRemovesLeftoversAndKeepsForeignFiles(t *testing.T) {
	dir := t.TempDir()
	// A crashed earlier write left a snapshot directory and a temp link; someone
	// put a plain file where a link will go, and an unrelated file nearby.
	if err := os.Mkdir(filepath.Join(dir, "..2020_01_01_00_00_00.1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := &Writer{Dir: dir}
	if _, err := w.Write([]File{{Name: "a", Mode: 0o440, Data: []byte("fresh")}}); err != nil {
		t.Fatal(err)
	}
	got := readUserFiles(t, dir)
	if got["a"] != "fresh" || got["other"] != "keep" {
		t.Fatalf("files = %v", got)
	}
	if d := snapshotDirs(t, dir); len(d) != 1 || d[0] == "..2020_01_01_00_00_00.1" {
		t.Fatalf("snapshot dirs = %v", d)
	}
	if _, err := os.Lstat(filepath.Join(dir, "..data_tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("..data_tmp left behind: %v", err)
	}
}

func TestWriteRejectsBadNames(t *testing.T) {
	w := &Writer{Dir: t.TempDir()}
	for _, files := range [][]File{
		{{Name: "", Mode: 0o440}},
		{{Name: "..data", Mode: 0o440}},
		{{Name: "a/b", Mode: 0o440}},
		{{Name: "..", Mode: 0o440}},
		{{Name: "x", Mode: 0o440}, {Name: "x", Mode: 0o440}},
		{{Name: "x", Mode: fs.ModeSetuid | 0o440}},
	} {
		if _, err := w.Write(files); err == nil {
			t.Errorf("Write(%v) succeeded", files)
		}
	}
	if _, err := os.Lstat(filepath.Join(w.Dir, DataLink)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a rejected write published a snapshot")
	}
}

func TestReady(t *testing.T) {
	dir := t.TempDir()
	w := &Writer{Dir: dir}
	if err := Ready(dir); err == nil {
		t.Fatal("Ready on an empty dir")
	}
	if err := w.MarkReady(); err == nil {
		t.Fatal("MarkReady before any snapshot")
	}
	if _, err := w.Write([]File{{Name: "a", Mode: 0o440, Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := Ready(dir); err == nil {
		t.Fatal("Ready without marker")
	}
	if err := w.MarkReady(); err != nil {
		t.Fatal(err)
	}
	if err := Ready(dir); err != nil {
		t.Fatal(err)
	}
	// Marking again (a restarted agent) works over the read-only marker.
	if err := w.MarkReady(); err != nil {
		t.Fatal(err)
	}
	if got := readUserFiles(t, dir); len(got) != 1 {
		t.Fatalf("the marker is user-visible: %v", got)
	}
}

// generation renders snapshot g: every file names g and is large enough that
// a torn write would show; even and odd generations have different file sets.
func generation(g int) []File {
	names := []string{"cert.pem", "key.pem", "even"}
	if g%2 == 1 {
		names = []string{"cert.pem", "key.pem", "odd"}
	}
	files := make([]File, len(names))
	for i, n := range names {
		files[i] = File{Name: n, Mode: 0o440, Data: content(g, n)}
	}
	return files
}

func content(g int, name string) []byte {
	head := fmt.Sprintf("gen=%d file=%s\n", g, name)
	return append([]byte(head), bytes.Repeat([]byte{byte('a' + g%26)}, 32<<10)...)
}

// parse returns the generation a file's content claims, after checking that
// the content is exactly what that generation wrote.
func parse(name string, b []byte) (int, error) {
	var g int
	var n string
	if _, err := fmt.Sscanf(string(b), "gen=%d file=%s\n", &g, &n); err != nil {
		return 0, fmt.Errorf("%s: unparsable (%d bytes): %w", name, len(b), err)
	}
	if n != name || !bytes.Equal(b, content(g, name)) {
		return 0, fmt.Errorf("%s: partial or foreign content for gen %d (%d bytes)", name, g, len(b))
	}
	return g, nil
}

// TestConcurrentReadersSeeWholeSnapshots runs readers while the writer
// publishes many generations. A reader that resolves ..data once must see one
// complete generation: all its files, no other file, all of the same
// generation. A reader through the per-file links must only see whole files.
func TestConcurrentReadersSeeWholeSnapshots(t *testing.T) {
	dir := t.TempDir()
	w := &Writer{Dir: dir}
	if _, err := w.Write(generation(0)); err != nil {
		t.Fatal(err)
	}
	const generations = 300
	var done atomic.Bool
	var consistent, vanished, linkReads, linkMisses atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 2 {
		wg.Add(1)
		go func() { // snapshot reader
			defer wg.Done()
			for !done.Load() {
				target, err := os.Readlink(filepath.Join(dir, DataLink))
				if err != nil {
					errs <- fmt.Errorf("..data unreadable: %w", err)
					return
				}
				snap := filepath.Join(dir, target)
				// Read the way an app does: known names, from one snapshot.
				// cert.pem is in every generation and says which one this is.
				b, err := os.ReadFile(filepath.Join(snap, "cert.pem"))
				if errors.Is(err, fs.ErrNotExist) {
					vanished.Add(1) // removed after two newer swaps: retry
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				gen, err := parse("cert.pem", b)
				if err != nil {
					errs <- err
					return
				}
				var want []string
				ok := true
				for _, f := range generation(gen) {
					want = append(want, f.Name)
					b, err := os.ReadFile(filepath.Join(snap, f.Name))
					if errors.Is(err, fs.ErrNotExist) {
						ok = false // being removed: retry
						break
					}
					if err != nil {
						errs <- err
						return
					}
					g, err := parse(f.Name, b)
					if err != nil {
						errs <- err
						return
					}
					if g != gen {
						errs <- fmt.Errorf("mixed snapshot %s: generations %d and %d", target, gen, g)
						return
					}
				}
				if !ok {
					vanished.Add(1)
					continue
				}
				// Nothing of another generation is in there either.
				entries, err := os.ReadDir(snap)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs <- err
					return
				}
				for _, e := range entries {
					if !slices.Contains(want, e.Name()) {
						errs <- fmt.Errorf("snapshot %s of gen %d holds %s", target, gen, e.Name())
						return
					}
				}
				consistent.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() { // reader through the user-visible links
		defer wg.Done()
		for !done.Load() {
			for _, name := range []string{"cert.pem", "key.pem"} { // in every generation
				b, err := os.ReadFile(filepath.Join(dir, name))
				if errors.Is(err, fs.ErrNotExist) {
					// The lookup resolved ..data two writes ago: only possible
					// here because this test writes back to back.
					linkMisses.Add(1)
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("read %s through its link: %w", name, err)
					return
				}
				if _, err := parse(name, b); err != nil {
					errs <- err
					return
				}
				linkReads.Add(1)
			}
		}
	}()

	for g := 1; g <= generations; g++ {
		if _, err := w.Write(generation(g)); err != nil {
			t.Fatal(err)
		}
		// Keep writing until the readers have had a real chance to overlap.
		if g == generations && consistent.Load() == 0 {
			g--
		}
	}
	done.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("consistent snapshot reads: %d, vanished mid-read (retried): %d, link reads: %d, link misses: %d",
		consistent.Load(), vanished.Load(), linkReads.Load(), linkMisses.Load())
	if got := readUserFiles(t, dir); len(got) != 3 {
		t.Fatalf("final files: %v", got)
	}
}

// TestFilesGetTheVolumesGroup: with an fsGroup, kubelet makes the volume
// setgid to that group; the files must end up in it, or app containers that
// rely on the fsGroup cannot read them.
func TestFilesGetTheVolumesGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the directory a group the test process is not in")
	}
	dir := t.TempDir()
	const fsGroup = 43210
	if err := os.Chown(dir, -1, fsGroup); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	w := &Writer{Dir: dir}
	for _, data := range []string{"one", "two"} {
		if _, err := w.Write([]File{{Name: "a", Mode: 0o440, Data: []byte(data)}}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(dir, "a"))
		if err != nil {
			t.Fatal(err)
		}
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != fsGroup {
			t.Errorf("file group %d, want the volume's %d", gid, fsGroup)
		}
	}
}
