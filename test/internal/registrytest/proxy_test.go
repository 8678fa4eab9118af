package registrytest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dfnydus/dfnydus/test/internal/registrytest"
)

func TestClassify(t *testing.T) {
	for path, want := range map[string]registrytest.Kind{
		"/v2/":                         registrytest.KindOther,
		"/v2/a/b/blobs/sha256:abcd":    registrytest.KindBlobGet,
		"/v2/a/blobs/uploads/":         registrytest.KindBlobUpload,
		"/v2/a/blobs/uploads/uuid-1":   registrytest.KindBlobUpload,
		"/v2/a/b/manifests/latest":     registrytest.KindManifest,
		"/v2/a/manifests/sha256:abcd":  registrytest.KindManifest,
		"/v2/_catalog":                 registrytest.KindOther,
		"/v2/a/blobs/uploads/x/extra":  registrytest.KindBlobUpload,
		"/v2/uploads/blobs/sha256:abc": registrytest.KindBlobGet,
	} {
		if got := registrytest.Classify(path); got != want {
			t.Errorf("Classify(%q) = %s, want %s", path, got, want)
		}
	}
}

// TestProxyFaults checks the proxy's fault semantics against a trivial backend.
func TestProxyFaults(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Host-Seen", r.Host)
		io.WriteString(w, "0123456789"+string(body))
	}))
	t.Cleanup(backend.Close)
	p := registrytest.NewProxy(t, backend.URL)
	get := func(path string) (int, string, error) {
		resp, err := http.Get(p.URL() + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	// Plain forwarding keeps the client's Host and counts both directions.
	resp, err := http.Post(p.URL()+"/v2/a/blobs/uploads/", "application/octet-stream", strings.NewReader("abc"))
	noErr(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	equal(t, string(b), "0123456789abc", "forwarded body")
	equal(t, resp.Header.Get("X-Host-Seen"), p.Host(), "Host the backend saw")
	equal(t, p.Counts(registrytest.KindBlobUpload), registrytest.Counts{Requests: 1, BytesIn: 3, BytesOut: 13}, "upload counts")

	// Skip 1, then fail 2, then pass.
	p.Inject(registrytest.Fault{Match: `^GET /v2/x/manifests/`, Skip: 1, Times: 2, Status: 503})
	var codes []int
	for i := 0; i < 4; i++ {
		code, _, err := get("/v2/x/manifests/t")
		noErr(t, err)
		codes = append(codes, code)
	}
	equal(t, fmt.Sprint(codes), "[200 503 503 200]", "statuses")

	// Corrupt flips one byte; a reset after 4 bytes cuts the body.
	p.CorruptBlob("sha256:ab", 1)
	_, body, err := get("/v2/x/blobs/sha256:ab")
	noErr(t, err)
	equal(t, body, "\xcf123456789", "corrupted body")
	p.ResetAfter(`^GET /v2/x/blobs/`, 1, 4)
	_, body, err = get("/v2/x/blobs/sha256:ab")
	if err == nil {
		t.Errorf("reset response read without error: %q", body)
	}
	_, body, err = get("/v2/x/blobs/sha256:ab")
	noErr(t, err)
	equal(t, body, "0123456789", "body after the one-shot faults")

	// A negative Times lasts until ClearFaults.
	p.FailNext(`^GET /v2/y/`, -1, 500)
	for i := 0; i < 3; i++ {
		code, _, _ := get("/v2/y/manifests/t")
		equal(t, code, 500, "status under a lasting fault")
	}
	p.ClearFaults()
	code, _, _ := get("/v2/y/manifests/t")
	equal(t, code, 200, "status after ClearFaults")

	log := p.Requests()
	if len(log) == 0 || log[0].Method != "POST" || log[0].BytesIn != 3 {
		t.Errorf("request log starts %+v", log[:min(len(log), 1)])
	}
	p.ResetCounts()
	equal(t, p.Total(), registrytest.Counts{}, "counts after ResetCounts")
}
