package p2p

import (
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// pieceRecord is what the index keeps of a piece the peer holds: where its bytes are in the store
// (content-addressed by sha256), its Dragonfly crc32 and whether it is verified.
type pieceRecord struct {
	SHA256   [32]byte
	CRC32    uint32
	Length   uint64
	Verified bool
	// FromParent is set for pieces that came from another peer and are not verified yet: a chunk
	// that fails across them blames them, not the source.
	FromParent bool
}

const recordLen = 32 + 4 + 8 + 1

func (r pieceRecord) encode() []byte {
	b := make([]byte, recordLen)
	copy(b, r.SHA256[:])
	binary.BigEndian.PutUint32(b[32:], r.CRC32)
	binary.BigEndian.PutUint64(b[36:], r.Length)
	if r.Verified {
		b[44] |= 1
	}
	if r.FromParent {
		b[44] |= 2
	}
	return b
}

func decodeRecord(b []byte) (pieceRecord, error) {
	if len(b) != recordLen {
		return pieceRecord{}, fmt.Errorf("piece record of %d bytes, want %d", len(b), recordLen)
	}
	var r pieceRecord
	copy(r.SHA256[:], b)
	r.CRC32 = binary.BigEndian.Uint32(b[32:])
	r.Length = binary.BigEndian.Uint64(b[36:])
	r.Verified = b[44]&1 != 0
	r.FromParent = b[44]&2 != 0
	return r, nil
}

// index persists which pieces of which tasks the peer holds: one bucket per task id, keyed by the
// piece number (u32 big-endian). The piece bytes live in the chunk store.
type index struct{ db *bolt.DB }

func openIndex(path string) (*index, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2e9})
	if err != nil {
		return nil, fmt.Errorf("open piece index %s: %w", path, err)
	}
	return &index{db: db}, nil
}

func (ix *index) close() error { return ix.db.Close() }

func pieceKey(n uint32) []byte {
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], n)
	return k[:]
}

// load returns every piece record of a task; records that do not decode are dropped.
func (ix *index) load(taskID string) (map[uint32]pieceRecord, error) {
	out := map[uint32]pieceRecord{}
	err := ix.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(taskID))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 4 {
				return nil
			}
			if r, err := decodeRecord(v); err == nil {
				out[binary.BigEndian.Uint32(k)] = r
			}
			return nil
		})
	})
	return out, err
}

func (ix *index) put(taskID string, n uint32, r pieceRecord) error {
	return ix.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(taskID))
		if err != nil {
			return err
		}
		return b.Put(pieceKey(n), r.encode())
	})
}

func (ix *index) remove(taskID string, n uint32) error {
	return ix.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(taskID))
		if b == nil {
			return nil
		}
		return b.Delete(pieceKey(n))
	})
}

func (ix *index) removeTask(taskID string) error {
	return ix.db.Update(func(tx *bolt.Tx) error {
		err := tx.DeleteBucket([]byte(taskID))
		if errors.Is(err, bolt.ErrBucketNotFound) {
			return nil
		}
		return err
	})
}
