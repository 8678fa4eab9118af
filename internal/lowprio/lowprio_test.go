package lowprio

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// niceOfThisThread returns the nice value of the calling thread (getpriority returns 20-nice).
func niceOfThisThread(t *testing.T) int {
	t.Helper()
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatalf("getpriority: %v", err)
	}
	return 20 - p
}

func TestDoRunsAtLowPriorityAndLeavesTheCallerAlone(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := niceOfThisThread(t)
	var mu sync.Mutex
	var seen []int
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			Do(func() {
				n := niceOfThisThread(t)
				mu.Lock()
				seen = append(seen, n)
				mu.Unlock()
			})
		}()
	}
	wg.Wait()
	for _, n := range seen {
		if n != Nice {
			t.Errorf("work ran at nice %d, want %d", n, Nice)
		}
	}
	if len(seen) != 8 {
		t.Fatalf("%d of 8 jobs ran", len(seen))
	}
	if after := niceOfThisThread(t); after != before {
		t.Errorf("the caller's thread went from nice %d to %d", before, after)
	}
}

func TestEnterLowersOnlyItsGoroutinesThread(t *testing.T) {
	runtime.LockOSThread()
	base := niceOfThisThread(t)
	runtime.UnlockOSThread()
	if base == Nice {
		t.Skipf("the test itself runs at nice %d", Nice)
	}
	got := make(chan int)
	go func() {
		Enter()
		got <- niceOfThisThread(t)
	}()
	if n := <-got; n != Nice {
		t.Errorf("after Enter the thread runs at nice %d, want %d", n, Nice)
	}
	// Other goroutines keep normal priority: the lowered thread ended with its goroutine.
	for range 50 {
		done := make(chan int)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			done <- niceOfThisThread(t)
		}()
		if n := <-done; n == Nice {
			t.Fatalf("a later goroutine ran on a lowered thread")
		}
	}
}
