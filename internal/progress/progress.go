// Package progress draws a one-line progress display on a terminal and stays silent otherwise
// (logs carry the outcome when output is not a terminal).
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Bar is a byte counter with a rate, redrawn at most every 200 ms.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	label   string
	start   time.Time
	last    time.Time
	enabled bool
}

// New returns a bar drawing on w when w is a terminal.
func New(w io.Writer, label string) *Bar {
	f, ok := w.(*os.File)
	return &Bar{w: w, label: label, start: time.Now(), enabled: ok && term.IsTerminal(int(f.Fd()))}
}

// Update shows done bytes (of total when total > 0).
func (b *Bar) Update(done, total int64) {
	if b == nil || !b.enabled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.last) < 200*time.Millisecond {
		return
	}
	b.last = now
	b.draw(done, total, now)
}

// SetLabel changes the text before the figures.
func (b *Bar) SetLabel(s string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.label = s
	b.mu.Unlock()
}

// Done draws the final figures and ends the line.
func (b *Bar) Done(done, total int64) {
	if b == nil || !b.enabled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw(done, total, time.Now())
	fmt.Fprintln(b.w)
}

func (b *Bar) draw(done, total int64, now time.Time) {
	rate := float64(done) / max(now.Sub(b.start).Seconds(), 1e-3)
	if total > 0 {
		fmt.Fprintf(b.w, "\r\033[K%s %s / %s (%.0f%%) %s/s", b.label, Bytes(done), Bytes(total), 100*float64(done)/float64(total), Bytes(int64(rate)))
		return
	}
	fmt.Fprintf(b.w, "\r\033[K%s %s %s/s", b.label, Bytes(done), Bytes(int64(rate)))
}

// Bytes formats n in binary units.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
