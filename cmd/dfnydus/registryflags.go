package main

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/registry"
)

// registryFlags are the registry access options every command that talks to a registry takes.
type registryFlags struct {
	plainHTTP, insecure bool
	caFile, dockerCfg   string
	creds               credsFlags
	retries             int
}

func (f *registryFlags) add(fl *pflag.FlagSet) {
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "talk plain HTTP to the registry (always done for loopback registries)")
	fl.BoolVar(&f.insecure, "insecure", false, "skip TLS certificate verification")
	fl.StringVar(&f.caFile, "ca-file", "", "extra CA certificates (PEM) to trust")
	fl.StringVar(&f.dockerCfg, "docker-config", "", "docker config.json with credentials (default $DOCKER_CONFIG or ~/.docker/config.json)")
	f.creds.add(fl)
	fl.IntVar(&f.retries, "retries", 5, "retries with backoff for failed registry requests")
}

func (f *registryFlags) client(log *zap.Logger) (*registry.Client, error) {
	retries := f.retries
	if retries == 0 {
		retries = -1 // the client reads 0 as "default"; on the command line 0 means none
	}
	o := registry.Options{PlainHTTP: f.plainHTTP, Insecure: f.insecure, CAFile: f.caFile, DockerConfig: f.dockerCfg,
		Retries: retries, Logger: log, UserAgent: "dfnydus/" + version}
	var err error
	if o.Username, o.Password, err = f.creds.get(log); err != nil {
		return nil, err
	}
	return registry.New(o)
}

// imageSource is what inspect, check and unpack read: a local bootstrap + blob dir, or an image in a
// registry (--image), whose blobs are downloaded into the blob dir (or a temp dir) when needed.
type imageSource struct {
	bootstrap, blobDir, image string
	reg                       registryFlags
}

func (s *imageSource) add(fl *pflag.FlagSet, needBlobs bool) {
	fl.StringVar(&s.bootstrap, "bootstrap", "", "bootstrap file, bootstrap layer tar(.gz), or blob with an inlined bootstrap")
	if needBlobs {
		fl.StringVar(&s.blobDir, "blob-dir", "", "directory holding the blobs, named by blob id (with --image: where to download them)")
	}
	fl.StringVar(&s.image, "image", "", "read the nydus image REF from its registry instead of --bootstrap")
	s.reg.add(fl)
}

// load returns the image and, when blobs are wanted, a blob directory holding all of them; cleanup
// removes what load created. An image with a blob whose chunks dfnydus cannot read is refused
// unless metadataOnly (inspect reads no chunk and shows such blobs as unreadable).
func (s *imageSource) load(ctx context.Context, g *globals, needBlobs bool) (img *rafs.Image, dir string, cleanup func(), err error) {
	return s.loadImage(ctx, g, needBlobs, false)
}

func (s *imageSource) loadImage(ctx context.Context, g *globals, needBlobs, metadataOnly bool) (img *rafs.Image, dir string, cleanup func(), err error) {
	cleanup = func() {}
	switch {
	case s.image != "" && s.bootstrap != "":
		return nil, "", cleanup, fmt.Errorf("give --image or --bootstrap, not both")
	case s.image == "" && s.bootstrap == "":
		return nil, "", cleanup, fmt.Errorf("give --bootstrap FILE or --image REF")
	case s.bootstrap != "":
		if needBlobs && s.blobDir == "" {
			return nil, "", cleanup, fmt.Errorf("--blob-dir is required with --bootstrap")
		}
		_, img, err := bootstrap.Load(s.bootstrap)
		if err != nil {
			return nil, "", cleanup, err
		}
		// Refused before any chunk is read: check and unpack would fail at the first chunk of
		// such a blob.
		if err := img.Unsupported(); err != nil && !metadataOnly {
			return nil, "", cleanup, fmt.Errorf("bootstrap %s: %w", s.bootstrap, err)
		}
		return img, s.blobDir, cleanup, nil
	}
	ref, err := registry.ParseRef(s.image)
	if err != nil {
		return nil, "", cleanup, fmt.Errorf("--image: %w", err)
	}
	c, err := s.reg.client(g.log)
	if err != nil {
		return nil, "", cleanup, err
	}
	oimg, err := oci.Open(ctx, c, ref, registry.HostPlatform())
	if err != nil {
		return nil, "", cleanup, err
	}
	// Before any blob is downloaded.
	if err := oimg.RAFS.Unsupported(); err != nil && !metadataOnly {
		return nil, "", cleanup, fmt.Errorf("%s: %w", oimg.Ref, err)
	}
	if !needBlobs {
		return oimg.RAFS, "", cleanup, nil
	}
	dir = s.blobDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "dfnydus-blobs-"); err != nil {
			return nil, "", cleanup, err
		}
		cleanup = func() { os.RemoveAll(dir) }
	}
	if err := oci.DownloadBlobs(ctx, c, oimg, dir); err != nil {
		cleanup()
		return nil, "", func() {}, err
	}
	return oimg.RAFS, dir, cleanup, nil
}
