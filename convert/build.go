package convert

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/internal/atomicfile"
	"github.com/dfnydus/dfnydus/rafs/builder"
)

// built is a finished build of one source manifest, possibly read back from the work dir.
type built struct {
	Blobs     []string      `json:"blobs"` // blob table order
	Stats     builder.Stats `json:"stats"`
	bootstrap []byte
	dir       string
}

// cacheKey names a build by everything that determines its output: the same source manifest and
// options always build the same bytes, so a finished build can be reused after a crash.
func (cv *converter) cacheKey(src ocispec.Descriptor) string {
	o := cv.opts.Build
	k := struct {
		Source               string
		FSVersion            int
		Compressor, Digester string
		ChunkSize            uint32
		Prefetch             []string
		Dict                 string
	}{src.Digest.String(), o.FSVersion, o.Compressor.String(), o.Digester.String(), o.ChunkSize, o.Prefetch, ""}
	if cv.dict != nil {
		k.Dict = cv.dict.BootstrapDesc.Digest.String()
	}
	data, _ := json.Marshal(k)
	return fmt.Sprintf("%x", sha256.Sum256(data))
}

// build streams the source layers through the builder, unless an identical build is already in
// the work dir with all its blobs.
func (cv *converter) build(ctx context.Context, src ocispec.Descriptor, layers []ocispec.Descriptor) (*built, error) {
	blobDir := filepath.Join(cv.opts.WorkDir, "blobs")
	buildDir := filepath.Join(cv.opts.WorkDir, "builds")
	for _, d := range []string{blobDir, buildDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}
	key := cv.cacheKey(src)
	if b := cv.cached(buildDir, blobDir, key); b != nil {
		cv.opts.Log.Info("reusing finished build", zap.String("source", src.Digest.String()))
		return b, nil
	}
	var ls []builder.Layer
	for _, l := range layers {
		l := l
		ls = append(ls, builder.StreamLayer(l.Digest.String(), func() (io.ReadCloser, error) {
			rc, err := cv.c.FetchBlob(ctx, cv.src, l)
			if err != nil {
				return nil, fmt.Errorf("fetch layer %s: %w", l.Digest, err)
			}
			return cv.progressReader(rc, l), nil
		}))
	}
	res, err := builder.Build(ctx, cv.opts.Build, blobDir, ls)
	if err != nil {
		return nil, fmt.Errorf("build nydus image from %s: %w", cv.src, err)
	}
	for _, w := range res.Warnings {
		cv.opts.Log.Warn(w)
	}
	b := &built{Stats: res.Stats, bootstrap: res.Bootstrap, dir: blobDir}
	for _, blb := range res.Image.Blobs {
		b.Blobs = append(b.Blobs, blb.ID)
	}
	if err := cv.saveBuild(buildDir, key, b); err != nil {
		cv.opts.Log.Warn("could not record the build for reuse", zap.Error(err))
	}
	return b, nil
}

func (cv *converter) cached(buildDir, blobDir, key string) *built {
	data, err := os.ReadFile(filepath.Join(buildDir, key+".json"))
	if err != nil {
		return nil
	}
	b := &built{dir: blobDir}
	if json.Unmarshal(data, b) != nil {
		return nil
	}
	if b.bootstrap, err = os.ReadFile(filepath.Join(buildDir, key+".boot")); err != nil {
		return nil
	}
	for _, id := range b.Blobs {
		if _, err := os.Stat(filepath.Join(blobDir, id)); err != nil {
			if cv.dict == nil {
				return nil
			}
			if _, ok := cv.dict.Blobs[id]; !ok {
				return nil
			}
		}
	}
	return b
}

// saveBuild records a build: bootstrap first, then the JSON that makes the record valid.
func (cv *converter) saveBuild(buildDir, key string, b *built) error {
	if err := atomicfile.WriteFile(filepath.Join(buildDir, key+".boot"), b.bootstrap, 0o600); err != nil {
		return err
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(buildDir, key+".json"), data, 0o600)
}
