package trace

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/opencontainers/go-digest"
)

// MediaType is the trace document's media type, also the artifactType of its referrer manifest.
const MediaType = "application/vnd.dfnydus.start-trace.v1+json"

// Version is the only trace format version this package reads and writes.
const Version = 1

// Limits a decoder applies before trusting a trace from a registry.
const (
	MaxSize    = 16 << 20  // bytes of JSON
	MaxEntries = 1 << 20   // chunks
	maxPath    = 4096      // bytes of one path (PATH_MAX)
	maxChunk   = 256 << 20 // compressed bytes of one chunk; nydus chunks are at most 16 MiB uncompressed
)

// ErrInvalid is wrapped by every error about a trace that breaks the format's rules.
var ErrInvalid = errors.New("invalid start trace")

// Trace is a start trace: the chunks a workload read, in the order of first access, and the image
// it was recorded on.
type Trace struct {
	Version int `json:"version"`
	// Manifest is the digest of the nydus manifest the trace was recorded on (registry mounts);
	// Bootstrap the sha256 of the bare bootstrap. At least one is set; a mount uses a trace only
	// when they match its image.
	Manifest  digest.Digest `json:"manifest,omitempty"`
	Bootstrap digest.Digest `json:"bootstrap,omitempty"`
	Created   time.Time     `json:"created"`
	Entries   []Entry       `json:"entries"`
}

// Entry is one chunk: where its bytes are (blob id, compressed offset and size), what they hash to
// (the image's chunk digester, hex), and the file whose read first touched it.
type Entry struct {
	Path   string `json:"path"`
	Blob   string `json:"blob"`
	Offset uint64 `json:"offset"`
	Size   uint32 `json:"size"`
	Digest string `json:"digest"`
}

// Encode returns the trace as indented JSON.
func (t *Trace) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode start trace: %w", err)
	}
	return append(data, '\n'), nil
}

// Decode parses and validates a trace. Unknown fields are refused: a v1 reader must not silently
// drop what a later writer meant.
func Decode(data []byte) (*Trace, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(data), MaxSize)
	}
	// Check the version before the rest, so a later format is named as such, not as malformed.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if v.Version != Version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrInvalid, v.Version, Version)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	t := &Trace{}
	if err := dec.Decode(t); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the trace object", ErrInvalid)
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// Validate checks the format's rules: version, the image it is bound to, and each entry's fields.
// Duplicate chunks are refused: a recorder lists each chunk once, at its first read.
func (t *Trace) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if t.Version != Version {
		return bad("version %d, want %d", t.Version, Version)
	}
	if t.Manifest == "" && t.Bootstrap == "" {
		return bad("names neither a manifest nor a bootstrap digest")
	}
	for _, d := range []digest.Digest{t.Manifest, t.Bootstrap} {
		if d != "" {
			if err := d.Validate(); err != nil {
				return bad("digest %q: %v", d, err)
			}
		}
	}
	if len(t.Entries) > MaxEntries {
		return bad("%d entries, limit %d", len(t.Entries), MaxEntries)
	}
	type key struct {
		blob string
		off  uint64
	}
	seen := make(map[key]bool, len(t.Entries))
	for i, e := range t.Entries {
		switch {
		case len(e.Path) > maxPath || !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path:
			return bad("entry %d: path %q is not a clean absolute path", i, e.Path)
		case !isHex32(e.Blob):
			return bad("entry %d: blob %q is not a 64-digit hex id", i, e.Blob)
		case !isHex32(e.Digest):
			return bad("entry %d: digest %q is not 64 hex digits", i, e.Digest)
		case e.Size == 0 || e.Size > maxChunk:
			return bad("entry %d: size %d out of range", i, e.Size)
		case e.Offset > 1<<50:
			return bad("entry %d: offset %d out of range", i, e.Offset)
		}
		k := key{e.Blob, e.Offset}
		if seen[k] {
			return bad("entry %d: blob %s offset %d listed twice", i, e.Blob, e.Offset)
		}
		seen[k] = true
	}
	return nil
}

func isHex32(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && s == lower(s)
}

// lower is strings.ToLower for ASCII hex: ids and digests are written in lower case only, so two
// spellings of one chunk cannot both appear.
func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
