//! Where the store secret comes from: a key file or GROMPI_PASSPHRASE.

use grompi_client::local_store::StoreSecret;
use std::path::Path;
use zeroize::Zeroizing;

/// The environment variable holding the passphrase.
pub const PASSPHRASE_ENV: &str = "GROMPI_PASSPHRASE";

/// Reads the store secret. With `create`, a missing key file is created
/// with 32 fresh random bytes (mode 0600).
pub fn load(key_file: Option<&Path>, create: bool) -> Result<StoreSecret, String> {
    if let Some(path) = key_file {
        if create && !path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::Rng::fill_bytes(&mut rand::rng(), &mut key[..]);
            write_private(path, hex::encode(&key[..]).as_bytes())?;
            return Ok(StoreSecret::KeyFile(key));
        }
        check_private(path)?;
        let text = Zeroizing::new(
            std::fs::read(path).map_err(|e| format!("read key file {}: {e}", path.display()))?,
        );
        let trimmed: Vec<u8> = text
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let trimmed = Zeroizing::new(trimmed);
        let mut key = Zeroizing::new([0u8; 32]);
        if trimmed.len() == 64 {
            hex::decode_to_slice(&trimmed[..], &mut key[..])
                .map_err(|_| format!("key file {} is not 64 hex digits", path.display()))?;
        } else if text.len() == 32 {
            key.copy_from_slice(&text[..]);
        } else {
            return Err(format!(
                "key file {} must hold 32 bytes as 64 hex digits",
                path.display()
            ));
        }
        return Ok(StoreSecret::KeyFile(key));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(p) if !p.is_empty() => Ok(StoreSecret::Passphrase(Zeroizing::new(p))),
        _ => Err(format!(
            "no store secret: set {PASSPHRASE_ENV} to your passphrase or pass --key-file FILE"
        )),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("create key file {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write key file {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("write key file {}: {e}", path.display()))
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "key file {} is readable by others; run `chmod 600` on it",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), String> {
    Ok(())
}
