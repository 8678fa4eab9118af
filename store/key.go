package store

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/digest"
)

// Key names a chunk: the digest of its uncompressed bytes and the algorithm that made the digest.
type Key struct {
	Alg    rafs.Digester
	Digest rafs.Digest
}

// KeyOf returns the key of data under alg.
func KeyOf(alg rafs.Digester, data []byte) Key {
	return Key{Alg: alg, Digest: digest.Sum(alg, data)}
}

// String returns "<alg>-<hex digest>", which is also the chunk's file name.
func (k Key) String() string { return k.Alg.String() + "-" + k.Digest.String() }

// check reports whether k names an algorithm the store knows.
func (k Key) check() error {
	if k.Alg != rafs.DigestBlake3 && k.Alg != rafs.DigestSHA256 {
		return fmt.Errorf("%w: key algorithm %v", ErrInvalid, k.Alg)
	}
	return nil
}

// matches reports whether data hashes to k.
func (k Key) matches(data []byte) bool { return digest.Sum(k.Alg, data) == k.Digest }

// relPath is the chunk file's path below the store directory: data/<hh>/<alg>-<hex>.
func (k Key) relPath() string { return k.appendPath(nil, "") }

// appendPath appends dir/data/<hh>/<alg>-<hex> (or the relative path when dir is empty) to b with
// one allocation at most: Get builds it on every read.
func (k Key) appendPath(b []byte, dir string) string {
	alg := k.Alg.String()
	n := len(dir) + 1 + len(dataDir) + 4 + len(alg) + 1 + 2*len(k.Digest)
	if cap(b) < n {
		b = make([]byte, 0, n)
	}
	if dir != "" {
		b = append(b, dir...)
		b = append(b, filepath.Separator)
	}
	b = append(b, dataDir...)
	b = append(b, filepath.Separator)
	b = hex.AppendEncode(b, k.Digest[:1])
	b = append(b, filepath.Separator)
	b = append(b, alg...)
	b = append(b, '-')
	b = hex.AppendEncode(b, k.Digest[:])
	return string(b)
}

// indexKeyLen is the length of a bbolt key: one algorithm byte and the 32-byte digest.
const indexKeyLen = 1 + len(rafs.Digest{})

func (k Key) indexKey() []byte {
	b := make([]byte, indexKeyLen)
	b[0] = byte(k.Alg)
	copy(b[1:], k.Digest[:])
	return b
}

func keyFromIndex(b []byte) (Key, error) {
	if len(b) != indexKeyLen {
		return Key{}, fmt.Errorf("index key of %d bytes, want %d", len(b), indexKeyLen)
	}
	k := Key{Alg: rafs.Digester(b[0])}
	copy(k.Digest[:], b[1:])
	return k, k.check()
}

// parseFileName is the inverse of the file-name part of relPath.
func parseFileName(name string) (Key, error) {
	algName, hexDigest, ok := strings.Cut(name, "-")
	if !ok {
		return Key{}, fmt.Errorf("chunk file name %q has no '-'", name)
	}
	alg, err := rafs.ParseDigester(algName)
	if err != nil {
		return Key{}, fmt.Errorf("chunk file name %q: %w", name, err)
	}
	k := Key{Alg: alg}
	if len(hexDigest) != 2*len(k.Digest) || strings.ToLower(hexDigest) != hexDigest {
		return Key{}, fmt.Errorf("chunk file name %q: digest is not 64 lowercase hex digits", name)
	}
	if _, err := hex.Decode(k.Digest[:], []byte(hexDigest)); err != nil {
		return Key{}, fmt.Errorf("chunk file name %q: %w", name, err)
	}
	return k, nil
}
