package v6

import "fmt"

// The model stores device numbers as a Linux dev_t in the glibc / golang.org/x/sys/unix Mkdev
// encoding (12+20 bits split across a 64-bit value); EROFS stores the kernel's 32-bit
// new_encode_dev form in i_u (fs/erofs/inode.c decodes it with new_decode_dev). For every device
// the kernel can name (major < 2^12, minor < 2^20) the two are interchangeable.

// devMajor and devMinor split a glibc dev_t (the x/sys/unix Major/Minor rule).
func devMajor(dev uint64) uint32 {
	return uint32((dev&0x0000_0000_000f_ff00)>>8) | uint32((dev&0xffff_f000_0000_0000)>>32)
}

func devMinor(dev uint64) uint32 {
	return uint32(dev&0xff) | uint32((dev&0x0000_0fff_fff0_0000)>>12)
}

// mkdev builds a glibc dev_t (the x/sys/unix Mkdev rule).
func mkdev(major, minor uint32) uint64 {
	dev := uint64(major&0x0000_0fff) << 8
	dev |= uint64(major&0xffff_f000) << 32
	dev |= uint64(minor & 0xff)
	dev |= uint64(minor&0xffff_ff00) << 12
	return dev
}

// encodeDev converts a model dev_t to the on-disk new_encode_dev value.
func encodeDev(dev uint64) (uint32, error) {
	major, minor := devMajor(dev), devMinor(dev)
	if mkdev(major, minor) != dev || major > 0xfff || minor > 0xf_ffff {
		return 0, fmt.Errorf("device number %#x (major %d, minor %d) does not fit a 32-bit Linux dev_t", dev, major, minor)
	}
	return minor&0xff | major<<8 | (minor&^0xff)<<12, nil
}

// decodeDev converts an on-disk new_encode_dev value to a model dev_t. Every 32-bit value decodes.
func decodeDev(v uint32) uint64 {
	major := (v & 0xf_ff00) >> 8
	minor := v&0xff | (v>>12)&0xf_ff00
	return mkdev(major, minor)
}
