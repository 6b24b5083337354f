//! An on-disk cache of decoded image folders: the fitted `u8` pixels of every file,
//! keyed by the model input and each file's path, size and modification time, so a
//! rebuild reads one file instead of decoding thousands. Under `$QATC_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/qatc/images`, else `~/.cache/qatc/images`; a cache that cannot be
//! read or written is only slower, never an error.

use std::path::{Path, PathBuf};

use super::fit::Target;

fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("QATC_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("qatc").join("images"))
}

/// The cache file for `files` fitted to `target`, or `None` when a file's metadata
/// cannot be read (then nothing is cached).
pub(super) fn path(files: &[PathBuf], target: Target) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!(
        "v1 {} {} {}\n",
        target.channels, target.rows, target.cols
    ));
    for file in files {
        let meta = std::fs::metadata(file).ok()?;
        let modified = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        h.update(file.to_string_lossy().as_bytes());
        h.update(format!(" {} {}\n", meta.len(), modified.as_nanos()).as_bytes());
    }
    let key: String = h
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(dir()?.join(format!("{key}.u8")))
}

/// The cached pixels, when the file exists and has exactly `len` bytes.
pub(super) fn read(path: &Path, len: usize) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() != len as u64 {
        return None;
    }
    std::fs::read(path).ok().filter(|b| b.len() == len)
}

/// Stores `pixels` atomically (a partial file is never read: it has the wrong size, and
/// it is renamed into place only when complete).
pub(super) fn write(path: &Path, pixels: &[u8]) {
    let Some(parent) = path.parent() else { return };
    if std::fs::create_dir_all(parent).is_err() {
        return;
    }
    let _ = crate::report::write_atomic_bytes(path, pixels);
}
