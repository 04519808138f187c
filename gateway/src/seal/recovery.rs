//! Completing seals the request path could not finish: after a crash
//! (kill -9 between the upstream's commit and the seal) or a failed seal.
//!
//! An intent of the journal ([`super::journal`]) still open means the
//! upstream may hold versions the ledger lacks. Recovery reads
//! the upstream's history since the intent was opened — of the instance
//! when the path names one, of the type for creates and conditional
//! writes, of the whole server for batches and transactions — and seals
//! every version there that is not sealed yet, marked `backfilled` (sealed
//! from the upstream's copy after the fact, not in the write path). Then
//! it closes the intents.
//!
//! It runs once at start for intents older than the process, and then
//! periodically for intents older than the longest a request can be in
//! flight. Versions written behind the gateway's back in the same window
//! are sealed too; the audit's view of them is the same as backfill's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ledger::log::SealRequest;
use ledger::resource::Format;
use prometheus_client::metrics::counter::Counter;

use super::journal::WriteIntent;
use super::{blocking, SealError, Sealer};
use crate::fhir::bundle::{scan_bundle, EntryVersion};
use crate::upstream::{ReadError, UpstreamReader};

/// What one recovery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub intents: usize,
    pub versions: u64,
}

/// Recovers every open intent opened before `cutoff_ms` (Unix ms).
pub async fn recover(
    sealer: &Sealer,
    upstream: &UpstreamReader,
    cutoff_ms: i64,
) -> Result<Recovered, SealError> {
    let ledger = sealer.ledger();
    let intents = blocking(|| ledger.store().open_intents()).map_err(SealError::Ledger)?;
    // One sweep per history, from the oldest intent that needs it.
    let mut sweeps: BTreeMap<String, (i64, Vec<u64>)> = BTreeMap::new();
    for intent in intents.iter().filter(|i| i.opened_at_ms < cutoff_ms) {
        let write: WriteIntent =
            serde_json::from_str(&intent.description).unwrap_or_else(|_| WriteIntent::unknown());
        for path in write.history_paths() {
            let sweep = sweeps
                .entry(path)
                .or_insert((intent.opened_at_ms, Vec::new()));
            sweep.0 = sweep.0.min(intent.opened_at_ms);
            sweep.1.push(intent.intent_id);
        }
    }
    let mut recovered = Recovered::default();
    let mut closable: Vec<u64> = Vec::new();
    let mut failed: Vec<(u64, String)> = Vec::new();
    for (path, (since_ms, intent_ids)) in sweeps {
        match seal_history_since(sealer, upstream, &path, since_ms).await {
            Ok(sealed) => {
                recovered.versions += sealed;
                closable.extend(intent_ids);
            }
            Err(error) => {
                let reason = error.to_string();
                failed.extend(intent_ids.into_iter().map(|id| (id, reason.clone())));
            }
        }
    }
    let failed_ids: Vec<u64> = failed.iter().map(|(id, _)| *id).collect();
    closable.sort_unstable();
    closable.dedup();
    closable.retain(|id| !failed_ids.contains(id));
    recovered.intents = closable.len();
    blocking(|| -> Result<(), ledger::Error> {
        for id in closable {
            ledger.store().close_intent(id)?;
        }
        for (id, reason) in failed {
            ledger
                .store()
                .fail_intent(id, &format!("recovery: {reason}"))?;
        }
        Ok(())
    })
    .map_err(SealError::Ledger)?;
    Ok(recovered)
}

/// Seals every unsealed version in the history at `path` updated since
/// `since_ms` (with two seconds of slack for clock steps). Returns how
/// many it sealed.
async fn seal_history_since(
    sealer: &Sealer,
    upstream: &UpstreamReader,
    path: &str,
    since_ms: i64,
) -> Result<u64, SealError> {
    let since = rfc3339(since_ms - 2_000);
    let encoded = percent_encoding::utf8_percent_encode(&since, percent_encoding::NON_ALPHANUMERIC);
    let mut next = Some(upstream.url(&format!("{path}?_since={encoded}&_count=200")));
    let mut sealed = 0;
    while let Some(url) = next.take() {
        let page = upstream.get_url(&url).await?;
        let bundle = scan_bundle(&page).ok_or_else(|| ReadError::NotFhir {
            path: crate::upstream::path_of(&url).to_owned(),
            expected: "a history Bundle",
        })?;
        let mut requests = Vec::new();
        for entry in &bundle.entries {
            let (EntryVersion::Stored(key) | EntryVersion::Deleted(key)) = &entry.version else {
                continue;
            };
            let known = blocking(|| sealer.ledger().find(key)).map_err(SealError::Ledger)?;
            if known.is_none() {
                requests.extend(first_seen_request(&entry.version, entry.resource_bytes()));
            }
        }
        if !requests.is_empty() {
            let receipts = sealer.append(requests).await?;
            sealed += receipts.iter().filter(|r| r.newly_sealed).count() as u64;
        }
        next = bundle.next.map(|link| upstream.follow(&link));
    }
    Ok(sealed)
}

/// RFC 3339 text of a Unix time in milliseconds (the epoch for times
/// `time` cannot represent, which then sweeps everything: safe).
fn rfc3339(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// The seal of a version found in the upstream's history, sealed as first
/// seen (`backfilled`): by `inkan backfill` and by recovery.
pub fn first_seen_request(version: &EntryVersion, resource: Option<&[u8]>) -> Option<SealRequest> {
    match (version, resource) {
        (EntryVersion::Stored(key), Some(bytes)) => Some(SealRequest::Version {
            key: key.clone(),
            bytes: bytes.to_vec(),
            format: Format::Json,
            original_digest: None,
            backfilled: true,
        }),
        (EntryVersion::Deleted(key), _) => Some(SealRequest::Tombstone {
            key: key.clone(),
            backfilled: true,
        }),
        _ => None,
    }
}

/// Runs recovery at start (intents older than this process) and then every
/// `interval`, for intents older than `in_flight_bound`. `recovered`
/// counts the versions it sealed.
pub async fn run_periodically(
    sealer: Arc<Sealer>,
    upstream: UpstreamReader,
    recovered: Counter,
    interval: Duration,
    in_flight_bound: Duration,
) {
    let started_ms = ledger::clock::unix_millis();
    let mut first = true;
    loop {
        let cutoff = if first {
            started_ms
        } else {
            ledger::clock::unix_millis()
                - i64::try_from(in_flight_bound.as_millis()).unwrap_or(i64::MAX)
        };
        match recover(&sealer, &upstream, cutoff).await {
            Ok(done) if done.intents > 0 => {
                first = false;
                recovered.inc_by(done.versions);
                tracing::warn!(
                    intents = done.intents,
                    versions = done.versions,
                    "completed seals of writes the request path did not finish"
                );
            }
            Ok(_) => first = false,
            // The upstream may be down: retry soon, with the same cutoff.
            Err(error) => {
                tracing::warn!(%error, kind = error.kind(), fault = error.fault().as_str(), detail = error.internal_detail(), "seal recovery failed; will retry");
            }
        }
        tokio::time::sleep(interval).await;
    }
}
