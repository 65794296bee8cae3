//! The configuration file (`order.toml`). Every key is documented in
//! `docs/OPERATING.md`. Unknown keys are refused, so a typo never silently
//! falls back to a default. Relative paths are resolved against the
//! directory of the configuration file.
//!
//! ```toml
//! listen = "0.0.0.0:7400"
//! data_dir = "/var/lib/grompi-order"
//! # Never backed up with the database; best on other storage.
//! rollback_anchor = "/var/lib/grompi-anchor/order.anchor"
//! router_certificate = "/etc/grompi/router.crt"
//! metrics_listen = "127.0.0.1:9400"
//! position = 0
//! # The audit log: read-only tlog-tiles endpoint, checkpoint signing period.
//! audit_listen = "0.0.0.0:7480"
//! audit_checkpoint_seconds = 10
//!
//! # Witnessing (docs/OPERATING.md): each peer either witnesses this
//! # server's log (witness_key and url), or has its log witnessed here
//! # (log_key), or both. A public witness is a peer with only a url and a
//! # witness_key.
//! [[peers]]
//! name = "order1"
//! url = "http://order1.example.org:7480"
//! log_key = "order1.example.org/audit+1a2b3c4d+AR...="
//! witness_key = "order1.example.org/audit/witness+5e6f7a8b+BB...="
//!
//! [limits]
//! max_slots = 1024
//! # Only the router connects; connections over this are closed at once.
//! max_connections = 64
//! ```

use crate::audit_http::HttpUrl;
use crate::limits::{LimitOutOfRange, Limits};
use grompi_tlog::cosignature::CosignatureVerifier;
use grompi_tlog::note::Ed25519Verifier;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The rollback anchor's file name in the data directory, unless
/// `rollback_anchor` names another path.
pub const DEFAULT_ANCHOR_FILE: &str = "order.anchor";

/// The audit log key's file name in the data directory, unless
/// `audit_log_key` names another path.
pub use crate::audit_log::LOG_KEY_FILE as DEFAULT_LOG_KEY_FILE;

/// Largest configuration file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// The order server's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port of the gRPC listener (port 0: any free port; the
    /// bound address is written to `<data_dir>/bound-addrs.toml`).
    pub listen: SocketAddr,
    /// Directory with the key, the TLS material and the database.
    pub data_dir: PathBuf,
    /// The rollback anchor file ([`grompi_ops::anchor`]): how far the
    /// database has come, so that an older copy of it is refused. Default:
    /// [`DEFAULT_ANCHOR_FILE`] in the data directory. Keep it out of the
    /// database's backups, ideally on other storage.
    #[serde(default)]
    pub rollback_anchor: Option<PathBuf>,
    /// PEM file with the router's client certificate: the only client
    /// certificate accepted.
    pub router_certificate: PathBuf,
    /// Address of the Prometheus metrics endpoint; none when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// This server's position in the network descriptor, echoed in every
    /// attestation and head proof.
    #[serde(default)]
    pub position: u32,
    /// Largest gRPC request accepted, in bytes.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Most jobs (requests) waiting for the writer before handlers wait.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The writer's gathering window in microseconds: when the last commit
    /// carried more than one request (the server is busy), the writer
    /// waits this long for more before committing, so that one log sync
    /// carries more attestations (less CPU each, a little more latency
    /// under load). 0 turns it off. An idle server commits at once.
    #[serde(default = "default_commit_gather_us")]
    pub commit_gather_us: u64,
    /// Items at which the writer stops gathering.
    #[serde(default = "default_commit_gather_items")]
    pub commit_gather_items: usize,
    /// Seconds to wait, after SIGTERM, for requests in flight and open
    /// connections before stopping anyway.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// Log filter used when `RUST_LOG` is not set.
    #[serde(default = "default_log")]
    pub log: String,
    /// The audit log key file (made by `order-server init`, or `order-server
    /// log init-key` for a data directory made before the audit log).
    /// Default: [`DEFAULT_LOG_KEY_FILE`] in the data directory.
    #[serde(default)]
    pub audit_log_key: Option<PathBuf>,
    /// The audit log's origin line. The key's name is the origin, fixed
    /// when the key is made; when set, the server refuses to start with a
    /// key made for another origin.
    #[serde(default)]
    pub audit_origin: Option<String>,
    /// Address of the read-only HTTP endpoint serving the audit log's
    /// `checkpoint` and `tile/...`; none when absent.
    #[serde(default)]
    pub audit_listen: Option<SocketAddr>,
    /// Seconds between two signed checkpoints of the audit log (one is
    /// signed only when the log has grown).
    #[serde(default = "default_checkpoint_seconds")]
    pub audit_checkpoint_seconds: u64,
    /// The witness key file (made by `order-server init`, or `order-server
    /// log init-key` for an older data directory). Default:
    /// [`crate::witness::WITNESS_KEY_FILE`] in the data directory.
    #[serde(default)]
    pub audit_witness_key: Option<PathBuf>,
    /// The peers this server witnesses and is witnessed by.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
}

/// A peer of the witnessing: another order server, or a public witness.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPeer")]
pub struct PeerConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Where its witness takes `add-checkpoint` (`<url>/add-checkpoint`):
    /// its `audit_listen`, as `http://host:port`.
    pub url: Option<HttpUrl>,
    /// Its audit log's verifier key (`<origin>+<key id>+<base64>`): when
    /// set, this server witnesses that log.
    pub log_key: Option<Ed25519Verifier>,
    /// Its witness's cosigner key (`<name>+<key id>+<base64>`, type
    /// `0x04`): when set, this server submits its checkpoints to it.
    pub witness_key: Option<CosignatureVerifier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    log_key: Option<String>,
    #[serde(default)]
    witness_key: Option<String>,
}

impl TryFrom<RawPeer> for PeerConfig {
    type Error = String;

    fn try_from(raw: RawPeer) -> Result<Self, String> {
        let name = raw.name;
        let bad = |what: &str, why: String| format!("peer {name:?}: {what}: {why}");
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            return Err(format!(
                "peer {name:?}: name must be 1 to 64 characters without control characters"
            ));
        }
        let url = raw
            .url
            .as_deref()
            .map(HttpUrl::parse)
            .transpose()
            .map_err(|e| bad("url", e))?;
        let log_key = raw
            .log_key
            .as_deref()
            .map(|k| Ed25519Verifier::from_vkey(k.trim()))
            .transpose()
            .map_err(|e| bad("log_key", e.to_string()))?;
        let witness_key = raw
            .witness_key
            .as_deref()
            .map(|k| CosignatureVerifier::from_vkey(k.trim()))
            .transpose()
            .map_err(|e| bad("witness_key", e.to_string()))?;
        if log_key.is_none() && witness_key.is_none() {
            return Err(format!(
                "peer {name:?}: set log_key (to witness its log), witness_key (to be witnessed \
                 by it), or both"
            ));
        }
        if witness_key.is_some() && url.is_none() {
            return Err(format!(
                "peer {name:?}: witness_key is set but url is not: checkpoints are submitted to \
                 <url>/add-checkpoint"
            ));
        }
        Ok(Self {
            name,
            url,
            log_key,
            witness_key,
        })
    }
}

fn default_checkpoint_seconds() -> u64 {
    10
}

fn default_max_request_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_queue() -> usize {
    4096
}

fn default_commit_gather_us() -> u64 {
    0
}

fn default_commit_gather_items() -> usize {
    64
}

fn default_grace() -> u64 {
    10
}

fn default_log() -> String {
    "info".to_owned()
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path of the configuration file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is too large to be a configuration file.
    #[error("{path} is {size} bytes; a configuration file is at most {MAX_CONFIG_BYTES}")]
    TooLarge {
        /// The path of the configuration file.
        path: PathBuf,
        /// Its size, in bytes.
        size: u64,
    },
    /// The file is not valid TOML for this configuration.
    #[error("{path}: {message}")]
    Parse {
        /// The path of the configuration file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A limit is out of range.
    #[error(transparent)]
    Limit(#[from] LimitOutOfRange),
    /// The peers are not a usable set.
    #[error("peers: {0}")]
    Peer(String),
    /// A value is out of range.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// The configuration key, such as `max_request_bytes`.
        key: &'static str,
        /// The value the file sets, as written.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Config {
    /// Parses configuration text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path, path: &Path) -> Result<Self, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        c.data_dir = base.join(&c.data_dir);
        c.rollback_anchor = c.rollback_anchor.map(|a| base.join(a));
        c.router_certificate = base.join(&c.router_certificate);
        c.audit_log_key = c.audit_log_key.map(|k| base.join(k));
        c.audit_witness_key = c.audit_witness_key.map(|k| base.join(k));
        let mut names = std::collections::HashSet::new();
        let mut origins = std::collections::HashSet::new();
        for p in &c.peers {
            if !names.insert(p.name.clone()) {
                return Err(ConfigError::Peer(format!(
                    "peer name {:?} appears twice",
                    p.name
                )));
            }
            if let Some(k) = &p.log_key
                && !origins.insert(grompi_tlog::note::NoteVerifier::name(k).to_owned())
            {
                return Err(ConfigError::Peer(format!(
                    "peer {:?}: another peer's log_key has the same origin",
                    p.name
                )));
            }
        }
        if c.audit_listen.is_none() && c.peers.iter().any(|p| p.log_key.is_some()) {
            return Err(ConfigError::Peer(
                "peers with log_key are witnessed here, over audit_listen, which is not set".into(),
            ));
        }
        if !(1..=3600).contains(&c.audit_checkpoint_seconds) {
            return Err(ConfigError::Invalid {
                key: "audit_checkpoint_seconds",
                value: c.audit_checkpoint_seconds.to_string(),
                reason: "must be between 1 and 3600",
            });
        }
        c.limits.validate()?;
        if !(64 * 1024..=1 << 30).contains(&c.max_request_bytes) {
            return Err(ConfigError::Invalid {
                key: "max_request_bytes",
                value: c.max_request_bytes.to_string(),
                reason: "must be between 65536 and 1073741824",
            });
        }
        if c.queue == 0 {
            return Err(ConfigError::Invalid {
                key: "queue",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if c.commit_gather_us > 100_000 {
            return Err(ConfigError::Invalid {
                key: "commit_gather_us",
                value: c.commit_gather_us.to_string(),
                reason: "must be at most 100000 (0.1 s): every answer of a batch waits for it",
            });
        }
        if c.commit_gather_items == 0 {
            return Err(ConfigError::Invalid {
                key: "commit_gather_items",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        Ok(c)
    }

    /// The writer's gathering window.
    pub fn gather(&self) -> crate::committer::Gather {
        crate::committer::Gather {
            window: std::time::Duration::from_micros(self.commit_gather_us),
            items: self.commit_gather_items,
        }
    }

    /// Where the rollback anchor is.
    pub fn anchor_path(&self) -> PathBuf {
        self.rollback_anchor
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_ANCHOR_FILE))
    }

    /// Where the audit log key is.
    pub fn log_key_path(&self) -> PathBuf {
        self.audit_log_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_LOG_KEY_FILE))
    }

    /// Where the witness key is.
    pub fn witness_key_path(&self) -> PathBuf {
        self.audit_witness_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::witness::WITNESS_KEY_FILE))
    }

    /// Reads and parses the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                size,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults_and_resolved_paths() {
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nrouter_certificate = \"/etc/r.crt\"\n",
            Path::new("/srv/order"),
            Path::new("order.toml"),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/order/data"));
        assert_eq!(c.router_certificate, PathBuf::from("/etc/r.crt"));
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.metrics_listen, None);
        assert_eq!(
            c.log_key_path(),
            PathBuf::from("/srv/order/data/audit-log.key")
        );
        assert_eq!((c.audit_listen, c.audit_checkpoint_seconds), (None, 10));
        assert_eq!(
            c.anchor_path(),
            PathBuf::from("/srv/order/data/order.anchor")
        );
        let c = Config::parse(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nrouter_certificate = \"r\"\n\
             rollback_anchor = \"../anchor/a\"\n",
            Path::new("/srv/order"),
            Path::new("order.toml"),
        )
        .unwrap();
        assert_eq!(c.anchor_path(), PathBuf::from("/srv/order/../anchor/a"));
    }

    #[test]
    fn peers_are_parsed_and_checked() {
        use grompi_tlog::cosignature::CosignatureSigner;
        use grompi_tlog::note::Ed25519Signer;
        let log = Ed25519Signer::from_seed("o1.example/log", &[1; 32])
            .unwrap()
            .verifier()
            .vkey();
        let wit = CosignatureSigner::from_seed("o1.example/log/witness", &[2; 32])
            .unwrap()
            .verifier()
            .vkey();
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nrouter_certificate = \"r\"\n\
                    audit_listen = \"127.0.0.1:0\"\n";
        let peer = |body: &str| {
            Config::parse(
                &format!("{base}[[peers]]\nname = \"o1\"\n{body}"),
                Path::new("/srv"),
                Path::new("o.toml"),
            )
        };
        let c = peer(&format!(
            "url = \"http://127.0.0.1:7480/w\"\nlog_key = \"{log}\"\nwitness_key = \"{wit}\"\n"
        ))
        .unwrap();
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].url.as_ref().unwrap().authority, "127.0.0.1:7480");
        assert_eq!(c.peers[0].log_key.as_ref().unwrap().vkey(), log);
        assert_eq!(c.witness_key_path(), PathBuf::from("/srv/d/witness.key"));
        for (body, says) in [
            (String::new(), "set log_key"),
            (format!("witness_key = \"{wit}\"\n"), "url is not"),
            (format!("log_key = \"{wit}\"\n"), "log_key"),
            (
                format!("witness_key = \"{log}\"\nurl = \"http://a:1\"\n"),
                "witness_key",
            ),
            (
                format!("log_key = \"{log}\"\nurl = \"https://a:1\"\n"),
                "url",
            ),
            (format!("log_key = \"{log}\"\nextra = 1\n"), "extra"),
        ] {
            let err = peer(&body).unwrap_err().to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
        // Two peers of one name; a witnessed log without audit_listen.
        let two = format!(
            "{base}[[peers]]\nname = \"o1\"\nlog_key = \"{log}\"\n[[peers]]\nname = \"o1\"\n\
             witness_key = \"{wit}\"\nurl = \"http://a:1\"\n"
        );
        let err = Config::parse(&two, Path::new("."), Path::new("o")).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        let no_listen = format!("{base}[[peers]]\nname = \"o1\"\nlog_key = \"{log}\"\n")
            .replace("audit_listen = \"127.0.0.1:0\"\n", "");
        let err = Config::parse(&no_listen, Path::new("."), Path::new("o")).unwrap_err();
        assert!(err.to_string().contains("audit_listen"), "{err}");
    }

    #[test]
    fn typos_and_loose_limits_are_refused_with_the_key_named() {
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nrouter_certificate = \"r\"\n";
        let err = Config::parse(
            &format!("{base}lisen = 1\n"),
            Path::new("."),
            Path::new("o.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = Config::parse(
            &format!("{base}[limits]\nmax_slots = 5000\n"),
            Path::new("."),
            Path::new("o.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("limits.max_slots"), "{err}");
        let err = Config::parse(
            &format!("{base}audit_checkpoint_seconds = 0\n"),
            Path::new("."),
            Path::new("o.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("audit_checkpoint_seconds"),
            "{err}"
        );
    }

    #[test]
    fn the_gathering_window_is_off_by_default_and_bounded() {
        let base = "listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nrouter_certificate = \"r\"\n";
        let parse = |extra: &str| {
            Config::parse(
                &format!("{base}{extra}"),
                Path::new("."),
                Path::new("o.toml"),
            )
        };
        let c = parse("").unwrap();
        assert!(c.gather().window.is_zero(), "on by default");
        assert_eq!(c.gather().items, 64);
        let c = parse("commit_gather_us = 3000\ncommit_gather_items = 32\n").unwrap();
        assert_eq!(
            c.gather(),
            crate::committer::Gather {
                window: std::time::Duration::from_micros(3000),
                items: 32,
            }
        );
        let err = parse("commit_gather_us = 100001\n").unwrap_err();
        assert!(err.to_string().contains("commit_gather_us"), "{err}");
        let err = parse("commit_gather_items = 0\n").unwrap_err();
        assert!(err.to_string().contains("commit_gather_items"), "{err}");
    }
}
