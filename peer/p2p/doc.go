// Package p2p makes a peer's blob reads pieces of Dragonfly tasks.
//
// Every registry blob an image uses is one Dragonfly task (its id is Dragonfly's
// TaskIDV2ByURLBased of the blob URL, so any Dragonfly peer computes the same id). A task is cut in
// fixed-length pieces (the Rust dfdaemon's rule: content length / 500 rounded up to a power of two,
// clamped to [4 MiB, 64 MiB]). A read of a byte range becomes the pieces that cover it; each piece
// comes from the local piece store, else from a parent the scheduler named (SyncPieces, then the
// bytes over Vortex), else back to source. Before a piece is kept or served, every chunk of the
// image that lies inside it is checked against its digest from the bootstrap; a parent whose bytes
// fail is reported to the scheduler, avoided for the rest of the session, and the piece is fetched
// from somewhere else. Pieces are served to other peers only once every chunk touching them is
// verified (seed downloads of blobs no mounted image describes are trusted from the source and
// checked against the blob digest when complete).
//
// The Manager is the daemon's Distributor (peer/daemon), the Tasks behind the DfdaemonUpload
// service (peer/upload) and the Vortex handler (peer/vortex).
package p2p
