package store

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// recovery counts what Open cleaned up.
type recovery struct {
	dropped int // index entries whose file was missing or the wrong size, or that did not decode
	orphans int // files without an index entry
	temps   int // leftovers in tmp/
}

// recover brings the directory and the index back to agreement after whatever happened before:
// it removes temp files and orphan chunk files, drops entries whose file is missing or has the
// wrong size, and loads the rest in LRU order. It runs before any other goroutine exists.
func (s *Store) recover() (recovery, error) {
	var rep recovery
	if err := s.prepareLayout(); err != nil {
		return rep, err
	}
	if err := s.checkFormat(); err != nil {
		return rep, err
	}
	n, err := clearDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		return rep, err
	}
	rep.temps = n

	var undecodable [][]byte
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChunks).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(k, v)
			if err != nil {
				s.log.Warn("dropping undecodable index entry", zap.Error(err))
				undecodable = append(undecodable, slices.Clone(k))
				return nil
			}
			s.entries[r.key] = &entry{key: r.key, size: r.size, tick: r.tick}
			return nil
		})
	})
	if err != nil {
		return rep, fmt.Errorf("store: read index: %w", err)
	}

	if rep.orphans, err = s.scanData(); err != nil {
		return rep, err
	}

	// Entries whose file was not found intact go, from the index first.
	var gone []*entry
	for _, e := range s.entries {
		if !e.seen {
			gone = append(gone, e)
		}
	}
	if len(gone) > 0 || len(undecodable) > 0 {
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketChunks)
			for _, k := range undecodable {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			for _, e := range gone {
				if err := b.Delete(e.key.indexKey()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("store: drop %d broken index entries: %w", len(gone)+len(undecodable), err)
		}
	}
	for _, e := range gone {
		delete(s.entries, e.key)
		if err := os.Remove(s.path(e.key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("removing broken chunk file", zap.String("chunk", e.key.String()), zap.Error(err))
		}
		s.log.Warn("dropped chunk whose file is missing or the wrong size", zap.String("chunk", e.key.String()))
	}
	rep.dropped = len(gone) + len(undecodable)
	s.repaired.Add(uint64(len(gone)))

	// Rebuild the LRU order: oldest first, each pushed to the front.
	all := make([]*entry, 0, len(s.entries))
	for _, e := range s.entries {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b *entry) int {
		if c := cmp.Compare(a.tick, b.tick); c != 0 {
			return c
		}
		return bytes.Compare(a.key.Digest[:], b.key.Digest[:])
	})
	s.entries = make(map[Key]*entry, len(all))
	for _, e := range all {
		s.insertLocked(e)
		s.tick = max(s.tick, e.tick)
	}
	return rep, nil
}

// prepareLayout creates data/ and tmp/. The 256 fan-out directories under data/ are made by the
// first write into each (creating them all up front was most of a first mount's start-up time).
func (s *Store) prepareLayout() error {
	if err := os.MkdirAll(filepath.Join(s.dir, dataDir), 0o700); err != nil {
		return fmt.Errorf("store: create %s: %w", dataDir, err)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, tmpDir), 0o700); err != nil {
		return fmt.Errorf("store: create %s: %w", tmpDir, err)
	}
	return nil
}

// checkFormat creates the buckets of a new index and refuses an index of another format.
func (s *Store) checkFormat() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketChunks); err != nil {
			return err
		}
		v := meta.Get(metaFormat)
		if v == nil {
			return meta.Put(metaFormat, binary.LittleEndian.AppendUint32(nil, formatVersion))
		}
		if len(v) != 4 || binary.LittleEndian.Uint32(v) != formatVersion {
			return fmt.Errorf("index format %x, this build reads %d", v, formatVersion)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: index %s: %w", filepath.Join(s.dir, indexFile), err)
	}
	return nil
}

// scanData visits every file under data/: files of indexed chunks with the indexed size are marked
// seen; all others are removed. It returns how many files it removed.
func (s *Store) scanData() (int, error) {
	root := filepath.Join(s.dir, dataDir)
	dirs, err := os.ReadDir(root)
	if err != nil {
		return 0, fmt.Errorf("store: scan %s: %w", root, err)
	}
	removed := 0
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, d.Name()))
		if err != nil {
			return removed, fmt.Errorf("store: scan %s: %w", filepath.Join(root, d.Name()), err)
		}
		for _, f := range files {
			p := filepath.Join(root, d.Name(), f.Name())
			if s.claim(d.Name(), f) {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return removed, fmt.Errorf("store: remove orphan %s: %w", p, err)
			}
			removed++
		}
	}
	return removed, nil
}

// claim reports whether file f in fan-out directory dir is the intact file of an indexed chunk, and
// marks that entry seen.
func (s *Store) claim(dir string, f fs.DirEntry) bool {
	k, err := parseFileName(f.Name())
	if err != nil || k.Digest.String()[:2] != dir || !f.Type().IsRegular() {
		return false
	}
	e := s.entries[k]
	if e == nil {
		return false
	}
	info, err := f.Info()
	if err != nil || info.Size() != int64(e.size) {
		return false
	}
	e.seen = true
	e.disk = diskUsage(info)
	return true
}

// clearDir removes everything in dir and returns how many entries it removed.
func clearDir(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("store: scan %s: %w", dir, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return 0, fmt.Errorf("store: clear %s: %w", dir, err)
		}
	}
	return len(ents), nil
}
