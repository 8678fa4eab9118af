package source_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

// backend is one Source implementation under test with what the suites need to drive it.
type backend struct {
	src source.Source
	// put stores a blob at the source and returns its id.
	put func(t testing.TB, data []byte) string
	// requests is how many requests reached the server so far; nil for sources without one.
	requests func() int
	// plant stores data under a raw name relative to the blob directory (local only; nil else), to
	// show that invalid ids never reach the file system.
	plant func(t testing.TB, name string, data []byte)

	// For fault tests: the proxy in front of the server, the pattern of its blob reads, a Source
	// that asks through it with wrong credentials, and a word the refusal must contain.
	proxy      *registrytest.Proxy
	blobGet    string
	wrongCreds source.Source
	refusal    string
}

// blobGets counts the requests the proxy logged that match the backend's blob-read pattern.
func (b *backend) blobGets() int {
	re := regexp.MustCompile(b.blobGet)
	n := 0
	for _, r := range b.proxy.Requests() {
		if re.MatchString(r.Method + " " + r.Path) {
			n++
		}
	}
	return n
}

// blobRanges lists the Range headers of the blob reads the proxy logged.
func (b *backend) blobRanges() []string {
	re := regexp.MustCompile(b.blobGet)
	var out []string
	for _, r := range b.proxy.Requests() {
		if re.MatchString(r.Method + " " + r.Path) {
			out = append(out, r.Range)
		}
	}
	return out
}

func blobID(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// randomBytes returns size seeded pseudo-random bytes (failures reproduce).
func randomBytes(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// localBackend is a blob directory on disk.
func localBackend(t testing.TB) *backend {
	root := t.TempDir()
	dir := filepath.Join(root, "blobs")
	noErr(t, os.Mkdir(dir, 0o755))
	src := source.NewLocal(dir)
	t.Cleanup(func() { src.Close() })
	return &backend{
		src: src,
		put: func(t testing.TB, data []byte) string {
			id := blobID(data)
			noErr(t, os.WriteFile(filepath.Join(dir, id), data, 0o644))
			return id
		},
		plant: func(t testing.TB, name string, data []byte) {
			p := filepath.Join(dir, name)
			noErr(t, os.MkdirAll(filepath.Dir(p), 0o755))
			noErr(t, os.WriteFile(p, data, 0o644))
		},
	}
}

// wrappedBackend is a local directory read through Retrying(Counting(...)): the wrappers keep the
// contract. Its requests are the calls that reached the Counting layer.
func wrappedBackend(t testing.TB) *backend {
	b := localBackend(t)
	counting := source.Counting(b.src)
	b.src = source.Retrying(counting, 3, time.Millisecond)
	b.requests = func() int { return int(counting.Stats().Requests) }
	return b
}

// newRegistryClient makes a client for the test registry that does not retry by itself (so the
// fault tests see Retrying at work) and ignores the machine's docker config.
func newRegistryClient(t testing.TB, user, password string) *registry.Client {
	opts := registry.Options{Username: user, Password: password, Retries: -1}
	if user == "" {
		cfg := filepath.Join(t.TempDir(), "config.json")
		noErr(t, os.WriteFile(cfg, []byte("{}"), 0o600))
		opts.DockerConfig = cfg
	}
	c, err := registry.New(opts)
	noErr(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// registryBackend is a real docker-registry with Basic auth, read through the counting proxy.
func registryBackend(t testing.TB) *backend {
	reg := registrytest.Start(t, registrytest.Options{Auth: registrytest.AuthBasic})
	proxy := registrytest.NewProxy(t, reg.Host())
	pusher := newRegistryClient(t, reg.Username, reg.Password)
	pushRepo, err := registry.ParseRef(reg.Ref("nydus/blobs", ""))
	noErr(t, err)
	readRepo, err := registry.ParseRef(proxy.Ref("nydus/blobs", ""))
	noErr(t, err)
	src := source.NewRegistry(newRegistryClient(t, reg.Username, reg.Password), readRepo)
	t.Cleanup(func() { src.Close() })
	return &backend{
		src: src,
		put: func(t testing.TB, data []byte) string {
			desc := ocispec.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data))}
			_, err := pusher.PushBlob(ctxT(t), pushRepo, desc, bytes.NewReader(data), nil)
			noErr(t, err)
			return desc.Digest.Encoded()
		},
		requests:   func() int { return proxy.Total().Requests },
		proxy:      proxy,
		blobGet:    `^GET /v2/nydus/blobs/blobs/sha256:`,
		wrongCreds: source.NewRegistry(newRegistryClient(t, reg.Username, "wrong-password"), readRepo),
		refusal:    "authentication failed for user " + reg.Username,
	}
}

const (
	s3Bucket = "nydus"
	s3Prefix = "cache/blobs/"
)

// s3Backend is a real versitygw over a posix directory, read through the counting proxy. Fixtures
// are uploaded with minio-go straight to the gateway.
func s3Backend(t testing.TB) *backend {
	gw := startGateway(t)
	uploader, err := minio.New(gw.Host, &minio.Options{Creds: credentials.NewStaticV4(gw.Access, gw.Secret, ""), Region: "us-east-1"})
	noErr(t, err)
	noErr(t, uploader.MakeBucket(ctxT(t), s3Bucket, minio.MakeBucketOptions{Region: "us-east-1"}))
	proxy := registrytest.NewProxy(t, gw.Host)
	cfg := source.S3Config{Endpoint: "http://" + proxy.Host(), Region: "us-east-1", Bucket: s3Bucket,
		Prefix: s3Prefix, AccessKey: gw.Access, SecretKey: gw.Secret}
	src, err := source.NewS3(cfg)
	noErr(t, err)
	t.Cleanup(func() { src.Close() })
	wrong := cfg
	wrong.SecretKey = "not-the-secret"
	wrongSrc, err := source.NewS3(wrong)
	noErr(t, err)
	t.Cleanup(func() { wrongSrc.Close() })
	return &backend{
		src: src,
		put: func(t testing.TB, data []byte) string {
			id := blobID(data)
			_, err := uploader.PutObject(ctxT(t), s3Bucket, s3Prefix+id, bytes.NewReader(data), int64(len(data)),
				minio.PutObjectOptions{ContentType: "application/octet-stream"})
			noErr(t, err)
			return id
		},
		requests:   func() int { return proxy.Total().Requests },
		proxy:      proxy,
		blobGet:    `^GET /` + s3Bucket + `/` + regexp.QuoteMeta(s3Prefix),
		wrongCreds: wrongSrc,
		refusal:    "SignatureDoesNotMatch",
	}
}
