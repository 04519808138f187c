//! Step 8a of the pipeline: sealing successful writes in the ledger.
//!
//! When it runs: after the upstream answered 2xx to a create, update or
//! patch (conditional forms included), before the client hears the answer.
//! What it does: works out which version the upstream stored (id from
//! `Location`/`Content-Location` or the request path, version from the
//! `ETag`), reads that version back from the upstream as JSON (the bytes
//! *as stored*, whatever the client asked to receive), and appends its
//! salted commitment durably. What it may change: response headers only.
//! Results: `Sealed` (headers `Inkan-Seal: sealed`, `Inkan-Leaf-Index`,
//! `Inkan-Commitment`), `Failed` (the upstream committed but sealing did
//! not: the client still gets the upstream's answer, with `Inkan-Seal:
//! failed` and the reason, and the version is logged for repair).
//!
//! A delete of one resource is sealed as a tombstone: its version comes
//! from the upstream's history (the newest DELETE entry's ETag).
//!
//! Not yet (tracked in the sealing issue): conditional deletes, batch and
//! transaction entries, the intent journal that completes seals after a
//! crash, verify-on-read.

use std::sync::Arc;

use anchor::ledger::{Checkpointer, Ledger, SealRequest};
use anchor::resource::Format;
use anchor::store::VersionKey;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LOCATION, ETAG, LOCATION};
use http::HeaderMap;

use crate::config::LedgerConfig;
use crate::error::ConfigError;
use crate::fhir::interaction::Interaction;
use crate::fhir::rewrite::Rewriter;
use crate::upstream::Upstream;

pub const INKAN_SEAL: &str = "inkan-seal";
pub const INKAN_LEAF_INDEX: &str = "inkan-leaf-index";
pub const INKAN_COMMITMENT: &str = "inkan-commitment";

/// The open ledger and its checkpointer.
#[derive(Debug)]
pub struct Sealer {
    pub ledger: Arc<Ledger>,
    _checkpointer: Checkpointer,
}

/// What step 8a did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealOutcome {
    Sealed {
        leaf_index: u64,
        commitment: [u8; 32],
    },
    Failed {
        reason: String,
    },
}

impl SealOutcome {
    /// Writes the documented response headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        match self {
            SealOutcome::Sealed {
                leaf_index,
                commitment,
            } => {
                headers.insert(INKAN_SEAL, HeaderValue::from_static("sealed"));
                headers.insert(INKAN_LEAF_INDEX, HeaderValue::from(*leaf_index));
                if let Ok(v) = HeaderValue::from_str(&hex::encode(commitment)) {
                    headers.insert(INKAN_COMMITMENT, v);
                }
            }
            SealOutcome::Failed { reason } => {
                let value = format!("failed; reason=\"{}\"", reason.replace(['"', '\\'], "'"));
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(INKAN_SEAL, v);
                }
            }
        }
    }
}

/// True for the interactions step 8a seals.
pub fn seals(interaction: Interaction) -> bool {
    matches!(
        interaction,
        Interaction::Create
            | Interaction::Update
            | Interaction::ConditionalUpdate
            | Interaction::Patch
            | Interaction::ConditionalPatch
            | Interaction::Delete
    )
}

impl Sealer {
    /// Opens the ledger and starts its checkpointer.
    pub fn open(config: &LedgerConfig) -> Result<Sealer, ConfigError> {
        let ledger = Ledger::open(&config.dir, &config.options()).map_err(|e| {
            ConfigError::Invalid(format!(
                "cannot open the ledger in {}: {e}",
                config.dir.display()
            ))
        })?;
        let ledger = Arc::new(ledger);
        let checkpointer = ledger.spawn_checkpointer(std::time::Duration::from_millis(
            config.checkpoint_interval_ms,
        ));
        Ok(Sealer {
            ledger,
            _checkpointer: checkpointer,
        })
    }

    /// Seals the version a successful write produced.
    pub async fn seal_write(
        &self,
        upstream: &Upstream,
        upstream_base: &str,
        rewriter: &Rewriter,
        request: WrittenRequest<'_>,
        response_headers: &HeaderMap,
    ) -> SealOutcome {
        let seal_request = if request.interaction == Interaction::Delete {
            match deleted_version(
                upstream,
                upstream_base,
                request.fhir_path,
                request.authorization,
            )
            .await
            {
                Ok(key) => SealRequest::Tombstone {
                    key,
                    backfilled: false,
                },
                Err(reason) => return SealOutcome::Failed { reason },
            }
        } else {
            let Some(key) = written_version(rewriter, request.fhir_path, response_headers) else {
                return SealOutcome::Failed {
                    reason: "the upstream did not say which version it stored (no Location/ETag)"
                        .into(),
                };
            };
            let stored =
                match read_version(upstream, upstream_base, &key, request.authorization).await {
                    Ok(bytes) => bytes,
                    Err(reason) => return SealOutcome::Failed { reason },
                };
            SealRequest::Version {
                key,
                bytes: stored.to_vec(),
                format: Format::Json,
                original_digest: request.original_digest,
                backfilled: false,
            }
        };
        let ledger = self.ledger.clone();
        let sealed = tokio::task::spawn_blocking(move || ledger.seal(vec![seal_request])).await;
        match sealed {
            Ok(Ok(mut receipts)) if !receipts.is_empty() => {
                let receipt = receipts.remove(0);
                SealOutcome::Sealed {
                    leaf_index: receipt.leaf_index,
                    commitment: receipt.commitment,
                }
            }
            Ok(Ok(_)) => SealOutcome::Failed {
                reason: "the ledger returned no receipt".into(),
            },
            Ok(Err(error)) => SealOutcome::Failed {
                reason: error.to_string(),
            },
            Err(error) => SealOutcome::Failed {
                reason: format!("sealing task failed: {error}"),
            },
        }
    }
}

/// What step 8a needs to know about the client's write.
#[derive(Debug, Clone, Copy)]
pub struct WrittenRequest<'a> {
    pub interaction: Interaction,
    /// Path after the FHIR base, e.g. `/Patient/123`.
    pub fhir_path: &'a str,
    /// The `Authorization` the write went upstream with, for the read-back.
    pub authorization: Option<&'a HeaderValue>,
    /// SHA-256 of the bytes the client sent, before any conversion.
    pub original_digest: Option<[u8; 32]>,
}

/// Which version a successful write produced: type and id from the
/// upstream's `Location`/`Content-Location` (or the request path), version
/// from `…/_history/<vid>` there or from the `ETag` (`W/"<vid>"`).
pub fn written_version(
    rewriter: &Rewriter,
    fhir_path: &str,
    headers: &HeaderMap,
) -> Option<VersionKey> {
    let from_header = [LOCATION, CONTENT_LOCATION]
        .iter()
        .filter_map(|name| headers.get(name)?.to_str().ok())
        .find_map(|url| {
            let path = rewriter.upstream_path(url).unwrap_or(url);
            parse_version_path(path)
        });
    let (resource_type, id, version) = from_header.or_else(|| parse_version_path(fhir_path))?;
    let version_id = match version {
        Some(v) => v,
        None => etag_version(headers.get(ETAG)?.to_str().ok()?)?,
    };
    if version_id.is_empty() {
        return None;
    }
    Some(VersionKey {
        resource_type,
        id,
        version_id,
    })
}

/// The version id in an ETag: `W/"3"` → `3`.
fn etag_version(etag: &str) -> Option<String> {
    let version = etag.trim().trim_start_matches("W/").trim_matches('"');
    (!version.is_empty()).then(|| version.to_owned())
}

/// `/Patient/123` or `Patient/123/_history/2` (query ignored) →
/// (type, id, version?).
fn parse_version_path(path: &str) -> Option<(String, String, Option<String>)> {
    let path = path.split(['?', '#']).next()?;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let n = segments.len();
    let is_type = |s: &str| s.starts_with(|c: char| c.is_ascii_uppercase());
    if n >= 4 && segments[n - 2] == "_history" && is_type(segments[n - 4]) {
        return Some((
            segments[n - 4].into(),
            segments[n - 3].into(),
            Some(segments[n - 1].into()),
        ));
    }
    if n >= 2 && is_type(segments[n - 2]) && !segments[n - 1].starts_with(['$', '_']) {
        return Some((segments[n - 2].into(), segments[n - 1].into(), None));
    }
    None
}

/// The version a delete of `/Type/id` created: the newest DELETE entry of
/// the instance's history, version from its `response.etag`.
async fn deleted_version(
    upstream: &Upstream,
    upstream_base: &str,
    fhir_path: &str,
    authorization: Option<&HeaderValue>,
) -> Result<VersionKey, String> {
    let (resource_type, id, _) = parse_version_path(fhir_path)
        .ok_or_else(|| "cannot tell which resource was deleted".to_owned())?;
    let history = upstream
        .get_fhir_json(
            &format!("{upstream_base}/{resource_type}/{id}/_history?_count=5"),
            authorization,
        )
        .await?;
    let history: serde_json::Value =
        serde_json::from_slice(&history).map_err(|e| format!("history is not JSON: {e}"))?;
    let version_id = history["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["request"]["method"] == "DELETE")
        .and_then(|entry| entry["response"]["etag"].as_str())
        .and_then(etag_version)
        .ok_or_else(|| "the upstream's history shows no DELETE version".to_owned())?;
    Ok(VersionKey {
        resource_type,
        id,
        version_id,
    })
}

/// Reads one version back from the upstream as FHIR JSON.
async fn read_version(
    upstream: &Upstream,
    upstream_base: &str,
    key: &VersionKey,
    authorization: Option<&HeaderValue>,
) -> Result<Bytes, String> {
    let url = format!(
        "{upstream_base}/{}/{}/_history/{}",
        key.resource_type, key.id, key.version_id
    );
    upstream.get_fhir_json(&url, authorization).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::rewrite::BaseUrl;

    #[test]
    fn written_version_table() {
        let rewriter = Rewriter::new([BaseUrl::parse("http://localhost:8080").unwrap()]);
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<(&'a str, &'a str, &'a str)>,
        );
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("/Patient",      &[("location", "http://localhost:8080/Patient/abc"), ("etag", "W/\"1\"")], Some(("Patient", "abc", "1"))),
            ("/Patient",      &[("location", "http://localhost:8080/Patient/abc/_history/4")],          Some(("Patient", "abc", "4"))),
            ("/Patient/abc",  &[("etag", "W/\"2\"")],                                                   Some(("Patient", "abc", "2"))),
            ("/Patient",      &[("etag", "W/\"2\"")],                                                   None),
            ("/Patient/abc",  &[],                                                                      None),
        ];
        for (path, headers, want) in cases {
            let mut map = HeaderMap::new();
            for (name, value) in *headers {
                map.insert(*name, HeaderValue::from_static(value));
            }
            let got = written_version(&rewriter, path, &map)
                .map(|k| (k.resource_type, k.id, k.version_id));
            let want = want.map(|(t, i, v)| (t.to_owned(), i.to_owned(), v.to_owned()));
            assert_eq!(got, want, "{path} {headers:?}");
        }
    }
}
