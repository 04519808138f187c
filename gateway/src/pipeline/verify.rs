//! Step 17, verify. Runs on buffered answers to read, vread, history and
//! search while the ledger is open and `ledger.verify_reads` is not `off`,
//! on the upstream's bytes before any rewriting (the seal covers the
//! version as the upstream stores it). The contract is in
//! [`crate::seal::verify_read`]: every returned version is compared with
//! its seal; a read answered 404/410 is compared with what is sealed.
//! May change: `Inkan-Verify` and `Inkan-Verify-Backfilled`; in Bundles,
//! an extension on each checked entry and, in `block` mode, a tampered
//! entry's resource. Results: the (possibly annotated) body; 502 for a
//! tampered read or vread in `block` mode; 500 when the ledger fails.

use bytes::Bytes;
use http::header::{HeaderValue, ETAG};
use http::StatusCode;

use super::facts::{RequestFacts, ResponsePlan};
use super::inspect::Head;
use super::Gateway;
use crate::config::VerifyReads;
use crate::error::GatewayError;
use crate::fhir::format::WireFormat;
use crate::fhir::interaction::Interaction;
use crate::fhir::path::{etag_version, ResourcePath};
use crate::metrics::KindLabels;
use crate::seal::verify_read::{self, ReadRequest, ReadVerification, Shape};
use crate::seal::{lookup, Sealer};

impl Gateway {
    pub(super) fn verify(
        &self,
        body: Bytes,
        head: &mut Head,
        facts: &RequestFacts,
        plan: &ResponsePlan,
    ) -> Result<Bytes, GatewayError> {
        let (Some(shape), Some(sealer)) = (plan.verify, &self.sealer) else {
            return Ok(body);
        };
        let request = read_request(facts, &head.parts.headers);
        let status = head.parts.status;
        let missing =
            shape == Shape::Resource && matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE);
        let (body, summary) = if missing {
            (body, self.verify_missing(sealer, &request, status, facts)?)
        } else if status == StatusCode::OK && head.format == WireFormat::Json {
            self.verify_versions(sealer, body, shape, &request, facts)?
        } else {
            (body, None)
        };
        if let Some(summary) = summary {
            let headers = &mut head.parts.headers;
            if let Ok(v) = HeaderValue::from_str(&summary.header_value()) {
                headers.insert(verify_read::INKAN_VERIFY, v);
            }
            if summary.backfilled > 0 {
                headers.insert(
                    verify_read::INKAN_VERIFY_BACKFILLED,
                    HeaderValue::from(summary.backfilled),
                );
            }
        }
        Ok(body)
    }

    /// A read answered 404/410: tampered when the ledger holds it sealed.
    fn verify_missing(
        &self,
        sealer: &Sealer,
        request: &ReadRequest,
        status: StatusCode,
        facts: &RequestFacts,
    ) -> Result<Option<ReadVerification>, GatewayError> {
        let found = lookup(|| verify_read::check_missing(sealer.ledger(), request))
            .map_err(GatewayError::ledger)?;
        let Some((reference, check)) = found else {
            return Ok(None);
        };
        tracing::error!(request_id = %facts.request_id, %reference, status = status.as_u16(), "a sealed version is missing from the upstream");
        let summary = ReadVerification {
            tampered: 1,
            ..Default::default()
        };
        self.count_verifications(&summary);
        verify_read::refuse_in_block_mode(&reference, &check, self.config.ledger.verify_reads)?;
        Ok(Some(summary))
    }

    /// A 200 FHIR JSON answer: every version in it against its seal.
    fn verify_versions(
        &self,
        sealer: &Sealer,
        body: Bytes,
        shape: Shape,
        request: &ReadRequest,
        facts: &RequestFacts,
    ) -> Result<(Bytes, Option<ReadVerification>), GatewayError> {
        let policy = self.config.ledger.verify_reads;
        let result =
            lookup(|| verify_read::verify_answer(sealer.ledger(), &body, shape, policy, request));
        let (summary, edited) = match result {
            Ok(found) => found,
            Err(error) => {
                if let GatewayError::TamperedVersion { .. } = &error {
                    self.count_verifications(&ReadVerification {
                        tampered: 1,
                        ..Default::default()
                    });
                    tracing::error!(request_id = %facts.request_id, "{error}");
                }
                return Err(error);
            }
        };
        self.count_verifications(&summary);
        if summary.tampered > 0 {
            tracing::error!(request_id = %facts.request_id, path = %facts.fhir_path, tampered = summary.tampered, "the upstream returned versions that do not match their seals");
        }
        Ok((edited.map(Bytes::from).unwrap_or(body), Some(summary)))
    }

    /// Which shape of answer verify-on-read checks for this interaction,
    /// if any (step 9 puts it in the plan).
    pub(super) fn verify_shape(&self, interaction: Interaction) -> Option<Shape> {
        if self.sealer.is_none() || self.config.ledger.verify_reads == VerifyReads::Off {
            return None;
        }
        match interaction {
            Interaction::Read | Interaction::Vread => Some(Shape::Resource),
            Interaction::HistoryInstance
            | Interaction::HistoryType
            | Interaction::HistorySystem
            | Interaction::SearchType
            | Interaction::SearchSystem => Some(Shape::Bundle),
            _ => None,
        }
    }

    fn count_verifications(&self, summary: &ReadVerification) {
        for (kind, n) in [
            ("verified", summary.verified),
            ("tampered", summary.tampered),
            ("unsealed", summary.unsealed),
            ("unchecked", summary.unchecked),
        ] {
            if n > 0 {
                self.metrics
                    .read_verifications
                    .get_or_create(&KindLabels { kind })
                    .inc_by(u64::from(n));
            }
        }
    }
}

/// What the answer must match: type, id (and the version of a vread) from
/// the path, the version the `ETag` names, whether the client asked for a
/// subset.
fn read_request(facts: &RequestFacts, response_headers: &http::HeaderMap) -> ReadRequest {
    let named = match facts.interaction {
        Interaction::Read | Interaction::Vread => ResourcePath::parse(&facts.fhir_path),
        _ => None,
    };
    // `_summary=false` asks for the whole resource: not a subset.
    let subset_requested = facts.query.as_deref().is_some_and(|query| {
        query.split('&').any(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            name == "_elements" || (name == "_summary" && value != "false")
        })
    });
    ReadRequest {
        resource_type: named.as_ref().map(|p| p.resource_type.clone()),
        id: named.as_ref().map(|p| p.id.clone()),
        version_id: named.and_then(|p| p.version_id),
        etag_version: response_headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(etag_version),
        subset_requested,
        started_at: facts.started_unix,
    }
}
