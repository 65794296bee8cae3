//! Fuzzing on the stable toolchain: one target per decoder of untrusted
//! bytes, and a small coverage-less mutational fuzzer to drive them.
//!
//! A target ([`target::Target`]) feeds bytes to a real decoder (the wire
//! types, the network descriptor, deliveries, the Olm block frame and its
//! payload, decrypted contents, saved and stored records, router requests)
//! and, when the bytes parse, checks what the decoder promises: the value
//! re-encodes to something that parses back to itself, strict encodings
//! re-encode to the very same bytes, hashes are computable. A broken
//! promise is reported as a [`target::Violation`] and treated as a crash,
//! like a panic.
//!
//! The fuzzer ([`runner`]) has no coverage feedback. It starts from the
//! corpus (`fuzz/corpus/<target>/`), mutates inputs ([`mutate`]: bytes, and
//! protobuf fields for protobuf targets), runs each under `catch_unwind`,
//! keeps inputs that reach a decoder outcome not seen before (a distinct
//! error variant, or a distinct kind of success), and saves crashing inputs
//! to `fuzz/crashes/<target>/`. Runs are reproducible from their seed.
//!
//! The integration test `tests/replay.rs` replays every corpus and crash
//! file through its target.
//!
//! | module | concept |
//! |---|---|
//! | [`target`] | targets, outcomes, labels, panic capture |
//! | [`targets`] | every target and its seed inputs |
//! | `targets/proto.rs`, `targets/order.rs`, `targets/router.rs`, `targets/client.rs` | the targets for what each party parses |
//! | `targets/samples.rs` | real values the seed corpora are built from |
//! | [`mutate`] | byte and protobuf field mutations |
//! | [`protobuf`] | schema-less scanning of protobuf fields |
//! | [`runner`] | the fuzzing loop |
//! | [`corpus`] | corpus and crash directories |
//! | [`rng`] | the seeded generator |
//!
//! The `grompi-fuzz` program is `main.rs`.
#![forbid(unsafe_code)]

pub mod corpus;
pub mod mutate;
pub mod protobuf;
pub mod rng;
pub mod runner;
pub mod target;
pub mod targets;
