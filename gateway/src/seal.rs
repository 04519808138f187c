//! Step 8a of the pipeline: sealing successful writes in the ledger.
//!
//! When it runs: after the upstream answered 2xx to a create, update,
//! patch or delete (conditional forms included) or to a batch or
//! transaction, before the client hears the answer.
//!
//! What it does: works out which versions the upstream stored and appends
//! their salted commitments durably, in one group:
//! - create, update, patch: id from `Location`/`Content-Location` or the
//!   request path, version from `…/_history/<vid>` or the `ETag`. The bytes
//!   are the upstream's own answer when it is that version (the gateway
//!   asks for `Prefer: return=representation` unless the client asked for
//!   `minimal` or `OperationOutcome`), else the version read back (vread);
//! - delete: a tombstone for the newest DELETE version in the instance's
//!   history; a conditional delete: one per resource its condition matched
//!   just before the delete was forwarded;
//! - batch and transaction: every 2xx entry of the response Bundle, paired
//!   with the request entry at the same position, ids and versions as the
//!   server assigned them (`response.location`/`etag`), bytes from
//!   `entry.resource` when it is that version, else read back.
//!
//! What it may change: response headers only. Results: every version
//! sealed (`Inkan-Seal: sealed`, `Inkan-Leaf-Index`, `Inkan-Commitment`),
//! nothing to seal (`none`), or a failure (`failed; reason="…"`: the
//! upstream committed but some version is not sealed; the client still
//! gets the upstream's answer and the write is left for repair).

use std::sync::Arc;

use anchor::ledger::{Checkpointer, Ledger, SealRequest};
use anchor::resource::Format;
use anchor::store::VersionKey;
use http::header::{HeaderValue, CONTENT_LOCATION, ETAG, LOCATION};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::LedgerConfig;
use crate::error::ConfigError;
use crate::fhir::interaction::Interaction;
use crate::fhir::rewrite::Rewriter;
use crate::upstream::Upstream;
use crate::verify_read::{resource_version, scan_bundle, EntryVersion};

pub const INKAN_SEAL: &str = "inkan-seal";
pub const INKAN_LEAF_INDEX: &str = "inkan-leaf-index";
pub const INKAN_COMMITMENT: &str = "inkan-commitment";

/// The `Inkan-Seal` failure reason when a version key is already sealed
/// with different content.
pub const SEAL_CONFLICT: &str = "conflict";

/// The open ledger and its checkpointer.
#[derive(Debug)]
pub struct Sealer {
    pub ledger: Arc<Ledger>,
    _checkpointer: Checkpointer,
}

/// What step 8a did: the leaves appended (in entry order for a Bundle)
/// and what could not be sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealOutcome {
    /// (leaf index, commitment) of every version sealed.
    pub sealed: Vec<(u64, [u8; 32])>,
    /// Why some committed version was not sealed (needs repair).
    pub failures: Vec<String>,
}

impl SealOutcome {
    fn failed(reason: String) -> SealOutcome {
        SealOutcome {
            sealed: Vec::new(),
            failures: vec![reason],
        }
    }

    /// Writes the documented response headers: `Inkan-Seal` (`sealed`,
    /// `none` when the write produced no version, or `failed; reason="…"`),
    /// and for what was sealed `Inkan-Leaf-Index` and `Inkan-Commitment`
    /// (comma-separated in entry order for a batch or transaction).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let seal = match (self.failures.first(), self.sealed.is_empty()) {
            // A one-word reason is a token (`reason=conflict`); text is quoted.
            (Some(reason), _)
                if !reason.is_empty()
                    && reason
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
            {
                format!("failed; reason={reason}")
            }
            (Some(reason), _) => format!("failed; reason=\"{}\"", reason.replace(['"', '\\'], "'")),
            (None, true) => "none".to_owned(),
            (None, false) => "sealed".to_owned(),
        };
        if let Ok(v) = HeaderValue::from_str(&seal) {
            headers.insert(INKAN_SEAL, v);
        }
        if self.sealed.is_empty() {
            return;
        }
        let indexes: Vec<String> = self.sealed.iter().map(|(i, _)| i.to_string()).collect();
        let commitments: Vec<String> = self.sealed.iter().map(|(_, c)| hex::encode(c)).collect();
        if let Ok(v) = HeaderValue::from_str(&indexes.join(", ")) {
            headers.insert(INKAN_LEAF_INDEX, v);
        }
        if let Ok(v) = HeaderValue::from_str(&commitments.join(", ")) {
            headers.insert(INKAN_COMMITMENT, v);
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
            | Interaction::ConditionalDelete
            | Interaction::BatchOrTransaction
    )
}

/// True when the upstream should be asked for `Prefer:
/// return=representation` so the stored version comes back with the
/// answer (no read-back): the client asked for nothing else.
pub fn wants_representation(interaction: Interaction, client_prefer: Option<&str>) -> bool {
    let asks_other = client_prefer.is_some_and(|prefer| {
        prefer
            .split([',', ';'])
            .map(str::trim)
            .any(|p| p == "return=minimal" || p == "return=OperationOutcome")
    });
    // A delete's answer holds no version; every other sealed write's does.
    !asks_other
        && seals(interaction)
        && !matches!(
            interaction,
            Interaction::Delete | Interaction::ConditionalDelete
        )
}

impl Sealer {
    /// Opens the ledger with its anchor backends and starts its
    /// checkpointer.
    pub fn open(
        config: &LedgerConfig,
        anchors: &crate::config::AnchorsConfig,
    ) -> Result<Sealer, ConfigError> {
        let mut ledger = Ledger::open(&config.dir, &config.options()).map_err(|e| {
            ConfigError::Invalid(format!(
                "cannot open the ledger in {}: {e}",
                config.dir.display()
            ))
        })?;
        for backend in crate::anchors::backends(anchors, &config.dir)? {
            ledger.add_backend(backend);
        }
        let ledger = Arc::new(ledger);
        let checkpointer = ledger.spawn_checkpointer(std::time::Duration::from_millis(
            config.checkpoint_interval_ms,
        ));
        Ok(Sealer {
            ledger,
            _checkpointer: checkpointer,
        })
    }

    /// Seals the versions a successful write produced.
    pub async fn seal_write(
        &self,
        upstream: &UpstreamView<'_>,
        request: WrittenRequest<'_>,
        response_headers: &HeaderMap,
        response_body: Option<&[u8]>,
    ) -> SealOutcome {
        let mut requests = Vec::new();
        let mut failures = Vec::new();
        match request.interaction {
            Interaction::Delete => match upstream.deleted_version(request.fhir_path).await {
                Ok(key) => requests.push(tombstone(key)),
                Err(reason) => failures.push(reason),
            },
            Interaction::ConditionalDelete => {
                for (resource_type, id) in request.matched {
                    match upstream
                        .deleted_version(&format!("/{resource_type}/{id}"))
                        .await
                    {
                        Ok(key) => requests.push(tombstone(key)),
                        Err(reason) => failures.push(reason),
                    }
                }
            }
            Interaction::BatchOrTransaction => {
                upstream
                    .bundle_versions(
                        request.sent_body,
                        response_body,
                        &mut requests,
                        &mut failures,
                    )
                    .await;
            }
            _ => match written_version(upstream.rewriter, request.fhir_path, response_headers) {
                Some(key) => match upstream.stored_bytes(&key, response_body).await {
                    Ok(bytes) => requests.push(SealRequest::Version {
                        key,
                        bytes,
                        format: Format::Json,
                        original_digest: request.original_digest,
                        backfilled: false,
                    }),
                    Err(reason) => failures.push(reason),
                },
                None => failures.push(
                    "the upstream did not say which version it stored (no Location/ETag)".into(),
                ),
            },
        }
        if requests.is_empty() {
            return SealOutcome {
                sealed: Vec::new(),
                failures,
            };
        }
        let keys: Vec<VersionKey> = requests.iter().map(|r| r.key().clone()).collect();
        // No blocking thread: the appender answers through a oneshot.
        let (answer, sealed) = tokio::sync::oneshot::channel();
        self.ledger.seal_then(requests, move |result| {
            let _ = answer.send(result);
        });
        match sealed.await {
            Ok(Ok(receipts)) => {
                let mut failures = failures;
                for (receipt, key) in receipts.iter().zip(&keys).filter(|(r, _)| r.conflict) {
                    // The upstream answered a version key that is already
                    // sealed with other content: a version rewritten in
                    // place. The first seal stands; `inkan audit` finds it.
                    tracing::error!(
                        resource_type = %key.resource_type, id = %key.id, version = %key.version_id,
                        leaf_index = receipt.leaf_index,
                        "seal conflict: this version key is already sealed with different content"
                    );
                    failures.insert(0, SEAL_CONFLICT.to_owned());
                }
                SealOutcome {
                    sealed: receipts
                        .iter()
                        .filter(|r| !r.conflict)
                        .map(|r| (r.leaf_index, r.commitment))
                        .collect(),
                    failures,
                }
            }
            Ok(Err(error)) => {
                // Ledger internals (SQLite text, paths) go to the log only.
                tracing::error!(%error, "sealing failed");
                SealOutcome::failed("the ledger could not store the seal".into())
            }
            Err(_) => SealOutcome::failed("the ledger's appender stopped".into()),
        }
    }
}

fn tombstone(key: VersionKey) -> SealRequest {
    SealRequest::Tombstone {
        key,
        backfilled: false,
    }
}

/// What step 8a needs to know about the client's write.
#[derive(Debug, Clone, Copy)]
pub struct WrittenRequest<'a> {
    pub interaction: Interaction,
    /// Path after the FHIR base, e.g. `/Patient/123`.
    pub fhir_path: &'a str,
    /// SHA-256 of the bytes the client sent, before any conversion.
    pub original_digest: Option<[u8; 32]>,
    /// The FHIR JSON sent upstream (the request Bundle of a batch).
    pub sent_body: &'a [u8],
    /// Conditional delete: the resources its condition matched just
    /// before the delete was forwarded.
    pub matched: &'a [(String, String)],
}

/// The upstream as step 8a reads it: the client, its base, the base
/// rewriter and the `Authorization` the write went upstream with.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamView<'a> {
    pub upstream: &'a Upstream,
    pub base: &'a str,
    pub rewriter: &'a Rewriter,
    pub authorization: Option<&'a HeaderValue>,
}

impl UpstreamView<'_> {
    /// The bytes of version `key` as stored: the upstream's answer when it
    /// is that very version (`Prefer: return=representation`), else read
    /// back with a vread.
    async fn stored_bytes(
        &self,
        key: &VersionKey,
        response_body: Option<&[u8]>,
    ) -> Result<Vec<u8>, String> {
        if let Some(body) = response_body {
            if resource_version(body) == EntryVersion::Stored(key.clone()) {
                return Ok(body.to_vec());
            }
        }
        let url = format!(
            "{}/{}/{}/_history/{}",
            self.base, key.resource_type, key.id, key.version_id
        );
        self.upstream
            .get_fhir_json(&url, self.authorization)
            .await
            .map(|b| b.to_vec())
    }

    /// The version a delete of `/Type/id` created: the newest DELETE entry
    /// of the instance's history, version from its `response.etag`.
    async fn deleted_version(&self, fhir_path: &str) -> Result<VersionKey, String> {
        let (resource_type, id, _) = parse_version_path(fhir_path)
            .ok_or_else(|| "cannot tell which resource was deleted".to_owned())?;
        let history = self
            .upstream
            .get_fhir_json(
                &format!("{}/{resource_type}/{id}/_history?_count=5", self.base),
                self.authorization,
            )
            .await?;
        let bundle = scan_bundle(&history).ok_or("the instance history is not a Bundle")?;
        bundle
            .entries
            .into_iter()
            .find_map(|entry| match entry.version {
                EntryVersion::Deleted(key) => Some(key),
                _ => None,
            })
            .ok_or_else(|| "the upstream's history shows no DELETE version".to_owned())
    }

    /// The versions a batch or transaction wrote, from its response
    /// Bundle (entries answer the request entries in order).
    async fn bundle_versions(
        &self,
        sent: &[u8],
        response_body: Option<&[u8]>,
        requests: &mut Vec<SealRequest>,
        failures: &mut Vec<String>,
    ) {
        let Some(response_body) = response_body else {
            failures.push("the batch/transaction response was not read".into());
            return;
        };
        let (Ok(sent), Ok(answered)) = (
            serde_json::from_slice::<RequestBundle>(sent),
            serde_json::from_slice::<ResponseBundle>(response_body),
        ) else {
            failures.push("the batch/transaction or its response is not a Bundle".into());
            return;
        };
        for (position, (asked, answer)) in sent.entry.iter().zip(&answered.entry).enumerate() {
            let method = asked.request.method.to_ascii_uppercase();
            let status_ok = answer.response.status.trim_start().starts_with('2');
            if !status_ok || method == "GET" || method == "HEAD" {
                continue;
            }
            if method == "DELETE" {
                if asked.request.url.contains('?') {
                    failures.push(format!(
                        "entry {position}: a conditional delete inside a Bundle is not sealed"
                    ));
                    continue;
                }
                match self
                    .deleted_version(&format!("/{}", asked.request.url))
                    .await
                {
                    Ok(key) => requests.push(tombstone(key)),
                    Err(reason) => failures.push(format!("entry {position}: {reason}")),
                }
                continue;
            }
            let mut headers = HeaderMap::new();
            for (name, value) in [
                (LOCATION, answer.response.location.as_deref()),
                (ETAG, answer.response.etag.as_deref()),
            ] {
                if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                    headers.insert(name, v);
                }
            }
            let path = format!("/{}", asked.request.url);
            let Some(key) = written_version(self.rewriter, &path, &headers) else {
                failures.push(format!(
                    "entry {position}: no location or etag in the response"
                ));
                continue;
            };
            let resource = answer.resource.map(|r| r.get().as_bytes());
            match self.stored_bytes(&key, resource).await {
                Ok(bytes) => requests.push(SealRequest::Version {
                    key,
                    bytes,
                    format: Format::Json,
                    original_digest: None,
                    backfilled: false,
                }),
                Err(reason) => failures.push(format!("entry {position}: {reason}")),
            }
        }
    }

    /// Conditional delete: the resources `[type]?[query]` matches now.
    pub async fn conditional_matches(
        &self,
        fhir_path: &str,
        query: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let url = format!("{}{fhir_path}?{query}", self.base);
        // The reason is logged and sent in a header: search values are
        // health data, so the query is left out of it.
        let body = self
            .upstream
            .get_fhir_json(&url, self.authorization)
            .await
            .map_err(|reason| reason.replace(query, "<query>"))?;
        let bundle = scan_bundle(&body).ok_or("the search answer is not a Bundle")?;
        Ok(bundle
            .entries
            .into_iter()
            .filter_map(|entry| match entry.version {
                EntryVersion::Stored(key) => Some((key.resource_type, key.id)),
                _ => None,
            })
            .collect())
    }
}

#[derive(Deserialize)]
struct RequestBundle {
    #[serde(default)]
    entry: Vec<RequestEntry>,
}

#[derive(Deserialize)]
struct RequestEntry {
    request: EntryRequest,
}

#[derive(Deserialize)]
struct EntryRequest {
    method: String,
    url: String,
}

#[derive(Deserialize)]
struct ResponseBundle<'a> {
    #[serde(borrow, default)]
    entry: Vec<ResponseEntry<'a>>,
}

#[derive(Deserialize)]
struct ResponseEntry<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    response: EntryResponse,
}

#[derive(Deserialize)]
struct EntryResponse {
    status: String,
    location: Option<String>,
    etag: Option<String>,
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
pub(crate) fn etag_version(etag: &str) -> Option<String> {
    let version = etag.trim().trim_start_matches("W/").trim_matches('"');
    (!version.is_empty()).then(|| version.to_owned())
}

/// `/Patient/123` or `Patient/123/_history/2` (query ignored) →
/// (type, id, version?).
pub(crate) fn parse_version_path(path: &str) -> Option<(String, String, Option<String>)> {
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
