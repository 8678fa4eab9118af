// Package unpack writes the tree of a RAFS image out, either into a directory (ToDir) or as a tar
// stream (ToTar), reading file data through a rafs.ChunkReader.
//
// The image is treated as hostile input. Before anything is written the whole tree is validated:
// every name must be a single path component, chunks must lie inside their file and must not
// overlap, hard links may not point at directories, and sizes are bounded. ToDir then creates every
// entry relative to directory file descriptors it opened itself with O_NOFOLLOW, never through a
// path, so no symlink in the image (or left in the output) can redirect a write outside the output
// directory.
package unpack

// DefaultConcurrency is how many chunks are fetched at once when Options.Concurrency is zero.
const DefaultConcurrency = 8

// DefaultMaxFileSize bounds a regular file's size when Options.MaxFileSize is zero (1 TiB).
const DefaultMaxFileSize = 1 << 40

// Options tune ToDir and ToTar. The zero value is ready to use.
type Options struct {
	// Concurrency is how many chunk reads may be in flight at once; chunks are still written in
	// file order. Zero means DefaultConcurrency.
	Concurrency int
	// MaxFileSize rejects images with a regular file larger than this, so a hostile image cannot
	// make ToTar stream endless zeros. Zero means DefaultMaxFileSize.
	MaxFileSize uint64
	// Progress, if set, is called after each entry is written, on the goroutine that called
	// ToDir or ToTar.
	Progress func(Progress)
}

// Progress reports running totals after an entry has been written (or skipped).
type Progress struct {
	Path    string // absolute path inside the image of the entry just handled
	Entries int    // entries written so far
	Bytes   int64  // file data bytes read through the ChunkReader so far
	Skipped int    // entries left out so far (ToTar cannot hold sockets)
	Warning string // set when this entry was skipped, saying why
}

func (o Options) concurrency() int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	return DefaultConcurrency
}

func (o Options) maxFileSize() uint64 {
	if o.MaxFileSize > 0 {
		return o.MaxFileSize
	}
	return DefaultMaxFileSize
}

// progress accumulates the totals passed to Options.Progress.
type progress struct {
	fn func(Progress)
	p  Progress
}

func (pr *progress) entry(path string, written bool, warning string) {
	if written {
		pr.p.Entries++
	} else {
		pr.p.Skipped++
	}
	if pr.fn != nil {
		pr.p.Path, pr.p.Warning = path, warning
		pr.fn(pr.p)
	}
}
