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
//! | [`audit_entry`] | the audit log's entries: attestations, refusals, security events |
//! | [`audit_store`] | the audit log kept in the store, in the attestations' transaction |
//! | [`audit_log`] | the shell's audit log: key file, signed checkpoints, proofs, verifying a copy |
//! | [`audit_http`] | the HTTP endpoint serving `checkpoint` and `tile/...`, and taking `add-checkpoint` |
//! | [`witness`] | this server as a witness of its peers' logs: key, state on disk, evidence |
//! | [`witness_submit`] | submitting this server's checkpoints to its witnesses, sans-IO |
//! | [`audit_cli`] | `order-server log ...`: checkpoint, proofs, export, verify, init-key |
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

pub mod audit_cli;
pub mod audit_entry;
pub mod audit_http;
pub mod audit_log;
pub mod audit_store;
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
pub mod witness;
pub mod witness_submit;
