// Command ctrclient is the containerd client the container tests and benchmarks drive: it pulls
// with a snapshotter's unpacker (so remote snapshotters such as nydus see the layer annotations as
// snapshot labels, as the CRI plugin arranges), runs a container and reports timings.
//
//	ctrclient -a SOCK -n NS -state DIR pull [-snapshotter S] [-plain-http] [-creds U:P] REF
//	ctrclient -a SOCK -n NS -state DIR run [-pull] [-snapshotter S] [-id ID] [-ready TEXT] REF ARGS...
//	ctrclient -a SOCK -n NS rmi REF
//
// run streams the container's output to stdout and prints one JSON line of timings to stderr,
// prefixed "TIMINGS ": pull, create (container + snapshot + task) and ready (start until the
// output contains -ready, or until exit), in seconds. It exits with the container's exit code.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	runcoptions "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
)

type globals struct {
	address, namespace, state string
}

func main() {
	g := &globals{}
	fs := flag.NewFlagSet("ctrclient", flag.ExitOnError)
	fs.StringVar(&g.address, "a", "/run/containerd/containerd.sock", "containerd socket")
	fs.StringVar(&g.namespace, "n", "default", "containerd namespace")
	fs.StringVar(&g.state, "state", "", "directory for stdio fifos and runc state (default: containerd's)")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: ctrclient [-a SOCK] [-n NS] [-state DIR] pull|run|rmi ...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = namespaces.WithNamespace(ctx, g.namespace)
	var code int
	var err error
	switch fs.Arg(0) {
	case "pull":
		err = cmdPull(ctx, g, fs.Args()[1:])
	case "run":
		code, err = cmdRun(ctx, g, fs.Args()[1:])
	case "rmi":
		err = cmdRmi(ctx, g, fs.Args()[1:])
	default:
		err = fmt.Errorf("unknown command %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ctrclient:", err)
		os.Exit(125)
	}
	os.Exit(code)
}

type pullFlags struct {
	snapshotter, creds string
	plainHTTP          bool
}

func (p *pullFlags) add(fs *flag.FlagSet) {
	fs.StringVar(&p.snapshotter, "snapshotter", "overlayfs", "snapshotter to unpack into")
	fs.StringVar(&p.creds, "creds", "", "registry USER:PASSWORD")
	fs.BoolVar(&p.plainHTTP, "plain-http", false, "talk plain HTTP to the registry")
}

func connect(g *globals) (*containerd.Client, error) {
	c, err := containerd.New(g.address)
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", g.address, err)
	}
	return c, nil
}

func pull(ctx context.Context, c *containerd.Client, p *pullFlags, ref string) (containerd.Image, error) {
	var ropts []docker.RegistryOpt
	if p.plainHTTP {
		ropts = append(ropts, docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	if p.creds != "" {
		user, pass, _ := strings.Cut(p.creds, ":")
		ropts = append(ropts, docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(
			func(string) (string, string, error) { return user, pass, nil }))))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(ropts...)})
	img, err := c.Pull(ctx, ref, containerd.WithResolver(resolver), containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(p.snapshotter),
		// The labels the CRI plugin gives layers (image ref, layer digest, ...): remote
		// snapshotters such as nydus find the image through them.
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)))
	if err != nil {
		return nil, fmt.Errorf("pull %s with snapshotter %s: %w", ref, p.snapshotter, err)
	}
	return img, nil
}

func cmdPull(ctx context.Context, g *globals, args []string) error {
	fs := flag.NewFlagSet("pull", flag.ExitOnError)
	p := &pullFlags{}
	p.add(fs)
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("pull: want one REF")
	}
	c, err := connect(g)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	if _, err := pull(ctx, c, p, fs.Arg(0)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "TIMINGS {\"pull\":%.3f}\n", time.Since(start).Seconds())
	return nil
}

func cmdRmi(ctx context.Context, g *globals, args []string) error {
	if len(args) != 1 {
		return errors.New("rmi: want one REF")
	}
	c, err := connect(g)
	if err != nil {
		return err
	}
	defer c.Close()
	// Synchronous: returns after the garbage collector has removed the image's snapshots.
	if err := c.ImageService().Delete(ctx, args[0], images.SynchronousDelete()); err != nil {
		return fmt.Errorf("remove image %s: %w", args[0], err)
	}
	return nil
}

// readyWriter copies output and signals once it has seen the ready text.
type readyWriter struct {
	mu    sync.Mutex
	out   io.Writer
	buf   bytes.Buffer
	text  string
	ready chan struct{}
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.out.Write(p)
	if w.text != "" {
		w.buf.Write(p)
		if bytes.Contains(w.buf.Bytes(), []byte(w.text)) {
			w.once.Do(func() { close(w.ready) })
		}
	}
	return n, err
}

type timings struct {
	Pull   float64 `json:"pull"`
	Create float64 `json:"create"`
	Ready  float64 `json:"ready"`
}

func cmdRun(ctx context.Context, g *globals, args []string) (int, error) {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	p := &pullFlags{}
	p.add(fs)
	doPull := fs.Bool("pull", false, "pull the image first (timed)")
	id := fs.String("id", fmt.Sprintf("ctr-%d", os.Getpid()), "container id")
	readyText := fs.String("ready", "", "stop the container once its output contains this text")
	_ = fs.Parse(args)
	if fs.NArg() < 2 {
		return 0, errors.New("run: want REF ARGS...")
	}
	ref, argv := fs.Arg(0), fs.Args()[1:]
	c, err := connect(g)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	var tm timings
	start := time.Now()
	var img containerd.Image
	if *doPull {
		if img, err = pull(ctx, c, p, ref); err != nil {
			return 0, err
		}
	} else if img, err = c.GetImage(ctx, ref); err != nil {
		return 0, fmt.Errorf("image %s: %w", ref, err)
	}
	tm.Pull = time.Since(start).Seconds()

	start = time.Now()
	var runtimeOpts any
	if g.state != "" {
		runtimeOpts = &runcoptions.Options{Root: filepath.Join(g.state, "runc")}
	}
	ctr, err := c.NewContainer(ctx, *id,
		containerd.WithImage(img),
		containerd.WithSnapshotter(p.snapshotter),
		containerd.WithNewSnapshot(*id+"-snapshot", img),
		containerd.WithRuntime("io.containerd.runc.v2", runtimeOpts),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(argv...)))
	if err != nil {
		return 0, fmt.Errorf("create container %s: %w", *id, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := ctr.Delete(dctx, containerd.WithSnapshotCleanup); derr != nil {
			fmt.Fprintln(os.Stderr, "ctrclient: delete container:", derr)
		}
	}()
	rw := &readyWriter{out: os.Stdout, text: *readyText, ready: make(chan struct{})}
	copts := []cio.Opt{cio.WithStreams(nil, rw, os.Stderr)}
	if g.state != "" {
		copts = append(copts, cio.WithFIFODir(filepath.Join(g.state, "fifo")))
	}
	task, err := ctr.NewTask(ctx, cio.NewCreator(copts...))
	if err != nil {
		return 0, fmt.Errorf("create task %s: %w", *id, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, derr := task.Delete(dctx, containerd.WithProcessKill); derr != nil {
			fmt.Fprintln(os.Stderr, "ctrclient: delete task:", derr)
		}
	}()
	exitCh, err := task.Wait(ctx)
	if err != nil {
		return 0, fmt.Errorf("wait task %s: %w", *id, err)
	}
	tm.Create = time.Since(start).Seconds()
	start = time.Now()
	if err := task.Start(ctx); err != nil {
		return 0, fmt.Errorf("start task %s: %w", *id, err)
	}
	code := 0
	select {
	case <-rw.ready:
		tm.Ready = time.Since(start).Seconds()
		_ = task.Kill(ctx, syscall.SIGKILL)
		<-exitCh
	case st := <-exitCh:
		tm.Ready = time.Since(start).Seconds()
		code = int(st.ExitCode())
		if *readyText != "" {
			// A workload that prints the ready line and exits at once can be seen exiting before
			// its output is copied: wait for the copy, then look.
			task.IO().Wait()
			select {
			case <-rw.ready:
			default:
				code = max(code, 1)
				fmt.Fprintf(os.Stderr, "ctrclient: container exited (%d) before printing %q\n", st.ExitCode(), *readyText)
			}
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	b, _ := json.Marshal(tm)
	fmt.Fprintf(os.Stderr, "TIMINGS %s\n", b)
	return code, nil
}
