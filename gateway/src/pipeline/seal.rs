//! Step 15, seal. Runs on the answer to a write the ledger seals (see
//! [`crate::seal::write`] for which versions and how), after decoding and
//! before the client hears anything. A refused write (not 2xx) only
//! settles its journal entry, right after forwarding
//! ([`Gateway::settle_if_refused`]). A committed one is buffered (within
//! `limits.max_inspected_response_bytes`; larger or still-encoded answers
//! are read back from the upstream instead) and its versions are appended
//! to the ledger; the journal entry is then closed, or kept open with the
//! reason. Changes nothing in the answer. Results: the answer and the
//! [`SealOutcome`] for step 19's headers. A seal that fails is not an
//! error for the client: the upstream committed, so the client gets its
//! answer with `Inkan-Seal: failed`, and the write is left for repair.

use bytes::Bytes;
use http::Response;
use sha2::Digest;

use super::facts::{AnswerCoding, RequestFacts};
use super::journal::JournaledWrite;
use super::Gateway;
use crate::body::{self, Buffered, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::interaction::Interaction;
use crate::metrics::KindLabels;
use crate::seal::write::{seals, SealOutcome, WrittenRequest};
use crate::seal::Sealer;

/// What the earlier steps know about the write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Written<'a> {
    /// SHA-256 of exactly what the client sent (after its content coding,
    /// which is transport, not content).
    pub original_digest: Option<[u8; 32]>,
    /// The FHIR JSON sent upstream (the request Bundle of a batch).
    pub sent_body: &'a Bytes,
    pub coding: &'a AnswerCoding,
}

/// SHA-256 of a request body.
pub(super) fn digest(body: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(body).into()
}

impl Gateway {
    /// The ledger, when `interaction` is a write it seals.
    pub(super) fn sealer_for(&self, interaction: Interaction) -> Option<&Sealer> {
        self.sealer.as_deref().filter(|_| seals(interaction))
    }

    /// Right after forwarding: a refused write (not 2xx) stored nothing,
    /// so its journal entry is closed at once and there is nothing to seal.
    pub(super) fn settle_if_refused<'s>(
        &self,
        journal: JournaledWrite<'s>,
        status: http::StatusCode,
    ) -> Option<JournaledWrite<'s>> {
        if status.is_success() {
            return Some(journal);
        }
        journal.pending.refused();
        None
    }

    /// A committed write: its versions sealed, its journal entry settled.
    pub(super) async fn seal(
        &self,
        journal: JournaledWrite<'_>,
        answer: Response<ResponseBody>,
        written: Written<'_>,
        facts: &RequestFacts,
    ) -> Result<(Response<ResponseBody>, Option<SealOutcome>), GatewayError> {
        let JournaledWrite {
            pending,
            upstream,
            matched,
            mut failures,
        } = journal;
        let (parts, body) = answer.into_parts();
        let limit = self.config.limits.max_inspected_response_bytes;
        let still_encoded = matches!(written.coding, AnswerCoding::StillEncoded { .. });
        let (stored, body) = match body::buffer_upstream(body, limit).await? {
            // Still compressed (step 14): not the stored bytes; the seal reads them back.
            Buffered::Whole(bytes) if still_encoded => (None, body::full(bytes)),
            Buffered::Whole(bytes) => (Some(bytes.clone()), body::full(bytes)),
            Buffered::TooLarge { head, rest } => (None, body::prepend(head, rest)),
        };
        let request = WrittenRequest {
            interaction: facts.interaction,
            fhir_path: &facts.fhir_path,
            original_digest: written.original_digest,
            sent_body: written.sent_body,
            matched: &matched,
        };
        if let Some(delay) = self.faults.seal_delay {
            tokio::time::sleep(delay).await;
        }
        let sealer = pending.sealer();
        let mut outcome = sealer
            .seal_write(&upstream, request, &parts.headers, stored.as_deref())
            .await;
        outcome.failures.append(&mut failures);
        pending.settle(&outcome);
        let kind = match outcome.failures.is_empty() {
            true => "sealed",
            false => "failed",
        };
        self.metrics.seals.get_or_create(&KindLabels { kind }).inc();
        for reason in &outcome.failures {
            tracing::error!(request_id = %facts.request_id, path = %facts.fhir_path, %reason, "write committed upstream but NOT sealed; needs repair");
        }
        Ok((Response::from_parts(parts, body), Some(outcome)))
    }
}
