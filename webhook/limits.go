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

// readBody reads a request body within the body budget. release returns the
// budget and must be called, also after an error, once the body is no
// longer used.
//
//  1. Nothing is allocated from what the client announces (Content-Length):
//     the buffer grows only as bytes arrive.
//  2. Before the buffer grows, the growth is taken from the shared budget,
//     waiting while other bodies hold it, until ctx ends (the server's read
//     timeout, or the client going away).
//  3. A body over MaxRequestBytes is refused as soon as its bytes say so.
//
// So bodies never hold more than bodyBudget bytes at once, and a client that
// sends slowly holds only what it has sent, rounded up to readChunk.
func (l *limits) readBody(ctx context.Context, r io.Reader) (body []byte, release func(), err error) {
	var held int64
	var once sync.Once
	release = func() { once.Do(func() { l.body.Release(held) }) }
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			grow := max(min(int64(cap(buf)), MaxRequestBytes+1-int64(cap(buf))), readChunk)
			if err := l.body.Acquire(ctx, grow); err != nil {
				return nil, release, fmt.Errorf("waiting for memory to read the body: %w", err)
			}
			held += grow
			next := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(next, buf)
			buf = next
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > MaxRequestBytes {
			return nil, release, errTooLarge
		}
		if errors.Is(err, io.EOF) {
			return buf, release, nil
		}
		if err != nil {
			return nil, release, err
		}
	}
}
