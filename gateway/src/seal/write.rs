//! Sealing successful writes in the ledger (the pipeline's seal step).
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

use http::header::{HeaderValue, CONTENT_LOCATION, ETAG, LOCATION};
use http::HeaderMap;
use ledger::log::SealRequest;
use ledger::resource::Format;
use ledger::store::VersionKey;

use super::{SealError, Sealer};
use crate::fhir::bundle::{
    resource_version, scan_bundle, BatchRequest, BatchResponse, EntryVersion,
};
use crate::fhir::interaction::Interaction;
use crate::fhir::path::{etag_version, version_path, ResourcePath};
use crate::fhir::rewrite::Rewriter;
use crate::upstream::UpstreamReader;

pub const INKAN_SEAL: &str = "inkan-seal";
pub const INKAN_LEAF_INDEX: &str = "inkan-leaf-index";
pub const INKAN_COMMITMENT: &str = "inkan-commitment";

/// The `Inkan-Seal` failure reason when a version key is already sealed
/// with different content.
pub const SEAL_CONFLICT: &str = "conflict";

/// What the seal step (13) did: the leaves appended (in entry order for a Bundle)
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

/// True for the interactions the seal step seals.
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
    /// Seals the versions a successful write produced.
    pub async fn seal_write(
        &self,
        upstream: &UpstreamReader,
        request: WrittenRequest<'_>,
        response_headers: &HeaderMap,
        response_body: Option<&[u8]>,
    ) -> SealOutcome {
        let (requests, failures) =
            versions_written(upstream, request, response_headers, response_body).await;
        if requests.is_empty() {
            return SealOutcome {
                sealed: Vec::new(),
                failures,
            };
        }
        let keys: Vec<VersionKey> = requests.iter().map(|r| r.key().clone()).collect();
        match self.append(requests).await {
            Ok(receipts) => outcome_of(&receipts, &keys, failures),
            Err(error) => {
                // Ledger internals (SQLite text, paths) go to the log only.
                tracing::error!(%error, kind = error.kind(), fault = error.fault().as_str(), detail = error.internal_detail(), "sealing failed");
                SealOutcome::failed(error.to_string())
            }
        }
    }
}

/// The seals a successful write calls for, and why some version cannot
/// be sealed.
async fn versions_written(
    upstream: &UpstreamReader,
    request: WrittenRequest<'_>,
    response_headers: &HeaderMap,
    response_body: Option<&[u8]>,
) -> (Vec<SealRequest>, Vec<String>) {
    let mut requests = Vec::new();
    let mut failures = Vec::new();
    match request.interaction {
        Interaction::Delete => match find_deleted_version(upstream, request.fhir_path).await {
            Ok(key) => requests.push(tombstone(key)),
            Err(error) => failures.push(error.to_string()),
        },
        Interaction::ConditionalDelete => {
            for (resource_type, id) in request.matched {
                match find_deleted_version(upstream, &format!("/{resource_type}/{id}")).await {
                    Ok(key) => requests.push(tombstone(key)),
                    Err(error) => failures.push(error.to_string()),
                }
            }
        }
        Interaction::BatchOrTransaction => {
            let sent = request.sent_body;
            bundle_versions(upstream, sent, response_body, &mut requests, &mut failures).await;
        }
        _ => match written_version(upstream.rewriter(), request.fhir_path, response_headers) {
            Some(key) => match stored_bytes(upstream, &key, response_body).await {
                Ok(bytes) => requests.push(SealRequest::Version {
                    key,
                    bytes,
                    format: Format::Json,
                    original_digest: request.original_digest,
                    backfilled: false,
                }),
                Err(error) => failures.push(error.to_string()),
            },
            None => failures
                .push("the upstream did not say which version it stored (no Location/ETag)".into()),
        },
    }
    (requests, failures)
}

/// What the ledger's receipts mean for the client. A receipt in conflict
/// is a version key the upstream answered that is already sealed with
/// other content: a version rewritten in place. The first seal stands
/// (`inkan audit` finds it); the write reports `conflict`.
fn outcome_of(
    receipts: &[ledger::log::SealReceipt],
    keys: &[VersionKey],
    mut failures: Vec<String>,
) -> SealOutcome {
    for (receipt, key) in receipts.iter().zip(keys).filter(|(r, _)| r.conflict) {
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

fn tombstone(key: VersionKey) -> SealRequest {
    SealRequest::Tombstone {
        key,
        backfilled: false,
    }
}

/// What the seal step needs to know about the client's write.
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

/// The bytes of version `key` as stored: the upstream's answer when it
/// is that very version (`Prefer: return=representation`), else read
/// back with a vread.
async fn stored_bytes(
    upstream: &UpstreamReader,
    key: &VersionKey,
    response_body: Option<&[u8]>,
) -> Result<Vec<u8>, SealError> {
    if let Some(body) = response_body {
        if resource_version(body) == EntryVersion::Stored(key.clone()) {
            return Ok(body.to_vec());
        }
    }
    Ok(upstream.get(&version_path(key)).await?.to_vec())
}

/// The version a delete of `/Type/id` created: the newest DELETE entry
/// of the instance's history, version from its `response.etag`.
async fn find_deleted_version(
    upstream: &UpstreamReader,
    fhir_path: &str,
) -> Result<VersionKey, SealError> {
    let resource = ResourcePath::parse(fhir_path).ok_or(SealError::Unknowable(
        "cannot tell which resource was deleted",
    ))?;
    let history = upstream
        .get(&format!("{}?_count=5", resource.history_path()))
        .await?;
    let bundle = scan_bundle(&history).ok_or(SealError::Unknowable(
        "the instance history is not a Bundle",
    ))?;
    bundle
        .entries
        .into_iter()
        .find_map(|entry| match entry.version {
            EntryVersion::Deleted(key) => Some(key),
            _ => None,
        })
        .ok_or(SealError::Unknowable(
            "the upstream's history shows no DELETE version",
        ))
}

/// The versions a batch or transaction wrote, from its response
/// Bundle (entries answer the request entries in order).
async fn bundle_versions(
    upstream: &UpstreamReader,
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
        serde_json::from_slice::<BatchRequest>(sent),
        serde_json::from_slice::<BatchResponse>(response_body),
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
            match find_deleted_version(upstream, &format!("/{}", asked.request.url)).await {
                Ok(key) => requests.push(tombstone(key)),
                Err(error) => failures.push(format!("entry {position}: {error}")),
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
        let Some(key) = written_version(upstream.rewriter(), &path, &headers) else {
            failures.push(format!(
                "entry {position}: no location or etag in the response"
            ));
            continue;
        };
        let resource = answer.resource.map(|r| r.get().as_bytes());
        match stored_bytes(upstream, &key, resource).await {
            Ok(bytes) => requests.push(SealRequest::Version {
                key,
                bytes,
                format: Format::Json,
                original_digest: None,
                backfilled: false,
            }),
            Err(error) => failures.push(format!("entry {position}: {error}")),
        }
    }
}

/// Conditional delete: the resources `[type]?[query]` matches now.
pub async fn conditional_matches(
    upstream: &UpstreamReader,
    fhir_path: &str,
    query: &str,
) -> Result<Vec<(String, String)>, ConditionalMatchError> {
    // The reason is logged and sent in a header: search values are
    // health data, so the query is left out of it.
    let body = upstream
        .get(&format!("{fhir_path}?{query}"))
        .await
        .map_err(|error| ConditionalMatchError(error.to_string().replace(query, "<query>")))?;
    let bundle = scan_bundle(&body)
        .ok_or_else(|| ConditionalMatchError("the search answer is not a Bundle".into()))?;
    Ok(bundle
        .entries
        .into_iter()
        .filter_map(|entry| match entry.version {
            EntryVersion::Stored(key) => Some((key.resource_type, key.id)),
            _ => None,
        })
        .collect())
}

/// Why the resources a conditional delete matches could not be found
/// (the query is redacted from the text: search values are health data).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConditionalMatchError(String);

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
            ResourcePath::parse(path)
        });
    let ResourcePath {
        resource_type,
        id,
        version_id,
    } = from_header.or_else(|| ResourcePath::parse(fhir_path))?;
    let version_id = match version_id {
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
