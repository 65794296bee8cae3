//! The client program: an account in a home directory, talking to the
//! router over pinned TLS, with its state encrypted at rest.
//!
//! Every trust decision is made by the sans-IO core, the
//! `grompi-client-core` crate ([`grompi_client_core::Member`]); this crate
//! moves bytes between the router and the core, keeps the core's state in
//! the local store, and shows what the core decided. It never accepts,
//! rejects or reorders anything itself.
//!
//! # Layout
//!
//! | file | concept |
//! |---|---|
//! | [`client`] | the async API for programs: its types, constants and accessors |
//! | `client/open.rs` | creating, opening and restoring an account; saving it in one transaction |
//! | `client/account.rs` | registering and signing in at the router, key top-ups, peers' prekey bundles |
//! | `client/send.rs` | pending sends (saved before they leave, resubmitted until acknowledged), creating conversations, messages, receipts, member changes |
//! | `client/sync.rs` | fetching and subscribing to deliveries, recording events and alerts |
//! | `client/heads.rs` | head proofs from every order server |
//! | [`client::contacts`] | contacts: trust on first use, safety numbers |
//! | [`client::router`] | the pinned-TLS router connection and sign-in |
//! | [`client::store`] | what the encrypted local store holds, by namespace |
//! | [`client::history`] | the readable transcript built from events |
//! | [`client::network`] | the network descriptor as trust anchor, what the quorum tolerates |
//! | [`client::error`] | errors of the client API |
//! | [`local_store`] | local state encrypted at rest (passphrase or key file) |
//! | [`log_audit`] | a conversation's audit: are its accepted indices in the order servers' audit logs |
//! | `log_audit_tests.rs` (tests) | in-memory logs: found, searched, missing, waiting, tampered |
//! | `local_store_tests.rs` (tests) | the store's secrets, records, tampering, vectors, locking |
//!
//! The `grompi` command-line program is `bin/grompi.rs`, with
//! `bin/grompi/args.rs` (the command line), `bin/grompi/secret.rs` (the
//! store secret from a key file or `GROMPI_PASSPHRASE`) and
//! `bin/grompi/show.rs` (how things are printed).
#![forbid(unsafe_code)]

pub mod client;
pub mod local_store;
pub mod log_audit;

pub use client::{ApiError, Client};
