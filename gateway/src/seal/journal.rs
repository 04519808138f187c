//! The intent journal: before a write to be sealed leaves for the
//! upstream, an *intent* is recorded durably in the ledger (in the
//! appender's group commit). It is settled once the write's versions are
//! sealed (closed), the upstream refused the write (closed), or sealing
//! failed (kept open with the reason, for repair). An intent still open
//! later means the upstream may hold versions the ledger lacks:
//! [`super::recovery`] seals them.
//!
//! No journal entry, no forwarding: nothing may be written unsealed
//! without a trace.

use serde::{Deserialize, Serialize};

use super::write::SealOutcome;
use super::{SealError, Sealer};
use crate::fhir::path::{resource_type_of, ResourcePath};

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
    /// An intent whose description cannot be read (written by another
    /// version): recovery sweeps the whole server's history for it.
    pub fn unknown() -> WriteIntent {
        WriteIntent {
            interaction: "unknown".into(),
            path: "/".into(),
            matched: Vec::new(),
        }
    }

    /// The history paths (after the base) whose versions this write may
    /// have created: the instance's, the type's for creates and
    /// conditional writes, the server's for batches and transactions.
    pub fn history_paths(&self) -> Vec<String> {
        if !self.matched.is_empty() {
            return self
                .matched
                .iter()
                .map(|(t, id)| format!("/{t}/{id}/_history"))
                .collect();
        }
        if let Some(resource) = ResourcePath::parse(&self.path) {
            return vec![resource.history_path()];
        }
        match resource_type_of(&self.path) {
            Some(resource_type) => vec![format!("/{resource_type}/_history")],
            None => vec!["/_history".to_owned()],
        }
    }
}

/// A write recorded in the journal and not settled yet. Dropping it
/// unsettled leaves the intent open on purpose: when sending failed, the
/// upstream may still have committed, and recovery finds out.
#[derive(Debug)]
#[must_use = "settle the write, or let recovery find it"]
pub struct PendingWrite<'a> {
    sealer: &'a Sealer,
    intent_id: u64,
}

impl Sealer {
    /// Records `intent` durably before the write is forwarded.
    pub async fn begin_write(&self, intent: &WriteIntent) -> Result<PendingWrite<'_>, SealError> {
        let description = serde_json::to_string(intent).unwrap_or_default();
        let (answer, opened) = tokio::sync::oneshot::channel();
        self.ledger.open_intent_then(&description, move |result| {
            let _ = answer.send(result);
        });
        let intent_id = opened
            .await
            .map_err(|_| SealError::AppenderStopped)?
            .map_err(SealError::Ledger)?;
        Ok(PendingWrite {
            sealer: self,
            intent_id,
        })
    }
}

impl<'a> PendingWrite<'a> {
    /// The ledger this write is journaled in.
    pub fn sealer(&self) -> &'a Sealer {
        self.sealer
    }

    /// The upstream refused the write: nothing was stored, nothing to seal.
    pub fn refused(self) {
        self.close();
    }

    /// The seal step ran: closed when every version was sealed, else kept
    /// open with the first reason.
    pub fn settle(self, outcome: &SealOutcome) {
        match outcome.failures.first() {
            None => self.close(),
            Some(reason) => {
                // Queued, not awaited (IntentJournal's contract): no hand-off.
                let store = self.sealer.ledger().store();
                if let Err(error) = store.fail_intent(self.intent_id, reason) {
                    tracing::error!(%error, intent = self.intent_id, "could not record the failed seal in the journal");
                }
            }
        }
    }

    fn close(self) {
        // Queued, not awaited (IntentJournal's contract): no hand-off.
        if let Err(error) = self.sealer.ledger().store().close_intent(self.intent_id) {
            // Left open: recovery reseals what is already sealed, harmlessly.
            tracing::warn!(%error, intent = self.intent_id, "could not close a journal intent");
        }
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
