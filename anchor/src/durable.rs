//! Files written so that a crash leaves either the old bytes or the new,
//! never a mix, and the new bytes are on disk before the call returns
//! (tiles before the checkpoint that covers them; keys; state files).

use std::io::Write;
use std::path::Path;

use crate::Error;

/// A storage error naming the path.
pub(crate) fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Store(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` via a temporary name and a rename (readers
/// never see a partial file), fsync'ing the bytes and then the directory
/// entry.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_error(parent, e))?;
    }
    Ok(())
}
