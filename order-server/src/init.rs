//! `order-server init`: creates a data directory with a fresh long-term
//! key, its database and TLS material, and says what to put in the network
//! descriptor.
//!
//! | file | contents |
//! |---|---|
//! | `order-server.key` | the X25519 secret key, hex, mode `0600` |
//! | `audit-log.key` | the audit log's Ed25519 signer key ([`crate::audit_log`]), mode `0600` |
//! | `witness.key` | the witness's Ed25519 cosigner key ([`crate::witness`]), mode `0600` |
//! | `order.redb`, `order.wal` | the database (recording the key's public half) and its write-ahead log |
//! | `tls.crt` | the self-signed TLS certificate the router pins |
//! | `tls.key` | its private key, mode `0600` |
//!
//! An existing key is never overwritten: a new key would make every tag the
//! server ever issued unverifiable. `init` is the only command that creates
//! a database: `serve` refuses a key without one, since that key has
//! attested before and an empty database would let it attest a different
//! envelope at an index it already attested. The database is created
//! before the key is written, so a key never exists without its database.

use crate::redb_store::RedbStore;
use grompi_ops::secret_file::{self, SecretFileError};
use grompi_ops::tls::{TlsError, TlsIdentity};
use grompi_proto::{OrderServerKey, OrderServerSecret};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// File name of the long-term key in the data directory.
pub const KEY_FILE: &str = "order-server.key";
/// Stem of the TLS files (`tls.crt`, `tls.key`) in the data directory.
pub const TLS_STEM: &str = "tls";
/// File name of the database in the data directory.
pub const DB_FILE: &str = "order.redb";
/// File the server writes its bound addresses to (the name both servers
/// share, defined in ops).
pub use grompi_ops::bound_addrs::BOUND_ADDRS_FILE;

/// Why initialisation or loading the key failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The data directory already holds a key.
    #[error("{0} already exists; refusing to replace an order server key")]
    KeyExists(PathBuf),
    /// The data directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The data directory that could not be created.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The key file could not be written or read.
    #[error(transparent)]
    Secret(#[from] SecretFileError),
    /// The key file does not hold a key.
    #[error("{path}: {reason}")]
    BadKey {
        /// The path of the key file that holds no usable key.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// TLS material could not be generated or written.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A database is already there, without a key.
    #[error(
        "{0} already exists but there is no key next to it; refusing to create a database \
         over it. If an earlier init was interrupted, no key of it was ever used: remove \
         {0}, its .wal file and audit-log.key, and run init again"
    )]
    DatabaseExists(PathBuf),
    /// The database could not be created.
    #[error("cannot create the database: {0}")]
    Database(#[from] crate::store::StoreError),
    /// The audit log key could not be created.
    #[error("audit log key: {0}")]
    AuditKey(#[from] crate::audit_log::AuditError),
    /// The witness key could not be created.
    #[error("witness key: {0}")]
    WitnessKey(#[from] crate::witness::WitnessError),
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct Initialised {
    /// The public key to pin in the network descriptor.
    pub public_key: OrderServerKey,
    /// The certificate the router pins to reach this server.
    pub certificate: PathBuf,
    /// The audit log's verifier key, `<origin>+<key id>+<base64>`.
    pub log_key: String,
    /// The witness's cosigner verifier key, `<name>+<key id>+<base64>`.
    pub witness_key: String,
}

/// Creates `data_dir` (mode `0700`) with a fresh key from the operating
/// system's random generator, its database, and a TLS certificate for
/// `tls_names` (or `localhost` and `127.0.0.1`).
pub fn init(data_dir: &Path, tls_names: &[String]) -> Result<Initialised, InitError> {
    init_with_origin(data_dir, tls_names, None)
}

/// [`init`], with the audit log's origin line (default:
/// [`crate::audit_log::default_origin`]).
pub fn init_with_origin(
    data_dir: &Path,
    tls_names: &[String],
    log_origin: Option<&str>,
) -> Result<Initialised, InitError> {
    let key_path = data_dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(InitError::KeyExists(key_path));
    }
    let mkdir = |source| InitError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    };
    let db_path = data_dir.join(DB_FILE);
    let log_key_path = data_dir.join(crate::audit_log::LOG_KEY_FILE);
    if db_path.exists() || grompi_ops::wal::path_for(&db_path).exists() || log_key_path.exists() {
        return Err(InitError::DatabaseExists(db_path));
    }
    // Durably: the files below are synced inside it, and a power loss
    // must not take the directory (and with it the key) away.
    secret_file::create_dir_durably(data_dir, 0o700).map_err(mkdir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(mkdir)?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::fill(&mut bytes[..]);
    let secret = OrderServerSecret::from_bytes(*bytes);
    let hex = Zeroizing::new(format!("{}\n", hex::encode(&bytes[..])));
    let identity = TlsIdentity::generate(tls_names)?;
    // The database first (closed again at once), then the key.
    drop(RedbStore::create(&db_path, &secret.public_key())?);
    identity.write_to(data_dir, TLS_STEM)?;
    let origin = log_origin
        .map(str::to_owned)
        .unwrap_or_else(|| crate::audit_log::default_origin(&secret.public_key()));
    let log_key = crate::audit_log::create_key(&log_key_path, &origin)?;
    let witness_path = data_dir.join(crate::witness::WITNESS_KEY_FILE);
    let witness_key = match crate::witness::load_key(&witness_path) {
        // Left by an interrupted init: no cosignature of it was used yet.
        Ok(k) => k.verifier(),
        Err(_) => {
            let _ = std::fs::remove_file(&witness_path);
            crate::witness::create_key(&witness_path, &crate::witness::default_name(&origin))?
        }
    };
    secret_file::write_secret(&key_path, hex.as_bytes())?;
    Ok(Initialised {
        public_key: secret.public_key(),
        certificate: TlsIdentity::cert_path(data_dir, TLS_STEM),
        log_key: log_key.vkey(),
        witness_key: witness_key.vkey(),
    })
}

/// Reads the long-term key from `data_dir`.
pub fn load_secret(data_dir: &Path) -> Result<OrderServerSecret, InitError> {
    let path = data_dir.join(KEY_FILE);
    let text = secret_file::read_secret(&path)?;
    let bad = |reason| InitError::BadKey {
        path: path.clone(),
        reason,
    };
    let trimmed = std::str::from_utf8(&text)
        .map_err(|_| bad("not text"))?
        .trim();
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(trimmed, &mut bytes[..])
        .map_err(|_| bad("expected 64 hex digits (32 bytes)"))?;
    Ok(OrderServerSecret::from_bytes(*bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_loadable_key_and_never_overwrites_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let out = init(&d, &[]).unwrap();
        assert_eq!(load_secret(&d).unwrap().public_key(), out.public_key);
        assert!(out.certificate.exists());
        let log_key =
            crate::audit_log::load_key(&d.join(crate::audit_log::LOG_KEY_FILE), None).unwrap();
        assert_eq!(log_key.verifier().vkey(), out.log_key);
        let witness = crate::witness::load_key(&d.join(crate::witness::WITNESS_KEY_FILE)).unwrap();
        assert_eq!(witness.verifier().vkey(), out.witness_key);
        assert_eq!(witness.name(), format!("{}/witness", log_key.name()));
        assert_eq!(
            log_key.name(),
            crate::audit_log::default_origin(&out.public_key)
        );
        TlsIdentity::read_from(&d, TLS_STEM).unwrap();
        let mode = std::fs::metadata(d.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(init(&d, &[]), Err(InitError::KeyExists(_))));
        assert_eq!(load_secret(&d).unwrap().public_key(), out.public_key);
    }

    /// What `serve` says when it refuses to start over `data_dir`.
    async fn serve_refusal(data_dir: &Path) -> String {
        let text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nrouter_certificate = \"{}\"\n",
            data_dir.display(),
            TlsIdentity::cert_path(data_dir, TLS_STEM).display()
        );
        let config =
            crate::config::Config::parse(&text, data_dir, &data_dir.join("order.toml")).unwrap();
        crate::server::serve_until(config, std::future::pending())
            .await
            .err()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn init_creates_the_database_and_serve_refuses_a_key_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let out = init(&d, &[]).unwrap();
        let db = d.join(DB_FILE);
        // The database records the key it was created for.
        {
            let store = RedbStore::open_existing(&db, None).unwrap();
            store.check_server_key(&out.public_key).unwrap();
            let other = OrderServerSecret::from_bytes([9; 32]).public_key();
            assert!(store.check_server_key(&other).is_err());
        }
        // The data directory restored with the key but without the database.
        std::fs::remove_file(&db).unwrap();
        std::fs::remove_file(grompi_ops::wal::path_for(&db)).unwrap();
        let text = serve_refusal(&d).await;
        assert!(text.contains("does not exist"), "{text}");
        assert!(text.contains("retire this key"), "{text}");
        assert!(!db.exists(), "serve created a database");
        // And a zeroed log next to the database.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        init(&d, &[]).unwrap();
        let log = grompi_ops::wal::path_for(&d.join(DB_FILE));
        let len = std::fs::metadata(&log).unwrap().len() as usize;
        std::fs::write(&log, vec![0u8; len.max(64)]).unwrap();
        let text = serve_refusal(&d).await;
        assert!(text.contains("zeros where its header belongs"), "{text}");
    }

    #[test]
    fn init_refuses_a_database_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        init(&d, &[]).unwrap();
        std::fs::remove_file(d.join(KEY_FILE)).unwrap();
        let err = init(&d, &[]).unwrap_err();
        assert!(matches!(err, InitError::DatabaseExists(_)), "{err}");
        assert!(err.to_string().contains("no key next to it"), "{err}");
        assert!(!d.join(KEY_FILE).exists());
    }

    #[test]
    fn a_damaged_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        secret_file::write_secret(&dir.path().join(KEY_FILE), b"xyz").unwrap();
        let err = load_secret(dir.path()).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
