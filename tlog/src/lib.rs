//! Transparency-log formats, sans-IO: the foundation of tamper-evident
//! audit logs.
//!
//! This crate implements, with no file, socket or clock of its own (callers
//! pass storage and time in):
//!
//! * RFC 6962 SHA-256 Merkle trees: leaf and node hashes, tree hashes,
//!   inclusion and consistency proofs, produced and verified ([`merkle`]);
//! * an append-only log over caller-provided storage, as an order server
//!   keeps one ([`log::Log`], [`storage::LogStorage`]);
//! * C2SP tlog-tiles: hash tiles, entry bundles and their paths ([`tiles`]),
//!   and roots and proofs computed from fetched tiles ([`tile_reader`]);
//! * C2SP signed-note with Ed25519 keys ([`note`]);
//! * C2SP tlog-checkpoint ([`checkpoint`]);
//! * C2SP tlog-cosignature v1 ([`cosignature`]);
//! * C2SP tlog-witness's `add-checkpoint` body and a witness state machine
//!   ([`witness`]).
//!
//! Logs written with it are checked by an independent verifier, Go's
//! reference `golang.org/x/mod/sumdb/note` and `sumdb/tlog`, in the
//! integration test `tests/independent_verifier.rs` (the Go program is
//! `verifier/main.go`). That test needs `go` and the x/mod sources; on
//! Debian bookworm:
//!
//! ```text
//! tlog/verifier/install-go.sh
//! # which runs, as root, if `go` is missing:
//! #   apt-get update && apt-get install -y golang-go golang-golang-x-mod-dev
//! cargo test -p grompi-tlog --test independent_verifier
//! ```
//!
//! Without `go` the test fails and says how to install it, unless
//! `GROMPI_SKIP_GO_VERIFIER=1` is set, in which case it says it skipped.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`merkle`] | RFC 6962 hashes, stored-hash numbering, tree hash, inclusion and consistency proofs |
//! | [`storage`] | the [`storage::LogStorage`] trait and an in-memory storage |
//! | [`log`] | the append-only log: append, roots, proofs, tiles, bundles, checkpoints |
//! | [`tiles`] | tile and entry bundle coordinates, paths, and bundle encoding |
//! | [`tile_reader`] | stored hashes read out of fetched tiles, for clients |
//! | [`note`] | signed notes, key IDs, Ed25519 verifier and signer keys |
//! | [`checkpoint`] | checkpoint text, signing and opening |
//! | [`cosignature`] | timestamped Ed25519 cosignatures (type `0x04`) |
//! | [`witness`] | the `add-checkpoint` request and the witness state machine |
//! | [`error`] | the error enums of every module |
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod cosignature;
pub mod error;
pub mod log;
pub mod merkle;
pub mod note;
pub mod storage;
pub mod tile_reader;
pub mod tiles;
pub mod witness;

pub use checkpoint::Checkpoint;
pub use log::Log;
pub use merkle::Hash;
pub use storage::{LogStorage, MemoryStorage};
