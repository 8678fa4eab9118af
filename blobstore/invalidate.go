package blobstore

// Invalidate takes bytes [off, off+n) out of the blob, verified and pending: the caller found that
// they no longer match what was verified (a damaged disk). Readers see ErrMissing from here on;
// the index change commits first and the bytes are punched after it, as for an eviction.
func (b *Blob) Invalidate(off, n int64) error {
	lo, hi := b.clip(off, n)
	if lo >= hi {
		return nil
	}
	s := b.s
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	s.dropRange(b, lo, hi, "invalidated")
	return nil
}
