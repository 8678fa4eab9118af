package fstree

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// paxXattrPrefix is the PAX record prefix for extended attributes (SCHILY.xattr.NAME=VALUE).
const paxXattrPrefix = "SCHILY.xattr."

// paxGNUSparsePrefix starts the PAX records of GNU sparse files, which FromTar does not accept.
const paxGNUSparsePrefix = "GNU.sparse."

// FromTar records the entries of one tar stream the way Snapshot records a directory: names are
// made absolute ("./a/b" and "a/b" are both "/a/b"; "./" is "/"), xattrs come from SCHILY.xattr.*
// PAX records, and a TypeLink entry joins the hard-link group of its target. Parent directories
// that the stream does not list are not invented. A path listed twice is an error unless both
// entries are directories (then the later one wins, as when a tar is extracted).
func FromTar(r io.Reader, opts Options) (map[string]Entry, error) {
	tr := tar.NewReader(r)
	m := map[string]Entry{}
	links := map[string][]string{} // first path of a group -> its members
	groupOf := map[string]string{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		p := tarPath(hdr.Name)
		e, err := tarEntry(p, hdr, tr)
		if err != nil {
			return nil, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		if old, ok := m[p]; ok && (old.Type != TypeDir || e.Type != TypeDir) {
			return nil, fmt.Errorf("tar entry %q: %s listed twice", hdr.Name, p)
		}
		if hdr.Typeflag == tar.TypeLink {
			target := tarPath(hdr.Linkname)
			t, ok := m[target]
			if !ok {
				return nil, fmt.Errorf("tar entry %q: hard link target %s not seen before", hdr.Name, target)
			}
			if t.Type == TypeDir {
				return nil, fmt.Errorf("tar entry %q: hard link to directory %s", hdr.Name, target)
			}
			e = t
			e.Path = p
			first, ok := groupOf[target]
			if !ok {
				first = target
				groupOf[target] = target
				links[target] = []string{target}
			}
			groupOf[p] = first
			links[first] = append(links[first], p)
		}
		m[p] = e
	}
	groups := make([][]string, 0, len(links))
	for _, g := range links {
		groups = append(groups, g)
	}
	assignHardLinkGroups(m, groups)
	return Normalize(m, opts), nil
}

func tarPath(name string) string {
	return path.Clean("/" + strings.TrimPrefix(name, "./"))
}

func tarEntry(p string, hdr *tar.Header, r io.Reader) (Entry, error) {
	e := Entry{
		Path:  p,
		Mode:  uint32(hdr.Mode) & 0o7777,
		UID:   uint32(hdr.Uid),
		GID:   uint32(hdr.Gid),
		Mtime: Timestamp{Sec: hdr.ModTime.Unix(), Nsec: int64(hdr.ModTime.Nanosecond())},
	}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, paxGNUSparsePrefix) {
			// A sparse map can claim any logical size; reading it back could stream zeros forever.
			return e, fmt.Errorf("unsupported GNU sparse entry (PAX record %s)", k)
		}
		if name, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string]string{}
			}
			e.Xattrs[name] = v
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		e.Type = TypeFile
		h := sha256.New()
		n, err := io.Copy(h, r)
		if err != nil {
			return e, fmt.Errorf("read content: %w", err)
		}
		e.Size = n
		e.ContentSHA256 = hex.EncodeToString(h.Sum(nil))
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		e.Type, e.Mode, e.LinkTarget = TypeSymlink, 0o777, hdr.Linkname
	case tar.TypeChar, tar.TypeBlock:
		e.Type = TypeChar
		if hdr.Typeflag == tar.TypeBlock {
			e.Type = TypeBlock
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xffffffff || hdr.Devminor > 0xffffffff {
			return e, fmt.Errorf("device number %d:%d out of range", hdr.Devmajor, hdr.Devminor)
		}
		e.Rdev = unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	case tar.TypeFifo:
		e.Type = TypeFifo
	case tar.TypeLink:
		// Filled in from the target by the caller.
	default:
		return e, fmt.Errorf("unsupported tar type %q", hdr.Typeflag)
	}
	return e, nil
}
