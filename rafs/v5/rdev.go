package v5

import "fmt"

// Device numbers. The model keeps a Linux dev_t as glibc and golang.org/x/sys/unix.Mkdev encode it:
//
//	dev_t = (minor & 0xff) | (major & 0xfff) << 8 | (minor &^ 0xff) << 12 | (major &^ 0xfff) << 32
//
// nydus-image stores `st_rdev as u32` in i_rdev (builder/src/core/node.rs build_inode_stat), the low
// half of that encoding, and nydusd hands i_rdev back to the kernel as a FUSE attribute, which the
// kernel decodes with new_decode_dev: the same bit layout. For major < 4096 and minor < 2^20 — every
// number Linux's 32-bit FUSE/stat ABI can carry — the low half is the whole dev_t, so the conversion
// is exact both ways; a dev_t with bits above 32 cannot be stored and Encode refuses it.

// rdevFromDisk widens a stored i_rdev to the model's dev_t.
func rdevFromDisk(r uint32) uint64 { return uint64(r) }

// rdevToDisk narrows a dev_t to i_rdev, failing if information would be lost.
func rdevToDisk(dev uint64) (uint32, error) {
	if dev>>32 != 0 {
		major := (dev>>8)&0xfff | (dev>>32)&0xffff_f000
		minor := dev&0xff | (dev>>12)&0xffff_ff00
		return 0, fmt.Errorf("device number %d:%d does not fit RAFS v5's 32-bit i_rdev (major < 4096, minor < 2^20)", major, minor)
	}
	return uint32(dev), nil
}
