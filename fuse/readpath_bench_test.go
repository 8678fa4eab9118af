package fuse

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/blobstore"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
)

// benchReadPath measures a warm sequential read where a running node's bytes really come from,
// next to where the sequential-read table's come from and to the limits of each:
//
//	(a) a plain go-fuse file served from a []byte: the ceiling for any FUSE filesystem;
//	(b) dfnydus with every chunk already decoded in memory (the sequential-read table's figure);
//	(c) dfnydus through the real read path: FUSE -> peer.Fetcher -> blobstore -> zstd decode, the
//	    chunks verified when they entered the store, the store's blob file in the page cache;
//	(d) the same after a restart: each chunk is hashed again on its first read;
//	(e) the same with the store's blob file dropped from the page cache too, read from disk.
//
// The file is 256 MiB of the Go toolchain's files (sources and binaries): bytes that compress the
// way image content does, so that (c)-(e) pay a real zstd decode, which random bytes (stored raw)
// would not. The mounted file's page cache is dropped before every timed read, and the FUSE layer's
// chunk cache empties when the file is closed, so each read goes through the filesystem; the
// fetcher's 16 MiB memory cache cannot hold a 256 MiB file read front to back. Rows alternate
// round by round; medians of 3. CPU-s is the whole process (reader, FUSE server, fetcher and store
// all run in it): utime+stime over the read.
func benchReadPath(t *testing.T) {
	const size, rounds = 256 << 20, 3
	dir := t.TempDir()
	data := toolchainBytes(t, size)
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	b := buildImage(t, src, 6, rafs.DefaultChunkSize) // the defaults: zstd, blake3, 1 MiB chunks
	if got := b.img.Blobs[0].Compressor; got != rafs.CompressZstd {
		t.Fatalf("image compressor %v, want zstd (the default)", got)
	}
	chunks := rafs.NewChunkSet(len(b.img.Blobs))
	_ = b.img.Walk(func(_ string, n *rafs.Node) error {
		for _, c := range n.Inode.Chunks {
			chunks.Add(c)
		}
		return nil
	})
	distinct := chunks.Blobs()[0]
	var stored int64
	for _, c := range distinct {
		stored += int64(c.CompressedSize)
	}

	opts := DefaultOptions()
	plain := mountPlain(t, data, opts)
	if err := SetReadAhead(plain, opts.MaxReadAhead); err != nil { // as Mount does for ours
		t.Fatal(err)
	}
	inMemory, _ := mountImage(t, b.img, loadAll(t, b.img, dirReader(t, b.blobDir)), opts)

	// The node that fetched the chunks: each was verified as it entered the store.
	st, err := blobstore.Open(filepath.Join(dir, "store"), blobstore.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	f := peer.NewFetcher(peer.Options{Store: st, MemoryCache: peer.DefaultMemoryCache, Metrics: reg})
	im, err := f.NewImage("warm", b.img, source.NewLocal(b.blobDir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(im.Close)
	for i := range distinct {
		if _, err := im.ReadChunk(context.Background(), b.img.Blobs[0], &distinct[i], nil); err != nil {
			t.Fatalf("fill the store: %v", err)
		}
	}
	fetched := im.Stats().Fetches
	throughStore, _ := mountImage(t, b.img, im, opts)
	blobFile := storedBlobFile(t, st.Dir())
	noSource := t.TempDir() // after a restart nothing may be fetched: an empty source fails any fetch

	type sample struct{ mbps, cpu float64 }
	timedRead := func(p string) sample {
		c0 := processCPU()
		mbps := readThroughput(t, p, true)
		return sample{mbps, (processCPU() - c0).Seconds()}
	}
	type row struct {
		name string
		read func() sample
		got  []sample
	}
	var storeHits, memHits float64
	rows := []row{
		{name: "(a) plain go-fuse file from a []byte (baseline)", read: func() sample {
			return timedRead(filepath.Join(plain, "big"))
		}},
		{name: "(b) dfnydus, chunks decoded in memory", read: func() sample {
			return timedRead(filepath.Join(inMemory, "big"))
		}},
		{name: "(c) dfnydus via fetcher + store, blob in page cache", read: func() sample {
			warmFile(t, blobFile)
			s0, m0 := counter(t, reg, "dfnydus_chunk_store_hits_total"), counter(t, reg, "dfnydus_chunk_memory_hits_total")
			s := timedRead(filepath.Join(throughStore, "big"))
			storeHits = counter(t, reg, "dfnydus_chunk_store_hits_total") - s0
			memHits = counter(t, reg, "dfnydus_chunk_memory_hits_total") - m0
			return s
		}},
		{name: "(d) = (c) after a restart: chunks hashed again", read: func() sample {
			warmFile(t, blobFile)
			g := peer.NewFetcher(peer.Options{Store: st, MemoryCache: peer.DefaultMemoryCache})
			fresh, err := g.NewImage("restarted", b.img, source.NewLocal(noSource))
			if err != nil {
				t.Fatal(err)
			}
			defer fresh.Close()
			mnt, srv := mountImage(t, b.img, fresh, opts)
			s := timedRead(filepath.Join(mnt, "big"))
			if err := srv.Unmount(); err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{name: "(e) = (c), blob read from disk (its cache dropped)", read: func() sample {
			dropFile(t, blobFile)
			return timedRead(filepath.Join(throughStore, "big"))
		}},
	}
	// Limits, from memory or the bare file, with nothing but the work itself.
	compressed := readBlobChunks(t, blobFile, distinct)
	decode := func(verify bool) sample {
		c0, t0 := processCPU(), time.Now()
		decodeAll(t, b.img.Blobs[0], distinct, compressed, verify)
		return sample{float64(size) / time.Since(t0).Seconds() / 1e6, (processCPU() - c0).Seconds()}
	}
	rows = append(rows,
		row{name: "limit of (c): decode every chunk, all cores", read: func() sample { return decode(false) }},
		row{name: "limit of (d): decode + verify every chunk, all cores", read: func() sample { return decode(true) }},
		row{name: "limit of (e): read the stored blob from disk", read: func() sample {
			dropFile(t, blobFile)
			c0, t0 := processCPU(), time.Now()
			warmFile(t, blobFile)
			return sample{float64(size) / time.Since(t0).Seconds() / 1e6, (processCPU() - c0).Seconds()}
		}},
	)
	for range rounds { // interleaved, so drift affects every row alike
		for i := range rows {
			rows[i].got = append(rows[i].got, rows[i].read())
		}
	}
	if n := im.Stats().Fetches - fetched; n != 0 {
		t.Errorf("timed reads through the store went back to source %d times: they did not measure the store", n)
	}

	med := func(ss []sample) sample {
		var m, c []float64
		for _, s := range ss {
			m, c = append(m, s.mbps), append(c, s.cpu)
		}
		return sample{median(m), median(c)}
	}
	base := med(rows[0].got)
	t.Logf("warm sequential read of %d MiB of the Go toolchain's files (%d chunks of 1 MiB, zstd: %.1f MB stored, %.2fx), "+
		"mounted file's page cache dropped before each read; medians of %d, rows alternating; %d CPUs, load %s",
		size>>20, len(distinct), float64(stored)/1e6, float64(size)/float64(stored), rounds, runtime.NumCPU(), loadAvg())
	t.Logf("%-54s %8s %7s %8s %8s", "", "MB/s", "CPU-s", "MB/s/(a)", "CPU/(a)")
	for _, r := range rows {
		m := med(r.got)
		t.Logf("%-54s %8.0f %7.3f %8.2f %8.2f", r.name, m.mbps, m.cpu, m.mbps/base.mbps, m.cpu/base.cpu)
	}
	t.Logf("(c) in its last round: %.0f chunk reads from the store, %.0f from the fetcher's memory cache; "+
		"the limits' MB/s count the %d MiB of file bytes they yield (the disk's as if decoding were free); "+
		"on a loaded machine CPU-s is the steadier figure", storeHits, memHits, size>>20)
}

// toolchainBytes returns size bytes of the Go toolchain's files, concatenated in path order
// (again from the start if the tree is smaller).
func toolchainBytes(t *testing.T, size int) []byte {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(runtime.GOROOT(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	data := make([]byte, 0, size)
	for len(data) < size {
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			data = append(data, b[:min(len(b), size-len(data))]...)
			if len(data) == size {
				break
			}
		}
	}
	return data
}

// storedBlobFile returns the store's one blob file.
func storedBlobFile(t *testing.T, storeDir string) string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(storeDir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) != 1 {
		t.Fatalf("store blob files %v (%v), want one", files, err)
	}
	return files[0]
}

// warmFile reads p to the end, which leaves it in the page cache.
func warmFile(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		t.Fatal(err)
	}
}

// dropFile drops p from the page cache (only p: the machine is shared).
func dropFile(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// readBlobChunks returns each chunk's stored bytes, read from the blob file.
func readBlobChunks(t *testing.T, p string, cs []rafs.Chunk) [][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = make([]byte, c.CompressedSize)
		if _, err := f.ReadAt(out[i], int64(c.CompressedOffset)); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// decodeAll decodes every chunk from its stored bytes on one goroutine per CPU.
func decodeAll(t *testing.T, b *rafs.Blob, cs []rafs.Chunk, stored [][]byte, verify bool) {
	t.Helper()
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for i := range next {
				out, err := blob.DecodeChunk(stored[i], b.ID, &cs[i], b.Compressor, b.Digester, verify, buf)
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					continue // keep draining, so the sender never blocks
				}
				buf = out
			}
		}()
	}
	for i := range cs {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}

// processCPU is the CPU time this process has used, user and system, all threads.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// counter returns the value of the counter named name in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

// loadAvg is the machine's 1, 5 and 15 minute load, as uptime prints it.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
