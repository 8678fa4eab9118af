package unpack

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// paxXattrPrefix is the PAX record prefix under which GNU tar, bsdtar and Go store xattrs.
const paxXattrPrefix = "SCHILY.xattr."

// ToTar writes img as a tar stream to w, entries in walk order (depth-first, children in the order
// the image lists them). The root is the entry "./"; other names are relative ("etc/passwd",
// directories with a trailing slash). Headers are PAX, carrying nanosecond mtimes and xattrs
// (SCHILY.xattr.NAME); nodes sharing an inode after the first become TypeLink entries naming the
// first; holes are written as zeros. Sockets cannot be stored in tar: they (and hard links to them)
// are skipped and reported through Options.Progress with a Warning. The image is validated in full
// before the first byte is written. ToTar does not close w.
func ToTar(ctx context.Context, img *rafs.Image, src rafs.ChunkReader, w io.Writer, opts Options) error {
	p, err := newPlan(img, opts)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	f := startFetch(ctx, p, src, opts.concurrency())
	defer f.stop()
	tw := tar.NewWriter(w)
	t := tarWriter{p: p, tw: tw, fetch: f, prog: progress{fn: opts.Progress}}
	for i := range p.entries {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		if err := t.write(i); err != nil {
			return fmt.Errorf("unpack %s: %w", p.path(i), err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("unpack: finish tar: %w", err)
	}
	return nil
}

type tarWriter struct {
	p     *plan
	tw    *tar.Writer
	fetch *fetcher
	prog  progress
}

func (t *tarWriter) write(i int) error {
	e := &t.p.entries[i]
	path := t.p.path(i)
	if e.ino.Mode&rafs.SIFMT == rafs.SIFSOCK {
		t.prog.entry(path, false, "socket skipped: tar cannot hold sockets")
		return nil
	}
	hdr := tarHeader(e.ino, tarName(path, e.kind == kindDir))
	switch e.kind {
	case kindDir:
		hdr.Typeflag = tar.TypeDir
	case kindFile:
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(e.ino.Size)
	case kindSymlink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.ino.Symlink
	case kindSpecial:
		setSpecial(hdr, e.ino)
	case kindHardLink:
		hdr.Typeflag, hdr.Linkname = tar.TypeLink, tarName(t.p.path(e.link), false)
	}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write tar header: %w", err)
	}
	if e.kind == kindFile {
		if err := t.writeData(i); err != nil {
			return err
		}
	}
	t.prog.entry(path, true, "")
	return nil
}

// tarName turns an absolute image path into a tar member name.
func tarName(path string, dir bool) string {
	name := strings.TrimPrefix(path, "/")
	if name == "" {
		return "./"
	}
	if dir {
		name += "/"
	}
	return name
}

func tarHeader(ino *rafs.Inode, name string) *tar.Header {
	hdr := &tar.Header{
		Name:    name,
		Mode:    int64(ino.Mode & 0o7777),
		Uid:     int(ino.UID),
		Gid:     int(ino.GID),
		ModTime: time.Unix(int64(ino.Mtime), int64(ino.MtimeNsec)),
		Format:  tar.FormatPAX,
	}
	if len(ino.Xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(ino.Xattrs))
		for _, x := range ino.Xattrs {
			hdr.PAXRecords[paxXattrPrefix+x.Name] = string(x.Value)
		}
	}
	return hdr
}

func setSpecial(hdr *tar.Header, ino *rafs.Inode) {
	switch ino.Mode & rafs.SIFMT {
	case rafs.SIFCHR:
		hdr.Typeflag = tar.TypeChar
	case rafs.SIFBLK:
		hdr.Typeflag = tar.TypeBlock
	case rafs.SIFIFO:
		hdr.Typeflag = tar.TypeFifo
		return
	}
	hdr.Devmajor, hdr.Devminor = int64(unix.Major(ino.Rdev)), int64(unix.Minor(ino.Rdev))
}

// zeros is the source of hole bytes.
var zeros [64 << 10]byte

// writeData streams file i's content: each chunk's bytes at its offset, zeros everywhere else.
func (t *tarWriter) writeData(i int) error {
	e := &t.p.entries[i]
	var pos uint64
	next := 0 // position in e.reads
	for ci := range e.ino.Chunks {
		c := &e.ino.Chunks[ci]
		if err := t.writeZeros(c.FileOffset - pos); err != nil {
			return err
		}
		pos = c.FileOffset
		if next >= len(e.reads) || e.reads[next] != ci {
			continue // a hole chunk: its zeros are written with the next gap
		}
		next++
		j, err := t.fetch.next(i, ci)
		if err != nil {
			return err
		}
		_, err = t.tw.Write(j.data)
		t.prog.p.Bytes += int64(len(j.data))
		pos += uint64(len(j.data))
		t.fetch.release(j)
		if err != nil {
			return fmt.Errorf("write chunk %d: %w", ci, err)
		}
	}
	return t.writeZeros(e.ino.Size - pos)
}

func (t *tarWriter) writeZeros(n uint64) error {
	for n > 0 {
		k := min(n, uint64(len(zeros)))
		if _, err := t.tw.Write(zeros[:k]); err != nil {
			return fmt.Errorf("write hole: %w", err)
		}
		n -= k
	}
	return nil
}
