package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in      string
		want    imageRef
		wantErr error
	}{
		{in: "127.0.0.1:5000/bench:v1", want: imageRef{host: "127.0.0.1:5000", repo: "bench", tag: "v1"}},
		{in: "10.0.0.1:5000/a/b-c.d_e:Tag_1.0", want: imageRef{host: "10.0.0.1:5000", repo: "a/b-c.d_e", tag: "Tag_1.0"}},
		{in: "registry.local/x:latest", want: imageRef{host: "registry.local", repo: "x", tag: "latest"}},
		{in: "", wantErr: errBadRef},
		{in: "bench:v1", wantErr: errBadRef},
		{in: "127.0.0.1:5000/bench", wantErr: errBadRef},
		{in: "127.0.0.1:5000/Bench:v1", wantErr: errBadRef},
		{in: "127.0.0.1:5000/bench:-v1", wantErr: errBadRef},
		{in: "127.0.0.1:5000/bench@sha256:" + strings.Repeat("a", 64), wantErr: errBadRef},
		{in: "http://127.0.0.1:5000/bench:v1", wantErr: errBadRef},
		{in: "127.0.0.1:5000/../bench:v1", wantErr: errBadRef},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseRef(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("parseRef(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("parseRef(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if err == nil && got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestParseConvert(t *testing.T) {
	base := []string{"--src-tar", "l.tar", "--registry", "127.0.0.1:5000", "--repo", "bench"}
	tests := []struct {
		name    string
		args    []string
		wantErr error
		check   func(t *testing.T, o convertOptions)
	}{
		{name: "defaults", args: base, check: func(t *testing.T, o convertOptions) {
			if o.tag != "latest" || len(o.prioritized) != 0 || o.chunkSize != 0 || o.compressionLevel != 9 {
				t.Errorf("got %+v", o)
			}
		}},
		{name: "prioritized list", args: append(base, "--prioritized-files", "/bin/sh, etc/passwd,,", "--tag", "v1"),
			check: func(t *testing.T, o convertOptions) {
				if strings.Join(o.prioritized, "|") != "/bin/sh|etc/passwd" || o.tag != "v1" {
					t.Errorf("got %+v", o)
				}
			}},
		{name: "missing src", args: []string{"--registry", "h:1", "--repo", "r"}, wantErr: errUsage},
		{name: "missing registry", args: []string{"--src-tar", "l.tar", "--repo", "r"}, wantErr: errUsage},
		{name: "missing repo", args: []string{"--src-tar", "l.tar", "--registry", "h:1"}, wantErr: errUsage},
		{name: "bad tag", args: append(base, "--tag", "a/b"), wantErr: errUsage},
		{name: "negative chunk", args: append(base, "--chunk-size", "-1"), wantErr: errUsage},
		{name: "bad level", args: append(base, "--compression-level", "10"), wantErr: errUsage},
		{name: "unknown flag", args: append(base, "--nope"), wantErr: errUsage},
		{name: "stray argument", args: append(base, "extra"), wantErr: errUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseConvert(tt.args, io.Discard)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && tt.check != nil {
				tt.check(t, o)
			}
		})
	}
}

func TestParseMount(t *testing.T) {
	base := []string{"--ref", "127.0.0.1:5000/bench:v1", "--mountpoint", "/mnt/x", "--root", "/var/x"}
	tests := []struct {
		name    string
		args    []string
		wantErr error
		check   func(t *testing.T, o mountOptions)
	}{
		{name: "lazy by default", args: base, check: func(t *testing.T, o mountOptions) {
			cfg := storeConfig(o)
			if !cfg.NoBackgroundFetch || cfg.NoPrefetch || !cfg.NoPrometheus || o.tocDigest != "" {
				t.Errorf("options %+v give config %+v", o, cfg)
			}
		}},
		{name: "no prefetch", args: append(base, "--no-prefetch"), check: func(t *testing.T, o mountOptions) {
			if cfg := storeConfig(o); !cfg.NoPrefetch || !cfg.NoBackgroundFetch {
				t.Errorf("config %+v", cfg)
			}
		}},
		{name: "background fetch on request", args: append(base, "--background-fetch"), check: func(t *testing.T, o mountOptions) {
			if cfg := storeConfig(o); cfg.NoBackgroundFetch {
				t.Errorf("config %+v", cfg)
			}
		}},
		{name: "toc digest", args: append(base, "--toc-digest", "sha256:"+strings.Repeat("0", 64)), check: func(t *testing.T, o mountOptions) {
			if o.tocDigest == "" {
				t.Error("toc digest not set")
			}
		}},
		{name: "bad toc digest", args: append(base, "--toc-digest", "sha256:zz"), wantErr: errUsage},
		{name: "bad ref", args: []string{"--ref", "bench", "--mountpoint", "/m", "--root", "/r"}, wantErr: errUsage},
		{name: "missing mountpoint", args: []string{"--ref", "h:1/r:t", "--root", "/r"}, wantErr: errUsage},
		{name: "missing root", args: []string{"--ref", "h:1/r:t", "--mountpoint", "/m"}, wantErr: errUsage},
		{name: "zero timeout", args: append(base, "--request-timeout", "0s"), wantErr: errUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseMount(tt.args, io.Discard)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && tt.check != nil {
				tt.check(t, o)
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr error
	}{
		{name: "no command", args: nil, wantErr: errUsage},
		{name: "unknown command", args: []string{"pull"}, wantErr: errUsage},
		{name: "help", args: []string{"help"}},
		{name: "bad log level", args: []string{"convert", "--src-tar", "x", "--registry", "h:1", "--repo", "r", "--log-level", "loud"}, wantErr: errUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out, io.Discard)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("run(%q) error = %v, want %v", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestLayerTOCDigest(t *testing.T) {
	toc := digest.FromString("toc")
	layer := esgzLayer{digest: digest.FromString("blob"), size: 10, diffID: digest.FromString("tar"), tocDigest: toc, uncompressedSize: 20}
	config := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("c"), Size: 1}
	manifest := func(layers ...ocispec.Descriptor) []byte {
		b, err := imageManifest(config, layers...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	plain := layer.descriptor()
	plain.Annotations = nil
	badTOC := layer.descriptor()
	badTOC.Annotations = map[string]string{estargz.TOCJSONDigestAnnotation: "sha256:nothex"}
	index, _ := json.Marshal(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{config}})
	index = bytes.Replace(index, []byte(`{`), []byte(`{"schemaVersion":2,`), 1)

	tests := []struct {
		name      string
		manifest  []byte
		mediaType string
		want      digest.Digest
		wantErr   error
	}{
		{name: "eStargz layer", manifest: manifest(layer.descriptor()), mediaType: ocispec.MediaTypeImageManifest, want: toc},
		{name: "docker media type", manifest: manifest(layer.descriptor()), mediaType: mediaTypeDockerManifest, want: toc},
		{name: "no annotation", manifest: manifest(plain), mediaType: ocispec.MediaTypeImageManifest, wantErr: errNotEStargz},
		{name: "bad annotation", manifest: manifest(badTOC), mediaType: ocispec.MediaTypeImageManifest, wantErr: errNotEStargz},
		{name: "two layers", manifest: manifest(layer.descriptor(), layer.descriptor()), wantErr: errLayerCount},
		{name: "no layers", manifest: manifest(), wantErr: errLayerCount},
		{name: "index by media type", manifest: index, mediaType: ocispec.MediaTypeImageIndex, wantErr: errUnsupportedManifest},
		{name: "index by content", manifest: index, wantErr: errUnsupportedManifest},
		{name: "not json", manifest: []byte("<html>"), wantErr: errUnsupportedManifest},
		{name: "schema 1", manifest: []byte(`{"schemaVersion":1}`), wantErr: errUnsupportedManifest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := layerTOCDigest(tt.manifest, tt.mediaType)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("TOC digest = %s, want %s", got, tt.want)
			}
		})
	}
}
