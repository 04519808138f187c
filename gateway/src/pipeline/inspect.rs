//! Step 16, inspect. Runs on every upstream answer that reaches the
//! client. Relays the status and end-to-end headers (hop-by-hop headers
//! and look-alikes of the gateway's own `Inkan-*` headers dropped;
//! `Location` and `Content-Location` rewritten to the public base), then
//! decides whether the body is looked into: FHIR JSON or XML within
//! `limits.max_inspected_response_bytes` is buffered for steps 17–19;
//! anything else (HEAD, other media types, too large, still encoded)
//! streams on untouched, counted as uninspected. Results: the streamed
//! answer or the buffered one; 502 when an answer that must be converted
//! to XML is too large or in a coding the gateway cannot decode.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_LOCATION, LOCATION};
use http::{Method, Response};

use super::facts::{AnswerCoding, RequestFacts, ResponsePlan};
use super::Gateway;
use crate::body::{self, Buffered, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::format::{ContentType, WireFormat};
use crate::headers;

/// The answer after step 16.
#[derive(Debug)]
pub(super) enum Inspected {
    /// Relayed as it comes; later steps do not run.
    Streamed(Response<ResponseBody>),
    /// Buffered for steps 17 to 19.
    Buffered { head: Head, body: Bytes },
}

/// The head of a buffered answer and what steps 17–19 need to know of it.
#[derive(Debug)]
pub(super) struct Head {
    pub parts: http::response::Parts,
    /// The answer's format as the upstream sent it.
    pub format: WireFormat,
    /// JSON the client gets as XML (the bridge).
    pub convert_to_xml: bool,
}

impl Gateway {
    pub(super) async fn inspect(
        &self,
        answer: Response<ResponseBody>,
        facts: &RequestFacts,
        plan: &ResponsePlan,
        coding: &AnswerCoding,
    ) -> Result<Inspected, GatewayError> {
        let (mut parts, body) = answer.into_parts();
        self.relay_head(&mut parts.headers, facts);
        let format = ContentType::from_headers(&parts.headers)
            .as_ref()
            .map_or(WireFormat::Other, |ct| ct.format);
        let convert_to_xml = plan.bridge_response && format == WireFormat::Json;
        if facts.method == Method::HEAD || format == WireFormat::Other {
            return Ok(Inspected::Streamed(Response::from_parts(parts, body)));
        }
        if let AnswerCoding::StillEncoded { unknown } = coding {
            // Step 14 could not decode it: relay it as the upstream sent it.
            if convert_to_xml {
                return Err(match unknown {
                    Some(named) => GatewayError::ResponseConversion {
                        target: "FHIR XML",
                        reason: format!("the upstream compressed it with {named:?}, which the gateway cannot decode"),
                    },
                    None => GatewayError::ResponseTooLarge {
                        limit: self.config.limits.max_inspected_response_bytes,
                    },
                });
            }
            self.metrics.uninspected_responses.inc();
            tracing::warn!(request_id = %facts.request_id, "compressed FHIR response streamed without inspection (too large to decode, or an unknown coding)");
            return Ok(Inspected::Streamed(Response::from_parts(parts, body)));
        }
        let limit = self.config.limits.max_inspected_response_bytes;
        let declared_length = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let streamed = match declared_length {
            Some(len) if len > limit => body,
            _ => match body::buffer_upstream(body, limit).await? {
                Buffered::Whole(body) => {
                    let head = Head {
                        parts,
                        format,
                        convert_to_xml,
                    };
                    return Ok(Inspected::Buffered { head, body });
                }
                Buffered::TooLarge { head, rest } => body::prepend(head, rest),
            },
        };
        if convert_to_xml {
            return Err(GatewayError::ResponseTooLarge { limit });
        }
        self.metrics.uninspected_responses.inc();
        tracing::warn!(request_id = %facts.request_id, limit, "FHIR response over the inspection limit streamed without URL rewriting");
        Ok(Inspected::Streamed(Response::from_parts(parts, streamed)))
    }

    /// End-to-end headers only, none claiming to speak for the seal, and
    /// the upstream's URLs in them made public.
    fn relay_head(&self, headers: &mut http::HeaderMap, facts: &RequestFacts) {
        headers::strip_hop_by_hop(headers);
        headers::strip_gateway_owned(headers);
        for name in [LOCATION, CONTENT_LOCATION] {
            let public = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.upstream.rewriter().rewrite_url(v, &facts.public_base))
                .and_then(|v| HeaderValue::from_str(&v).ok());
            if let Some(value) = public {
                headers.insert(name, value);
            }
        }
    }
}
