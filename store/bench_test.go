package store

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

var benchSizes = []struct {
	name string
	size int
}{{"4KiB", 4 << 10}, {"1MiB", 1 << 20}}

// BenchmarkGet measures the hit path: cycle through stored chunks, reading into a reused buffer.
// "verified" hashes each chunk once (the default); "verify-reads" hashes on every Get.
func BenchmarkGet(b *testing.B) {
	for _, sz := range benchSizes {
		for _, verify := range []bool{false, true} {
			name := fmt.Sprintf("%s/verified", sz.name)
			if verify {
				name = fmt.Sprintf("%s/verify-reads", sz.name)
			}
			b.Run(name, func(b *testing.B) {
				opts := testOptions()
				opts.VerifyReads = verify
				opts.Sync = false
				s := openStore(b, b.TempDir(), opts)
				var chunks []testChunk
				for i := range 64 {
					c := newChunk(rafs.DigestBlake3, uint64(i), sz.size)
					chunks = append(chunks, c)
					mustPut(b, s, c)
					wantHit(b, s, c)
				}
				buf := make([]byte, sz.size)
				b.SetBytes(int64(sz.size))
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					c := chunks[i%len(chunks)]
					if _, ok, err := s.Get(b.Context(), c.key, uint32(sz.size), buf); !ok || err != nil {
						b.Fatalf("Get: hit %v err %v", ok, err)
					}
				}
			})
		}
	}
}

// BenchmarkGetParallel is BenchmarkGet's verified hit path from GOMAXPROCS goroutines.
func BenchmarkGetParallel(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			opts := testOptions()
			opts.Sync = false
			s := openStore(b, b.TempDir(), opts)
			var chunks []testChunk
			for i := range 64 {
				c := newChunk(rafs.DigestBlake3, uint64(i), sz.size)
				chunks = append(chunks, c)
				mustPut(b, s, c)
				wantHit(b, s, c)
			}
			b.SetBytes(int64(sz.size))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				buf := make([]byte, sz.size)
				for i := 0; pb.Next(); i++ {
					c := chunks[i%len(chunks)]
					if _, ok, err := s.Get(b.Context(), c.key, uint32(sz.size), buf); !ok || err != nil {
						b.Errorf("Get: hit %v err %v", ok, err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkPut stores new chunks (hash, temp file, optional fsync, rename, group-committed index
// entry) under a 256 MiB budget, so that steady state includes eviction. "parallel" puts from
// GOMAXPROCS*4 goroutines, as a fetcher filling several pieces does, which lets index commits group.
func BenchmarkPut(b *testing.B) {
	for _, sz := range benchSizes {
		for _, sync := range []bool{true, false} {
			for _, parallel := range []bool{false, true} {
				name := sz.name + map[bool]string{true: "/sync", false: "/nosync"}[sync] + map[bool]string{true: "/parallel", false: "/serial"}[parallel]
				b.Run(name, func(b *testing.B) {
					opts := testOptions()
					opts.Sync = sync
					opts.Budget = 256 << 20
					s := openStore(b, b.TempDir(), opts)
					b.SetBytes(int64(sz.size))
					if parallel {
						b.SetParallelism(4)
					}
					var seed atomicSeed
					put := func(data []byte) {
						putSeed(data, seed.next())
						if err := s.Put(b.Context(), KeyOf(rafs.DigestBlake3, data), data); err != nil {
							b.Error(err)
						}
					}
					b.ResetTimer()
					if parallel {
						b.RunParallel(func(pb *testing.PB) {
							data := chunkData(0, sz.size)
							for pb.Next() {
								put(data)
							}
						})
					} else {
						data := chunkData(0, sz.size)
						for b.Loop() {
							put(data)
						}
					}
					b.StopTimer()
					st := s.Stats()
					b.ReportMetric(float64(st.DiskBytes-st.Bytes)/float64(max(st.Chunks, 1)), "fs-overhead-B/chunk")
				})
			}
		}
	}
}

// BenchmarkOpen measures Open of a store holding 10,000 chunks (index load, directory scan, LRU
// rebuild) and the heap an open store needs per chunk.
func BenchmarkOpen(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	opts := testOptions()
	opts.Sync = false
	s := openStore(b, dir, opts)
	data := chunkData(0, 4096)
	for i := range n {
		putSeed(data, uint64(i))
		mustPut(b, s, testChunk{KeyOf(rafs.DigestSHA256, data), data})
	}
	s.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := Open(dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	s.Close()
	heapPerChunk := float64(after.HeapAlloc-before.HeapAlloc) / n

	b.ResetTimer()
	for b.Loop() {
		s, err := Open(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		if s.Stats().Chunks != n {
			b.Fatalf("%d chunks after Open", s.Stats().Chunks)
		}
		s.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/n*1000, "ns/chunk")
	b.ReportMetric(heapPerChunk, "heap-B/chunk") // after ResetTimer, which drops reported metrics
}
