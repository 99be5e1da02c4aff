package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	streamSize  = 100 << 20 // bytes each way in TestStreamingDoesNotBuffer
	patternSize = 64 << 10
	// heapBudget is how far the heap may grow over its baseline while
	// 100 MiB pass: buffering would need at least the whole body.
	heapBudget = 16 << 20
)

// patternBase is the pseudo-random block patternReader repeats.
var patternBase = func() []byte {
	b := make([]byte, patternSize)
	rng := rand.New(rand.NewChaCha8([32]byte{42}))
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b
}()

// patternReader yields n deterministic bytes without holding them: copies
// of patternBase, each stamped with its block number, so that a lost,
// repeated or reordered block changes the hash.
type patternReader struct {
	n, off int64
	block  [patternSize]byte
	cur    int64 // block number in block, -1 before the first
}

func newPatternReader(n int64) *patternReader { return &patternReader{n: n, cur: -1} }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	idx, within := r.off/patternSize, r.off%patternSize
	if idx != r.cur {
		copy(r.block[:], patternBase)
		binary.BigEndian.PutUint64(r.block[:], uint64(idx))
		r.cur = idx
	}
	end := min(int64(patternSize), within+r.n-r.off)
	n := copy(p, r.block[within:end])
	r.off += int64(n)
	return n, nil
}

func mustPatternHash(tb testing.TB, n int64) string {
	tb.Helper()
	h := sha256.New()
	_, err := io.Copy(h, newPatternReader(n))
	require.NoError(tb, err)
	return hex.EncodeToString(h.Sum(nil))
}

// heapSampler records the highest HeapInuse seen while it runs.
type heapSampler struct {
	stop chan struct{}
	peak chan uint64
}

func startHeapSampler() *heapSampler {
	s := &heapSampler{stop: make(chan struct{}), peak: make(chan uint64, 1)}
	go func() {
		var ms runtime.MemStats
		var peak uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-s.stop:
				s.peak <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *heapSampler) Stop() uint64 {
	close(s.stop)
	return <-s.peak
}

// TestStreamingDoesNotBuffer sends 100 MiB each way and watches the heap:
// a proxy that held a body would need all of it at once. Not parallel, so
// that no other test moves the heap.
func TestStreamingDoesNotBuffer(t *testing.T) {
	want := mustPatternHash(t, streamSize)
	up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.Itoa(streamSize))
			_, _ = io.Copy(w, newPatternReader(streamSize))
		case http.MethodPost:
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_, _ = io.WriteString(w, strconv.FormatInt(n, 10)+" "+hex.EncodeToString(h.Sum(nil)))
		}
	})
	f := mustProxy(t, up.URL)
	// Bounded by the context instead: a loaded machine may take a while.
	client := *f.srv.Client()
	client.Timeout = 0

	tests := []struct {
		name     string
		transfer func(t *testing.T, ctx context.Context) (n int64, sum string)
	}{
		{"download", func(t *testing.T, ctx context.Context) (int64, string) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/big", nil)
			require.NoError(t, err)
			req.Header.Set(RequestIDHeader, "download")
			res, err := client.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)
			h := sha256.New()
			n, err := io.Copy(h, res.Body)
			require.NoError(t, err)
			return n, hex.EncodeToString(h.Sum(nil))
		}},
		{"upload", func(t *testing.T, ctx context.Context) (int64, string) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.URL+"/big", newPatternReader(streamSize))
			require.NoError(t, err)
			req.ContentLength = streamSize
			req.Header.Set(RequestIDHeader, "upload")
			res, body := mustDo(t, &client, req)
			require.Equal(t, http.StatusOK, res.StatusCode, "body: %s", body)
			count, sum, ok := strings.Cut(string(body), " ")
			require.True(t, ok, "upstream answer %q", body)
			n, err := strconv.ParseInt(count, 10, 64)
			require.NoError(t, err)
			return n, sum
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			sampler := startHeapSampler()
			start := time.Now()
			n, sum := tc.transfer(t, ctx)
			elapsed := time.Since(start)
			peak := sampler.Stop()
			runtime.ReadMemStats(&after)

			growth := int64(peak) - int64(before.HeapInuse)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%s of %d MiB in %v: HeapInuse baseline %.1f MiB, peak %.1f MiB (growth %.1f MiB); TotalAlloc delta %.1f MiB",
				tc.name, streamSize>>20, elapsed.Round(time.Millisecond),
				mib(before.HeapInuse), mib(peak), float64(growth)/(1<<20), mib(alloc))
			assert.Equal(t, int64(streamSize), n, "bytes")
			assert.Equal(t, want, sum, "sha256")
			assert.Less(t, growth, int64(heapBudget), "peak HeapInuse growth")
			assert.Less(t, alloc, uint64(streamSize), "bytes allocated while %d MiB passed", streamSize>>20)

			entry := f.mustAccessLog(t, tc.name)
			if tc.name == "download" {
				assert.EqualValues(t, streamSize, entry["bytes"], "bytes sent, in the access log")
			} else {
				assert.EqualValues(t, streamSize, entry["bytes_read"], "bytes read, in the access log")
			}
		})
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// TestStreamingFlushesAtOnce checks that an event stream and a chunked
// response reach the client as the upstream writes them, not when it ends.
func TestStreamingFlushesAtOnce(t *testing.T) {
	t.Parallel()
	const pause = 2 * time.Second
	tests := []struct {
		name        string
		contentType string
		first, last string
	}{
		{"server-sent events", "text/event-stream", "event: tick\ndata: {\"n\":1}\n\n", "event: tick\ndata: {\"n\":2}\n\n"},
		{"server-sent events with parameters", "text/event-stream; charset=utf-8", "data: one\n\n", "data: two\n\n"},
		{"chunked plain text", "text/plain; charset=utf-8", "first chunk\n\n", "last chunk\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan struct{})
			up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				defer close(done)
				w.Header().Set("Content-Type", tc.contentType)
				_, _ = io.WriteString(w, tc.first)
				_ = http.NewResponseController(w).Flush()
				select {
				case <-time.After(pause):
				case <-r.Context().Done():
					return
				}
				_, _ = io.WriteString(w, tc.last)
			})
			f := mustProxy(t, up.URL)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.srv.URL+"/stream", nil)
			require.NoError(t, err)
			start := time.Now()
			res, err := f.srv.Client().Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)
			assert.Equal(t, []string{"chunked"}, res.TransferEncoding)

			br := bufio.NewReader(res.Body)
			first := mustReadBlock(t, br)
			firstAt := time.Since(start)
			select {
			case <-done:
				require.Fail(t, "the upstream had finished before the first part arrived")
			default:
			}
			assert.Equal(t, tc.first, first)
			assert.Less(t, firstAt, time.Second, "first part arrived after %v", firstAt)

			rest, err := io.ReadAll(br)
			require.NoError(t, err)
			assert.Equal(t, tc.last, string(rest))
			assert.GreaterOrEqual(t, time.Since(start), pause-100*time.Millisecond, "the stream ended early")
		})
	}
}

// mustReadBlock reads up to and including the first blank line.
func mustReadBlock(tb testing.TB, br *bufio.Reader) string {
	tb.Helper()
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		require.NoError(tb, err, "read so far: %q", b.String()+line)
		b.WriteString(line)
		if line == "\n" {
			return b.String()
		}
	}
}

func TestTrailers(t *testing.T) {
	t.Parallel()
	up := mustUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum, X-Count")
		_, _ = io.WriteString(w, "some body\n")
		_ = http.NewResponseController(w).Flush()
		_, _ = io.WriteString(w, "more body\n")
		w.Header().Set("X-Checksum", "sha256:abc123")
		w.Header().Set("X-Count", "2")
		// Not announced: net/http sends it with the TrailerPrefix.
		w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
	})
	f := mustProxy(t, up.URL)
	res, err := f.srv.Client().Do(f.mustRequest(t, http.MethodGet, "/with-trailers", nil))
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	assert.Contains(t, res.Trailer, "X-Checksum", "announced trailers")
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	assert.Equal(t, "some body\nmore body\n", string(body))
	assert.Equal(t, "sha256:abc123", res.Trailer.Get("X-Checksum"))
	assert.Equal(t, "2", res.Trailer.Get("X-Count"))
	assert.Equal(t, "yes", res.Trailer.Get("X-Late"))
}
