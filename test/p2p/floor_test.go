package p2p_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	dfnfuse "github.com/dfnydus/dfnydus/fuse"
	"github.com/dfnydus/dfnydus/rafs"
	"github.com/dfnydus/dfnydus/rafs/blob"
	"github.com/dfnydus/dfnydus/test/internal/testenv"
)

// The CPU floor of a whole-image read: what a minimal pipeline spends on this machine to hand the
// workload's bytes to cat. Two parts, each measured, none of them dfnydus's own code paths:
//   - FUSE: a go-fuse file system with dfnydus's mount options serving the same files from memory
//     (its own process, its utime+stime while cat reads the list), the kernel's side included;
//   - decode + verify: each distinct chunk decompressed and its digest checked once (one thread,
//     its CPU clock), from bytes already in memory.
// Network receive, the store and P2P serving are left out, so no peer can go below the floor.

// floorFSEnv names the spec file of a floor file system: the test binary re-executed with it set
// serves the files the spec lists instead of running tests.
const floorFSEnv = "DFNYDUS_FLOOR_FS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(floorFSEnv); spec != "" {
		if err := serveFloorFS(spec); err != nil {
			fmt.Fprintln(os.Stderr, "floor fs:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// cpuFloor is the floor of reading workload w, in CPU-seconds (median of runs for FUSE).
type cpuFloor struct {
	fuse, decode float64
}

func (f cpuFloor) total() float64 { return f.fuse + f.decode }

// measureFloor measures both parts for w; it needs the trees the image was built from.
func (c *cluster) measureFloor(t *testing.T, w workload, runs int, want string) cpuFloor {
	t.Helper()
	if c.srcs == nil {
		t.Fatal("the CPU floor needs the image's source trees")
	}
	var fl cpuFloor
	var fuses []float64
	for range runs {
		fuses = append(fuses, c.fuseFloor(t, w, want))
	}
	sort.Float64s(fuses)
	fl.fuse = fuses[len(fuses)/2]
	fl.decode = c.decodeFloor(t, w)
	return fl
}

// fuseFloor mounts the minimal file system over w's files, reads them as a peer does and returns
// the file system process's CPU-seconds.
func (c *cluster) fuseFloor(t *testing.T, w workload, want string) float64 {
	t.Helper()
	dir := testenv.TempDir(t)
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := filepath.Join(dir, "spec")
	ready := filepath.Join(dir, "ready")
	list, err := os.ReadFile(w.list)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s\n", mp, ready)
	for _, rel := range strings.Split(strings.TrimSuffix(string(list), "\x00"), "\x00") {
		p := strings.TrimPrefix(rel, ".")
		fmt.Fprintf(&b, "%s\t%s\n", p, c.sourceOf(p))
	}
	if err := os.WriteFile(spec, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), floorFSEnv+"="+spec)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	defer stop()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the floor file system did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := procCPU(t, cmd.Process.Pid)
	out, err := exec.Command("bash", "-c", `set -o pipefail; cd "$1" && xargs -0 cat < "$2" | md5sum`, "bash", mp, w.list).CombinedOutput()
	if err != nil {
		t.Fatalf("reading the floor file system: %v: %s", err, out)
	}
	cpu := procCPU(t, cmd.Process.Pid) - before
	if got := strings.Fields(string(out))[0]; want != "" && got != want {
		t.Fatalf("the floor file system served md5 %s, the image reads %s", got, want)
	}
	stop()
	return cpu
}

// sourceOf maps an image path to the file of the source trees it was built from.
func (c *cluster) sourceOf(p string) string {
	for _, s := range c.srcs {
		if s.under != "" && strings.HasPrefix(p, "/"+s.under+"/") {
			return filepath.Join(s.dir, strings.TrimPrefix(p, "/"+s.under))
		}
	}
	return filepath.Join(c.srcs[0].dir, p)
}

// procCPU is processCPU failing t.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	s, err := processCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// decodeFloor decodes and verifies every distinct chunk w's files need, once, on one locked
// thread, and returns that thread's CPU-seconds. The compressed bytes come from the registry's
// storage and are in memory before the clock starts.
func (c *cluster) decodeFloor(t *testing.T, w workload) float64 {
	t.Helper()
	need := map[string]bool{}
	list, err := os.ReadFile(w.list)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range strings.Split(strings.TrimSuffix(string(list), "\x00"), "\x00") {
		need[strings.TrimPrefix(rel, ".")] = true
	}
	type job struct {
		src []byte
		c   rafs.Chunk
	}
	datas := make([][]byte, len(c.img.Blobs))
	for i, bl := range c.img.Blobs {
		datas[i], err = os.ReadFile(c.reg.BlobPath(bl.ID))
		if err != nil {
			t.Fatalf("blob %s from the registry's storage: %v", bl.ID, err)
		}
	}
	seen := map[[2]uint64]bool{}
	var jobs []job
	_ = c.img.Walk(func(p string, n *rafs.Node) error {
		if !n.Inode.IsReg() || !need[p] {
			return nil
		}
		for _, ch := range n.Inode.Chunks {
			k := [2]uint64{uint64(ch.BlobIndex), ch.CompressedOffset}
			if seen[k] {
				continue
			}
			seen[k] = true
			d := datas[ch.BlobIndex]
			jobs = append(jobs, job{src: d[ch.CompressedOffset : ch.CompressedOffset+uint64(ch.CompressedSize)], c: ch})
		}
		return nil
	})
	done := make(chan float64)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var buf []byte
		start := threadCPU()
		for i := range jobs {
			j := &jobs[i]
			bl := c.img.Blobs[j.c.BlobIndex]
			out, err := blob.DecodeChunk(j.src, bl.ID, &j.c, bl.Compressor, bl.Digester, true, buf)
			if err != nil {
				t.Errorf("decode floor: %v", err)
				break
			}
			buf = out[:cap(out)]
		}
		done <- threadCPU() - start
	}()
	return <-done
}

func threadCPU() float64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return float64(ts.Nano()) / 1e9
}

// serveFloorFS is the floor file system's process: it loads the spec's files into memory, mounts
// them read-only with dfnydus's go-fuse options, writes the ready file and serves until SIGTERM.
func serveFloorFS(specPath string) error {
	f, err := os.Open(specPath)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var mp, ready string
	files := map[string][]byte{}
	for i := 0; sc.Scan(); i++ {
		switch i {
		case 0:
			mp = sc.Text()
		case 1:
			ready = sc.Text()
		default:
			img, src, ok := strings.Cut(sc.Text(), "\t")
			if !ok {
				return fmt.Errorf("spec line %q", sc.Text())
			}
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			files[strings.TrimPrefix(img, "/")] = data
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	opts := dfnfuse.GoFuseOptions(dfnfuse.Options{FSName: "floor"})
	srv, err := fuse.NewServer(gofuse.NewNodeFS(&memTree{files: files}, opts), mp, &opts.MountOptions)
	if err != nil {
		return err
	}
	go srv.Serve()
	if err := srv.WaitMount(); err != nil {
		return err
	}
	if err := dfnfuse.SetReadAhead(mp, 1<<20); err != nil {
		return err
	}
	if err := os.WriteFile(ready, nil, 0o600); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	return srv.Unmount()
}

// memTree is the floor file system's root: directories and read-only files held in memory.
type memTree struct {
	gofuse.Inode
	files map[string][]byte
}

func (r *memTree) OnAdd(ctx context.Context) {
	for p, data := range r.files {
		dir := &r.Inode
		parts := strings.Split(p, "/")
		for _, comp := range parts[:len(parts)-1] {
			ch := dir.GetChild(comp)
			if ch == nil {
				ch = dir.NewPersistentInode(ctx, &gofuse.Inode{}, gofuse.StableAttr{Mode: syscall.S_IFDIR})
				dir.AddChild(comp, ch, false)
			}
			dir = ch
		}
		file := &gofuse.MemRegularFile{Data: data, Attr: fuse.Attr{Mode: 0o444}}
		dir.AddChild(parts[len(parts)-1], dir.NewPersistentInode(ctx, file, gofuse.StableAttr{}), false)
	}
}
