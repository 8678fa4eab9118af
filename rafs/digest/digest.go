// Package digest computes the chunk and inode digests of a RAFS image: blake3 (nydus's default) or
// sha256, both 32 bytes (utils/src/digest.rs in dragonflyoss/nydus).
package digest

import (
	"crypto/sha256"
	"hash"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/zeebo/blake3"
)

// New returns a fresh hash for alg.
func New(alg rafs.Digester) hash.Hash {
	if alg == rafs.DigestSHA256 {
		return sha256.New()
	}
	return blake3.New()
}

// Sum returns the digest of data under alg.
func Sum(alg rafs.Digester, data []byte) rafs.Digest {
	if alg == rafs.DigestSHA256 {
		return sha256.Sum256(data)
	}
	return blake3.Sum256(data)
}
