package daemon

import (
	"context"

	"github.com/dfnydus/dfnydus/peer/source"
	"github.com/dfnydus/dfnydus/rafs"
)

// BlobRef names one blob of a mounted image for the P2P network.
type BlobRef struct {
	// ID is the blob id (hex sha256 of the blob file).
	ID string
	// URL is the blob's registry URL, scheme://host/v2/REPO/blobs/sha256:ID, for registry sources
	// (http when the registry is reached over plain HTTP, else https); "" for other sources.
	URL string
	// Size is the compressed blob size (from the manifest for registry sources, the file for
	// local ones, the bootstrap's record for s3); 0 if unknown.
	Size int64
}

// AttachedImage is what the daemon hands the Distributor when it mounts an image.
type AttachedImage struct {
	Name string
	RAFS *rafs.Image
	// Blobs[i] is RAFS.Blobs[i].
	Blobs []BlobRef
	// Source is the back-to-source reader (already Retrying). The daemon owns it and closes it
	// after closing the source Attach returned; the Distributor must not close it.
	Source source.Source
}

// Distributor is the P2P hook: the piece manager (peer/p2p) implements it.
type Distributor interface {
	// Attach returns the source the fetcher reads this image's blobs through; Close on it detaches.
	// ctx bounds the attach itself, not the attachment: the daemon calls Close when the image is
	// unmounted (or the mount fails after Attach).
	Attach(ctx context.Context, img AttachedImage) (source.Source, error)
	// Preheat asks the P2P network to bring an image's blobs to seed peers.
	Preheat(ctx context.Context, req PreheatRequest) error
}

// PreheatRequest names an image to preheat.
type PreheatRequest struct {
	// Ref is an image reference in a registry.
	Ref string
	// Platform is "os/arch[/variant]"; "" means this host's.
	Platform string
	// Registry says how to reach the registry: the Distributor receives the daemon's config
	// merged with the request's options.
	Registry RegistryOptions
}
