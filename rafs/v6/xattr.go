package v6

import (
	"fmt"
	"sort"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
)

// EROFS stores an xattr name as a one-byte prefix index plus the rest of the name. nydus knows the
// prefixes below (RAFSV6_XATTR_TYPES in rafs/src/metadata/layout/v6.rs) and matches them in this
// order; the two POSIX ACL "prefixes" are whole names, stored with an empty suffix.
var xattrPrefixes = []struct {
	index  uint8
	prefix string
}{
	{1, "user."},
	{2, "system.posix_acl_access"},
	{3, "system.posix_acl_default"},
	{4, "trusted."},
	{6, "security."},
}

const (
	maxXattrSuffix = 0xff   // e_name_len is a u8
	maxXattrValue  = 0xffff // e_value_size is a u16
)

func xattrPrefix(index uint8) (string, bool) {
	for _, p := range xattrPrefixes {
		if p.index == index {
			return p.prefix, true
		}
	}
	return "", false
}

// splitXattrName returns the EROFS prefix index and the stored suffix of name.
func splitXattrName(name string) (uint8, string, error) {
	for _, p := range xattrPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			suffix := name[len(p.prefix):]
			if suffix == "" && p.index != 2 && p.index != 3 {
				return 0, "", fmt.Errorf("xattr name %q has an empty name after its namespace", name)
			}
			return p.index, suffix, nil
		}
	}
	return 0, "", fmt.Errorf("xattr name %q is not in a namespace RAFS v6 can store (user., trusted., security., system.posix_acl_*)", name)
}

// encodeXattrs returns the inline xattr body (ibody header + 4-byte aligned entries, as
// RafsXAttrs::store_v6 writes them) and its i_xattr_icount, or nil and 0 when there are none.
// Entries are written in name order so the output is deterministic (upstream iterates a HashMap).
func encodeXattrs(xs []rafs.Xattr) ([]byte, uint16, error) {
	if len(xs) == 0 {
		return nil, 0, nil
	}
	sorted := append([]rafs.Xattr(nil), xs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	body := make([]byte, xattrHeaderSize)
	for i, x := range sorted {
		if i > 0 && sorted[i-1].Name == x.Name {
			return nil, 0, fmt.Errorf("xattr %q is set twice", x.Name)
		}
		index, suffix, err := splitXattrName(x.Name)
		if err != nil {
			return nil, 0, err
		}
		if len(suffix) > maxXattrSuffix {
			return nil, 0, fmt.Errorf("xattr name %q is longer than %d bytes after its namespace", x.Name, maxXattrSuffix)
		}
		if len(x.Value) > maxXattrValue {
			return nil, 0, fmt.Errorf("xattr %q value of %d bytes exceeds %d", x.Name, len(x.Value), maxXattrValue)
		}
		var hdr [xattrEntrySize]byte
		hdr[0] = uint8(len(suffix))
		hdr[1] = index
		le.PutUint16(hdr[2:], uint16(len(x.Value)))
		body = append(body, hdr[:]...)
		body = append(body, suffix...)
		body = append(body, x.Value...)
		body = append(body, make([]byte, roundUp(uint64(len(body)), xattrEntrySize)-uint64(len(body)))...)
	}
	icount := (len(body)-xattrHeaderSize)/xattrEntrySize + 1
	if icount > 0xffff {
		return nil, 0, fmt.Errorf("xattrs take %d bytes, more than an inode can hold", len(body))
	}
	return body, uint16(icount), nil
}

// decodeXattrs parses an inline xattr body (the bytes after the inode core, of the size that
// i_xattr_icount implies). Shared xattrs are rejected: nydus never writes a shared xattr area.
func decodeXattrs(body []byte) ([]rafs.Xattr, error) {
	if len(body) < xattrHeaderSize {
		return nil, rafs.Corruptf("xattr body of %d bytes is shorter than its header", len(body))
	}
	if shared := body[4]; shared != 0 {
		return nil, rafs.Corruptf("inode lists %d shared xattrs but the image has no shared xattr area", shared)
	}
	var xs []rafs.Xattr
	for p := xattrHeaderSize; p < len(body); {
		if len(body)-p < xattrEntrySize {
			return nil, rafs.Corruptf("xattr entry header at %d runs past the %d-byte xattr body", p, len(body))
		}
		nameLen, index, valueLen := int(body[p]), body[p+1], int(le.Uint16(body[p+2:]))
		end := p + xattrEntrySize + nameLen + valueLen
		if end > len(body) {
			return nil, rafs.Corruptf("xattr entry at %d (name %d B, value %d B) runs past the %d-byte xattr body", p, nameLen, valueLen, len(body))
		}
		prefix, ok := xattrPrefix(index)
		if !ok {
			return nil, rafs.Corruptf("xattr entry at %d has unknown name index %d", p, index)
		}
		name := prefix + string(body[p+xattrEntrySize:p+xattrEntrySize+nameLen])
		value := append([]byte{}, body[p+xattrEntrySize+nameLen:end]...)
		xs = append(xs, rafs.Xattr{Name: name, Value: value})
		p = int(roundUp(uint64(end), xattrEntrySize))
	}
	sort.SliceStable(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	for i := 1; i < len(xs); i++ {
		if xs[i].Name == xs[i-1].Name {
			return nil, rafs.Corruptf("xattr %q is stored twice", xs[i].Name)
		}
	}
	return xs, nil
}
