package daemon

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dfnydus/dfnydus/rafs/bootstrap"
	"github.com/dfnydus/dfnydus/rafs/v5"
	"github.com/dfnydus/dfnydus/rafs/v6"
	"github.com/dfnydus/dfnydus/registry"
)

// fakeRegistry serves the blobs of a directory as repository repo over the distribution API
// (HEAD and ranged GET of /v2/REPO/blobs/sha256:ID), with Basic auth when user is set.
type fakeRegistry struct {
	*httptest.Server
	repo       string
	user, pass string
	dir        string
	heads      atomic.Int64
	gets       atomic.Int64
}

func startFakeRegistry(t *testing.T, repo, dir, user, pass string) *fakeRegistry {
	t.Helper()
	r := &fakeRegistry{repo: repo, user: user, pass: pass, dir: dir}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *fakeRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

func (r *fakeRegistry) serve(w http.ResponseWriter, req *http.Request) {
	if r.user != "" {
		if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	if req.URL.Path == "/v2/" {
		return
	}
	id, ok := strings.CutPrefix(req.URL.Path, "/v2/"+r.repo+"/blobs/sha256:")
	if !ok || strings.Contains(id, "/") {
		http.NotFound(w, req)
		return
	}
	f, err := os.Open(filepath.Join(r.dir, id))
	if err != nil {
		http.NotFound(w, req)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if req.Method == http.MethodHead {
		r.heads.Add(1)
	} else {
		r.gets.Add(1)
	}
	w.Header().Set("Docker-Content-Digest", "sha256:"+id)
	http.ServeContent(w, req, "", fi.ModTime(), f)
}

// withoutBlobSizes rewrites img's bootstrap with every blob's compressed size zeroed (as a
// bootstrap that does not record it) and returns the new file.
func withoutBlobSizes(t *testing.T, img testImage) string {
	t.Helper()
	_, m, err := bootstrap.Load(img.bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range m.Blobs {
		b.CompressedSize = 0
	}
	var data []byte
	switch m.Version {
	case 5:
		data, err = v5.Encode(m)
	case 6:
		data, err = v6.Encode(m)
	}
	if err != nil || data == nil {
		t.Fatalf("re-encode v%d bootstrap: %v", m.Version, err)
	}
	p := filepath.Join(t.TempDir(), "nosize.boot")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMountRepositoryWithLocalBootstrap: the snapshotter's form, a bootstrap file plus a registry
// repository, mounts with blobs read from the repository and hands P2P the blobs as registry
// tasks (URL and size), the size from the bootstrap or, when it has none, from a HEAD.
func TestMountRepositoryWithLocalBootstrap(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	img := buildTestImage(t, 7)
	reg := startFakeRegistry(t, "lib/app", img.blobDir, "", "")
	var wantBlobs []BlobRef
	for _, id := range img.blobIDs {
		fi, err := os.Stat(filepath.Join(img.blobDir, id))
		if err != nil {
			t.Fatal(err)
		}
		wantBlobs = append(wantBlobs, BlobRef{ID: id, Size: fi.Size(), URL: "http://" + reg.host() + "/v2/lib/app/blobs/sha256:" + id})
	}
	tests := []struct {
		name      string
		ref       string
		bootstrap string
	}{
		{name: "repository without a tag", ref: reg.host() + "/lib/app", bootstrap: img.bootstrap},
		{name: "a tag is ignored", ref: reg.host() + "/lib/app:v1", bootstrap: img.bootstrap},
		{name: "sizes from a HEAD when the bootstrap has none", ref: reg.host() + "/lib/app", bootstrap: withoutBlobSizes(t, img)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dist := &fakeDistributor{}
			d := newTestDaemon(t, testConfig(t), Options{Distributor: dist})
			mp := newMountpoint(t)
			gets := reg.gets.Load()
			info, err := d.Mount(ctx, MountRequest{Mountpoint: mp, Ref: tt.ref, Bootstrap: tt.bootstrap, Prefetch: "off",
				Registry: &RegistryOptions{PlainHTTP: true}})
			if err != nil {
				t.Fatal(err)
			}
			if want := RepoBootstrapName(reg.host()+"/lib/app", tt.bootstrap); info.Image != want || !info.P2P {
				t.Errorf("mount info image %q p2p %v, want %q and P2P", info.Image, info.P2P, want)
			}
			if len(dist.attached) != 1 || !reflect.DeepEqual(dist.attached[0].Blobs, wantBlobs) {
				t.Fatalf("attached blobs %+v, want %+v", dist.attached, wantBlobs)
			}
			img.checkFiles(t, mp)
			if reg.gets.Load() == gets {
				t.Error("no blob bytes were read from the registry")
			}
			if err := d.Umount(ctx, mp); err != nil {
				t.Fatal(err)
			}
			assertNothingLeft(t, d, mp)
		})
	}
}

// TestMountRepositoryWithLocalBootstrapFails: what is wrong is found before anything is mounted.
func TestMountRepositoryWithLocalBootstrapFails(t *testing.T) {
	requireFUSE(t)
	ctx := context.Background()
	img := buildTestImage(t, 8)
	authReg := startFakeRegistry(t, "app", img.blobDir, "alice", "secret")
	empty := startFakeRegistry(t, "app", t.TempDir(), "", "")
	notRAFS := filepath.Join(t.TempDir(), "not.boot")
	if err := os.WriteFile(notRAFS, []byte(strings.Repeat("not a bootstrap\n", 300)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		reg       *fakeRegistry
		bootstrap string
		opts      RegistryOptions
		wantIs    error  // nil: only wantMsg
		wantMsg   string // in the error
	}{
		{name: "the registry refuses the credentials", reg: authReg, bootstrap: img.bootstrap,
			opts: RegistryOptions{PlainHTTP: true, Username: "alice", Password: "wrong"}, wantIs: registry.ErrUnauthorized, wantMsg: "refused the credentials"},
		{name: "a blob is not in the repository", reg: empty, bootstrap: img.bootstrap,
			opts: RegistryOptions{PlainHTTP: true}, wantIs: registry.ErrNotFound, wantMsg: "is not in"},
		{name: "the bootstrap is not RAFS", reg: empty, bootstrap: notRAFS, opts: RegistryOptions{PlainHTTP: true}, wantMsg: "bootstrap"},
	}
	d := newTestDaemon(t, testConfig(t), Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp := newMountpoint(t)
			_, err := d.Mount(ctx, MountRequest{Mountpoint: mp, Ref: tt.reg.host() + "/app", Bootstrap: tt.bootstrap, Registry: &tt.opts})
			if err == nil || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Mount: %v, want an error wrapping %v saying %q", err, tt.wantIs, tt.wantMsg)
			}
			assertNothingLeft(t, d, mp)
		})
	}
	t.Run("the right credentials mount", func(t *testing.T) {
		mp := newMountpoint(t)
		if _, err := d.Mount(ctx, MountRequest{Mountpoint: mp, Ref: authReg.host() + "/app", Bootstrap: img.bootstrap, Prefetch: "off",
			Registry: &RegistryOptions{PlainHTTP: true, Username: "alice", Password: "secret"}}); err != nil {
			t.Fatal(err)
		}
		img.checkFiles(t, mp)
		if err := d.Umount(ctx, mp); err != nil {
			t.Fatal(err)
		}
	})
}
