// Package snapshot writes a set of files into a directory as one atomic
// snapshot, with the scheme kubelet's AtomicWriter uses for Secret and
// ConfigMap volumes:
//
//	dir/..2026_11_28_03_50_00.123456789/   one directory per snapshot
//	dir/..data -> ..2026_11_28_03_50_00.123456789
//	dir/<name> -> ..data/<name>            one symlink per file
//
// A new snapshot is written in full into a fresh timestamped directory, then
// published by renaming a temporary symlink over ..data, which is atomic. A
// reader that resolves ..data once and reads its files from there sees one
// complete snapshot (or, if it is too slow, a vanished directory, and can
// retry); a reader that opens dir/<name> always gets a whole file. The
// previous snapshot is removed at the write after the one that replaced it,
// so a path lookup that raced the swap still finds its file.
//
// Names that start with ".." are reserved for the writer. The writer also
// keeps a ready marker, ..ready, that the startup probe checks; it is outside
// the user-visible file set like ..data.
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
	"time"
)

const (
	// DataLink is the symlink that names the current snapshot directory.
	DataLink = "..data"
	// ReadyMarker exists once the agent has published a complete snapshot.
	ReadyMarker = "..ready"

	tmpDataLink = "..data_tmp"
	// Snapshot directories are named from the time they were written, so a
	// listing shows their age; the random suffix from MkdirTemp keeps two
	// writes in the same nanosecond apart.
	dirPrefix = ".."
	dirLayout = "2006_01_02_15_04_05."
)

// File is one file of a snapshot.
type File struct {
	// Name is a single path element; it must not start with "..".
	Name string
	Mode fs.FileMode
	Data []byte
}

// Writer publishes snapshots into Dir. One Writer must own Dir: writes are not
// safe for concurrent use.
type Writer struct {
	Dir string
}

// Write publishes files as the new snapshot. If the current snapshot already
// has exactly these names, contents and modes, nothing is written and changed
// is false.
func (w *Writer) Write(files []File) (changed bool, err error) {
	if err := validate(files); err != nil {
		return false, err
	}
	old, err := w.current()
	if err != nil {
		return false, err
	}
	if old != "" {
		same, err := sameContent(filepath.Join(w.Dir, old), files)
		if err != nil {
			return false, err
		}
		if same {
			return false, nil
		}
	}

	tsDir, err := os.MkdirTemp(w.Dir, dirPrefix+time.Now().UTC().Format(dirLayout))
	if err != nil {
		return false, fmt.Errorf("create snapshot directory: %w", err)
	}
	// Let every app container list the snapshot; the files carry the modes.
	// Keep the setgid bit the directory inherited from a volume with an
	// fsGroup: it is what gives the files the group the app containers have.
	fi, err := os.Stat(tsDir)
	if err == nil {
		err = os.Chmod(tsDir, 0o755|fi.Mode()&fs.ModeSetgid)
	}
	if err != nil {
		return false, errors.Join(fmt.Errorf("chmod snapshot directory: %w", err), os.RemoveAll(tsDir))
	}
	for _, f := range files {
		if err := writeFile(filepath.Join(tsDir, f.Name), f.Data, f.Mode); err != nil {
			return false, errors.Join(err, os.RemoveAll(tsDir))
		}
	}
	// The per-file symlinks go through ..data, so they may exist before the
	// swap: until then they resolve into the old snapshot (or not at all).
	for _, f := range files {
		if err := w.ensureFileLink(f.Name); err != nil {
			return false, errors.Join(err, os.RemoveAll(tsDir))
		}
	}
	if err := w.swapData(filepath.Base(tsDir)); err != nil {
		return false, errors.Join(err, os.RemoveAll(tsDir))
	}
	if err := w.removeStale(files, filepath.Base(tsDir), old); err != nil {
		// The new snapshot is published; leftovers are removed on the next write.
		return true, err
	}
	return true, nil
}

// MarkReady records that a complete snapshot has been published.
func (w *Writer) MarkReady() error {
	cur, err := w.current()
	if err != nil {
		return err
	}
	if cur == "" {
		return errors.New("mark ready: no snapshot published yet")
	}
	p := filepath.Join(w.Dir, ReadyMarker)
	tmp := p + ".tmp"
	_ = os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(cur+"\n"), 0o444); err != nil {
		return fmt.Errorf("write ready marker: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write ready marker: %w", err)
	}
	return nil
}

// Ready reports nil when dir holds a published snapshot and the ready marker:
// the condition the startup probe waits for.
func Ready(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, ReadyMarker)); err != nil {
		return fmt.Errorf("no ready marker: %w", err)
	}
	fi, err := os.Stat(filepath.Join(dir, DataLink))
	if err != nil {
		return fmt.Errorf("no published snapshot: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s does not resolve to a directory", filepath.Join(dir, DataLink))
	}
	return nil
}

// current returns the name of the published snapshot directory, or "".
func (w *Writer) current() (string, error) {
	target, err := os.Readlink(filepath.Join(w.Dir, DataLink))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", DataLink, err)
	}
	return target, nil
}

// CheckName reports whether name can be a file of a snapshot.
func CheckName(name string) error {
	switch {
	case name == "" || name == "." || strings.HasPrefix(name, ".."):
		return fmt.Errorf("file name %q: must not be empty, \".\" or start with \"..\"", name)
	case strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0):
		return fmt.Errorf("file name %q: must be a single path element", name)
	}
	return nil
}

func validate(files []File) error {
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := CheckName(f.Name); err != nil {
			return err
		}
		switch {
		case f.Mode&^fs.ModePerm != 0:
			return fmt.Errorf("file %q: mode %v has bits other than permissions", f.Name, f.Mode)
		case seen[f.Name]:
			return fmt.Errorf("file name %q appears twice", f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

// sameContent reports whether snapshot directory dir holds exactly files.
func sameContent(dir string, files []File) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read snapshot: %w", err)
	}
	if len(entries) != len(files) {
		return false, nil
	}
	for _, f := range files {
		p := filepath.Join(dir, f.Name)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read snapshot: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != f.Mode || fi.Size() != int64(len(f.Data)) {
			return false, nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return false, fmt.Errorf("read snapshot: %w", err)
		}
		if !bytes.Equal(b, f.Data) {
			return false, nil
		}
	}
	return true, nil
}

func writeFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	// Chmod after writing: the umask must not narrow the requested mode.
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", filepath.Base(path), err)
	}
	return nil
}

func (w *Writer) ensureFileLink(name string) error {
	p := filepath.Join(w.Dir, name)
	want := filepath.Join(DataLink, name)
	got, err := os.Readlink(p)
	if err == nil && got == want {
		return nil
	}
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		// Something else sits at the user-visible path (a stale link or a file
		// left by someone else): replace it atomically.
		tmp := filepath.Join(w.Dir, "..tmp_"+name)
		_ = os.Remove(tmp)
		if err := os.Symlink(want, tmp); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		return nil
	}
	if err := os.Symlink(want, p); err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return nil
}

func (w *Writer) swapData(tsDir string) error {
	tmp := filepath.Join(w.Dir, tmpDataLink)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", tmpDataLink, err)
	}
	if err := os.Symlink(tsDir, tmp); err != nil {
		return fmt.Errorf("create %s: %w", tmpDataLink, err)
	}
	if err := os.Rename(tmp, filepath.Join(w.Dir, DataLink)); err != nil {
		return fmt.Errorf("publish snapshot: %w", err)
	}
	return nil
}

// removeStale removes file links no longer in the snapshot and every snapshot
// directory but the current and the previous one (including leftovers of a
// crashed write). The previous one stays until the next write so that a
// reader that resolved ..data just before the swap still finds its file.
func (w *Writer) removeStale(files []File, current, previous string) error {
	entries, err := os.ReadDir(w.Dir)
	if err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == DataLink || name == ReadyMarker || name == current || name == previous:
		case strings.HasPrefix(name, dirPrefix) && e.IsDir():
			errs = append(errs, os.RemoveAll(filepath.Join(w.Dir, name)))
		case strings.HasPrefix(name, ".."):
		case e.Type()&fs.ModeSymlink != 0 && !slices.ContainsFunc(files, func(f File) bool { return f.Name == name }):
			// Only our own links: a link into ..data that is no longer published.
			if t, err := os.Readlink(filepath.Join(w.Dir, name)); err == nil && t == filepath.Join(DataLink, name) {
				errs = append(errs, os.Remove(filepath.Join(w.Dir, name)))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up: %w", err)
	}
	return nil
}
