package registrytest_test

// Integration tests of the registry client's blob operations against the real registry
// (distribution's docker-registry), with a counting proxy in front of it.
//
// They live here rather than in registry/ because Go lets only packages under test/ import
// test/internal/registrytest.

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

const chunk = 256 << 10

func TestBlobRoundTripInChunks(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{UploadChunkSize: chunk})
	repo := mustRef(t, proxy.Ref("round/trip", ""))

	data, desc := randomBlob(1, 3*chunk+1234) // three full chunks and a tail
	res := pushBytes(t, c, repo, data, desc)
	equal(t, res, registry.PushResult{BytesUploaded: desc.Size}, "push result")

	patches := requests(proxy, "PATCH", registrytest.KindBlobUpload)
	equal(t, len(patches), 4, "PATCH requests (one per chunk)")
	for i, p := range patches {
		end := min(int64(i+1)*chunk, desc.Size) - 1
		equal(t, p.ContentRange, fmt.Sprintf("%d-%d", int64(i)*chunk, end), fmt.Sprintf("chunk %d Content-Range", i))
	}
	equal(t, len(requests(proxy, "POST", registrytest.KindBlobUpload)), 1, "POSTs")
	equal(t, len(requests(proxy, "PUT", registrytest.KindBlobUpload)), 1, "PUTs")
	equal(t, proxy.Counts(registrytest.KindBlobUpload).BytesIn, desc.Size, "upload bytes the registry side received")
	equal(t, c.Stats().BytesUploaded, desc.Size, "client's uploaded total")

	sameBytes(t, fetchAll(t, c, repo, desc), data, "fetched blob")
	equal(t, proxy.Counts(registrytest.KindBlobGet).BytesOut, desc.Size, "blob bytes served")

	ok, size, err := c.BlobExists(ctxT(t), repo, desc.Digest)
	noErr(t, err)
	equal(t, ok, true, "blob exists")
	equal(t, size, desc.Size, "blob size")
}

func TestEmptyBlob(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	c := newClient(t, registry.Options{})
	repo := mustRef(t, reg.Ref("empty/blob", ""))
	data, desc := randomBlob(2, 0)
	res := pushBytes(t, c, repo, data, desc)
	equal(t, res.BytesUploaded, 0, "bytes uploaded")
	equal(t, len(fetchAll(t, c, repo, desc)), 0, "fetched length")
}

func TestPushExistingBlobIsSkipped(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	repo := mustRef(t, proxy.Ref("skip/me", ""))
	data, desc := randomBlob(3, 100_000)
	pushBytes(t, c, repo, data, desc)
	proxy.ResetCounts()

	res := pushBytes(t, c, repo, data, desc)
	equal(t, res, registry.PushResult{Skipped: true}, "push result")
	equal(t, proxy.Counts(registrytest.KindBlobUpload), registrytest.Counts{}, "upload traffic")
}

func TestCrossRepositoryMount(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	src := mustRef(t, proxy.Ref("mount/src", ""))
	dst := mustRef(t, proxy.Ref("mount/dst", ""))
	data, desc := randomBlob(4, 200_000)
	pushBytes(t, c, src, data, desc)
	proxy.ResetCounts()

	other := mustRef(t, "example.com/mount/src") // another registry: never asked
	missing := mustRef(t, proxy.Ref("mount/nothing-here", ""))
	res, err := c.PushBlob(ctxT(t), dst, desc, bytes.NewReader(data), []registry.Ref{other, missing, src})
	noErr(t, err)
	equal(t, res, registry.PushResult{Mounted: true}, "push result")
	equal(t, proxy.Counts(registrytest.KindBlobUpload).BytesIn, 0, "upload bytes")
	// A mount from the repository without the blob, then from src.
	equal(t, len(requests(proxy, "POST", registrytest.KindBlobUpload)), 2, "mount POSTs")
	equal(t, len(requests(proxy, "DELETE", registrytest.KindBlobUpload)), 1, "cancelled sessions of refused mounts")
	sameBytes(t, fetchAll(t, c, dst, desc), data, "mounted blob")
}

func TestMountFallsBackToUpload(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	dst := mustRef(t, proxy.Ref("fallback/dst", ""))
	data, desc := randomBlob(5, 50_000)
	res, err := c.PushBlob(ctxT(t), dst, desc, bytes.NewReader(data), []registry.Ref{mustRef(t, proxy.Ref("fallback/empty", ""))})
	noErr(t, err)
	equal(t, res, registry.PushResult{BytesUploaded: desc.Size}, "push result")
	// The session the refused mount opened carries the upload.
	equal(t, len(requests(proxy, "POST", registrytest.KindBlobUpload)), 1, "POSTs")
	sameBytes(t, fetchAll(t, c, dst, desc), data, "uploaded blob")
}

func TestUploadResumesAfterConnectionReset(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{UploadChunkSize: chunk})
	repo := mustRef(t, proxy.Ref("resume/upload", ""))
	data, desc := randomBlob(6, 4*chunk)

	// The second chunk's connection dies 100 KiB in.
	proxy.Inject(registrytest.Fault{Match: `^PATCH /v2/.*/blobs/uploads/`, Skip: 1, Reset: true, ResetAfter: 100 << 10})
	res := pushBytes(t, c, repo, data, desc)

	if res.Skipped || res.Mounted || res.BytesUploaded <= desc.Size || res.BytesUploaded >= 2*desc.Size {
		t.Errorf("push result %+v: want an upload of more than %d bytes (part of a chunk twice), less than twice that", res, desc.Size)
	}
	equal(t, len(requests(proxy, "POST", registrytest.KindBlobUpload)), 1, "POSTs (the same session is resumed)")
	equal(t, len(requests(proxy, "GET", registrytest.KindBlobUpload)), 1, "upload status requests")
	var ranges []string
	for _, p := range requests(proxy, "PATCH", registrytest.KindBlobUpload) {
		ranges = append(ranges, p.ContentRange)
	}
	want := []string{
		fmt.Sprintf("0-%d", chunk-1),
		fmt.Sprintf("%d-%d", chunk, 2*chunk-1), // reset
		fmt.Sprintf("%d-%d", chunk, 2*chunk-1), // resumed from the registry's offset
		fmt.Sprintf("%d-%d", 2*chunk, 3*chunk-1),
		fmt.Sprintf("%d-%d", 3*chunk, 4*chunk-1),
	}
	equal(t, fmt.Sprint(ranges), fmt.Sprint(want), "PATCH Content-Ranges")
	sameBytes(t, fetchAll(t, c, repo, desc), data, "uploaded blob")
}

func TestUploadStartsOverWhenSessionIsGone(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{UploadChunkSize: chunk})
	repo := mustRef(t, proxy.Ref("resume/restart", ""))
	data, desc := randomBlob(7, 3*chunk)

	proxy.Inject(registrytest.Fault{Match: `^PATCH /v2/.*/blobs/uploads/`, Skip: 1, Reset: true, ResetAfter: 1000})
	proxy.FailNext(`^GET /v2/.*/blobs/uploads/`, 1, 404) // the session is unknown
	res := pushBytes(t, c, repo, data, desc)

	equal(t, len(requests(proxy, "POST", registrytest.KindBlobUpload)), 2, "POSTs (a new session)")
	if res.BytesUploaded < desc.Size+chunk {
		t.Errorf("uploaded %d bytes: want at least %d (the first chunk twice)", res.BytesUploaded, desc.Size+chunk)
	}
	sameBytes(t, fetchAll(t, c, repo, desc), data, "uploaded blob")
}

func TestUploadRetriesServerErrors(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{UploadChunkSize: chunk})
	repo := mustRef(t, proxy.Ref("retry/upload", ""))
	data, desc := randomBlob(8, 2*chunk)

	proxy.FailNext(`^POST `, 2, 503)
	proxy.Inject(registrytest.Fault{Match: `^PATCH `, Skip: 1, Status: 500})
	proxy.FailNext(`^PUT `, 1, 502)
	res := pushBytes(t, c, repo, data, desc)
	equal(t, res.BytesUploaded, desc.Size+chunk, "bytes uploaded (the refused chunk twice)")
	if r := c.Stats().Retries; r < 4 {
		t.Errorf("client counted %d retries, want at least 4", r)
	}
	sameBytes(t, fetchAll(t, c, repo, desc), data, "uploaded blob")
}

func TestFetchBlobDetectsWrongBytes(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	repo := mustRef(t, proxy.Ref("corrupt/blob", ""))
	data, desc := randomBlob(9, 300_000)
	pushBytes(t, c, repo, data, desc)

	proxy.CorruptBlob(desc.Digest.String(), 1)
	rc, err := c.FetchBlob(ctxT(t), repo, desc)
	noErr(t, err)
	_, err = io.ReadAll(rc)
	rc.Close()
	errIs(t, err, registry.ErrDigestMismatch)
	if !strings.Contains(err.Error(), desc.Digest.String()) {
		t.Errorf("error %q does not name the blob", err)
	}

	// The fault was one-shot: the next read is clean.
	sameBytes(t, fetchAll(t, c, repo, desc), data, "blob")
}

func TestFetchBlobResumesAfterReset(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	repo := mustRef(t, proxy.Ref("resume/fetch", ""))
	data, desc := randomBlob(10, 1<<20)
	pushBytes(t, c, repo, data, desc)
	proxy.ResetCounts()

	proxy.ResetAfter(`^GET /v2/.*/blobs/sha256:`, 2, 300_000)
	sameBytes(t, fetchAll(t, c, repo, desc), data, "blob")
	gets := requests(proxy, "GET", registrytest.KindBlobGet)
	if len(gets) != 3 {
		t.Fatalf("blob GETs: %+v, want 3", gets)
	}
	equal(t, gets[0].Range, "", "first GET's Range")
	for _, g := range gets[1:] {
		// Resumed where the data stopped (the client may have received less than was sent).
		if !regexp.MustCompile(`^bytes=[1-9]\d*-$`).MatchString(g.Range) {
			t.Errorf("resumed GET with Range %q, want bytes=N-", g.Range)
		}
	}
}

func TestFetchBlobRange(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	proxy := registrytest.NewProxy(t, reg.Host())
	c := newClient(t, registry.Options{})
	repo := mustRef(t, proxy.Ref("range/read", ""))
	data, desc := randomBlob(11, 100_000)
	pushBytes(t, c, repo, data, desc)

	tests := []struct {
		name    string
		off, n  int64
		wantErr bool
	}{
		{"head", 0, 10, false},
		{"middle", 4096, 8192, false},
		{"tail", 99_000, 1000, false},
		{"whole", 0, 100_000, false},
		{"empty", 500, 0, false},
		{"past the end", 99_990, 20, true},
		{"beyond", 200_000, 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proxy.ResetCounts()
			rc, err := c.FetchBlobRange(ctxT(t), repo, desc.Digest, tt.off, tt.n)
			if err == nil {
				var got []byte
				got, err = io.ReadAll(rc)
				rc.Close()
				if !tt.wantErr {
					noErr(t, err)
					sameBytes(t, got, data[tt.off:tt.off+tt.n], "range")
					equal(t, proxy.Counts(registrytest.KindBlobGet).BytesOut, tt.n, "bytes served (only the range)")
				}
			}
			if tt.wantErr {
				errIs(t, err, io.ErrUnexpectedEOF)
			}
		})
	}
}

func TestFetchMissingBlob(t *testing.T) {
	reg := registrytest.Start(t, registrytest.Options{})
	c := newClient(t, registry.Options{})
	repo := mustRef(t, reg.Ref("missing/blob", ""))
	_, desc := randomBlob(12, 10)
	_, err := c.FetchBlob(ctxT(t), repo, desc)
	errIs(t, err, registry.ErrNotFound)
	if !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Errorf("error %q does not carry the registry's code", err)
	}
	ok, _, err := c.BlobExists(ctxT(t), repo, desc.Digest)
	noErr(t, err)
	equal(t, ok, false, "blob exists")
}
