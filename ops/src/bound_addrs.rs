//! The file a server writes its bound addresses to, in its data directory,
//! once its listeners are up (servers may listen on port 0, so this is how
//! the operator, the tests and the simulator learn the ports):
//!
//! ```toml
//! grpc = "127.0.0.1:40123"
//! metrics = "127.0.0.1:40124"   # only with metrics_listen
//! ```
//!
//! The router and the order server write the same file; this is its one
//! name.

/// File name of the bound addresses, in a server's data directory.
pub const BOUND_ADDRS_FILE: &str = "bound-addrs.toml";
