package v6

import (
	"testing"

	"github.com/dfnydus/dfnydus/rafs"
)

// toCompact rewrites the 64-byte extended inode at off as a 32-byte compact one (the form
// nydus-image uses for tarball sources), moving the dataLen bytes that follow the inode core
// (inline dirents or chunk addresses) up to their compact position. mtime is stored relative to
// the superblock build time.
func toCompact(b []byte, off uint64, dataLen int, mtimeDelta uint32) {
	var in diskInode
	in.unmarshalExtended(b[off:])
	c := b[off : off+compactInodeSize]
	le.PutUint16(c[0:], in.format&^formatExtended)
	le.PutUint16(c[2:], in.xattrICount)
	le.PutUint16(c[4:], in.mode)
	le.PutUint16(c[6:], uint16(in.nlink))
	le.PutUint32(c[8:], uint32(in.size))
	le.PutUint32(c[12:], mtimeDelta)
	le.PutUint32(c[16:], in.u)
	le.PutUint32(c[20:], in.ino)
	le.PutUint16(c[24:], uint16(in.uid))
	le.PutUint16(c[26:], uint16(in.gid))
	le.PutUint32(c[28:], 0)
	copy(b[off+compactInodeSize:], b[off+extInodeSize:off+extInodeSize+uint64(dataLen)])
}

// TestDecodeCompactInodes: Decode reads 32-byte compact inodes of every kind, taking their mtime
// from the superblock build time plus the inode's 32-bit offset, as the kernel does.
func TestDecodeCompactInodes(t *testing.T) {
	m := newModel(0x1000, testBlob(0))
	f := m.add("/d/file", fileInode(0o640))
	f.UID, f.GID, f.Size = 1000, 2000, 0x1800
	f.Chunks = []rafs.Chunk{chunk(0, 0, 0, 0, 0x1000), chunk(0, 1, 0x1000, 0x1000, 0x800)}
	m.add("/d/dev", &rafs.Inode{Mode: rafs.SIFBLK | 0o600, Rdev: mkdev(259, 3)})
	want := withDerived(m.img)
	data, err := Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	le.PutUint64(data[superOffset+24:], 1_600_000_000) // build time
	le.PutUint32(data[superOffset+32:], 42)            // build time nsec
	toCompact(data, mustOff(t, data, "/d/file"), 2*chunkAddrSize, 7)
	toCompact(data, mustOff(t, data, "/d/dev"), 0, 8)
	d := want.Lookup("/d").Inode
	toCompact(data, mustOff(t, data, "/d"), int(d.Size), 9)
	toCompact(data, mustOff(t, data, "/"), int(want.Root.Inode.Size), 10)

	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	for p, delta := range map[string]uint64{"/": 10, "/d": 9, "/d/file": 7, "/d/dev": 8} {
		in := want.Lookup(p).Inode
		in.Mtime, in.MtimeNsec = 1_600_000_000+delta, 42
	}
	requireSameImage(t, want, got)
}
