package blobstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// recover brings the directory and the index back to agreement after whatever happened before
// (a crash at any instant included), and loads the index. It runs before any other goroutine.
func (s *Store) recover() error {
	if err := s.checkFormat(); err != nil {
		return err
	}

	type loaded struct {
		size int64
		set  spanSet
	}
	found := make(map[string]*loaded)
	var bad [][]byte // index entries to drop
	err := s.db.View(func(tx *bolt.Tx) error {
		ranges := tx.Bucket(bucketRanges)
		err := tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			id := string(k)
			size, err := decodeSize(v)
			if err == nil && !validID(id) {
				err = errors.New("malformed blob id")
			}
			var set spanSet
			if err == nil {
				rb := ranges.Bucket(k)
				if rb == nil {
					err = errors.New("no ranges bucket")
				} else {
					c := rb.Cursor()
					first := true
					set, err = decodeRanges(size, func() ([]byte, []byte) {
						if first {
							first = false
							return c.First()
						}
						return c.Next()
					})
				}
			}
			if err != nil {
				s.log.Warn("dropping undecodable index entry", zap.ByteString("blob", k), zap.Error(err))
				bad = append(bad, bytes.Clone(k))
				return nil
			}
			found[id] = &loaded{size: size, set: set}
			return nil
		})
		if err != nil {
			return err
		}
		// Ranges of a blob the blobs bucket does not name are leftovers.
		return ranges.ForEach(func(k, _ []byte) error {
			if _, ok := found[string(k)]; !ok {
				bad = append(bad, bytes.Clone(k))
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("blobstore: read index: %w", err)
	}

	// Blobs whose file is missing or has the wrong size go, from the index first.
	for id, l := range found {
		info, err := os.Lstat(s.blobPath(id))
		if err != nil || !info.Mode().IsRegular() || info.Size() != l.size {
			s.log.Warn("dropping blob whose file is missing or the wrong size", zap.String("blob", id))
			bad = append(bad, []byte(id))
			delete(found, id)
		}
	}
	if len(bad) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			blobs, ranges := tx.Bucket(bucketBlobs), tx.Bucket(bucketRanges)
			for _, k := range bad {
				if err := blobs.Delete(k); err != nil {
					return err
				}
				if err := ranges.DeleteBucket(k); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) && !errors.Is(err, bolterrors.ErrIncompatibleValue) {
					return err
				}
				if ranges.Get(k) != nil {
					if err := ranges.Delete(k); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("blobstore: drop stale index entries: %w", err)
		}
	}

	// Files the index does not name, and anything else, go.
	removed := 0
	keep := func(id string) bool { _, ok := found[id]; return ok }
	if err := s.sweep(keep, &removed); err != nil {
		return err
	}

	// What the previous run had pending (or was writing when it died) is never trusted: punch
	// every byte of each file that is not verified.
	var punched int64
	for id, l := range found {
		b := newBlob(s, id, l.size)
		b.created = true
		b.verified = l.set
		f, err := os.OpenFile(b.path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("blobstore: open %s: %w", b.path, err)
		}
		b.f.Store(f)
		s.blobs[id] = b
		for _, h := range b.verified.missing(0, b.size, nil) {
			if err := punch(f, h.Off, h.Len); err != nil {
				return fmt.Errorf("blobstore: punch %s: %w", b.path, err)
			}
			punched += h.Len
		}
		s.verified.Add(b.verified.total)
		for _, r := range b.verified.s {
			s.lru.touch(b, r.off, r.end)
		}
	}
	if len(bad) > 0 || removed > 0 || punched > 0 {
		s.log.Info("blob store recovered", zap.Int("dropped_entries", len(bad)), zap.Int("removed_files", removed), zap.Int64("punched_bytes", punched))
	}
	return nil
}

// checkFormat makes sure the index is in this package's format. An index of another format, or
// a directory with another store's files, is wiped: the store is a cache, and the bbolt lock held
// meanwhile keeps other processes out.
func (s *Store) checkFormat() error {
	wipe := ""
	err := s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				wipe = "index without a format"
			}
			return nil
		}
		v := meta.Get(keyFormat)
		if len(v) != 8 || binary.BigEndian.Uint64(v) != formatVersion {
			wipe = fmt.Sprintf("index format %x, want %d", v, formatVersion)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("blobstore: read index: %w", err)
	}
	if wipe == "" {
		if _, err := os.Lstat(filepath.Join(s.dir, "data")); err == nil {
			wipe = "directory of the old chunk store"
		}
	}
	if wipe != "" {
		s.log.Warn("wiping blob store directory of another format", zap.String("reason", wipe))
		err := s.db.Update(func(tx *bolt.Tx) error {
			var names [][]byte
			tx.ForEach(func(k []byte, _ *bolt.Bucket) error { names = append(names, bytes.Clone(k)); return nil })
			for _, k := range names {
				if err := tx.DeleteBucket(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("blobstore: wipe index: %w", err)
		}
		entries, err := os.ReadDir(s.dir)
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		for _, e := range entries {
			if e.Name() != indexFile {
				if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
					return fmt.Errorf("blobstore: wipe: %w", err)
				}
			}
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if err := meta.Put(keyFormat, u64(formatVersion)); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketBlobs); err != nil {
			return err
		}
		_, err = tx.CreateBucketIfNotExists(bucketRanges)
		return err
	})
}

// sweep deletes everything in the directory that is neither the index nor a blob file keep
// accepts: orphan files, temp junk, stray directories.
func (s *Store) sweep(keep func(id string) bool, removed *int) error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	for _, e := range entries {
		if e.Name() == indexFile || (e.Name() == blobsDir && e.IsDir()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		*removed++
	}
	root := filepath.Join(s.dir, blobsDir)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	dirs, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("blobstore: %w", err)
	}
	for _, d := range dirs {
		p := filepath.Join(root, d.Name())
		if !d.IsDir() || len(d.Name()) != 2 {
			os.RemoveAll(p)
			*removed++
			continue
		}
		files, err := os.ReadDir(p)
		if err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		for _, f := range files {
			if f.Type().IsRegular() && f.Name()[:min(2, len(f.Name()))] == d.Name() && keep(f.Name()) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(p, f.Name())); err != nil {
				return fmt.Errorf("blobstore: %w", err)
			}
			*removed++
		}
	}
	return nil
}
