//! Corpus and crash directories: one directory per target, one input per
//! file, named after a hash of its content unless a seed name is given.

use std::fs;
use std::path::{Path, PathBuf};

/// Why a corpus directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CorpusError + '_ {
    move |source| CorpusError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The default root of the corpora (`fuzz/corpus`).
pub fn default_corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The default root of saved crashes (`fuzz/crashes`).
pub fn default_crash_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crashes")
}

/// FNV-1a, 64 bits: a stable name for an input.
pub fn content_name(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Every file in `dir` (sorted by name; a missing directory is empty).
pub fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, CorpusError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io(dir)))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.is_file());
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).map_err(io(&p))?;
            Ok((p, bytes))
        })
        .collect()
}

/// Writes `bytes` into `dir` as `name` (or its content name); returns the
/// path, or `None` when an identical file was already there.
pub fn save(dir: &Path, name: Option<&str>, bytes: &[u8]) -> Result<Option<PathBuf>, CorpusError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(name.map_or_else(|| content_name(bytes), str::to_owned));
    if fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(None);
    }
    fs::write(&path, bytes).map_err(io(&path))?;
    Ok(Some(path))
}
