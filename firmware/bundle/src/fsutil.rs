//! Streaming hashes and crash-safe writes.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{BundleError, Result};
use crate::hex::to_hex;

/// The sha256 of a file (lowercase hex) and its length in bytes, read in 64 KiB blocks.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<(String, u64)> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| BundleError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BundleError::io(path, e)),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((to_hex(&hasher.finalize()), bytes))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// `<path>.tmp` is written and synced, renamed over `path`, then the directory is synced.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(|e| BundleError::io(&tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| BundleError::io(&tmp, e))?;
        file.sync_all().map_err(|e| BundleError::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| BundleError::io(path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

/// Syncs the directory holding `path` so a rename in it is durable (a no-op where directories
/// cannot be opened, as on Windows).
fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    {
        let d = File::open(dir).map_err(|e| BundleError::io(dir, e))?;
        d.sync_all().map_err(|e| BundleError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
