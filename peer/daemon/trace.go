package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/atomicfile"
	"github.com/dfnydus/dfnydus/peer/trace"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/registry"
)

// traceLookupTimeout bounds the search for a start trace referrer: a mount must not wait long for
// an optimisation, and a registry without one answers at once.
const traceLookupTimeout = 2 * time.Second

// findTrace looks for a start trace referrer of the manifest. Any failure is a warning: the mount
// goes on without one.
func (d *Daemon) findTrace(ctx context.Context, c *registry.Client, ref registry.Ref, manifest digest.Digest) (*trace.Trace, string) {
	ctx, cancel := context.WithTimeout(ctx, traceLookupTimeout)
	defer cancel()
	t, err := trace.Find(ctx, c, ref, manifest)
	switch {
	case errors.Is(err, trace.ErrNoTrace):
		d.log.Debug("no start trace referrer", zap.String("image", ref.String()))
		return nil, ""
	case err != nil:
		d.log.Warn("start trace lookup failed; mounting without it", zap.String("image", ref.String()), zap.Error(err))
		return nil, ""
	}
	return t, "referrer of " + manifest.String()
}

// traceFirst returns the chunks of the opened image's start trace to prefetch first, or nil when
// it has none or the trace does not fit the image (a warning, never a failed mount).
func traceFirst(oi *openedImage, log *zap.Logger) (chunks []rafs.Chunk, name string) {
	if oi.trace == nil {
		return nil, ""
	}
	if err := oi.trace.BoundTo(oi.manifest, oi.bootstrap); err != nil {
		log.Warn("start trace ignored", zap.Error(err))
		return nil, ""
	}
	cs, err := oi.trace.Resolve(oi.img)
	if err != nil {
		log.Warn("start trace ignored", zap.Error(err))
		return nil, ""
	}
	log.Info("prefetching the start trace first", zap.String("trace", oi.traceName), zap.Int("chunks", len(cs)))
	return cs, oi.traceName
}

// writeTrace stops the mount's recorder and writes its trace (temp file, sync, rename).
func (m *mount) writeTrace() {
	if m.rec == nil {
		return
	}
	t := m.rec.Stop(m.oi.manifest, m.oi.bootstrap)
	if err := writeTraceFile(m.recordPath, t); err != nil {
		m.log.Error("write start trace", zap.Error(err))
		return
	}
	m.log.Info("start trace written", zap.String("file", m.recordPath), zap.Int("chunks", len(t.Entries)))
}

func writeTraceFile(p string, t *trace.Trace) error {
	data, err := t.Encode()
	if err != nil {
		return fmt.Errorf("start trace %s: %w", p, err)
	}
	if err := atomicfile.WriteFile(p, data, 0o644); err != nil {
		return fmt.Errorf("start trace: %w", err)
	}
	return nil
}
