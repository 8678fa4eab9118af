// Command estargz-bench is the eStargz baseline of dfnydus's lazy-mount benchmark: it converts a
// layer tar to an eStargz image with the stargz-snapshotter estargz package and pushes it to a
// plain-HTTP registry, and it mounts such an image with the stargz store (the lazy FUSE layer
// filesystem of github.com/containerd/stargz-snapshotter/store) with background fetch disabled.
//
//	estargz-bench convert --src-tar LAYER.tar --registry HOST:PORT --repo NAME --tag T
//	estargz-bench mount --ref HOST:PORT/NAME:T --mountpoint DIR --root DIR [--no-prefetch]
//
// See README.md for the output lines the benchmark parses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	golog "log"
	"os"
	"os/signal"
	"syscall"

	clog "github.com/containerd/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "estargz-bench: %v\n", err)
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "estargz-bench: %v\n", err)
		os.Exit(1)
	}
}

const usage = `usage:
  estargz-bench convert --src-tar LAYER.tar --registry HOST:PORT --repo NAME [--tag T] [flags]
  estargz-bench mount --ref HOST:PORT/NAME:T --mountpoint DIR --root DIR [--no-prefetch] [flags]
  estargz-bench COMMAND -h    flags of COMMAND
`

// run executes one command line (without the program name).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "convert":
		o, err := parseConvert(args[1:], stderr)
		if err != nil {
			return err
		}
		log, err := newLogger(o.logLevel, stderr)
		if err != nil {
			return err
		}
		defer func() { _ = log.Sync() }()
		return runConvert(ctx, o, stdout, log)
	case "mount":
		o, err := parseMount(args[1:], stderr)
		if err != nil {
			return err
		}
		log, err := newLogger(o.logLevel, stderr)
		if err != nil {
			return err
		}
		defer func() { _ = log.Sync() }()
		return runMount(ctx, o, stdout, log)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
}

// newLogger is this program's logger on w at level. The stargz library logs through
// containerd/log (logrus) and go-fuse through the standard logger: both are set to the same level
// and writer, the standard logger only at debug.
func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("%w: --log-level: %w", errUsage, err)
	}
	if err := clog.SetLevel(lvl.String()); err != nil {
		return nil, fmt.Errorf("%w: --log-level: %w", errUsage, err)
	}
	clog.L.Logger.SetOutput(w)
	if lvl > zapcore.DebugLevel {
		golog.SetOutput(io.Discard)
	} else {
		golog.SetOutput(w)
	}
	enc := zap.NewDevelopmentEncoderConfig()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), lvl)
	return zap.New(core).Named("estargz-bench"), nil
}
