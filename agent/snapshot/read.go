package snapshot

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ReadFiles reads the named files of one snapshot in dir, the way a reader
// that needs several files to agree (a certificate and its key) must:
//
//  1. Resolve dir/..data once, to the snapshot directory it names.
//  2. Read every file from that directory, never through dir/<name>: each
//     of those links resolves ..data anew when it is opened, so a swap
//     between two opens would pair files of two snapshots.
//  3. If a file is missing there while ..data names another directory now,
//     the snapshot was removed (it is kept until the write after the one
//     that replaced it): start again. If ..data still names it, the file is
//     not in the snapshot.
//
// A single file is always whole, through its link or not.
func ReadFiles(dir string, names ...string) (map[string][]byte, error) {
	for {
		target, err := os.Readlink(filepath.Join(dir, DataLink))
		if err != nil {
			return nil, err
		}
		out, err := readAll(filepath.Join(dir, target), names)
		if !errors.Is(err, fs.ErrNotExist) {
			return out, err
		}
		now, lerr := os.Readlink(filepath.Join(dir, DataLink))
		if lerr != nil {
			return nil, lerr
		}
		if now == target {
			return nil, fmt.Errorf("snapshot %s: %w", target, err)
		}
	}
}

func readAll(snap string, names []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(snap, n))
		if err != nil {
			return nil, err
		}
		out[n] = b
	}
	return out, nil
}
