//! The TOML configuration file of `router serve`.
//!
//! ```toml
//! # Where clients connect (TLS). Port 0 picks a free port; the bound
//! # addresses are then written to <data_dir>/bound-addrs.toml.
//! listen = "127.0.0.1:7000"
//! # Database and TLS identity (router.crt / router.key from `router init`).
//! data_dir = "/var/lib/grompi-router"
//! # The rollback anchor (default: router.anchor in data_dir). Never backed
//! # up with the database; best on other storage.
//! rollback_anchor = "/var/lib/grompi-anchor/router.anchor"
//! # The network descriptor: order servers, their keys, TLS roots, quorum.
//! descriptor = "/etc/grompi/network.toml"
//! # Prometheus endpoint (optional).
//! metrics_listen = "127.0.0.1:9100"
//! # Padded group sizes; a conversation's slot set is padded to the smallest
//! # tier that fits its members.
//! padding_tiers = [4, 8, 16, 32, 64, 128, 256, 1024]
//! # One noise envelope per conversation every this many ms (0: off).
//! noise_interval_ms = 0
//! # Benchmark baseline only: no attestation at all (clients refuse it).
//! relay_only = false
//! # Migration only: also accept the older sign-in signature that is not
//! # bound to this network (clients from before the binding). Current
//! # clients never make it; off by default.
//! accept_unbound_sign_in = false
//!
//! [limits]
//! max_envelope_bytes = 262144
//! # Unauthenticated calls (GetChallenge, Register, SignIn) per client
//! # address; all of them together stay under requests_per_second.
//! peer_requests_per_second = 20
//! peer_request_burst = 100
//! # TCP connections open at once, in total and per client address.
//! max_connections = 1024
//! max_connections_per_address = 64
//! # Caps on what the router keeps (docs/OPERATING.md, "Caps").
//! max_accounts = 1000000
//! max_sessions_per_account = 16
//! max_pending_bytes_per_conversation = 33554432
//! max_fetch_bytes = 8388608
//! disk_reserve_bytes = 1073741824
//! # Retention: 0 keeps every envelope for ever (the default); N keeps the
//! # last N delivered indices of each conversation (at least 16), removing
//! # older ones once every order server has attested them.
//! keep_envelopes = 0
//! ```
//!
//! Relative paths are relative to the configuration file's directory.

use crate::limits::Limits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value is out of range.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The rollback anchor's file name in the data directory, unless
/// `rollback_anchor` names another path.
pub const DEFAULT_ANCHOR_FILE: &str = "router.anchor";

/// The router's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing gRPC address.
    pub listen: SocketAddr,
    /// Data directory: database, TLS identity, bound addresses.
    pub data_dir: PathBuf,
    /// The rollback anchor file ([`grompi_ops::anchor`]): how far the
    /// database has come, so that an older copy of it, or a database
    /// missing where one was anchored, is refused. Default:
    /// [`DEFAULT_ANCHOR_FILE`] in the data directory. Keep it out of the
    /// database's backups, ideally on other storage.
    #[serde(default)]
    pub rollback_anchor: Option<PathBuf>,
    /// Network descriptor file.
    pub descriptor: PathBuf,
    /// Prometheus metrics address.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Padded group sizes.
    #[serde(default = "default_tiers")]
    pub padding_tiers: Vec<usize>,
    /// Noise interval per conversation in ms; 0 turns noise off.
    #[serde(default)]
    pub noise_interval_ms: u64,
    /// How long Submit waits for the quorum before answering Unavailable
    /// (the envelope stays committed and will be delivered).
    #[serde(default = "default_submit_timeout")]
    pub submit_timeout_ms: u64,
    /// How long CreateConversation and ProveHeads wait for order servers.
    #[serde(default = "default_server_timeout")]
    pub order_server_timeout_ms: u64,
    /// Most items in one Attest call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// First retry delay after an order server failure.
    #[serde(default = "default_backoff_base")]
    pub backoff_base_ms: u64,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// Default log filter when `RUST_LOG` is unset.
    #[serde(default = "default_log")]
    pub log: String,
    /// Benchmark baseline only: contact no order server and deliver every
    /// envelope as soon as it is committed, unattested (a plain
    /// store-and-forward relay with the same TLS and storage). Clients
    /// refuse such deliveries; never enable this in a real network.
    #[serde(default)]
    pub relay_only: bool,
    /// Also accept the older sign-in signature that is not bound to this
    /// network (`grompi v1 sign-in`, from clients before the binding).
    /// Off by default: current clients sign bound to the network, and only
    /// that signature is accepted. Turn it on deliberately, for a migration
    /// while clients from before the binding still sign in, and off again
    /// once they are current: such a signature, made for any router, is
    /// accepted by this one while it is on. A signature bound to another
    /// network is refused either way.
    #[serde(default = "default_accept_unbound_sign_in")]
    pub accept_unbound_sign_in: bool,
    /// The `[limits]` section; unset keys take [`Limits::default`].
    #[serde(default)]
    pub limits: Limits,
}

fn default_tiers() -> Vec<usize> {
    vec![4, 8, 16, 32, 64, 128, 256, 1024]
}
fn default_submit_timeout() -> u64 {
    30_000
}
fn default_server_timeout() -> u64 {
    10_000
}
fn default_max_batch() -> usize {
    256
}
fn default_backoff_base() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    5_000
}
fn default_accept_unbound_sign_in() -> bool {
    false
}
fn default_log() -> String {
    "info".into()
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|reason| ConfigError::Syntax {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses configuration text; relative paths are joined to `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        if c.descriptor.is_relative() {
            c.descriptor = base.join(&c.descriptor);
        }
        c.rollback_anchor = c.rollback_anchor.map(|a| base.join(a));
        if c.padding_tiers.is_empty()
            || c.padding_tiers
                .iter()
                .any(|t| *t == 0 || *t > grompi_proto::limits::MAX_SLOTS)
        {
            return Err(format!(
                "padding_tiers must list sizes between 1 and {}",
                grompi_proto::limits::MAX_SLOTS
            ));
        }
        if c.limits.max_group_size > c.padding_tiers.iter().copied().max().unwrap_or(0) {
            return Err("limits.max_group_size is larger than the largest padding tier".into());
        }
        if c.limits.max_envelope_bytes > 4 * 1024 * 1024 - 64 * 1024 {
            return Err(
                "limits.max_envelope_bytes must stay below the 4 MiB gRPC message limit".into(),
            );
        }
        let l = &c.limits;
        for (key, value) in [
            (
                "limits.peer_requests_per_second",
                u64::from(l.peer_requests_per_second),
            ),
            ("limits.peer_request_burst", u64::from(l.peer_request_burst)),
            ("limits.max_peers", l.max_peers as u64),
            ("limits.max_connections", l.max_connections as u64),
            (
                "limits.max_connections_per_address",
                l.max_connections_per_address as u64,
            ),
            (
                "limits.max_streams_per_connection",
                u64::from(l.max_streams_per_connection),
            ),
            ("limits.max_fetch", u64::from(l.max_fetch)),
            ("limits.max_accounts", l.max_accounts as u64),
            ("limits.max_unused_keys", l.max_unused_keys as u64),
            ("limits.max_sessions", l.max_sessions as u64),
            (
                "limits.max_sessions_per_account",
                l.max_sessions_per_account as u64,
            ),
            ("limits.max_conversations", l.max_conversations as u64),
            (
                "limits.max_conversations_per_account",
                l.max_conversations_per_account as u64,
            ),
            (
                "limits.subscriber_queue_bytes",
                l.subscriber_queue_bytes as u64,
            ),
            ("limits.max_subscriber_bytes", l.max_subscriber_bytes as u64),
            (
                "limits.max_subscribers_per_account",
                l.max_subscribers_per_account as u64,
            ),
            ("limits.max_subscribers", l.max_subscribers as u64),
            ("limits.max_fetch_bytes", l.max_fetch_bytes as u64),
        ] {
            if value == 0 {
                return Err(format!("{key} must be at least 1"));
            }
        }
        // Each of these must hold at least one envelope of the largest size,
        // or such an envelope could never be accepted (or delivered live).
        for (key, value) in [
            (
                "limits.max_pending_bytes_per_account",
                l.max_pending_bytes_per_account,
            ),
            (
                "limits.max_pending_bytes_per_conversation",
                l.max_pending_bytes_per_conversation,
            ),
            ("limits.max_pending_bytes", l.max_pending_bytes),
            ("limits.subscriber_queue_bytes", l.subscriber_queue_bytes),
        ] {
            if value < l.max_envelope_bytes {
                return Err(format!(
                    "{key} ({value}) must be at least limits.max_envelope_bytes ({})",
                    l.max_envelope_bytes
                ));
            }
        }
        if l.max_fetch_bytes > MAX_FETCH_BYTES {
            return Err(format!(
                "limits.max_fetch_bytes must be at most {MAX_FETCH_BYTES} (half the 64 MiB gRPC message limit)"
            ));
        }
        for (key, value, below, at_least) in [
            (
                "limits.max_fetch_bytes_per_account",
                l.max_fetch_bytes_per_account,
                "limits.max_fetch_bytes",
                l.max_fetch_bytes,
            ),
            (
                "limits.max_fetch_bytes_in_flight",
                l.max_fetch_bytes_in_flight,
                "limits.max_fetch_bytes_per_account",
                l.max_fetch_bytes_per_account,
            ),
            (
                "limits.max_subscriber_bytes",
                l.max_subscriber_bytes,
                "limits.subscriber_queue_bytes",
                l.subscriber_queue_bytes,
            ),
            (
                "limits.max_subscribers",
                l.max_subscribers,
                "limits.max_subscribers_per_account",
                l.max_subscribers_per_account,
            ),
        ] {
            if value < at_least {
                return Err(format!(
                    "{key} ({value}) must be at least {below} ({at_least})"
                ));
            }
        }
        if l.session_ttl_ms < MIN_SESSION_TTL_MS {
            return Err(format!(
                "limits.session_ttl_ms must be at least {MIN_SESSION_TTL_MS} (one day): clients refresh sessions older than six hours"
            ));
        }
        if l.max_connections_per_address > l.max_connections {
            return Err(format!(
                "limits.max_connections_per_address ({}) must not exceed limits.max_connections ({})",
                l.max_connections_per_address, l.max_connections
            ));
        }
        if l.keep_envelopes != 0 && l.keep_envelopes < MIN_KEEP_ENVELOPES {
            return Err(format!(
                "limits.keep_envelopes ({}) must be 0 (keep every envelope) or at least {MIN_KEEP_ENVELOPES}: a member more than that many indices behind can no longer catch up",
                l.keep_envelopes
            ));
        }
        if c.max_batch == 0 || c.max_batch > grompi_proto::limits::MAX_ATTEST_BATCH {
            return Err(format!(
                "max_batch must be between 1 and {}",
                grompi_proto::limits::MAX_ATTEST_BATCH
            ));
        }
        Ok(c)
    }

    /// The TLS identity's file stem in the data directory.
    pub const TLS_STEM: &'static str = "router";

    /// The database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("router.redb")
    }

    /// Where the rollback anchor is.
    pub fn anchor_path(&self) -> PathBuf {
        self.rollback_anchor
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_ANCHOR_FILE))
    }

    /// Where the bound addresses are written.
    pub fn bound_path(&self) -> PathBuf {
        self.data_dir
            .join(grompi_ops::bound_addrs::BOUND_ADDRS_FILE)
    }
}

/// The largest Fetch response a router may be configured to build.
const MAX_FETCH_BYTES: usize = 32 * 1024 * 1024;

/// The fewest indices per conversation a router may be configured to keep
/// (`limits.keep_envelopes`), 0 apart (keep every envelope).
pub const MIN_KEEP_ENVELOPES: u64 = 16;

/// The shortest session lifetime a router may be configured with.
const MIN_SESSION_TTL_MS: u64 = 24 * 60 * 60 * 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_resolves_paths() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndescriptor = \"/etc/n.toml\"\n",
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/data"));
        assert_eq!(c.descriptor, PathBuf::from("/etc/n.toml"));
        assert_eq!(c.anchor_path(), PathBuf::from("/srv/data/router.anchor"));
        assert_eq!(c.padding_tiers, default_tiers());
        assert_eq!(c.limits, Limits::default());
        assert!(
            !c.accept_unbound_sign_in,
            "unbound sign-in signatures are refused unless turned on"
        );
        let on = Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\ndescriptor = \"n\"\n\
             accept_unbound_sign_in = true\n",
            Path::new("/"),
        )
        .unwrap();
        assert!(on.accept_unbound_sign_in);
        let elsewhere = Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\ndescriptor = \"n\"\n\
             rollback_anchor = \"../anchor/r\"\n",
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(elsewhere.anchor_path(), PathBuf::from("/srv/../anchor/r"));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\ndescriptor = \"n\"\n";
        assert!(Config::parse(&format!("{base}bogus = 1\n"), Path::new("/")).is_err());
        let e = Config::parse(&format!("{base}padding_tiers = [0]\n"), Path::new("/")).unwrap_err();
        assert!(e.contains("padding_tiers"));
        let e = Config::parse(&format!("{base}padding_tiers = [4]\n"), Path::new("/")).unwrap_err();
        assert!(e.contains("max_group_size"));
        for key in [
            "peer_requests_per_second",
            "peer_request_burst",
            "max_peers",
            "max_connections",
            "max_connections_per_address",
            "max_streams_per_connection",
            "max_fetch",
            "max_accounts",
            "max_unused_keys",
            "max_sessions",
            "max_sessions_per_account",
            "max_conversations",
            "max_conversations_per_account",
            "subscriber_queue_bytes",
            "max_subscribers_per_account",
            "max_fetch_bytes",
        ] {
            let e =
                Config::parse(&format!("{base}[limits]\n{key} = 0\n"), Path::new("/")).unwrap_err();
            assert!(
                e.contains(&format!("limits.{key} must be at least 1")),
                "{e}"
            );
        }
        let e = Config::parse(
            &format!("{base}[limits]\nsession_ttl_ms = 3600000\n"),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.contains("limits.session_ttl_ms must be at least"), "{e}");
        let e = Config::parse(
            &format!("{base}[limits]\nmax_connections = 8\nmax_connections_per_address = 9\n"),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.contains("must not exceed limits.max_connections"), "{e}");
    }

    #[test]
    fn caps_must_hold_what_they_bound() {
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\ndescriptor = \"n\"\n[limits]\n";
        for (extra, says) in [
            (
                "max_pending_bytes_per_account = 1000\n",
                "limits.max_pending_bytes_per_account (1000) must be at least limits.max_envelope_bytes",
            ),
            (
                "max_pending_bytes_per_conversation = 1000\n",
                "limits.max_pending_bytes_per_conversation (1000) must be at least",
            ),
            (
                "subscriber_queue_bytes = 1000\n",
                "limits.subscriber_queue_bytes (1000) must be at least limits.max_envelope_bytes",
            ),
            (
                "max_fetch_bytes = 67108864\n",
                "limits.max_fetch_bytes must be at most",
            ),
            (
                "max_fetch_bytes_per_account = 1\n",
                "limits.max_fetch_bytes_per_account (1) must be at least limits.max_fetch_bytes",
            ),
            (
                "max_fetch_bytes_in_flight = 1\n",
                "limits.max_fetch_bytes_in_flight (1) must be at least",
            ),
            (
                "max_subscriber_bytes = 1\n",
                "limits.max_subscriber_bytes (1) must be at least limits.subscriber_queue_bytes",
            ),
            (
                "max_subscribers = 1\n",
                "limits.max_subscribers (1) must be at least limits.max_subscribers_per_account",
            ),
        ] {
            let e = Config::parse(&format!("{base}{extra}"), Path::new("/")).unwrap_err();
            assert!(e.contains(says), "{extra}: {e}");
        }
        let c = Config::parse(
            &format!("{base}max_accounts = 5\nmax_sessions_per_account = 2\ndisk_reserve_bytes = 0\nnoise_idle_ms = 1000\n"),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.limits.max_accounts, 5);
        assert_eq!(c.limits.max_sessions_per_account, 2);
        assert_eq!(c.limits.disk_reserve_bytes, 0);
        assert_eq!(c.limits.noise_idle_ms, 1000);
    }

    #[test]
    fn retention_is_forever_by_default_and_checked() {
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\ndescriptor = \"n\"\n";
        let c = Config::parse(base, Path::new("/")).unwrap();
        assert_eq!(
            c.limits.keep_envelopes, 0,
            "every envelope is kept by default"
        );
        let c = Config::parse(
            &format!("{base}[limits]\nkeep_envelopes = 1000\n"),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.limits.keep_envelopes, 1000);
        let c = Config::parse(
            &format!("{base}[limits]\nkeep_envelopes = {MIN_KEEP_ENVELOPES}\n"),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.limits.keep_envelopes, MIN_KEEP_ENVELOPES);
        let e = Config::parse(
            &format!("{base}[limits]\nkeep_envelopes = 3\n"),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            e.contains("limits.keep_envelopes (3) must be 0 (keep every envelope) or at least 16"),
            "{e}"
        );
        for bad in ["-1", "\"forever\"", "1.5"] {
            let e = Config::parse(
                &format!("{base}[limits]\nkeep_envelopes = {bad}\n"),
                Path::new("/"),
            )
            .unwrap_err();
            assert!(e.contains("keep_envelopes"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_shared_anonymous_cap_is_well_above_one_address_budget() {
        let l = Limits::default();
        assert!(l.requests_per_second >= 5 * l.peer_requests_per_second);
        assert!(l.request_burst >= 2 * l.peer_request_burst);
        assert!(l.max_connections_per_address < l.max_connections);
    }
}
