//! Step 19, account. Runs on every routed request once its answer is
//! ready (served or refused) and before it leaves, when `[audit]` is on:
//! the request's BALP AuditEvents are sealed in the ledger and queued
//! for the audit repository in one durable commit ([`crate::audit`]).
//! May change: nothing in a successful answer. Results: the answer; a
//! 500 OperationOutcome instead when the access record cannot be made
//! durable (no data leaves without its access record).

use http::Response;

use super::facts::{AccessNotes, RequestFacts};
use super::observe;
use super::Gateway;
use crate::audit::event::Access;
use crate::audit::{now_instant, patients};
use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::fhir::interaction::Interaction;
use crate::fhir::path;
use crate::metrics::KindLabels;

impl Gateway {
    pub(super) async fn account(
        &self,
        response: Response<ResponseBody>,
        facts: &RequestFacts,
        notes: &mut AccessNotes,
    ) -> Response<ResponseBody> {
        let Some(auditor) = &self.auditor else {
            return response;
        };
        let max = self.config.audit.max_patients_per_request;
        if let Some(patient) = &notes.grant.patient {
            patients::add(&mut notes.patients, patient, max);
        }
        patients::in_request(
            &facts.fhir_path,
            facts.query.as_deref(),
            &mut notes.patients,
            max,
        );
        let data = touched(facts, &response);
        let recorded = now_instant();
        let access = Access {
            request_id: &facts.request_id,
            recorded: &recorded,
            interaction: facts.interaction,
            method: facts.method.as_str(),
            fhir_path: &facts.fhir_path,
            query: facts.query.as_deref(),
            status: response.status().as_u16(),
            refusal: notes.refusal.as_deref(),
            caller: &notes.caller,
            client_address: facts.conn.peer.ip().to_string(),
            data: &data,
            patients: &notes.patients,
        };
        match auditor.record(&access).await {
            Ok(events) => {
                self.metrics
                    .access_records
                    .get_or_create(&KindLabels { kind: "sealed" })
                    .inc_by(events as u64);
                response
            }
            Err(error) => {
                self.metrics
                    .access_records
                    .get_or_create(&KindLabels { kind: "failed" })
                    .inc();
                tracing::error!(
                    request_id = %facts.request_id,
                    kind = error.kind(),
                    detail = error.internal_detail().unwrap_or_default(),
                    "the access record could not be sealed; the answer is withheld"
                );
                let error = GatewayError::from(error);
                let response = observe::error_response(&error, facts.wanted.outcome_format());
                observe::with_request_id(response, &facts.request_id)
            }
        }
    }
}

/// The resources a request touched, as references: the instance in the
/// path, or the version a create or update produced (`Location`).
fn touched(facts: &RequestFacts, response: &Response<ResponseBody>) -> Vec<String> {
    let segments = path::segments(&facts.fhir_path);
    let written = matches!(
        facts.interaction,
        Interaction::Create
            | Interaction::Update
            | Interaction::ConditionalUpdate
            | Interaction::Patch
            | Interaction::ConditionalPatch
    );
    if written && response.status().is_success() {
        let location = response
            .headers()
            .get(http::header::LOCATION)
            .or_else(|| response.headers().get(http::header::CONTENT_LOCATION))
            .and_then(|v| v.to_str().ok());
        // `…/Type/id/_history/v` (or `…/Type/id`) → `Type/id/_history/v`.
        let named = location.and_then(path::ResourcePath::parse);
        if let Some(written) = named.filter(|p| segments.first() == Some(&p.resource_type.as_str()))
        {
            return vec![match written.version_id {
                Some(v) => format!("{}/{}/_history/{v}", written.resource_type, written.id),
                None => format!("{}/{}", written.resource_type, written.id),
            }];
        }
    }
    match (facts.interaction, segments.as_slice()) {
        (Interaction::Vread, [t, id, "_history", v]) => vec![format!("{t}/{id}/_history/{v}")],
        (_, [t, id, ..]) if path::is_resource_type(t) && !id.starts_with(['$', '_']) => {
            vec![format!("{t}/{id}")]
        }
        _ => Vec::new(),
    }
}
