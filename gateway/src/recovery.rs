//! Completing seals the request path could not finish: after a crash
//! (kill -9 between the upstream's commit and the seal) or a failed seal.
//!
//! Before a write is forwarded, step 7 records an *intent* in the ledger
//! (durable, group-committed); it is closed once the write's versions are
//! sealed or the upstream refused the write. An intent still open later
//! means the upstream may hold versions the ledger lacks. Recovery reads
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
use std::time::Duration;

use anchor::ledger::SealRequest;
use anchor::resource::Format;
use serde::{Deserialize, Serialize};

use crate::pipeline::Gateway;
use crate::verify_read::{scan_bundle, EntryVersion};

/// What the journal records about a write (JSON in the intent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteIntent {
    pub interaction: String,
    /// Path after the FHIR base, e.g. `/Patient/123`.
    pub path: String,
    /// Conditional delete: the resources its condition matched.
    #[serde(default)]
    pub matched: Vec<(String, String)>,
}

impl WriteIntent {
    /// The history URLs (after the base) whose versions this write may
    /// have created.
    fn history_paths(&self) -> Vec<String> {
        if !self.matched.is_empty() {
            return self
                .matched
                .iter()
                .map(|(t, id)| format!("/{t}/{id}/_history"))
                .collect();
        }
        let segments: Vec<&str> = self
            .path
            .split('/')
            .filter(|s| !s.is_empty() && !s.starts_with('_') && !s.starts_with('$'))
            .collect();
        match segments.as_slice() {
            [resource_type, id, ..] => vec![format!("/{resource_type}/{id}/_history")],
            [resource_type] => vec![format!("/{resource_type}/_history")],
            [] => vec!["/_history".to_owned()],
        }
    }
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub intents: usize,
    pub versions: u64,
}

/// Recovers every open intent opened before `cutoff_ms` (Unix ms).
pub async fn recover(gateway: &Gateway, cutoff_ms: i64) -> Result<Recovered, String> {
    let Some(sealer) = &gateway.sealer else {
        return Ok(Recovered::default());
    };
    let ledger = sealer.ledger.clone();
    let intents = {
        let ledger = ledger.clone();
        tokio::task::spawn_blocking(move || ledger.store().open_intents())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    // One sweep per history, from the oldest intent that needs it.
    let mut sweeps: BTreeMap<String, (i64, Vec<u64>)> = BTreeMap::new();
    for intent in intents.iter().filter(|i| i.opened_at_ms < cutoff_ms) {
        let write: WriteIntent = match serde_json::from_str(&intent.description) {
            Ok(write) => write,
            Err(_) => WriteIntent {
                interaction: "unknown".into(),
                path: "/".into(),
                matched: Vec::new(),
            },
        };
        for path in write.history_paths() {
            let sweep = sweeps
                .entry(path)
                .or_insert((intent.opened_at_ms, Vec::new()));
            sweep.0 = sweep.0.min(intent.opened_at_ms);
            sweep.1.push(intent.intent_id);
        }
    }
    let mut recovered = Recovered::default();
    let view = gateway.upstream_view();
    let mut closable: Vec<u64> = Vec::new();
    let mut failed: Vec<(u64, String)> = Vec::new();
    for (path, (since_ms, intent_ids)) in sweeps {
        match seal_history_since(gateway, &view, &path, since_ms).await {
            Ok(sealed) => {
                recovered.versions += sealed;
                closable.extend(intent_ids);
            }
            Err(reason) => failed.extend(intent_ids.into_iter().map(|id| (id, reason.clone()))),
        }
    }
    let failed_ids: Vec<u64> = failed.iter().map(|(id, _)| *id).collect();
    closable.sort_unstable();
    closable.dedup();
    closable.retain(|id| !failed_ids.contains(id));
    recovered.intents = closable.len();
    for id in closable {
        ledger.store().close_intent(id).map_err(|e| e.to_string())?;
    }
    for (id, reason) in failed {
        ledger
            .store()
            .fail_intent(id, &format!("recovery: {reason}"))
            .map_err(|e| e.to_string())?;
    }
    Ok(recovered)
}

/// Seals every unsealed version in the history at `path` updated since
/// `since_ms` (with two seconds of slack for clock steps). Returns how
/// many it sealed.
async fn seal_history_since(
    gateway: &Gateway,
    view: &crate::seal::UpstreamView<'_>,
    path: &str,
    since_ms: i64,
) -> Result<u64, String> {
    let Some(sealer) = &gateway.sealer else {
        return Ok(0);
    };
    let since =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms - 2_000) * 1_000_000)
            .map_err(|e| e.to_string())?
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| e.to_string())?;
    let encoded = percent_encoding::utf8_percent_encode(&since, percent_encoding::NON_ALPHANUMERIC);
    let mut next = Some(format!("{}{path}?_since={encoded}&_count=200", view.base));
    let mut sealed = 0;
    while let Some(url) = next.take() {
        let page = view
            .upstream
            .get_fhir_json(&url, view.authorization)
            .await?;
        let bundle = scan_bundle(&page).ok_or("the history page is not a Bundle")?;
        let mut requests = Vec::new();
        for entry in &bundle.entries {
            let (EntryVersion::Stored(key) | EntryVersion::Deleted(key)) = &entry.version else {
                continue;
            };
            if sealer
                .ledger
                .find(key)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                continue;
            }
            requests.extend(first_seen_request(&entry.version, entry.resource_bytes()));
        }
        if !requests.is_empty() {
            let ledger = sealer.ledger.clone();
            let receipts = tokio::task::spawn_blocking(move || ledger.seal(requests))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            sealed += receipts.iter().filter(|r| r.newly_sealed).count() as u64;
        }
        next = bundle
            .next
            .map(|n| view.rewriter.rewrite_url(&n, view.base).unwrap_or(n));
    }
    Ok(sealed)
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
/// `interval`, for intents older than `in_flight_bound`.
pub async fn run_periodically(
    gateway: std::sync::Arc<Gateway>,
    interval: Duration,
    in_flight_bound: Duration,
) {
    let started_ms = anchor::clock::unix_millis();
    let mut first = true;
    loop {
        let cutoff = if first {
            started_ms
        } else {
            anchor::clock::unix_millis()
                - i64::try_from(in_flight_bound.as_millis()).unwrap_or(i64::MAX)
        };
        match recover(&gateway, cutoff).await {
            Ok(done) if done.intents > 0 => {
                first = false;
                gateway
                    .metrics
                    .seals
                    .get_or_create(&crate::metrics::KindLabels { kind: "recovered" })
                    .inc_by(done.versions);
                tracing::warn!(
                    intents = done.intents,
                    versions = done.versions,
                    "completed seals of writes the request path did not finish"
                );
            }
            Ok(_) => first = false,
            // The upstream may be down: retry soon, with the same cutoff.
            Err(reason) => tracing::warn!(%reason, "seal recovery failed; will retry"),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_paths_table() {
        let intent = |path: &str, matched: &[(&str, &str)]| WriteIntent {
            interaction: "x".into(),
            path: path.into(),
            matched: matched
                .iter()
                .map(|(t, i)| ((*t).to_owned(), (*i).to_owned()))
                .collect(),
        };
        #[rustfmt::skip]
        let cases: &[(WriteIntent, &[&str])] = &[
            (intent("/Patient", &[]),          &["/Patient/_history"]),
            (intent("/Patient/1", &[]),        &["/Patient/1/_history"]),
            (intent("", &[]),                  &["/_history"]),
            (intent("/", &[]),                 &["/_history"]),
            (intent("/Patient", &[("Patient", "7"), ("Patient", "8")]),
                                               &["/Patient/7/_history", "/Patient/8/_history"]),
        ];
        for (intent, want) in cases {
            assert_eq!(intent.history_paths(), *want, "{intent:?}");
        }
    }
}
