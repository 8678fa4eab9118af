// Package trace_test checks start traces end to end: recording on a real FUSE mount, baking into a
// bootstrap's prefetch table, and a trace stored as a referrer in the real registry (no referrers
// API: the tag schema) that a fresh mount finds and prefetches first.
package trace_test

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/kernelfs"
	"github.com/dfnydus/dfnydus/oci"
	"github.com/dfnydus/dfnydus/peer"
	"github.com/dfnydus/dfnydus/peer/trace"
	"github.com/dfnydus/dfnydus/registry"
	"github.com/dfnydus/dfnydus/test/internal/registrytest"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// order is the order the workload reads the files in: not name order, not blob order.
var order = []string{"/c.bin", "/a.bin", "/b.bin"}

// makeTree writes four files of random bytes (2 MiB each: two chunks); /d.bin is never traced.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	for _, n := range []string{"a.bin", "b.bin", "c.bin", "d.bin"} {
		buf := make([]byte, 2<<20)
		rand.Read(buf)
		if err := os.WriteFile(filepath.Join(dir, n), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// convertTree pushes tree as a one-layer OCI image and converts it to nydus; it returns the nydus ref.
func convertTree(t *testing.T, reg *registrytest.Registry, work, tree, name string) string {
	t.Helper()
	layout := filepath.Join(work, name+"-layout")
	testenv.MustExec(t, "umoci", "init", "--layout", layout)
	testenv.MustExec(t, "umoci", "new", "--image", layout+":v1")
	tarball := filepath.Join(work, name+".tar")
	testenv.MustExec(t, "tar", "--numeric-owner", "-C", tree, "-cf", tarball, ".")
	testenv.MustExec(t, "umoci", "raw", "add-layer", "--image", layout+":v1", tarball)
	src := reg.Ref(name, "v1")
	testenv.MustExec(t, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":v1", "docker://"+src)
	dst := reg.Ref(name+"-nydus", "v1")
	testenv.MustRun(t, "convert", "--log-level", "warn", "--work-dir", filepath.Join(work, "convert"), src, dst)
	return dst
}

type mount struct {
	cmd    *exec.Cmd
	mp     string
	cache  string
	stderr *testenv.LogBuffer
	done   chan struct{}
}

func startMount(t *testing.T, cache, mp string, args ...string) *mount {
	t.Helper()
	if err := os.MkdirAll(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	full := append([]string{"mount", "--foreground", "--cache-dir", cache, "--ready-file", ready, "--log-level", "info"}, args...)
	m := &mount{cmd: exec.Command(testenv.Binary(t), append(full, mp)...), mp: mp, cache: cache, stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() { m.stop(t) })
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			return m
		}
		select {
		case <-m.done:
			t.Fatalf("dfnydus mount exited\n%s", m.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount not ready\n%s", m.stderr)
		}
	}
}

func (m *mount) stop(t *testing.T) {
	select {
	case <-m.done:
		return
	default:
	}
	testenv.Run(t, "umount", m.mp)
	select {
	case <-m.done:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
		unix.Unmount(m.mp, unix.MNT_DETACH)
		t.Errorf("mount did not exit after umount\n%s", m.stderr)
	}
}

func (m *mount) stat(t *testing.T) peer.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := peer.QueryStat(ctx, peer.SocketPath(m.cache, m.mp))
	if err != nil || len(info.Images) != 1 {
		t.Fatalf("stat: %v", err)
	}
	return info.Images[0]
}

func (m *mount) waitPrefetch(t *testing.T) peer.Stats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s := m.stat(t)
		if s.Prefetch.State == peer.PrefetchDone || s.Prefetch.State == peer.PrefetchIncomplete {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch still %+v", s.Prefetch)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readAll(t *testing.T, mp string, files ...string) {
	t.Helper()
	for _, f := range files {
		if _, err := os.ReadFile(filepath.Join(mp, f)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStartTrace(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	reg := registrytest.Start(t, registrytest.Options{})
	work := testenv.TempDir(t)
	tree := filepath.Join(work, "tree")
	os.Mkdir(tree, 0o755)
	makeTree(t, tree)
	ref := convertTree(t, reg, work, tree, "app")
	tracePath := filepath.Join(work, "trace.json")

	// Recording: the trace lists the chunks of the three files read, in read order.
	var tr *trace.Trace
	t.Run("record", func(t *testing.T) {
		m := startMount(t, filepath.Join(work, "cache-rec"), filepath.Join(work, "mnt-rec"), "--prefetch", "off", "--record-trace", tracePath, ref)
		readAll(t, m.mp, order...)
		m.stop(t)
		data, err := os.ReadFile(tracePath)
		if err != nil {
			t.Fatalf("no trace written: %v\n%s", err, m.stderr)
		}
		if tr, err = trace.Decode(data); err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, e := range tr.Entries {
			paths = append(paths, e.Path)
		}
		want := "/c.bin /c.bin /a.bin /a.bin /b.bin /b.bin"
		if got := strings.Join(paths, " "); got != want {
			t.Fatalf("trace paths %s, want %s", got, want)
		}
		for i := 0; i < len(tr.Entries); i += 2 {
			if tr.Entries[i].Offset >= tr.Entries[i+1].Offset {
				t.Errorf("chunks of %s out of file order", tr.Entries[i].Path)
			}
		}
		if tr.Manifest == "" {
			t.Error("the trace names no manifest")
		}
	})
	if tr == nil {
		t.FailNow()
	}
	// The same start served by the kernel's EROFS records the same trace: the recorder sits on
	// the chunk reader both drivers use.
	t.Run("record in kernel mode", func(t *testing.T) {
		if err := kernelfs.Supported(); err != nil {
			t.Skipf("kernel mode: %v", err)
		}
		kpath := filepath.Join(work, "trace-kernel.json")
		m := startMount(t, filepath.Join(work, "cache-rec-k"), filepath.Join(work, "mnt-rec-k"), "--fs-driver", "erofs", "--prefetch", "off", "--record-trace", kpath, ref)
		readAll(t, m.mp, order...)
		m.stop(t)
		data, err := os.ReadFile(kpath)
		if err != nil {
			t.Fatalf("no trace written: %v\n%s", err, m.stderr)
		}
		kt, err := trace.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(kt.Entries) != len(tr.Entries) {
			t.Fatalf("kernel mode recorded %d chunks, FUSE mode %d", len(kt.Entries), len(tr.Entries))
		}
		for i, e := range kt.Entries {
			if e.Path != tr.Entries[i].Path || e.Offset != tr.Entries[i].Offset {
				t.Errorf("entry %d: kernel mode %s@%d, FUSE mode %s@%d", i, e.Path, e.Offset, tr.Entries[i].Path, tr.Entries[i].Offset)
			}
		}
	})

	// Baked in: build --prefetch-trace writes the files, in trace order, as the prefetch table.
	t.Run("bake", func(t *testing.T) {
		boot := filepath.Join(work, "baked.boot")
		testenv.MustRun(t, "build", "--log-level", "warn", "--bootstrap", boot, "--blob-dir", filepath.Join(work, "blobs"), "--prefetch-trace", tracePath, tree)
		out := testenv.MustRun(t, "inspect", "--bootstrap", boot)
		if !strings.Contains(out, "prefetch: /c.bin /a.bin /b.bin\n") {
			t.Fatalf("inspect does not show the trace order:\n%s", out)
		}
	})

	// Referrer: pushed to the registry (tag schema), found by a fresh mount and prefetched first:
	// the traced files then need no on-demand fetch, the untraced one does.
	t.Run("referrer", func(t *testing.T) {
		testenv.MustRun(t, "profile", "--log-level", "warn", "--from-file", tracePath, "--push", ref)
		r, _ := registry.ParseRef(ref)
		tag := registry.ReferrersTag(tr.Manifest)
		out := testenv.MustExec(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+r.Context()+":"+tag)
		if !strings.Contains(out, trace.MediaType) {
			t.Fatalf("referrers tag %s lacks the trace:\n%s", tag, out)
		}
		m := startMount(t, filepath.Join(work, "cache-fresh"), filepath.Join(work, "mnt-fresh"), "--prefetch", "files", ref)
		s := m.waitPrefetch(t)
		if s.Prefetch.Trace == nil || s.Prefetch.Trace.Prefetched != len(tr.Entries) {
			t.Fatalf("trace not prefetched: %+v\n%s", s.Prefetch, m.stderr)
		}
		before := s.BytesOnDemand
		readAll(t, m.mp, order...)
		s = m.stat(t)
		t.Logf("traced files: %d bytes on demand, %d by prefetch; trace %+v", s.BytesOnDemand-before, s.BytesPrefetched, *s.Prefetch.Trace)
		if s.BytesOnDemand != before || s.Prefetch.Trace.Misses != 0 || s.Prefetch.Trace.Hits != int64(len(tr.Entries)) {
			t.Fatalf("traced files fetched on demand: %+v", s)
		}
		readAll(t, m.mp, "/d.bin")
		s2 := m.stat(t)
		t.Logf("untraced file: %d bytes on demand", s2.BytesOnDemand-s.BytesOnDemand)
		if s2.BytesOnDemand == s.BytesOnDemand {
			t.Fatal("the untraced file needed no fetch: the test proves nothing")
		}
	})

	// profile: runs a program in the mount and records what it read.
	t.Run("profile", func(t *testing.T) {
		out := filepath.Join(work, "profiled.json")
		testenv.MustRun(t, "profile", "--log-level", "warn", "-o", out, ref, "--", "sh", "-c", `cat b.bin "$DFNYDUS_ROOT/a.bin" >/dev/null`)
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := trace.Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(pt.PrefetchPaths(), " "); got != "/b.bin /a.bin" || len(pt.Entries) != 4 || pt.Manifest != tr.Manifest {
			t.Fatalf("profiled trace: files %s, %d chunks, manifest %s", got, len(pt.Entries), pt.Manifest)
		}
	})

	// A trace recorded on another manifest is refused by profile, and when stored as a referrer
	// of another image anyway, that image's mount does not use it.
	t.Run("other-manifest", func(t *testing.T) {
		tree2 := filepath.Join(work, "tree2")
		os.Mkdir(tree2, 0o755)
		makeTree(t, tree2)
		ref2 := convertTree(t, reg, work, tree2, "other")
		if res := testenv.Run(t, "profile", "--log-level", "warn", "--from-file", tracePath, "--push", ref2); res.Err == nil {
			t.Fatal("profile pushed a trace recorded on another manifest")
		}
		ctx := context.Background()
		c, err := registry.New(registry.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r2, _ := registry.ParseRef(ref2)
		img2, err := oci.Open(ctx, c, r2, registry.HostPlatform())
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(tracePath)
		if _, err := trace.Push(ctx, c, img2.Ref, img2.ManifestDesc, data); err != nil {
			t.Fatal(err)
		}
		if _, err := trace.Find(ctx, c, img2.Ref, img2.ManifestDesc.Digest); err == nil {
			t.Fatal("Find returned a trace bound to another manifest")
		}
		m := startMount(t, filepath.Join(work, "cache-other"), filepath.Join(work, "mnt-other"), "--prefetch", "files", ref2)
		s := m.waitPrefetch(t)
		if s.Prefetch.Trace != nil {
			t.Fatalf("a trace of manifest %s was used for %s", tr.Manifest, img2.ManifestDesc.Digest)
		}
		if !strings.Contains(m.stderr.String(), "start trace") {
			t.Errorf("no warning about the foreign trace:\n%s", m.stderr)
		}
		readAll(t, m.mp, order...)
	})
}
