package rafs

import "fmt"

// TruncatedError reports a bootstrap that ends before what its own superblock places in it: a
// download or copy cut short, rather than bytes that break the format. It wraps ErrCorrupt.
type TruncatedError struct {
	Version int    // RAFS version the bootstrap's magic names
	Size    uint64 // bytes found
	Want    uint64 // bytes it has at least
	Reason  string // what ends there, e.g. "the end of its chunk table"
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("truncated RAFS v%d bootstrap: found %d bytes, expected at least %d (%s)", e.Version, e.Size, e.Want, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) hold.
func (e *TruncatedError) Is(target error) bool { return target == ErrCorrupt }
