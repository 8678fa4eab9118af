package builder

import (
	"archive/tar"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
	"golang.org/x/sys/unix"
)

// tarSource reads entries from an (already decompressed) tar stream.
type tarSource struct {
	tr     *tar.Reader
	closer io.Closer
}

func newTarSource(r io.Reader, c io.Closer) *tarSource {
	return &tarSource{tr: tar.NewReader(r), closer: c}
}

func (s *tarSource) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

const paxXattrPrefix = "SCHILY.xattr."

func (s *tarSource) next() (*entry, error) {
	for {
		hdr, err := s.tr.Next()
		if err == io.EOF {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		e, skip, err := tarEntry(hdr)
		if err != nil {
			return nil, err
		}
		if skip {
			continue
		}
		if e.mode&rafs.SIFMT == rafs.SIFREG {
			e.data = s.tr
		}
		return e, nil
	}
}

// tarEntry converts a tar header into an entry. Global PAX headers and other metadata-only records
// are skipped.
func tarEntry(hdr *tar.Header) (e *entry, skip bool, err error) {
	p, err := cleanPath(hdr.Name)
	if err != nil {
		return nil, false, err
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(uint32(hdr.Uid)) != int64(hdr.Uid) || int64(uint32(hdr.Gid)) != int64(hdr.Gid) {
		return nil, false, fmt.Errorf("tar entry %s: uid/gid %d/%d out of range", p, hdr.Uid, hdr.Gid)
	}
	e = &entry{path: p, uid: uint32(hdr.Uid), gid: uint32(hdr.Gid), mode: uint32(hdr.Mode) & 0o7777}
	if !hdr.ModTime.IsZero() && hdr.ModTime.Unix() > 0 {
		e.mtime, e.mtimeNsec = uint64(hdr.ModTime.Unix()), uint32(hdr.ModTime.Nanosecond())
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if hdr.Size < 0 {
			return nil, false, fmt.Errorf("tar entry %s: negative size %d", p, hdr.Size)
		}
		e.mode |= rafs.SIFREG
		e.size = hdr.Size
	case tar.TypeDir:
		e.mode |= rafs.SIFDIR
	case tar.TypeSymlink:
		e.mode |= rafs.SIFLNK
		if hdr.Linkname == "" || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return nil, false, fmt.Errorf("tar entry %s: bad symlink target %q", p, hdr.Linkname)
		}
		e.symlink = hdr.Linkname
	case tar.TypeLink:
		target, err := cleanPath(hdr.Linkname)
		if err != nil {
			return nil, false, fmt.Errorf("tar entry %s: %w", p, err)
		}
		e.hardlink = target
	case tar.TypeChar, tar.TypeBlock:
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor > 0xfffff {
			return nil, false, fmt.Errorf("tar entry %s: device %d:%d out of range", p, hdr.Devmajor, hdr.Devminor)
		}
		e.mode |= rafs.SIFCHR
		if hdr.Typeflag == tar.TypeBlock {
			e.mode = e.mode&^rafs.SIFMT | rafs.SIFBLK
		}
		e.rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		e.mode |= rafs.SIFIFO
	case tar.TypeXGlobalHeader:
		return nil, true, nil
	default:
		return nil, false, fmt.Errorf("tar entry %s: unsupported type %q", p, hdr.Typeflag)
	}
	e.xattrs = tarXattrs(hdr)
	return e, false, nil
}

func tarXattrs(hdr *tar.Header) []rafs.Xattr {
	var xs []rafs.Xattr
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, paxXattrPrefix); ok && name != "" {
			xs = append(xs, rafs.Xattr{Name: name, Value: []byte(v)})
		}
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	return xs
}
