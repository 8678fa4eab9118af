package trace

import (
	"fmt"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/dfnydus/dfnydus/rafs"
)

// ErrNotThisImage is wrapped when a trace does not belong to the image at hand: another manifest
// or bootstrap, or chunks the image does not have.
var ErrNotThisImage = fmt.Errorf("start trace recorded on another image")

// BoundTo checks the trace was recorded on this image: its manifest digest when both know one,
// else its bootstrap digest.
func (t *Trace) BoundTo(manifest, bootstrap digest.Digest) error {
	switch {
	case t.Manifest != "" && manifest != "":
		if t.Manifest != manifest {
			return fmt.Errorf("%w: manifest %s, this image is %s", ErrNotThisImage, t.Manifest, manifest)
		}
	case t.Bootstrap != "" && bootstrap != "":
		if t.Bootstrap != bootstrap {
			return fmt.Errorf("%w: bootstrap %s, this image's is %s", ErrNotThisImage, t.Bootstrap, bootstrap)
		}
	default:
		return fmt.Errorf("%w: it names no digest this image can be checked against", ErrNotThisImage)
	}
	return nil
}

// Resolve maps the trace's entries to the image's chunks, in trace order. Every entry must name a
// chunk of the image with the same size and digest; one that does not makes the whole trace
// unusable (it was recorded on something else, or altered), so nothing of it is prefetched.
func (t *Trace) Resolve(img *rafs.Image) ([]rafs.Chunk, error) {
	type key struct {
		blob int
		off  uint64
	}
	blobs := map[string]int{}
	for i, b := range img.Blobs {
		blobs[b.ID] = i
	}
	need := make(map[key]int, len(t.Entries)) // entry index by chunk
	for i, e := range t.Entries {
		bi, ok := blobs[e.Blob]
		if !ok {
			return nil, fmt.Errorf("%w: entry %d names blob %s, which the image does not have", ErrNotThisImage, i, e.Blob)
		}
		need[key{bi, e.Offset}] = i
	}
	out := make([]rafs.Chunk, len(t.Entries))
	_ = img.Walk(func(_ string, n *rafs.Node) error {
		if n.Inode == nil || !n.Inode.IsReg() {
			return nil
		}
		for _, c := range n.Inode.Chunks {
			i, ok := need[key{int(c.BlobIndex), c.CompressedOffset}]
			if !ok || out[i].CompressedSize != 0 {
				continue
			}
			out[i] = c
		}
		return nil
	})
	for i, e := range t.Entries {
		c := out[i]
		switch {
		case c.CompressedSize == 0:
			return nil, fmt.Errorf("%w: entry %d (%s): no chunk at blob %s offset %d", ErrNotThisImage, i, e.Path, e.Blob, e.Offset)
		case c.CompressedSize != e.Size || c.Digest.String() != e.Digest:
			return nil, fmt.Errorf("%w: entry %d (%s): blob %s offset %d is another chunk (size %d, digest %s)",
				ErrNotThisImage, i, e.Path, e.Blob, e.Offset, c.CompressedSize, c.Digest)
		}
	}
	return out, nil
}

// PrefetchPaths returns the trace's files in order of first access, each once: what build and
// convert write into the bootstrap's prefetch table.
func (t *Trace) PrefetchPaths() []string {
	var ps []string
	for _, e := range t.Entries {
		ps = append(ps, e.Path)
	}
	return Patterns(ps)
}

// Patterns normalises a prefetch pattern list as nydus-image does (builder/src/core/prefetch.rs,
// generate_patterns): order kept, a path already listed or under a directory listed earlier is
// dropped. The prefetch table keeps this order: nydus stores it in an IndexMap (insertion order)
// and nydusd prefetches table entries in table order, so the first files a workload reads come
// first.
func Patterns(paths []string) []string {
	seen := map[string]bool{}
	var out []string
next:
	for _, p := range paths {
		p = path.Clean("/" + strings.TrimSpace(p))
		for q := p; ; q = path.Dir(q) {
			if seen[q] {
				continue next
			}
			if q == "/" {
				break
			}
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}
