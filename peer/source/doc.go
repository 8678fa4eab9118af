// Package source reads byte ranges of nydus blobs from where they live when no peer has them: a
// registry (HTTP Range GETs through package registry), an S3 bucket (SigV4 ranged GETs) or a local
// directory (a disk or a NAS mount). Blobs are named by their id, the hex sha256 of the blob file.
//
// Every Source has one contract: ReadRange yields exactly the n bytes asked for, then io.EOF, or an
// error; never fewer bytes followed by io.EOF. Errors wrap the package's sentinels so callers can
// decide with errors.Is: ErrNotFound (the blob is not there), ErrRange (the range runs past the
// blob's end), ErrInvalidBlobID (rejected before any I/O), ErrUnauthorized (credentials refused).
//
// Sources do not retry by themselves beyond what their client does; wrap one in Retrying for
// backoff on transient failures (5xx, connection resets, bodies cut short), which resumes a broken
// transfer where it stopped. Counting counts requests and bytes of any Source.
//
// The bytes are not verified here: a range cannot be checked against the blob digest. The caller
// checks each chunk against the bootstrap's digest (rafs/blob.ReadChunk).
package source
