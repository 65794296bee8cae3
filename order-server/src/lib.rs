//! An order server: attests which envelope sits at which index of each
//! conversation, and never attests two different envelopes at one index,
//! across crashes.
//!
//! The logic is a sans-IO core ([`core::OrderCore`]) over a narrow storage
//! interface ([`store`]); the shell around it ([`service`], [`committer`],
//! [`server`]) adds gRPC over mutual TLS, group commit into redb, health,
//! metrics and graceful shutdown.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`core`] | the state machine: open, attest, prove head |
//! | [`request`] | an attestation request parsed from the wire |
//! | [`refusal`] | why an item was refused, and its wire code |
//! | [`state`] | per-conversation and per-index records and their byte layouts |
//! | [`store`] | the storage interface the core works over |
//! | [`mem_store`] | in-memory store for tests and the simulator |
//! | [`redb_store`] | the durable redb store |
//! | [`key_cache`] | MAC keys derived once per slot set, cached |
//! | [`evidence`] | refused equivocation attempts, kept for the operator |
//! | [`limits`] | configurable limits |
//! | [`committer`] | group commit: one redb transaction per batch of requests |
//! | [`service`] | the gRPC `OrderService` |
//! | [`config`] | the TOML configuration file |
//! | [`server`] | wiring: TLS, health, metrics, bound addresses, shutdown |
//! | [`init`] | `order-server init`: key and TLS material |
//! | [`telemetry`] | metric names |
//! | [`bench`](mod@bench) | throughput measurement of group commit |
//! | `core_tests.rs` (tests) | property tests of the core against a reference model, with adversarial requests and crashes |
#![forbid(unsafe_code)]

pub mod bench;
pub mod committer;
pub mod config;
pub mod core;
pub mod evidence;
pub mod init;
pub mod key_cache;
pub mod limits;
pub mod mem_store;
pub mod redb_store;
pub mod refusal;
pub mod request;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod telemetry;
