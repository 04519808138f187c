//! Step 12, journal. Runs on writes the ledger seals (create, update,
//! patch, delete, their conditional forms, batch and transaction), before
//! they are forwarded. A conditional delete names no resource, so what its
//! condition matches now is looked up first (its tombstones are sealed
//! after the delete). Then the write is recorded durably in the intent
//! journal ([`crate::seal::journal`]). Changes nothing in the request.
//! Results: the journaled write; 500 when the journal cannot be written
//! (no journal, no forwarding: nothing may be written unsealed without a
//! trace). A failed lookup is not an error: it is reported as a seal
//! failure after the write.

use super::facts::{Outgoing, RequestFacts};
use super::Gateway;
use crate::error::GatewayError;
use crate::fhir::interaction::Interaction;
use crate::seal::journal::{PendingWrite, WriteIntent};
use crate::seal::write::conditional_matches;
use crate::seal::Sealer;
use crate::upstream::UpstreamReader;

/// A write recorded in the journal, with what step 15 needs.
#[derive(Debug)]
pub(super) struct JournaledWrite<'a> {
    pub pending: PendingWrite<'a>,
    /// The upstream as the seal reads it: acting for the client (the
    /// `Authorization` policy of [`crate::upstream::upstream_authorization`]).
    pub upstream: UpstreamReader,
    /// Conditional delete: the resources its condition matched.
    pub matched: Vec<(String, String)>,
    /// Why something will not be sealed, known before forwarding.
    pub failures: Vec<String>,
}

impl Gateway {
    pub(super) async fn journal_write<'s>(
        &self,
        sealer: &'s Sealer,
        client_authorization: Option<&http::HeaderValue>,
        outgoing: &Outgoing,
        facts: &RequestFacts,
    ) -> Result<JournaledWrite<'s>, GatewayError> {
        let upstream = self.upstream.acting_for(client_authorization);
        let mut matched = Vec::new();
        let mut failures = Vec::new();
        if facts.interaction == Interaction::ConditionalDelete {
            let query = outgoing.query.as_deref().unwrap_or("");
            match conditional_matches(&upstream, &facts.fhir_path, query).await {
                Ok(found) => matched = found,
                Err(reason) => failures.push(format!(
                    "could not resolve the conditional delete before forwarding it: {reason}"
                )),
            }
        }
        let intent = WriteIntent {
            interaction: facts.interaction.as_str().to_owned(),
            path: facts.fhir_path.clone(),
            matched: matched.clone(),
        };
        let pending = sealer.begin_write(&intent).await?;
        Ok(JournaledWrite {
            pending,
            upstream,
            matched,
            failures,
        })
    }
}
