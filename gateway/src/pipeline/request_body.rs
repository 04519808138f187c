//! Step 10, request body. Runs on every forwarded request with a body in a
//! FHIR format. Decodes Japanese legacy charsets to UTF-8 and normalizes
//! the text (see [`crate::japanese`]), checks FHIR JSON syntax, converts
//! FHIR XML to JSON when bridging, and sends natively-sent XML on as JSON
//! only when its text had to change. May change: the body, its content
//! type, and `Accept` (a client that sent XML and named no format still
//! gets XML back). Results: the [`Outgoing`] request; 415 for a media type
//! or charset it cannot forward; 400 for XML that is not FHIR; 400/422
//! for invalid text (see the Japanese rules).

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT};

use super::facts::{Outgoing, RequestFacts, ResponsePlan};
use super::Gateway;
use crate::error::GatewayError;
use crate::fhir::format::{ContentType, Wanted, WireFormat};
use crate::fhir::xml_bridge;
use crate::japanese::TextReport;
use crate::metrics::KindLabels;

impl Gateway {
    pub(super) fn prepare_request_body(
        &self,
        body: Bytes,
        content_type: Option<ContentType>,
        headers: &mut http::HeaderMap,
        plan: &ResponsePlan,
        facts: &RequestFacts,
    ) -> Result<Outgoing, GatewayError> {
        let (body, content_type, text_report) =
            self.normalize_body(body, content_type, plan.bridge_request)?;
        // Native XML that was normalized goes upstream as JSON; a client
        // that named no format still expects its answer in XML, as the
        // server would have sent it for an XML body.
        let now_json = content_type
            .as_ref()
            .is_some_and(|ct| ct.format == WireFormat::Json);
        if plan.client_sent_xml
            && now_json
            && !plan.bridge_request
            && facts.wanted == Wanted::Unspecified
        {
            headers.insert(ACCEPT, HeaderValue::from_static("application/fhir+xml"));
        }
        Ok(Outgoing {
            body,
            content_type,
            query: facts.query.clone(),
            text_report,
        })
    }

    /// Charset decoding, Japanese normalization, JSON syntax and the XML
    /// bridge. Returns the body, the content type to send upstream and
    /// what was changed in the text.
    fn normalize_body(
        &self,
        body: Bytes,
        content_type: Option<ContentType>,
        bridge: bool,
    ) -> Result<(Bytes, Option<ContentType>, TextReport), GatewayError> {
        let mut report = TextReport::default();
        let Some(mut ct) = content_type else {
            return Ok((body, None, report));
        };
        if body.is_empty() || ct.format == WireFormat::Other {
            return Ok((body, Some(ct), report));
        }
        let (body, decoded_from) = self.japanese.decode(body, ct.charset.as_deref())?;
        if decoded_from.is_some() {
            ct.charset = Some("utf-8".into());
        }
        report.decoded_from = decoded_from;
        let json = match ct.format {
            // Validated by process_json below (parsed once, not twice).
            WireFormat::Json => body,
            WireFormat::Xml if bridge => {
                let json = xml_to_json(&body)?;
                self.metrics
                    .xml_conversions
                    .get_or_create(&KindLabels {
                        kind: "request_xml_to_json",
                    })
                    .inc();
                ct = ContentType::parse("application/fhir+json");
                json
            }
            // Native XML: the text is checked and normalized in the JSON
            // model. Nothing to change → the client's XML goes on as sent;
            // otherwise the normalized resource goes as JSON (the upstream
            // answers in the format the client's Accept asks for).
            WireFormat::Xml if self.japanese.inspects_bodies() => {
                let (json, changed) = self.process_json(xml_to_json(&body)?, &mut report)?;
                return Ok(match changed {
                    false => (body, Some(ct), report),
                    true => (
                        json,
                        Some(ContentType::parse("application/fhir+json")),
                        report,
                    ),
                });
            }
            _ => return Ok((body, Some(ct), report)),
        };
        let (json, _) = self.process_json(json, &mut report)?;
        Ok((json, Some(ct), report))
    }

    /// Normalizes FHIR JSON text and runs the JP Core checks; says whether
    /// anything changed.
    fn process_json(
        &self,
        json: Bytes,
        report: &mut TextReport,
    ) -> Result<(Bytes, bool), GatewayError> {
        let (json, changes, findings) = self.japanese.process_json(json)?;
        for finding in &findings {
            tracing::warn!(path = %finding.path, "JP Core: {}", finding.message);
        }
        report.jpcore_findings = findings;
        let changed = changes.total() > 0;
        report.changes = changes;
        self.count_text_changes(report);
        Ok((json, changed))
    }
}

fn xml_to_json(body: &[u8]) -> Result<Bytes, GatewayError> {
    xml_bridge::xml_to_json(body)
        .map(Bytes::from)
        .map_err(|e| GatewayError::MalformedRequest {
            detail: e.to_string(),
        })
}
