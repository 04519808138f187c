//! Steps 4 and 7, identify and authorize, and the patient-context checks
//! that need a body. The rules are in [`crate::auth`].
//!
//! - Identify (step 4) runs after routing, before the body is read: in
//!   `jwt` mode a request without a valid bearer token is refused here
//!   (401), so no unauthenticated body is ever buffered. In passthrough
//!   it only notes the unverified claims. May change: nothing.
//! - Authorize (step 7) runs once the body is in (batch entries are in
//!   it): SMART scopes against the interaction, a patient context against
//!   the path and query (403). May change: nothing; the grant it returns
//!   can add a search parameter (step 10).
//! - [`Gateway::hold_write_to_patient`] (after step 9) and
//!   [`Gateway::hold_answer_to_patient`] (after step 16) refuse a body
//!   that points at another patient than the token's (403); they run only
//!   when a patient scope granted the request.

use bytes::Bytes;
use http::HeaderMap;

use super::facts::{AccessNotes, RequestFacts};
use super::Gateway;
use crate::auth::{compartment, Caller, Grant};
use crate::error::GatewayError;
use crate::fhir::interaction::Interaction;

impl Gateway {
    /// Step 4: who is calling.
    pub(super) async fn identify(
        &self,
        headers: &HeaderMap,
        facts: &RequestFacts,
    ) -> Result<Caller, GatewayError> {
        self.authenticator
            .identify(
                headers,
                facts.conn.certificate_subject.as_deref(),
                facts.interaction,
            )
            .await
    }

    /// Step 7: whether the caller may make this request.
    pub(super) fn authorize(
        &self,
        notes: &AccessNotes,
        body: &Bytes,
        facts: &RequestFacts,
    ) -> Result<Grant, GatewayError> {
        if !self.authenticator.enforces() {
            return Ok(Grant::default());
        }
        let batch = match facts.interaction {
            Interaction::BatchOrTransaction => Some(batch_entries(body)?),
            _ => None,
        };
        self.authenticator.authorize(
            &notes.caller,
            facts.interaction,
            &facts.fhir_path,
            facts.query.as_deref(),
            batch.as_deref(),
        )
    }

    /// A write under a patient context may not name another patient.
    pub(super) fn hold_write_to_patient(
        &self,
        grant: &Grant,
        body: &Bytes,
        facts: &RequestFacts,
    ) -> Result<(), GatewayError> {
        let Some(patient) = &grant.patient else {
            return Ok(());
        };
        if !matches!(facts.interaction, Interaction::Create | Interaction::Update) {
            return Ok(());
        }
        let resource: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| GatewayError::Forbidden {
                reason: "a write under a patient context must be a FHIR JSON resource".into(),
            })?;
        match compartment::foreign_patient(&resource, patient) {
            None => Ok(()),
            Some(_) => Err(GatewayError::Forbidden {
                reason: "the resource belongs to another patient than the token's".into(),
            }),
        }
    }

    /// An answer under a patient context may not show another patient:
    /// the resource, or each entry of a Bundle. An answer the gateway
    /// cannot look into (streamed, XML) is refused for reads of other
    /// types than Patient.
    pub(super) fn hold_answer_to_patient(
        &self,
        grant: &Grant,
        body: Option<&Bytes>,
        facts: &RequestFacts,
    ) -> Result<(), GatewayError> {
        let Some(patient) = &grant.patient else {
            return Ok(());
        };
        let refused = |reason: &str| GatewayError::Forbidden {
            reason: reason.to_owned(),
        };
        let Some(value) = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        else {
            return Err(refused(
                "the answer cannot be checked against the token's patient context",
            ));
        };
        let mut resources = vec![&value];
        if value["resourceType"] == "Bundle" {
            resources = value["entry"]
                .as_array()
                .map(|entries| entries.iter().map(|e| &e["resource"]).collect())
                .unwrap_or_default();
        }
        for resource in resources.into_iter().filter(|r| r.is_object()) {
            // Search outcomes and error answers name no patient.
            if resource["resourceType"] == "OperationOutcome" {
                continue;
            }
            if compartment::foreign_patient(resource, patient).is_some() {
                tracing::info!(request_id = %facts.request_id, "an answer crossed the token's patient context");
                return Err(refused(
                    "the answer concerns another patient than the token's",
                ));
            }
        }
        Ok(())
    }
}

/// `(method, url)` of each entry of a batch or transaction Bundle (JSON).
fn batch_entries(body: &Bytes) -> Result<Vec<(String, String)>, GatewayError> {
    let refused = || GatewayError::Forbidden {
        reason:
            "a batch or transaction must be a FHIR JSON Bundle for its entries to be authorized"
                .into(),
    };
    let bundle: serde_json::Value = serde_json::from_slice(body).map_err(|_| refused())?;
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|entry| {
            let request = &entry["request"];
            match (request["method"].as_str(), request["url"].as_str()) {
                (Some(method), Some(url)) => Ok((method.to_owned(), url.to_owned())),
                _ => Err(refused()),
            }
        })
        .collect()
}
