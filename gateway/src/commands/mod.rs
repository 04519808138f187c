//! The `inkan` subcommands other than `serve`.

pub mod anchors;
pub mod audit;
pub mod ledger;
pub mod verify;

use std::path::PathBuf;

/// Why a command failed. `inkan audit` and `inkan backfill` exit 2 for
/// any of these except [`CommandError::Paused`] (3).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The configuration or a file it names.
    #[error(transparent)]
    Config(#[from] crate::error::ConfigError),
    /// The ledger refused or failed (a bad bundle, a storage error).
    #[error(transparent)]
    Ledger(#[from] ::ledger::Error),
    /// Reading the upstream failed.
    #[error(transparent)]
    Upstream(#[from] crate::upstream::ReadError),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A JSON file that is not what it should be.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// What the user handed in is not usable, in words.
    #[error("{0}")]
    Input(String),
    /// `--max-pages` reached: not a failure, the sweep continues next run.
    #[error("paused after {versions} versions; progress saved in {}; run the same command again to continue", state_file.display())]
    Paused { state_file: PathBuf, versions: u64 },
}

impl From<String> for CommandError {
    fn from(reason: String) -> Self {
        CommandError::Input(reason)
    }
}

impl From<&str> for CommandError {
    fn from(reason: &str) -> Self {
        CommandError::Input(reason.to_owned())
    }
}
