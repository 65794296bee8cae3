//! Files that hold secrets: written atomically with mode `0600`, refused on
//! read if anyone but the owner may read them.
//!
//! A write goes to a temporary file in the same directory, which is fsynced
//! and then renamed over the target; the directory is fsynced after the
//! rename. A crash at any point leaves either the old file or the new one,
//! never a torn one. Public files that must survive a power loss as much
//! (certificates) are written the same way ([`write_public`]), and data
//! directories are created durably ([`create_dir_durably`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Largest secret file accepted by [`read_secret`], in bytes.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a secret file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// An I/O operation on the file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// The step that failed (`create`, `write`, `fsync`, `rename into place`, ...).
        action: &'static str,
        /// What it was done on: the target, its temporary file, or the directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file may be read by users other than its owner.
    #[error(
        "{path} has mode {mode:o}; a secret file must not be readable by group or others (chmod 600)"
    )]
    TooOpen {
        /// The refused secret file.
        path: PathBuf,
        /// Its permission bits (`mode & 0o777`), with some group or other bit set.
        mode: u32,
    },
    /// The file is larger than any secret this project writes.
    #[error("{path} is {size} bytes, more than the {max} a secret file may hold")]
    TooLarge {
        /// The refused secret file.
        path: PathBuf,
        /// Its size in bytes, from its metadata.
        size: u64,
        /// The limit, [`MAX_SECRET_FILE_BYTES`].
        max: u64,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SecretFileError + 'a {
    move |source| SecretFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path` atomically with mode `0600`: temporary file,
/// fsync, rename, fsync of the directory.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    write_durably(path, contents, 0o600)
}

/// Writes a public file (a certificate) the way [`write_secret`] writes a
/// secret one, with mode `0644`: durable once this returns, never torn.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    write_durably(path, contents, 0o644)
}

/// Creates the directory `dir` (and missing parents) with mode `mode`
/// (less the umask), and makes each new entry durable: the directory that
/// holds it is fsynced, so that a power loss right after cannot lose a
/// directory whose files were made durable inside it.
pub fn create_dir_durably(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut created = Vec::new();
    let mut p = dir;
    while !p.exists() {
        created.push(p.to_path_buf());
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q,
            _ => break,
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    for d in created.iter().rev() {
        let parent = match d.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn write_durably(path: &Path, contents: &[u8], mode: u32) -> Result<(), SecretFileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        // The mode given to open is filtered by the umask only towards fewer
        // permissions, but an existing temporary file keeps its mode: set it.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &tmp))?;
        f.write_all(contents).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync directory", &dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a secret file written by [`write_secret`]. Refuses files that
/// group or others may read, and files larger than
/// [`MAX_SECRET_FILE_BYTES`].
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let meta = f.metadata().map_err(io_err("stat", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            max: MAX_SECRET_FILE_BYTES,
        });
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    f.read_to_end(&mut buf).map_err(io_err("read", path))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        write_secret(&p, b"first").unwrap();
        write_secret(&p, b"second").unwrap();
        assert_eq!(&read_secret(&p).unwrap()[..], b"second");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn public_files_and_directories_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_dir_durably(&d, 0o700).unwrap();
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        create_dir_durably(&d, 0o700).unwrap(); // already there: fine
        let p = d.join("cert");
        write_public(&p, b"pem").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"pem");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        write_secret(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&p).unwrap_err();
        assert!(
            matches!(err, SecretFileError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent");
        let err = read_secret(&p).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
