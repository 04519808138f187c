//! Delivery of sealed access records to the audit repository, in the
//! background, in batches: one transaction Bundle of `PUT AuditEvent/<id>`
//! entries per round (a PUT with the gateway's id creates version 1, the
//! version the seal names, and a repeated PUT of a delivered event is
//! avoided below).
//!
//! Never loses, never duplicates:
//! - an event leaves the queue only after the repository accepted the
//!   whole transaction;
//! - before sending, the attempt is counted durably; an event with an
//!   earlier attempt may have arrived even though the answer was lost, so
//!   the deliverer first asks the repository which of those it has
//!   (`AuditEvent?_id=…`) and sends only the others;
//! - failures back off per event (1 s doubling to 5 min) and survive
//!   restarts, because the schedule lives in the ledger's queue.

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
    pub already_there: usize,
    pub deferred: usize,
}

/// The audit repository as configured: `[audit] repository_url` with its
/// own token, else the upstream with the gateway's.
pub fn repository(config: &crate::config::Config) -> Result<UpstreamReader, ConfigError> {
    let Some(url) = &config.audit.repository_url else {
        return UpstreamReader::new(&config.upstream);
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
            Ok(round) if round.delivered + round.already_there > 0 => {
                delivered.inc_by((round.delivered + round.already_there) as u64);
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
    // Events tried before may be there already.
    let retried: Vec<&Delivery> = due.iter().filter(|d| d.attempts > 0).collect();
    let present = match retried.is_empty() {
        true => Vec::new(),
        false => present_in_repository(repository, &retried).await.unwrap_or_default(),
    };
    let (there, to_send): (Vec<&Delivery>, Vec<&Delivery>) = due
        .iter()
        .partition(|d| present.iter().any(|id| *id == d.key.id));
    let there_ids: Vec<u64> = there.iter().map(|d| d.leaf_index).collect();
    blocking(|| ledger.store().mark_delivered(&there_ids))?;
    round.already_there = there_ids.len();
    if to_send.is_empty() {
        return Ok(round);
    }
    let sending: Vec<u64> = to_send.iter().map(|d| d.leaf_index).collect();
    blocking(|| ledger.store().record_attempts(&sending))?;
    match send_transaction(repository, &to_send).await {
        Ok(()) => {
            blocking(|| ledger.store().mark_delivered(&sending))?;
            round.delivered = sending.len();
            tracing::debug!(events = sending.len(), "access records delivered");
        }
        Err(error) => {
            let attempts = to_send.iter().map(|d| d.attempts).min().unwrap_or(0);
            let wait = backoff(attempts);
            let next = ledger::clock::unix_millis() + wait.as_millis() as i64;
            tracing::warn!(
                events = sending.len(),
                %error,
                retry_in_ms = wait.as_millis() as u64,
                "the audit repository did not take access records; they stay queued"
            );
            blocking(|| ledger.store().defer_deliveries(&sending, next, &error))?;
            round.deferred = sending.len();
        }
    }
    Ok(round)
}

/// 1 s after the first failure, doubling, at most five minutes.
fn backoff(attempts_before: u32) -> Duration {
    let seconds = 1u64 << attempts_before.min(9);
    Duration::from_secs(seconds).min(MAX_BACKOFF)
}

/// The ids among `events` the repository already holds.
async fn present_in_repository(
    repository: &UpstreamReader,
    events: &[&Delivery],
) -> Result<Vec<String>, String> {
    let ids: Vec<&str> = events.iter().map(|d| d.key.id.as_str()).collect();
    let path = format!(
        "/AuditEvent?_id={}&_elements=id&_count={}",
        ids.join(","),
        ids.len()
    );
    let body = repository.get(&path).await.map_err(|e| e.to_string())?;
    let bundle: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

async fn send_transaction(repository: &UpstreamReader, events: &[&Delivery]) -> Result<(), String> {
    let mut entries = Vec::with_capacity(events.len());
    for delivery in events {
        let resource: serde_json::Value = serde_json::from_slice(&delivery.body)
            .map_err(|e| format!("queued access record is not JSON: {e}"))?;
        entries.push(serde_json::json!({
            "fullUrl": format!("urn:uuid:{}", delivery.key.id),
            "resource": resource,
            "request": {"method": "PUT", "url": format!("AuditEvent/{}", delivery.key.id)},
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
    // Drain the answer so the connection can be reused.
    let _ = response.into_body().collect().await;
    match status.is_success() {
        true => Ok(()),
        false => Err(format!("the repository answered HTTP {}", status.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let waits: Vec<u64> = [0, 1, 2, 5, 8, 9, 30].iter().map(|&a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 32, 256, 300, 300]);
    }
}
