// Package registry is dfnydus's client for OCI distribution registries (the /v2/ API spoken by
// Docker Hub, distribution, Harbor, GHCR, ...). It follows the conventions users know from docker and
// skopeo: docker.io name normalisation, credentials from ~/.docker/config.json (inline auths, credHelpers,
// credsStore), anonymous/Basic/Bearer authentication, plain HTTP only when asked or for loopback
// registries, retries with backoff for transient failures.
//
// Every blob read is verified against its descriptor: FetchBlob fails at EOF, never silently, when the
// bytes do not hash to the wanted digest or their length is wrong. Blob pushes skip blobs that already
// exist, mount across repositories when they can, and otherwise upload in chunks that resume from the
// registry's own record of how far an interrupted upload got.
//
// The wire protocol follows the OCI distribution spec
// (https://github.com/opencontainers/distribution-spec/blob/main/spec.md) and the token auth spec of
// distribution (docs/spec/auth/token.md).
package registry
