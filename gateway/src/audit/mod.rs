//! The access trail (`[audit]`, docs/audit-trail.md): one IHE BALP
//! AuditEvent per request and patient ([`event`]), sealed in the ledger as
//! an access record before the answer leaves ([`Auditor::record`]), and
//! delivered in the background to the audit repository ([`deliver`]).
//!
//! The seal and the delivery queue share one commit (the ledger's
//! `DeliveryQueue`), so an answered request's events are never lost: a
//! crash before delivery leaves them queued, and the next start delivers
//! them. Nothing here logs the events' content (it names patients and
//! carries the query); logs get counts and request ids.

pub mod deliver;
pub mod event;
pub mod patients;

use std::sync::Arc;

use ledger::log::{access_record_key, SealRequest};

use crate::config::Config;
use crate::seal::{SealError, Sealer};
use event::{Access, Observer};

/// Writes access records.
#[derive(Debug)]
pub struct Auditor {
    sealer: Arc<Sealer>,
    observer: Observer,
    max_patients: usize,
}

impl Auditor {
    pub fn new(config: &Config, sealer: Arc<Sealer>) -> Auditor {
        let name = config
            .audit
            .observer
            .clone()
            .unwrap_or_else(|| config.ledger.origin.clone());
        Auditor {
            sealer,
            observer: Observer {
                name,
                address: config.listen.to_string(),
            },
            max_patients: config.audit.max_patients_per_request,
        }
    }

    /// Seals the events of one request and queues them for delivery, in
    /// one durable group commit; returns how many. The answer may leave
    /// only after this returns `Ok`.
    pub async fn record(&self, access: &Access<'_>) -> Result<usize, SealError> {
        let requests: Vec<SealRequest> = event::events(access, &self.observer, self.max_patients)
            .into_iter()
            .map(|(id, event)| SealRequest::Access {
                key: access_record_key(&id),
                event,
            })
            .collect();
        let count = requests.len();
        self.sealer.append(requests).await?;
        Ok(count)
    }
}

/// The current time as a FHIR instant with milliseconds.
pub fn now_instant() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.millisecond()
    )
}
