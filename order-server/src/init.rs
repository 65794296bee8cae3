//! `order-server init`: creates a data directory with a fresh long-term
//! key and TLS material, and says what to put in the network descriptor.
//!
//! | file | contents |
//! |---|---|
//! | `order-server.key` | the X25519 secret key, hex, mode `0600` |
//! | `tls.crt` | the self-signed TLS certificate the router pins |
//! | `tls.key` | its private key, mode `0600` |
//!
//! An existing key is never overwritten: a new key would make every tag the
//! server ever issued unverifiable.

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
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct Initialised {
    /// The public key to pin in the network descriptor.
    pub public_key: OrderServerKey,
    /// The certificate the router pins to reach this server.
    pub certificate: PathBuf,
}

/// Creates `data_dir` (mode `0700`) with a fresh key from the operating
/// system's random generator and a TLS certificate for `tls_names` (or
/// `localhost` and `127.0.0.1`).
pub fn init(data_dir: &Path, tls_names: &[String]) -> Result<Initialised, InitError> {
    let key_path = data_dir.join(KEY_FILE);
    if key_path.exists() {
        return Err(InitError::KeyExists(key_path));
    }
    let mkdir = |source| InitError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(mkdir)?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(mkdir)?;
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::fill(&mut bytes[..]);
    let secret = OrderServerSecret::from_bytes(*bytes);
    let hex = Zeroizing::new(format!("{}\n", hex::encode(&bytes[..])));
    let identity = TlsIdentity::generate(tls_names)?;
    identity.write_to(data_dir, TLS_STEM)?;
    secret_file::write_secret(&key_path, hex.as_bytes())?;
    Ok(Initialised {
        public_key: secret.public_key(),
        certificate: TlsIdentity::cert_path(data_dir, TLS_STEM),
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

    #[test]
    fn a_damaged_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        secret_file::write_secret(&dir.path().join(KEY_FILE), b"xyz").unwrap();
        let err = load_secret(dir.path()).unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
    }
}
