package main

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/store"
)

// serve mounts stargz-snapshotter's store at mountpoint with its state under root and serves until
// ctx ends (SIGTERM); the caller unmounts.
func serve(ctx context.Context, root, mountpoint string, plainHTTP bool, readyFile string) error {
	hosts := func(ref reference.Spec) ([]docker.RegistryHost, error) {
		scheme := "https"
		if plainHTTP {
			scheme = "http"
		}
		return []docker.RegistryHost{{
			Client:       &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()},
			Host:         ref.Hostname(),
			Scheme:       scheme,
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}}, nil
	}
	cfg := config.Config{NoBackgroundFetch: true, NoPrefetch: true, NoPrometheus: true}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	lm, err := store.NewLayerManager(ctx, root, hosts, memory.NewReader, cfg)
	if err != nil {
		return fmt.Errorf("layer manager: %w", err)
	}
	if err := store.Mount(ctx, mountpoint, lm, false); err != nil {
		return fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(mountpoint+"\n"), 0o644); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
