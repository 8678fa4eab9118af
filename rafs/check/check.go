// Package check verifies everything a RAFS image lets us verify: the bootstrap's structure (already
// enforced by the decoders), v5's Merkle tree, every chunk record's bounds, each blob's self-description
// (ToC entry digests, blob.meta, blob.digest) and every chunk's bytes against its digest. It stops at the
// first bad object and names it.
package check

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	v5 "github.com/dfnydus/dfnydus/rafs/v5"
)

// Report describes a passed check.
type Report struct {
	Inodes, Chunks, Blobs int
	Bytes                 int64 // uncompressed chunk bytes verified
	Warnings              []string
}

// Image checks img against the blob files in blobDir (named by blob id).
func Image(ctx context.Context, img *rafs.Image, blobDir string) (*Report, error) {
	rep := &Report{Blobs: len(img.Blobs)}
	if img.Version == 5 {
		if err := v5.Verify(img); err != nil {
			return nil, fmt.Errorf("merkle tree: %w", err)
		}
	}
	chunks, err := structure(img, rep)
	if err != nil {
		return nil, err
	}
	for i, b := range img.Blobs {
		// The bootstrap's structure is checked above whatever the blobs hold; chunks of a blob the
		// data path cannot read cannot be verified either, and the feature is the reason.
		if err := b.Unsupported(); err != nil {
			return nil, fmt.Errorf("blob %d: cannot verify its chunks: %w", i, err)
		}
		if err := checkBlob(ctx, img.Version, filepath.Join(blobDir, b.ID), b, chunks[i], rep); err != nil {
			return nil, fmt.Errorf("blob %d (%s): %w", i, b.ID, err)
		}
	}
	return rep, nil
}

// structure checks every inode's chunk records and returns the distinct chunks of each blob.
func structure(img *rafs.Image, rep *Report) ([][]rafs.Chunk, error) {
	set := rafs.NewChunkSet(len(img.Blobs))
	seen := map[*rafs.Inode]bool{}
	err := img.Walk(func(p string, n *rafs.Node) error {
		rep.Inodes++
		ino := n.Inode
		if seen[ino] {
			return nil
		}
		seen[ino] = true
		var end uint64
		for k, c := range ino.Chunks {
			if int(c.BlobIndex) >= len(img.Blobs) {
				return fmt.Errorf("%s: chunk %d: %w", p, k, rafs.Corruptf("blob index %d beyond the %d blobs", c.BlobIndex, len(img.Blobs)))
			}
			if c.FileOffset < end || c.FileOffset+uint64(c.UncompressedSize) > ino.Size {
				return fmt.Errorf("%s: chunk %d: %w", p, k, rafs.Corruptf("covers [%d,%d) of a %d-byte file after offset %d",
					c.FileOffset, c.FileOffset+uint64(c.UncompressedSize), ino.Size, end))
			}
			end = c.FileOffset + uint64(c.UncompressedSize)
			set.Add(c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return set.Blobs(), nil
}

func checkBlob(ctx context.Context, version int, path string, b *rafs.Blob, chunks []rafs.Chunk, rep *Report) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open blob file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat blob file: %w", err)
	}
	br, err := blob.Open(f, fi.Size())
	if err != nil {
		return err
	}
	if br.HasTOC() {
		// A v5 blob table records only the blob id and sizes, not where blob.meta and the ToC are:
		// the blob's self-description is then verified on its own.
		tbl := b
		if version == 5 {
			tbl = nil
		}
		if err := br.Verify(tbl); err != nil {
			return err
		}
	}
	if id, err := fileSHA256(ctx, f); err != nil {
		return err
	} else if id != b.ID {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("blob %s: the file's sha256 is %s (renamed blob; chunks are still verified one by one)", b.ID, id))
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	sizes := make([]int64, len(chunks))
	for i := range chunks {
		c := &chunks[i]
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			data, err := blob.ReadChunk(f, b.ID, c, b.Compressor, b.Digester, nil)
			if err != nil {
				return fmt.Errorf("chunk %d at %#x: %w", c.Index, c.CompressedOffset, err)
			}
			sizes[i] = int64(len(data))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	rep.Chunks += len(chunks)
	for _, s := range sizes {
		rep.Bytes += s
	}
	return nil
}

func fileSHA256(ctx context.Context, r io.ReaderAt) (string, error) {
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for off := int64(0); ; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("hash blob file: %w", err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
