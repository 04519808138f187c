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
//!   can add a search parameter (after step 11).
//! - [`Gateway::hold_write_to_patient`] (after step 11) refuses a body
//!   that points at another patient than the token's, and
//!   [`Gateway::hold_answer`] (after step 17) an answer that holds types
//!   the scopes do not cover or another patient (403); they do nothing in
//!   passthrough or without a patient scope.

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

    /// The answer stays within the token's scopes and patient context
    /// (`jwt` mode; nothing to do otherwise). The body is parsed once for
    /// both checks; `None` (streamed) or a body that is not JSON is one
    /// the gateway cannot look into.
    ///
    /// - Scopes: only resource types the scopes let the caller read
    ///   (`_include`, `_revinclude` and `$everything` bring in others),
    ///   each entry of a Bundle checked; an answer the gateway cannot look
    ///   into passes only a token that may read every type.
    /// - Patient context: no resource or Bundle entry may show another
    ///   patient; an answer the gateway cannot look into is refused.
    pub(super) fn hold_answer(
        &self,
        notes: &AccessNotes,
        body: Option<&Bytes>,
        facts: &RequestFacts,
    ) -> Result<(), GatewayError> {
        let check_scopes = self.authenticator.enforces()
            && !crate::auth::open_to_all(facts.interaction, &facts.fhir_path)
            && !may_read(&notes.caller, None);
        let patient = notes.grant.patient.as_deref();
        if !check_scopes && patient.is_none() {
            return Ok(());
        }
        let value = body.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
        let resources = value.as_ref().map(answer_resources);
        if check_scopes {
            hold_to_scopes(&notes.caller, resources.as_deref())?;
        }
        if let Some(patient) = patient {
            hold_to_patient(patient, resources.as_deref(), facts)?;
        }
        Ok(())
    }
}

/// The resources of an answer: the resource itself, or a Bundle's entries'.
fn answer_resources(value: &serde_json::Value) -> Vec<&serde_json::Value> {
    if value["resourceType"] != "Bundle" {
        return vec![value];
    }
    value["entry"]
        .as_array()
        .map(|entries| entries.iter().map(|e| &e["resource"]).collect())
        .unwrap_or_default()
}

/// Whether the caller's scopes let it read (or search) `resource_type`
/// (`None`: every type).
fn may_read(caller: &Caller, resource_type: Option<&str>) -> bool {
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
}

fn hold_to_scopes(
    caller: &Caller,
    resources: Option<&[&serde_json::Value]>,
) -> Result<(), GatewayError> {
    let refused = |what: &str| GatewayError::Forbidden {
        reason: format!("the answer holds {what}, which the token's scopes do not cover"),
    };
    let Some(resources) = resources else {
        return Err(refused("resources the gateway cannot look into"));
    };
    for resource in resources {
        let Some(resource_type) = resource["resourceType"].as_str() else {
            continue;
        };
        if resource_type != "OperationOutcome" && !may_read(caller, Some(resource_type)) {
            return Err(refused(resource_type));
        }
    }
    Ok(())
}

fn hold_to_patient(
    patient: &str,
    resources: Option<&[&serde_json::Value]>,
    facts: &RequestFacts,
) -> Result<(), GatewayError> {
    let refused = |reason: &str| GatewayError::Forbidden {
        reason: reason.to_owned(),
    };
    let Some(resources) = resources else {
        return Err(refused(
            "the answer cannot be checked against the token's patient context",
        ));
    };
    for resource in resources.iter().filter(|r| r.is_object()) {
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
