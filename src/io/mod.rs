//! Files: `.npy` arrays ([`npy`]) and model directories (safetensors weights beside a
//! JSON config). Every write goes to a temporary name in the target's folder and is
//! renamed into place, so a reader never sees half a file (contract 7).

pub mod model;
pub mod npy;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically: to `PATH.tmp-<pid>` in the same folder, flushed
/// to disk, then renamed over `path`. On failure the temporary file is removed and
/// `path` is untouched.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

/// `PATH.tmp-<pid>`: the temporary name [`write_atomic`] writes before renaming.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(name)
}
