//! Files that hold secrets (signing keys, bearer tokens, passwords, TLS
//! private keys) are read only when nobody but their owner can read them:
//! a key that group or others can read is a key that has already leaked,
//! and the gateway refuses to start rather than use it.

use std::path::Path;

use crate::error::ConfigError;

/// Reads a secret file's bytes after checking its permissions.
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    check_private(path, what)?;
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a secret file as text (trimmed) after checking its permissions.
pub fn read_text(path: &Path, what: &str) -> Result<String, ConfigError> {
    let bytes = read(path, what)?;
    String::from_utf8(bytes)
        .map(|text| text.trim().to_owned())
        .map_err(|_| ConfigError::Invalid(format!("{what} ({}) is not UTF-8", path.display())))
}

/// Refuses a file that group or others may read or write (Unix modes):
/// the ledger's rule for its signing key (`ledger::log`), applied here.
pub fn check_private(path: &Path, what: &str) -> Result<(), ConfigError> {
    match ledger::log::shared_secret_file(path, what) {
        Ok(None) => Ok(()),
        Ok(Some(problem)) => Err(ConfigError::Invalid(problem)),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_owner_only_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "secret\n").unwrap();
        for (mode, readable) in [
            (0o600, true),
            (0o400, true),
            (0o700, true),
            (0o640, false),
            (0o604, false),
            (0o644, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let answer = super::read_text(&path, "the test token");
            assert_eq!(answer.is_ok(), readable, "mode {mode:o}: {answer:?}");
            if readable {
                assert_eq!(answer.unwrap(), "secret");
            } else {
                assert!(answer.unwrap_err().to_string().contains("chmod 600"));
            }
        }
    }
}
