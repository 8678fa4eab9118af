// Command estargzpeer is the eStargz baseline of the cold-start benchmark: it converts an OCI image
// layout to eStargz (the estargz package of containerd/stargz-snapshotter) and serves images lazily
// with stargz-snapshotter's store (the FUSE filesystem stargz-store runs), with background fetch
// and prefetch off so only the reads a program makes go to the registry.
//
//	estargzpeer convert SRC_LAYOUT:TAG DST_LAYOUT:TAG   prints the layers' TOC digests, lowest first
//	estargzpeer serve [--plain-http] [--ready-file F] ROOT MOUNTPOINT
//
// A served layer's tree is MOUNTPOINT/<base64(image ref)>/<TOC digest>/diff.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "estargzpeer:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: estargzpeer convert SRC_LAYOUT:TAG DST_LAYOUT:TAG | serve [--plain-http] [--ready-file F] ROOT MOUNTPOINT")

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "convert":
		if len(args) != 3 {
			return errUsage
		}
		tocs, err := convertLayout(ctx, args[1], args[2])
		if err != nil {
			return err
		}
		for _, t := range tocs {
			fmt.Println(t)
		}
		return nil
	case "serve":
		fl := flag.NewFlagSet("serve", flag.ContinueOnError)
		plain := fl.Bool("plain-http", false, "talk plain HTTP to every registry")
		ready := fl.String("ready-file", "", "write this file once the mount serves")
		if err := fl.Parse(args[1:]); err != nil {
			return err
		}
		if fl.NArg() != 2 {
			return errUsage
		}
		return serve(ctx, fl.Arg(0), fl.Arg(1), *plain, *ready)
	}
	return errUsage
}
