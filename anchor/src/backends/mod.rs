//! Anchor backends: where signed checkpoints are sent so that people who do
//! not trust the hospital's key can still rely on them.
//!
//! Only checkpoints (origin, size, root) ever leave the ledger, never
//! health data.

#[cfg(feature = "http")]
pub mod evm;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub mod rfc3161;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::store::StoredCheckpoint;
use crate::Error;

/// A URL for logs, errors and status output: scheme, host, port and path
/// only — no `user:password@`, no query, no fragment (RPC and TSA URLs
/// often carry API keys there).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, rest) = rest.split_at(authority_end);
    let host = authority.rsplit('@').next().unwrap_or("");
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok || host.is_empty() || host.contains(char::is_whitespace) {
        return "<unparseable URL>".into();
    }
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    format!("{}://{host}{path}", scheme.to_ascii_lowercase())
}

/// A place checkpoints are anchored.
///
/// Obligations of every implementation:
/// - `anchor` MUST be idempotent for the same checkpoint: anchoring a
///   checkpoint twice returns an equivalent receipt and does not anchor it
///   a second time where the backend can tell.
/// - It MAY be slow (a chain confirmation takes minutes) and so MUST NOT be
///   called while holding a lock that appends wait on.
/// - A returned receipt MUST be durable at the backend (the local file is
///   fsync'd; a TSA token is self-contained; a transaction is mined).
/// - On error nothing is assumed anchored; the caller keeps the checkpoint
///   and retries later with backoff. A backend never loses a checkpoint by
///   failing.
/// - Receipts are strings (JSON) stored beside the checkpoint and copied
///   into proof bundles.
pub trait AnchorBackend: Send + Sync + std::fmt::Debug {
    /// A stable backend name (`local`, `rfc3161`, `evm`).
    fn name(&self) -> &str;
    /// Anchors `checkpoint`; returns the receipt.
    fn anchor(&self, checkpoint: &StoredCheckpoint) -> Result<String, Error>;
    /// The least time between two anchorings (the latest checkpoint covers
    /// every earlier one through consistency). Zero: every checkpoint.
    fn interval(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

pub use crate::note::note_digest;

/// The `local` backend: one line per anchored checkpoint in an append-only
/// file (`<size> <sha256 of the signed note> <unix seconds>`), fsync'd.
#[derive(Debug)]
pub struct LocalFileAnchor {
    path: PathBuf,
    lock: Mutex<()>,
}

impl LocalFileAnchor {
    /// A `local` backend writing to the file at `path` (created at the first
    /// anchoring).
    pub fn new(path: PathBuf) -> LocalFileAnchor {
        LocalFileAnchor {
            path,
            lock: Mutex::new(()),
        }
    }

    fn receipt(line: usize, size: u64, digest: &str) -> String {
        serde_json::json!({"file": "anchors.log", "line": line, "size": size, "checkpointSha256": digest}).to_string()
    }
}

impl AnchorBackend for LocalFileAnchor {
    fn name(&self) -> &str {
        "local"
    }

    fn anchor(&self, checkpoint: &StoredCheckpoint) -> Result<String, Error> {
        let _guard = self
            .lock
            .lock()
            .map_err(|_| Error::Store("anchor lock poisoned".into()))?;
        let digest = note_digest(&checkpoint.note);
        let mut lines = 0;
        if let Ok(file) = std::fs::File::open(&self.path) {
            for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|e| Error::Store(e.to_string()))?;
                lines = number + 1;
                let mut fields = line.split(' ');
                if fields.next() == Some(checkpoint.size.to_string().as_str())
                    && fields.next() == Some(digest.as_str())
                {
                    return Ok(Self::receipt(number + 1, checkpoint.size, &digest));
                }
            }
        }
        let now = crate::clock::unix_seconds();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::Store(format!("{}: {e}", self.path.display())))?;
        writeln!(file, "{} {digest} {now}", checkpoint.size)
            .map_err(|e| Error::Store(e.to_string()))?;
        file.sync_all().map_err(|e| Error::Store(e.to_string()))?;
        Ok(Self::receipt(lines + 1, checkpoint.size, &digest))
    }
}

#[cfg(test)]
mod redaction_tests {
    // RPC and TSA URLs often embed API keys (in the path of some providers'
    // URLs too, but most in user:password and the query): logs, errors and
    // status output keep scheme, host, port and path only.
    #[test]
    fn urls_lose_credentials_queries_and_fragments() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("https://user:secret@tsa.example.jp/tsa?apikey=K", "https://tsa.example.jp/tsa"),
            ("http://10.0.0.7:8545",                            "http://10.0.0.7:8545/"),
            ("https://rpc.example/v3?key=abc",                  "https://rpc.example/v3"),
            ("HTTPS://rpc.example/v3#key=abc",                  "https://rpc.example/v3"),
            ("http://a:b@[::1]:8545?key",                       "http://[::1]:8545/"),
            ("not a url",                                       "<unparseable URL>"),
            ("http://",                                         "<unparseable URL>"),
            ("://host/path",                                    "<unparseable URL>"),
        ];
        for (url, redacted) in cases {
            assert_eq!(super::redact_url(url), *redacted, "{url}");
        }
    }
}
