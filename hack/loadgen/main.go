// Command loadgen POSTs one request body over keep-alive HTTPS (HTTP/1.1) to
// a loopback server and prints what it measured as one JSON object.
//
// Two modes:
//
//   - fixed rate (-rate > 0): an open loop. Request i is due at
//     start + i/rate whether or not earlier ones were answered, and its
//     latency runs from when the scheduler released it (its due time, plus
//     however late the scheduler's own timer fired), not from when a free
//     connection picked it up, so a stalled server is charged for the queue
//     it causes (no coordinated omission). The scheduler's own lateness is
//     reported apart (schedLagP99Ms).
//   - saturation (-rate 0): -conns connections each send the next request as
//     soon as the previous one is answered; the figure is the throughput.
//
// With -vary, every request's body is a different one: each occurrence of
// the -vary string is replaced by the request's number, written with as
// many digits (a webhook that caches answers then answers each from
// scratch). Every run is bounded by -duration and by -max requests. Only
// loopback addresses are accepted.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Result is what one run measured. Latencies are in milliseconds.
type Result struct {
	Mode       string  `json:"mode"`
	TargetRate float64 `json:"targetRate,omitempty"`
	Conns      int     `json:"conns"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50Ms"`
	P99        float64 `json:"p99Ms"`
	P999       float64 `json:"p999Ms"`
	Max        float64 `json:"maxMs"`
	// SchedLagP99 is how late the fixed-rate scheduler released requests
	// (timer wake-up on a busy machine), not counted in the latencies.
	SchedLagP99 float64 `json:"schedLagP99Ms,omitempty"`
}

func main() {
	var (
		target   = flag.String("url", "", "https:// URL on a loopback address (required)")
		bodyFile = flag.String("body", "", "file with the request body (required)")
		caFile   = flag.String("ca", "", "PEM file with the CA that signed the server's certificate (required)")
		expect   = flag.String("expect", `"allowed":true`, "a response must contain this string to count as a success")
		rate     = flag.Float64("rate", 0, "requests per second (open loop); 0 sends as fast as the server answers")
		conns    = flag.Int("conns", 16, "keep-alive connections (and workers)")
		duration = flag.Duration("duration", 10*time.Second, "measured time, after the warm-up")
		warmup   = flag.Duration("warmup", time.Second, "time before measuring starts (connections, TLS, server caches)")
		maxReq   = flag.Int("max", 2_000_000, "upper bound on measured requests")
		timeout  = flag.Duration("timeout", 5*time.Second, "per-request timeout")
		vary     = flag.String("vary", "", "make every body distinct: replace each occurrence of this string by the request's number, as many digits wide")
	)
	flag.Parse()
	if err := run(*target, *bodyFile, *caFile, *expect, *vary, *rate, *conns, *duration, *warmup, *maxReq, *timeout); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

func run(target, bodyFile, caFile, expect, vary string, rate float64, conns int, duration, warmup time.Duration, maxReq int, timeout time.Duration) error {
	if err := checkLoopback(target); err != nil {
		return err
	}
	if conns < 1 || duration <= 0 || maxReq < 1 || rate < 0 {
		return errors.New("-conns, -duration and -max must be positive, -rate not negative")
	}
	body, err := os.ReadFile(bodyFile)
	if err != nil {
		return fmt.Errorf("-body: %w", err)
	}
	varyAt := indexAll(body, vary)
	if vary != "" && len(varyAt) == 0 {
		return fmt.Errorf("-vary %q: not in the body %s", vary, bodyFile)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("-ca %s: no PEM certificate", caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		// An empty TLSNextProto keeps the transport on HTTP/1.1: one request
		// per connection at a time, like the API server's pooled clients.
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
		DisableKeepAlives: false,
	}
	defer tr.CloseIdleConnections()
	l := &loader{
		client: &http.Client{Transport: tr, Timeout: timeout},
		url:    target, body: body, expect: []byte(expect),
		varyAt: varyAt, varyLen: len(vary),
	}

	ctx, cancel := context.WithTimeout(context.Background(), warmup+duration+timeout+5*time.Second)
	defer cancel()
	res := Result{Conns: conns}
	var lat []time.Duration
	var elapsed time.Duration
	if rate > 0 {
		res.Mode, res.TargetRate = "rate", rate
		var lag []time.Duration
		lat, lag, elapsed = l.fixedRate(ctx, rate, conns, warmup, duration, maxReq)
		if len(lag) > 0 {
			slices.Sort(lag)
			res.SchedLagP99 = ms(quantile(lag, .99))
		}
	} else {
		res.Mode = "saturation"
		lat, elapsed = l.saturate(ctx, conns, warmup, duration, maxReq)
	}
	res.Requests, res.Errors, res.FirstError = len(lat), l.errors, l.firstErr
	res.Seconds = elapsed.Seconds()
	if res.Seconds > 0 {
		res.Throughput = float64(len(lat)) / res.Seconds
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99, res.P999 = ms(quantile(lat, .5)), ms(quantile(lat, .99)), ms(quantile(lat, .999))
		res.Max = ms(lat[len(lat)-1])
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// indexAll returns where s starts in b, without overlaps.
func indexAll(b []byte, s string) []int {
	var at []int
	for i := 0; s != ""; {
		j := bytes.Index(b[i:], []byte(s))
		if j < 0 {
			break
		}
		at = append(at, i+j)
		i += j + len(s)
	}
	return at
}

// checkLoopback refuses any target that is not a loopback address.
func checkLoopback(target string) error {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "https" {
		return fmt.Errorf("-url %q: want an https:// URL", target)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-url %q: only loopback addresses (127.0.0.1, ::1, localhost) are allowed", target)
	}
	return nil
}

type loader struct {
	client *http.Client
	url    string
	body   []byte
	expect []byte
	// varyAt are where the -vary string starts in body.
	varyAt  []int
	varyLen int
	sent    atomic.Uint64

	mu       sync.Mutex
	errors   int
	firstErr string
}

// bodies hold varied request bodies until their answer is read.
var bodies = sync.Pool{New: func() any { return new([]byte) }}

// bodyFor writes the next request's varied body into scratch.
func (l *loader) bodyFor(scratch []byte) []byte {
	n := l.sent.Add(1)
	var digits [20]byte
	d := strconv.AppendUint(digits[:0], n, 10)
	b := append(scratch[:0], l.body...)
	for _, at := range l.varyAt {
		field := b[at : at+l.varyLen]
		for i := range field {
			// Right-aligned, zero-padded; the lowest digits if n is wider.
			if k := len(d) - len(field) + i; k >= 0 {
				field[i] = d[k]
			} else {
				field[i] = '0'
			}
		}
	}
	return b
}

// do sends one request and reports whether it succeeded; buf is reused.
func (l *loader) do(ctx context.Context, buf *bytes.Buffer) bool {
	body := l.body
	if len(l.varyAt) > 0 {
		scratch := bodies.Get().(*[]byte)
		defer bodies.Put(scratch)
		body = l.bodyFor(*scratch)
		*scratch = body[:0]
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		return l.fail(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return l.fail(err)
	}
	buf.Reset()
	_, err = io.Copy(buf, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		return l.fail(err)
	case resp.StatusCode != http.StatusOK:
		return l.fail(fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, buf.Bytes()))
	case !bytes.Contains(buf.Bytes(), l.expect):
		return l.fail(fmt.Errorf("response lacks %q: %.200s", l.expect, buf.Bytes()))
	}
	return true
}

func (l *loader) fail(err error) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.errors == 0 {
		l.firstErr = err.Error()
	}
	l.errors++
	return false
}

// fixedRate runs the open loop. The scheduler releases each request at its
// due time; a worker that is late to pick one up still measures from the
// release, so queueing behind a slow server counts.
func (l *loader) fixedRate(ctx context.Context, rate float64, workers int, warmup, duration time.Duration, maxReq int) (lat, lag []time.Duration, elapsed time.Duration) {
	total := int(math.Ceil(rate * (warmup + duration).Seconds()))
	// A request is measured when it was due after the warm-up.
	type release struct {
		at       time.Time
		measured bool
	}
	released := make(chan release, min(total, 1<<20))
	capacity := min(int(rate*duration.Seconds())+1, maxReq)
	lat, lag = make([]time.Duration, 0, capacity), make([]time.Duration, 0, capacity)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for r := range released {
				ok := l.do(ctx, &buf)
				d := time.Since(r.at)
				if ok && r.measured {
					mu.Lock()
					if len(lat) < maxReq {
						lat = append(lat, d)
					}
					mu.Unlock()
				}
			}
		}()
	}
	start := time.Now()
	measureFrom := start.Add(warmup)
	interval := time.Duration(float64(time.Second) / rate)
	timer := time.NewTimer(0)
	defer timer.Stop()
schedule:
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break schedule
			}
		}
		now := time.Now()
		measured := !due.Before(measureFrom)
		if measured {
			mu.Lock()
			lag = append(lag, now.Sub(due))
			mu.Unlock()
		}
		select {
		case released <- release{at: now, measured: measured}:
		case <-ctx.Done():
			break schedule
		}
	}
	close(released)
	wg.Wait()
	return lat, lag, duration
}

// saturate runs closed loops on every connection until the time or the
// request budget is spent.
func (l *loader) saturate(ctx context.Context, workers int, warmup, duration time.Duration, maxReq int) ([]time.Duration, time.Duration) {
	measureFrom := time.Now().Add(warmup)
	end := measureFrom.Add(duration)
	var (
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, min(maxReq, 1<<20))
		attempts int
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for ctx.Err() == nil {
				t := time.Now()
				if !t.Before(end) {
					return
				}
				ok := l.do(ctx, &buf)
				if t.Before(measureFrom) {
					continue
				}
				d := time.Since(t)
				mu.Lock()
				if attempts >= maxReq {
					mu.Unlock()
					return
				}
				// Failed requests count against the budget too, so a
				// broken server ends the run early.
				attempts++
				if ok {
					lat = append(lat, d)
				}
				full := attempts >= maxReq
				mu.Unlock()
				if full {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := min(time.Since(measureFrom), duration)
	mu.Lock()
	defer mu.Unlock()
	if attempts >= maxReq {
		// The budget ran out first: the rate is over the time actually used.
		elapsed = time.Since(measureFrom)
	}
	return lat, elapsed
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
