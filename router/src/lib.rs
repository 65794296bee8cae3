//! The router: directory, fan-out to the order servers, and delivery.
//!
//! The router is trusted for availability only. It keeps accounts and
//! prekey bundles, assigns padded and shuffled slot sets, gives each
//! envelope the next index of its conversation, sends it to every order
//! server, and delivers to each member only what that member may see, with
//! the order servers' tags. It never acknowledges an envelope it has not
//! committed durably, and it never sends an order server index i+1 of a
//! conversation before that server has attested index i.
//!
//! The logic is a sans-IO state machine ([`core::RouterCore`]): time and
//! randomness are passed in, and its output is a list of records to commit
//! and effects to perform after the commit. One sans-IO loop runs it
//! ([`driver::Driver`]: batches of inputs, early effects, commit batches,
//! group commit, pipelined jobs), and every shell calls that loop: the gRPC
//! service, the redb store, the order server workers and the timers
//! ([`runtime`]), the simulator's router, and the core's tests.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`core`] | the state machine: commands, outputs and effects, dispatch ([`core::RouterCore::handle`], [`core::RouterCore::poll`]), lifecycle |
//! | `core/calls.rs` | the client calls the core answers: creating and listing conversations, Updates, submissions, fetch and head proof plans |
//! | `core_tests.rs` (tests) | the core through the production driver against the real order server cores, with crashes |
//! | `retention_tests.rs` (tests) | the retention setting: what is removed and never removed, restarts, Fetch and FetchHistory after removal |
//! | [`driver`] | the loop around the core: batches, early effects, group commit, pipelining |
//! | [`request`] | parsing client requests: registration, sign-in, key uploads, submissions, member lists |
//! | [`directory`] | accounts, prekeys, order keys, challenges, sessions |
//! | `directory_tests.rs` (tests) | registration, sign-in, challenges, prekeys and order keys |
//! | [`keys`] | an account's identity keys and signed prekeys |
//! | [`conversation`] | epochs, the per-conversation sequencer, noise envelopes, the per-account index of conversations, restoring conversations, retention (removing what the last N indices leave) |
//! | [`slots`] | epoch slot sets: assignment, padding tiers and secrets, placement of joiners |
//! | [`fanout`] | per-order-server links, jobs, refusal classes, and the fan-out engine: scheduling, job results, attestation checks |
//! | [`backoff`] | retry backoff with times passed in |
//! | [`delivery`] | per-member views of an envelope, recipients of an index, tag updates |
//! | [`limits`] | configured limits (session lifetime included) and the rate limiters |
//! | [`record`] | what is persisted, and its encoding |
//! | [`store`] | the storage trait, the redb store, the in-memory store |
//! | [`config`] | the TOML configuration file |
//! | [`runtime`] | the core task with group commit, order server workers, the ticker and the disk check |
//! | [`hub`] | live subscribers: queues bounded by count and bytes, streams per account |
//! | [`service`] | the client-facing gRPC service |
//! | [`fetch`] | Fetch pages bounded by bytes, and the bytes of pages being built per account and in total |
//! | [`server`] | wiring: `router init`, `router serve`, TLS, health, bound addresses, shutdown |
//! | [`error`] | [`error::RouterError`] and its gRPC status codes |
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod conversation;
pub mod core;
pub mod delivery;
pub mod directory;
pub mod driver;
pub mod error;
pub mod fanout;
pub mod fetch;
pub mod hub;
pub mod keys;
pub mod limits;
pub mod record;
pub mod request;
pub mod runtime;
pub mod server;
pub mod service;
pub mod slots;
pub mod store;

/// Milliseconds since the Unix epoch (or any fixed origin, in tests).
pub type Millis = u64;

/// Identifies a request waiting for the core's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);
