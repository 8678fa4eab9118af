package blobstore

import (
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWriteRead measures WriteVerified of 1 MiB followed by ReadAt of the same MiB (MB/s
// counts the MiB once), and the process CPU time per GB moved, committer included.
func BenchmarkWriteRead(b *testing.B) {
	for _, sync := range []bool{false, true} {
		name := "nosync"
		if sync {
			name = "sync"
		}
		b.Run(name, func(b *testing.B) {
			o := DefaultOptions()
			o.Sync = sync
			o.Budget = 256 << 20 // evicts as it goes, so the disk use stays bounded
			s := openT(b, b.TempDir(), o)
			id := testID(40)
			blob := mustBlob(b, s, id, 1<<40)
			data := pattern(id, 0, 1<<20)
			p := make([]byte, 1<<20)
			b.SetBytes(1 << 20)
			b.ResetTimer()
			cpu := cpuTime()
			for i := range b.N {
				off := int64(i) << 20
				if err := blob.WriteVerified(off, data); err != nil {
					b.Fatal(err)
				}
				if err := blob.ReadAt(p, off); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Flush(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			gb := float64(b.N) * (1 << 20) / 1e9
			b.ReportMetric((cpuTime()-cpu).Seconds()/gb, "cpu-s/GB")
		})
	}
}
