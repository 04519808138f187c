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
use crate::auth::smart::{Need, Permission};
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
                crate::auth::open_to_all(facts.interaction, &facts.fhir_path),
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
        // A server may store a body by its own resourceType: the scope
        // checked must be that type's.
        if matches!(
            facts.interaction,
            Interaction::Create | Interaction::Update | Interaction::ConditionalUpdate
        ) {
            let path_type = crate::fhir::path::resource_type_of(&facts.fhir_path);
            if let Some(body_type) = json_resource_type(body) {
                if Some(body_type.as_str()) != path_type {
                    return Err(GatewayError::Forbidden {
                        reason: "the body's resourceType is not the path's".into(),
                    });
                }
            }
        }
        self.authenticator.authorize(
            &notes.caller,
            facts.interaction,
            &facts.method,
            &facts.fhir_path,
            facts.query.as_deref(),
            batch.as_deref(),
        )
    }

    /// An answer may hold only resource types the token's scopes let the
    /// caller read (`_include`, `_revinclude` and `$everything` bring in
    /// others). A Bundle's entries are each checked; an answer the
    /// gateway cannot look into passes only a token that may read every
    /// type. `jwt` mode only.
    pub(super) fn hold_answer_to_scopes(
        &self,
        caller: &Caller,
        body: Option<&Bytes>,
        facts: &RequestFacts,
    ) -> Result<(), GatewayError> {
        if !self.authenticator.enforces()
            || crate::auth::open_to_all(facts.interaction, &facts.fhir_path)
        {
            return Ok(());
        }
        let may_read = |resource_type: Option<&str>| {
            [Permission::Read, Permission::Search]
                .into_iter()
                .any(|permission| {
                    caller
                        .scopes
                        .granting(&Need {
                            resource_type: resource_type.map(str::to_owned),
                            permission,
                        })
                        .is_some()
                })
        };
        if may_read(None) {
            return Ok(());
        }
        let refused = |what: &str| GatewayError::Forbidden {
            reason: format!("the answer holds {what}, which the token's scopes do not cover"),
        };
        let Some(value) = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        else {
            return Err(refused("resources the gateway cannot look into"));
        };
        let mut resources = vec![&value];
        if value["resourceType"] == "Bundle" {
            resources = value["entry"]
                .as_array()
                .map(|entries| entries.iter().map(|e| &e["resource"]).collect())
                .unwrap_or_default();
        }
        for resource in resources {
            let Some(resource_type) = resource["resourceType"].as_str() else {
                continue;
            };
            if resource_type != "OperationOutcome" && !may_read(Some(resource_type)) {
                return Err(refused(resource_type));
            }
        }
        Ok(())
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

/// The `resourceType` of a JSON body, if it is one.
fn json_resource_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
    }
    serde_json::from_slice::<Head>(body).ok()?.resource_type
}

/// `(method, url)` of each entry of a batch or transaction Bundle (JSON).
/// An entry whose resource's type is not its URL's is refused: the
/// server may store it by the resource's type.
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
            let (Some(method), Some(url)) = (request["method"].as_str(), request["url"].as_str())
            else {
                return Err(refused());
            };
            if let Some(body_type) = entry["resource"]["resourceType"].as_str() {
                let url_path = format!(
                    "/{}",
                    url.split('?').next().unwrap_or("").trim_start_matches('/')
                );
                if crate::fhir::path::resource_type_of(&url_path) != Some(body_type) {
                    return Err(GatewayError::Forbidden {
                        reason: "a batch entry's resourceType is not its URL's".into(),
                    });
                }
            }
            Ok((method.to_owned(), url.to_owned()))
        })
        .collect()
}
