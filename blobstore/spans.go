package blobstore

import (
	"slices"
	"sort"
)

// Range is the byte range [Off, Off+Len) of a blob.
type Range struct{ Off, Len int64 }

// End is the offset just past the range.
func (r Range) End() int64 { return r.Off + r.Len }

// PendingRange is a range of bytes written but not verified, and who sent them.
type PendingRange struct {
	Range
	Origin string
}

// span is one interval of a spanSet.
type span struct {
	off, end int64
	origin   string
}

// spanSet is a set of disjoint byte intervals kept as a sorted slice, so that a lookup is a binary
// search and memory grows with fragmentation, not with bytes. Adjacent intervals with the same
// origin are merged; the verified set uses the empty origin everywhere, so it is fully merged.
type spanSet struct {
	s     []span
	total int64
}

// search returns the index of the first interval that ends after off.
func (ss *spanSet) search(off int64) int {
	return sort.Search(len(ss.s), func(i int) bool { return ss.s[i].end > off })
}

// covers reports whether every byte of [off, end) is in the set.
func (ss *spanSet) covers(off, end int64) bool {
	pos := off
	for i := ss.search(off); i < len(ss.s) && pos < end; i++ {
		if ss.s[i].off > pos {
			return false
		}
		pos = ss.s[i].end
	}
	return pos >= end
}

// missing appends to out the sub-ranges of [off, end) not in the set, in order.
func (ss *spanSet) missing(off, end int64, out []Range) []Range {
	pos := off
	for i := ss.search(off); i < len(ss.s) && ss.s[i].off < end; i++ {
		if ss.s[i].off > pos {
			out = append(out, Range{pos, ss.s[i].off - pos})
		}
		pos = max(pos, ss.s[i].end)
	}
	if pos < end {
		out = append(out, Range{pos, end - pos})
	}
	return out
}

// overlap appends to out the parts of the set inside [off, end), clipped.
func (ss *spanSet) overlap(off, end int64, out []span) []span {
	for i := ss.search(off); i < len(ss.s) && ss.s[i].off < end; i++ {
		out = append(out, span{max(ss.s[i].off, off), min(ss.s[i].end, end), ss.s[i].origin})
	}
	return out
}

// overlapBytes is the number of bytes of [off, end) in the set.
func (ss *spanSet) overlapBytes(off, end int64) int64 {
	var n int64
	for i := ss.search(off); i < len(ss.s) && ss.s[i].off < end; i++ {
		n += min(ss.s[i].end, end) - max(ss.s[i].off, off)
	}
	return n
}

// remove takes [off, end) out of the set. It appends the removed parts to out when out is not nil
// (pass a non-nil empty slice to collect) and returns them with the number of bytes removed.
func (ss *spanSet) remove(off, end int64, out []span) ([]span, int64) {
	if off >= end {
		return out, 0
	}
	i := ss.search(off)
	j := i
	var n int64
	for j < len(ss.s) && ss.s[j].off < end {
		c := span{max(ss.s[j].off, off), min(ss.s[j].end, end), ss.s[j].origin}
		n += c.end - c.off
		if out != nil {
			out = append(out, c)
		}
		j++
	}
	if i == j {
		return out, 0
	}
	var keep [2]span
	k := 0
	if first := ss.s[i]; first.off < off {
		keep[k] = span{first.off, off, first.origin}
		k++
	}
	if last := ss.s[j-1]; last.end > end {
		keep[k] = span{end, last.end, last.origin}
		k++
	}
	ss.s = slices.Replace(ss.s, i, j, keep[:k]...)
	ss.total -= n
	return out, n
}

// add puts [off, end) into the set with origin, replacing whatever overlapped it, and returns the
// number of bytes that were not in the set before.
func (ss *spanSet) add(off, end int64, origin string) int64 {
	if off >= end {
		return 0
	}
	_, had := ss.remove(off, end, nil)
	i := ss.search(off) // after remove, every interval before i ends at or before off
	n := span{off, end, origin}
	lo, hi := i, i
	if i > 0 && ss.s[i-1].end == off && ss.s[i-1].origin == origin {
		n.off = ss.s[i-1].off
		lo = i - 1
	}
	if i < len(ss.s) && ss.s[i].off == end && ss.s[i].origin == origin {
		n.end = ss.s[i].end
		hi = i + 1
	}
	ss.s = slices.Replace(ss.s, lo, hi, n)
	ss.total += end - off
	return end - off - had
}

// ranges returns a copy of the set's intervals as Ranges.
func (ss *spanSet) ranges() []Range {
	out := make([]Range, len(ss.s))
	for i, s := range ss.s {
		out[i] = Range{s.off, s.end - s.off}
	}
	return out
}

func (ss *spanSet) reset() {
	ss.s = nil
	ss.total = 0
}
