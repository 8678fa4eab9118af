// Package lowprio runs work the node may do later (verifying the rest of a piece no reader waits
// for, completing pieces, background prefetch) on OS threads the kernel schedules after every other
// thread: nice 19 gives a thread about 1.5% of a CPU's share against a thread at nice 0
// (kernel/sched/core.c, sched_prio_to_weight: 15 against 1024). On a busy node, FUSE reads, the
// chunks readers wait for and the pieces other peers wait for go first; on an idle one the
// background work runs at full speed.
//
// Linux keeps a nice value per thread, and Go moves goroutines between threads, so the work runs
// on a goroutine locked to its thread (runtime.LockOSThread) that never unlocks: when it returns,
// the runtime ends the thread rather than hand a lowered thread to other goroutines.
package lowprio

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Nice is the nice value of background threads.
const Nice = 19

// Enter locks the calling goroutine to its OS thread and lowers that thread's priority. The
// goroutine must never call runtime.UnlockOSThread: its thread ends with it. Goroutines it starts
// run at normal priority. Failing to lower the priority (a kernel that refuses) is not an error:
// the work then runs at normal priority.
func Enter() {
	runtime.LockOSThread()
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), Nice)
}

// Do runs fn on a background thread and returns when fn has returned. Workers are started as
// needed, one per CPU at most; a caller waits for a free one. fn must not block on the network or
// on other background work: it holds a worker while it runs.
func Do(fn func()) {
	p := pool()
	done := make(chan struct{})
	p.jobs <- job{fn: fn, done: done}
	<-done
}

type job struct {
	fn   func()
	done chan struct{}
}

type workers struct {
	jobs chan job
}

var (
	once   sync.Once
	shared *workers
)

func pool() *workers {
	once.Do(func() {
		n := runtime.GOMAXPROCS(0)
		shared = &workers{jobs: make(chan job)}
		for range n {
			go shared.run()
		}
	})
	return shared
}

func (w *workers) run() {
	Enter()
	for j := range w.jobs {
		j.fn()
		close(j.done)
	}
}
