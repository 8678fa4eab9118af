package coldstart_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// The eStargz baseline: stargz-snapshotter's store (what stargz-store serves) with background
// fetch and prefetch off, layers merged by a read-only overlayfs, as a lazy peer to compare with.
// Its program lives in estargzpeer/, a module of its own so its dependencies stay out of ours.

var (
	esgzOnce sync.Once
	esgzDir  string // removed by TestMain
	esgzBin  string
	esgzErr  error
	esgzOut  []byte
)

// TestMain removes the estargzpeer build when the benchmarks are done.
func TestMain(m *testing.M) {
	code := m.Run()
	if esgzDir != "" {
		os.RemoveAll(esgzDir)
	}
	os.Exit(code)
}

// estargzBinary builds estargzpeer once per test process.
func estargzBinary(b *testing.B) string {
	b.Helper()
	esgzOnce.Do(func() {
		esgzDir, esgzErr = os.MkdirTemp("", "estargzpeer-bin-")
		if esgzErr != nil {
			return
		}
		esgzBin = filepath.Join(esgzDir, "estargzpeer")
		cmd := exec.Command("go", "build", "-o", esgzBin, ".")
		cmd.Dir = filepath.Join(testenv.RepoRoot(), "test", "bench", "coldstart", "estargzpeer")
		esgzOut, esgzErr = cmd.CombinedOutput()
	})
	if esgzErr != nil {
		b.Fatalf("build estargzpeer: %v\n%s", esgzErr, esgzOut)
	}
	return esgzBin
}

// estargzLayout converts the cold-start layout to eStargz once (cached next to it) and returns the
// new layout and its layers' TOC digests, lowest first.
func estargzLayout(b *testing.B, src layoutInfo) (layoutInfo, []string) {
	b.Helper()
	dir := src.dir + "-estargz"
	tocFile := filepath.Join(dir, "toc-digests")
	if _, err := os.Stat(tocFile); err != nil {
		tmp := dir + ".tmp"
		if err := os.RemoveAll(tmp); err != nil {
			b.Fatal(err)
		}
		out := mustRun(b, onHost, estargzBinary(b), "convert", src.dir+":img", tmp+":img")
		if err := os.WriteFile(filepath.Join(tmp, "toc-digests"), []byte(out), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			b.Fatal(err)
		}
	}
	data, err := os.ReadFile(tocFile)
	if err != nil {
		b.Fatal(err)
	}
	info := describeLayout(b, dir)
	info.files = src.files
	return info, strings.Fields(string(data))
}

// esgzPeer is a running `estargzpeer serve` and the overlay over its layers.
type esgzPeer struct {
	cmd    *exec.Cmd
	store  string // the store's FUSE mountpoint
	merged string // the overlay of the image's layers
	stderr *testenv.LogBuffer
	done   chan struct{}
	stop   func()
}

// startEstargz serves the store at dir/store in the client's namespace, looks up the image's layers
// (which makes the store fetch the manifest, config and every layer's TOC) and merges them with
// overlayfs at dir/rootfs.
func startEstargz(b *testing.B, ex execFunc, ref string, tocs []string, dir string) *esgzPeer {
	b.Helper()
	p := &esgzPeer{store: filepath.Join(dir, "store"), merged: filepath.Join(dir, "rootfs"), stderr: &testenv.LogBuffer{}, done: make(chan struct{})}
	for _, d := range []string{p.store, p.merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	ready := filepath.Join(dir, "ready")
	p.cmd = ex(context.Background(), estargzBinary(b), "serve", "--plain-http", "--ready-file", ready, filepath.Join(dir, "state"), p.store)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start estargzpeer: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	var once sync.Once
	p.stop = func() { once.Do(func() { p.shutdown(b) }) }
	b.Cleanup(p.stop)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case <-p.done:
			b.Fatalf("estargzpeer exited\n%s", p.stderr)
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("estargzpeer did not become ready\n%s", p.stderr)
		}
	}

	// overlayfs splits lowerdir at ':', which TOC digests contain: name the layers by symlinks.
	refDir := filepath.Join(p.store, base64.StdEncoding.EncodeToString([]byte(ref)))
	var lower []string
	for i, toc := range tocs {
		diff := filepath.Join(refDir, toc, "diff")
		if _, err := os.Stat(diff); err != nil {
			b.Fatalf("layer %d of %s: %v\n%s", i, ref, err, p.stderr)
		}
		link := filepath.Join(dir, fmt.Sprintf("l%d", i))
		if err := os.Symlink(diff, link); err != nil {
			b.Fatal(err)
		}
		lower = append([]string{link}, lower...) // overlayfs lists the top layer first
	}
	if err := unix.Mount("overlay", p.merged, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		b.Fatalf("overlay over the eStargz layers: %v", err)
	}
	return p
}

// shutdown unmounts the overlay and the store and stops the process.
func (p *esgzPeer) shutdown(b *testing.B) {
	for _, mp := range []string{p.merged, p.store} {
		if err := unix.Unmount(mp, 0); err != nil && err != unix.EINVAL {
			b.Errorf("unmount %s: %v; detaching it", mp, err)
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		b.Errorf("estargzpeer did not exit on SIGTERM; killing it\n%s", p.stderr)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// runEstargz is a cold start of the eStargz image through the store: from starting the store
// (empty state dir) to the program's exit.
func (e *coldEnv) runEstargz(b *testing.B) sample {
	b.Helper()
	dir := testenv.TempDir(b) // removed after the mounts are gone: by hand below, or by b's cleanup on failure
	c0 := e.counters(b)
	start := time.Now()
	p := startEstargz(b, e.client.Command, e.esgzRef, e.esgzTOCs, dir)
	readyAt := time.Now()
	out := mustRun(b, onHost, "chroot", append([]string{p.merged}, workload...)...)
	end := time.Now()
	s := sample{total: end.Sub(start), link: e.counters(b) - c0, phases: []time.Duration{readyAt.Sub(start), end.Sub(readyAt)}}
	mem, err := procMemory(p.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	s.mem = mem
	e.checkOutput(b, "eStargz", out)
	p.stop()
	os.RemoveAll(dir)
	return s
}
