//! Delivery of sealed access records to the audit repository, in the
//! background, in batches: one transaction Bundle of AuditEvent creates
//! per round. Repositories treat AuditEvents as immutable (HFS refuses
//! `PUT AuditEvent/<id>`), so each is created with `POST` and gets the
//! repository's id; the transaction-response's `location` of each entry
//! is recorded as the record's alias in the ledger, which is how `$proof`,
//! verify-on-read and `inkan audit` find its seal afterwards.
//!
//! - An event leaves the queue only after the repository accepted the
//!   whole transaction (all or nothing) and its id is recorded.
//! - The attempt is counted durably before sending. An attempt whose
//!   answer was lost (connection reset after the commit) is retried: the
//!   repository may then hold the event twice, and the copy without an
//!   alias is reported by `inkan audit` as an unsealed AuditEvent — never
//!   lost, never silently changed.
//! - Failures back off per event (1 s doubling to 5 min) and survive
//!   restarts, because the schedule lives in the ledger's queue. Events
//!   that failed before are retried one per transaction, so one event the
//!   repository refuses cannot hold back the rest of its batch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use ledger::store::Delivery;
use prometheus_client::metrics::counter::Counter;

use crate::error::ConfigError;
use crate::seal::{blocking, Sealer};
use crate::upstream::UpstreamReader;

/// Longest pause between attempts at one event.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub deferred: usize,
}

/// The audit repository as configured: `[audit] repository_url` with its
/// own token, else `upstream` itself (its client and the gateway's token).
pub fn repository(
    config: &crate::config::Config,
    upstream: &UpstreamReader,
) -> Result<UpstreamReader, ConfigError> {
    let Some(url) = &config.audit.repository_url else {
        return Ok(upstream.clone());
    };
    UpstreamReader::new(&crate::config::UpstreamConfig {
        url: url.clone(),
        also_known_as: Vec::new(),
        bearer_token_file: config.audit.repository_bearer_token_file.clone(),
        ..config.upstream.clone()
    })
}

/// Delivers forever: rounds back to back while events wait, a pause of
/// `idle` when none do.
pub async fn run(
    sealer: Arc<Sealer>,
    repository: UpstreamReader,
    batch_size: usize,
    idle: Duration,
    delivered: Counter,
) {
    loop {
        match deliver_round(&sealer, &repository, batch_size).await {
            Ok(round) if round.delivered > 0 => {
                delivered.inc_by(round.delivered as u64);
                if round.deferred == 0 {
                    continue;
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "access record delivery: the ledger failed"),
        }
        tokio::time::sleep(idle).await;
    }
}

/// One round: up to `batch_size` due events.
pub async fn deliver_round(
    sealer: &Sealer,
    repository: &UpstreamReader,
    batch_size: usize,
) -> Result<Round, ledger::Error> {
    let ledger = sealer.ledger();
    let due = blocking(|| ledger.due_deliveries(batch_size))?;
    if due.is_empty() {
        return Ok(Round::default());
    }
    let mut round = Round::default();
    let refused = deliver_batch(ledger, repository, &due, &mut round).await?;
    // The repository refused the transaction (4xx): one event it will not
    // take (a poison message) must not hold back the others, which the
    // transaction refused with it. They go one per transaction, at once.
    if refused && due.len() > 1 {
        round.deferred = 0;
        for single in due.chunks(1) {
            deliver_batch(ledger, repository, single, &mut round).await?;
        }
    }
    Ok(round)
}

/// Sends one transaction; true when the repository refused it (4xx).
async fn deliver_batch(
    ledger: &ledger::log::Ledger,
    repository: &UpstreamReader,
    batch: &[Delivery],
    round: &mut Round,
) -> Result<bool, ledger::Error> {
    let sending: Vec<u64> = batch.iter().map(|d| d.leaf_index).collect();
    blocking(|| ledger.store().record_attempts(&sending))?;
    match send_transaction(repository, batch).await {
        Ok(ids) => {
            let delivered: Vec<(u64, Option<String>)> = sending.iter().copied().zip(ids).collect();
            blocking(|| ledger.store().mark_delivered(&delivered))?;
            round.delivered += delivered.len();
            tracing::debug!(events = delivered.len(), "access records delivered");
            Ok(false)
        }
        Err(Undelivered { refused, error }) => {
            let attempts = batch.iter().map(|d| d.attempts).min().unwrap_or(0);
            let wait = backoff(attempts);
            let next = ledger::clock::unix_millis() + wait.as_millis() as i64;
            tracing::warn!(
                events = sending.len(),
                first_leaf = sending.first().copied().unwrap_or_default(),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "the audit repository did not take access records; they stay queued"
            );
            blocking(|| ledger.store().defer_deliveries(&sending, next, &error))?;
            round.deferred += sending.len();
            Ok(refused)
        }
    }
}

/// Why a transaction did not deliver its events.
#[derive(Debug)]
struct Undelivered {
    /// The repository answered 4xx: something in the events, not an
    /// outage.
    refused: bool,
    error: String,
}

impl From<String> for Undelivered {
    fn from(error: String) -> Undelivered {
        Undelivered {
            refused: false,
            error,
        }
    }
}

/// 1 s after the first failure, doubling, at most five minutes.
fn backoff(attempts_before: u32) -> Duration {
    let seconds = 1u64 << attempts_before.min(9);
    Duration::from_secs(seconds).min(MAX_BACKOFF)
}

/// Creates `events` in one transaction; the repository's id of each, in
/// order (`None` where the answer names none).
async fn send_transaction(
    repository: &UpstreamReader,
    events: &[Delivery],
) -> Result<Vec<Option<String>>, Undelivered> {
    let mut entries = Vec::with_capacity(events.len());
    for delivery in events {
        let mut resource: serde_json::Value = serde_json::from_slice(&delivery.body)
            .map_err(|e| format!("queued access record is not JSON: {e}"))?;
        // A create carries no id; the repository assigns one.
        if let Some(object) = resource.as_object_mut() {
            object.remove("id");
        }
        entries.push(serde_json::json!({
            "fullUrl": format!("urn:uuid:{}", delivery.key.id),
            "resource": resource,
            "request": {"method": "POST", "url": "AuditEvent"},
        }));
    }
    let bundle = serde_json::json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries,
    });
    let body = serde_json::to_vec(&bundle).map_err(|e| e.to_string())?;
    let mut request = http::Request::post(format!("{}/", repository.base()))
        .header(CONTENT_TYPE, "application/fhir+json")
        .header(ACCEPT, "application/fhir+json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    if let Some(auth) = repository.gateway_authorization() {
        request.headers_mut().insert(AUTHORIZATION, auth.clone());
    }
    let response = repository
        .client()
        .send(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    // Bounded in time and size: a stalled repository must not hang the
    // delivery task (the answer is retried like any failure).
    let body = http_body_util::Limited::new(response.into_body(), 64 << 20).collect();
    let body = match tokio::time::timeout(Duration::from_secs(60), body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        _ => {
            return Err(Undelivered::from(
                "the repository's answer did not arrive".to_owned(),
            ))
        }
    };
    if !status.is_success() {
        return Err(Undelivered {
            refused: status.is_client_error(),
            error: format!("the repository answered HTTP {}", status.as_u16()),
        });
    }
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| "the repository's transaction-response is not JSON".to_owned())?;
    let entries = answer["entry"].as_array().cloned().unwrap_or_default();
    if entries.len() != events.len() {
        return Err(Undelivered::from(format!(
            "the transaction-response has {} entries for {} events",
            entries.len(),
            events.len()
        )));
    }
    Ok(entries
        .iter()
        .map(|entry| {
            let location = entry["response"]["location"].as_str()?;
            crate::fhir::path::id_of_reference(location, "AuditEvent")
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let waits: Vec<u64> = [0, 1, 2, 5, 8, 9, 30]
            .iter()
            .map(|&a| backoff(a).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 32, 256, 300, 300]);
    }
}
