package blob

import (
	"bytes"
	"strconv"

	"github.com/dfnydus/dfnydus/rafs"
)

// tarBlockSize is the size of the GNU tar header written after each section.
const tarBlockSize = 512

// Offsets inside a GNU tar header block.
const (
	tarNameOff  = 0
	tarNameLen  = 100
	tarMtimeOff = 136
	tarMtimeLen = 12
	tarSizeOff  = 124
	tarSizeLen  = 12
	tarSumOff   = 148
	tarSumLen   = 8
	tarTypeOff  = 156
	tarMagicOff = 257
	tarGNUMagic = "ustar  \x00" // magic "ustar " plus version " \0"
	tarTypeReg  = '0'
	tarMaxOctal = 1<<33 - 1 // the largest size the 11-digit octal field holds
)

// tarHeader returns the header nydus-image writes after a section: the tar crate's
// Header::new_gnu() with path, Regular type, size and checksum set and nothing else
// (builder/src/core/context.rs BlobContext::write_tar_header). Mode, uid and gid stay zero
// bytes; mtime is octal zero.
func tarHeader(name string, size uint64) [tarBlockSize]byte {
	var h [tarBlockSize]byte
	copy(h[tarNameOff:tarNameOff+tarNameLen], name)
	putOctal(h[tarMtimeOff:tarMtimeOff+tarMtimeLen], 0)
	if size > tarMaxOctal {
		// GNU base-256: high bit of the first byte set, big-endian value in the rest.
		f := h[tarSizeOff : tarSizeOff+tarSizeLen]
		for i := 0; i < 8; i++ {
			f[tarSizeLen-1-i] = byte(size >> (8 * i))
		}
		f[0] |= 0x80
	} else {
		putOctal(h[tarSizeOff:tarSizeOff+tarSizeLen], size)
	}
	h[tarTypeOff] = tarTypeReg
	copy(h[tarMagicOff:], tarGNUMagic)
	putOctal(h[tarSumOff:tarSumOff+tarSumLen], uint64(tarChecksum(&h)))
	return h
}

// putOctal writes v as zero-padded octal digits followed by one NUL, filling f (tar crate octal_into).
func putOctal(f []byte, v uint64) {
	s := strconv.FormatUint(v, 8)
	n := len(f) - 1
	for i := range f[:n] {
		f[i] = '0'
	}
	copy(f[n-len(s):n], s)
	f[n] = 0
}

// tarChecksum is the unsigned byte sum of h with the checksum field counted as spaces.
func tarChecksum(h *[tarBlockSize]byte) uint32 {
	var sum uint32
	for i, b := range h {
		if i >= tarSumOff && i < tarSumOff+tarSumLen {
			b = ' '
		}
		sum += uint32(b)
	}
	return sum
}

// looksLikeTar reports whether h carries the GNU tar magic, i.e. whether the bytes claim to be a
// nydus section header (raw pre-2.2 blobs end with chunk data instead).
func looksLikeTar(h []byte) bool {
	return len(h) == tarBlockSize && string(h[tarMagicOff:tarMagicOff+len(tarGNUMagic)]) == tarGNUMagic
}

// parseTarHeader checks h the way nydus's ToC reader does (storage/src/meta/toc.rs
// parse_toc_header: GNU header, Regular entry, valid checksum) and returns its name and size.
func parseTarHeader(h []byte) (string, uint64, error) {
	if !looksLikeTar(h) {
		return "", 0, rafs.Corruptf("tar header: no GNU magic")
	}
	var blk [tarBlockSize]byte
	copy(blk[:], h)
	sum, err := parseOctal(blk[tarSumOff : tarSumOff+tarSumLen])
	if err != nil {
		return "", 0, rafs.Corruptf("tar header checksum field: %v", err)
	}
	if want := uint64(tarChecksum(&blk)); sum != want {
		return "", 0, rafs.Corruptf("tar header checksum %#o, computed %#o", sum, want)
	}
	if t := blk[tarTypeOff]; t != tarTypeReg && t != 0 {
		return "", 0, rafs.Corruptf("tar header type %q is not a regular file", t)
	}
	name := blk[tarNameOff : tarNameOff+tarNameLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	var size uint64
	f := blk[tarSizeOff : tarSizeOff+tarSizeLen]
	if f[0]&0x80 != 0 {
		// GNU base-256: 0x80, three zero bytes, then a big-endian value below 2^63.
		if f[0] != 0x80 || f[1] != 0 || f[2] != 0 || f[3] != 0 || f[4]&0x80 != 0 {
			return "", 0, rafs.Corruptf("tar header base-256 size out of range")
		}
		for _, b := range f[4:] {
			size = size<<8 | uint64(b)
		}
	} else if size, err = parseOctal(f); err != nil {
		return "", 0, rafs.Corruptf("tar header size field: %v", err)
	}
	return string(name), size, nil
}

// parseOctal reads an octal number padded with leading spaces/zeros and ended by NUL or space.
func parseOctal(f []byte) (uint64, error) {
	s := string(bytes.Trim(f, " \x00"))
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 8, 63)
	if err != nil {
		return 0, err
	}
	return v, nil
}
