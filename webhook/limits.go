package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/sync/semaphore"
)

// What one replica spends on reviews, whoever sends them (docs/security.md).
const (
	// MaxRequestBytes bounds a review's body. kube-apiserver refuses a
	// request body over 3 MiB, and a CREATE review carries the object once
	// (oldObject is null), re-encoded with defaults: 4 MiB fits the largest
	// pod it can send.
	MaxRequestBytes = 4 << 20
	// bodyBudget bounds the bytes of request bodies held at once, over all
	// connections and streams: two of the largest bodies.
	bodyBudget = 2 * MaxRequestBytes
	// readChunk is how much of the budget a body takes before each read: a
	// body that has sent one byte holds one chunk, not its Content-Length.
	readChunk = 32 << 10
)

// limits are the shared bounds of one Handler.
type limits struct {
	// body holds one unit per byte of body buffer in use.
	body *semaphore.Weighted
	// decoders bounds reviews decoded and answered at once.
	decoders *semaphore.Weighted
}

func (h *Handler) bounds() *limits {
	h.limitsOnce.Do(func() {
		h.limits = &limits{
			body:     semaphore.NewWeighted(bodyBudget),
			decoders: semaphore.NewWeighted(int64(runtime.GOMAXPROCS(0))),
		}
	})
	return h.limits
}

var errTooLarge = fmt.Errorf("body exceeds %d bytes", MaxRequestBytes)

// chunkPool holds read chunks between requests: allocating and zeroing a
// fresh 32 KiB chunk for every review was a third of the bytes a review
// allocated, so a third of its garbage collection.
var chunkPool = sync.Pool{New: func() any { return new([readChunk]byte) }}

// readBody reads a request body within the body budget. release returns the
// budget and must be called, also after an error, once the body is no
// longer used: the body may be a pooled chunk that the next request reuses.
//
//  1. Nothing is allocated from what the client announces (Content-Length):
//     the body is read into readChunk-sized chunks as bytes arrive.
//  2. Before each chunk is taken from chunkPool, its size is taken from the
//     shared budget, waiting while other bodies hold it, until ctx ends (the
//     server's read timeout, or the client going away).
//  3. A body over MaxRequestBytes is refused as soon as its bytes say so.
//  4. At EOF a body of one chunk is that chunk, returned to the pool by
//     release. A longer one is joined into one slice, whose size is taken
//     from the budget too; the chunks and their share go back at once.
//
// So bodies never hold more than bodyBudget bytes at once, and a client that
// sends slowly holds only what it has sent, rounded up to readChunk.
func (l *limits) readBody(ctx context.Context, r io.Reader) (body []byte, release func(), err error) {
	var held int64
	var bufs []*[readChunk]byte
	var once sync.Once
	putChunks := func() {
		for _, b := range bufs {
			chunkPool.Put(b)
		}
		bufs = nil
	}
	release = func() {
		once.Do(func() {
			putChunks()
			l.body.Release(held)
		})
	}
	take := func(n int64) error {
		if err := l.body.Acquire(ctx, n); err != nil {
			return fmt.Errorf("waiting for memory to read the body: %w", err)
		}
		held += n
		return nil
	}
	var chunks [][]byte
	total := 0
	for {
		if len(chunks) == 0 || len(chunks[len(chunks)-1]) == readChunk {
			if err := take(readChunk); err != nil {
				return nil, release, err
			}
			b := chunkPool.Get().(*[readChunk]byte)
			bufs = append(bufs, b)
			chunks = append(chunks, b[:0])
		}
		c := chunks[len(chunks)-1]
		n, err := r.Read(c[len(c):readChunk])
		chunks[len(chunks)-1] = c[:len(c)+n]
		total += n
		if total > MaxRequestBytes {
			return nil, release, errTooLarge
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, release, err
		}
	}
	if len(chunks) == 1 {
		return chunks[0], release, nil
	}
	if err := take(int64(total)); err != nil {
		return nil, release, err
	}
	body = make([]byte, 0, total)
	for _, c := range chunks {
		body = append(body, c...)
	}
	putChunks()
	l.body.Release(int64(len(chunks)) * readChunk)
	held -= int64(len(chunks)) * readChunk
	return body, release, nil
}
