//! Step 14, decode. Runs on every upstream answer. When the answer is in
//! a content coding and the gateway will look into it (a FHIR JSON/XML
//! body, or the answer to a write it seals), buffers it (within
//! `limits.max_inspected_response_bytes`), decodes it and removes
//! `Content-Encoding`; step 19 encodes the final body again for the
//! client. Anything else — HEAD, identity, other media types — passes
//! untouched. May change: the answer's body and its `Content-Encoding`
//! and `Content-Length`. Results: the answer and its [`AnswerCoding`]
//! (still encoded when too large to decode or in an unknown coding);
//! 502 for corrupt compressed bytes.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH};
use http::{Method, Response};

use super::facts::{AnswerCoding, RequestFacts};
use super::Gateway;
use crate::body::{self, Buffered, ResponseBody};
use crate::coding::{self, BodyCoding, DecodeError};
use crate::error::GatewayError;
use crate::fhir::format::{ContentType, WireFormat};

impl Gateway {
    pub(super) async fn decode(
        &self,
        answer: Response<ResponseBody>,
        facts: &RequestFacts,
        sealing: bool,
    ) -> Result<(Response<ResponseBody>, AnswerCoding), GatewayError> {
        if facts.method == Method::HEAD {
            return Ok((answer, AnswerCoding::Plain));
        }
        let (mut parts, upstream_body) = answer.into_parts();
        let coding = match coding::body_coding(&parts.headers) {
            BodyCoding::Identity => {
                return Ok((
                    Response::from_parts(parts, upstream_body),
                    AnswerCoding::Plain,
                ))
            }
            BodyCoding::Known(coding) => coding,
            BodyCoding::Unsupported(named) => {
                tracing::warn!(request_id = %facts.request_id, coding = %named, "the upstream answered in a content coding the gateway cannot decode");
                let still = AnswerCoding::StillEncoded {
                    unknown: Some(named),
                };
                return Ok((Response::from_parts(parts, upstream_body), still));
            }
        };
        let inspected = sealing
            || ContentType::from_headers(&parts.headers)
                .is_some_and(|ct| ct.format != WireFormat::Other);
        if !inspected {
            return Ok((
                Response::from_parts(parts, upstream_body),
                AnswerCoding::Plain,
            ));
        }
        let limit = self.config.limits.max_inspected_response_bytes;
        let encoded = match body::buffer_upstream(upstream_body, limit).await? {
            Buffered::Whole(bytes) => bytes,
            Buffered::TooLarge { head, rest } => {
                let body = body::prepend(head, rest);
                let still = AnswerCoding::StillEncoded { unknown: None };
                return Ok((Response::from_parts(parts, body), still));
            }
        };
        if encoded.is_empty() {
            // 204, 304 and the like: nothing was encoded.
            parts.headers.remove(CONTENT_ENCODING);
            return Ok((
                Response::from_parts(parts, body::full(encoded)),
                AnswerCoding::Plain,
            ));
        }
        match coding::decode(coding, &encoded, limit) {
            Ok(decoded) => {
                let decoded = Bytes::from(decoded);
                parts.headers.remove(CONTENT_ENCODING);
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(decoded.len()));
                let for_client =
                    coding::choose_for_client(&facts.client_accept_encoding, Some(coding));
                let body = body::full(decoded.clone());
                let coded = AnswerCoding::Decoded {
                    coding,
                    encoded,
                    decoded,
                    for_client,
                };
                Ok((Response::from_parts(parts, body), coded))
            }
            Err(DecodeError::TooLarge { .. }) => {
                let still = AnswerCoding::StillEncoded { unknown: None };
                Ok((Response::from_parts(parts, body::full(encoded)), still))
            }
            Err(DecodeError::Corrupt { coding, reason }) => {
                tracing::warn!(request_id = %facts.request_id, coding = coding.token(), %reason, "the upstream's compressed body is corrupt");
                Err(GatewayError::UpstreamProtocol)
            }
        }
    }
}
