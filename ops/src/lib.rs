//! What every server process shares: TLS material, tracing, metrics,
//! health and graceful shutdown.
//!
//! The router, the order server and the simulator's real-network mode all
//! use these helpers, so that every process is operated the same way: the
//! same TLS file layout, the same log filter variable (`RUST_LOG`), the same
//! Prometheus endpoint, the same reaction to SIGTERM.
//!
//! # Layout
//!
//! | module | concept |
//! |---|---|
//! | [`tls`] | self-signed TLS identities, pinned mutual-TLS configs for tonic |
//! | [`bound_addrs`] | the file a server writes its bound addresses to |
//! | [`conn_limit`] | caps on concurrently open connections, in total and per address |
//! | [`secret_file`] | atomic, `0600` files for secret keys |
//! | [`telemetry`] | `tracing` logs and the Prometheus metrics endpoint |
//! | [`shutdown`] | the signal that starts a graceful shutdown |
//! | [`wal`] | the write-ahead log file both servers commit through |
//! | [`logged_db`] | a redb database committed through that log: the commit protocol |
//! | [`anchor`] | the rollback anchor: refuses an older copy of a database |
#![forbid(unsafe_code)]

pub mod anchor;
pub mod bound_addrs;
pub mod conn_limit;
pub mod logged_db;
pub mod secret_file;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod wal;
