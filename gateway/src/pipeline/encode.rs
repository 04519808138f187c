//! Step 19, encode. Runs last on buffered answers. The client gets the
//! content coding it asked for: the upstream's again (step 14 decoded it;
//! its own bytes are resent when no step changed the body), or, for an
//! answer the upstream sent plain, the client's preferred coding once the
//! body is worth compressing. Then `Content-Length` and `Repr-Digest` (RFC
//! 9530, for sealed writes: the digest of the representation as sent).
//! Every answer, streamed ones too, then gets [`gateway_headers`]:
//! `Inkan-Seal` and friends from step 15, `Inkan-Text` and
//! `Inkan-JP-Core` from steps 10 and 11. Never fails.

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH};
use http::Response;
use sha2::Digest;

use super::facts::{AnswerCoding, RequestFacts};
use super::inspect::Head;
use super::Gateway;
use crate::body::{self, ResponseBody};
use crate::headers;
use crate::japanese::TextReport;
use crate::seal::write::SealOutcome;

/// Below this size an answer goes out plain even to a client that accepts
/// compression: the saving is smaller than a TCP segment.
const COMPRESS_FROM_BYTES: usize = 1024;

impl Gateway {
    pub(super) fn encode(
        &self,
        body: Bytes,
        head: Head,
        facts: &RequestFacts,
        coding: AnswerCoding,
        sealed_write: bool,
    ) -> Response<ResponseBody> {
        let mut parts = head.parts;
        let body = content_coding(body, &mut parts.headers, facts, coding);
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if sealed_write {
            let digest =
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
            if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{digest}:")) {
                parts.headers.insert("repr-digest", v);
            }
        }
        Response::from_parts(parts, body::full(body))
    }
}

/// Encodes `body` in the coding the client gets, if any.
fn content_coding(
    body: Bytes,
    headers: &mut http::HeaderMap,
    facts: &RequestFacts,
    coding: AnswerCoding,
) -> Bytes {
    let accepted = &facts.client_accept_encoding;
    if !accepted.is_empty() {
        headers::add_vary(headers, "accept-encoding");
    }
    let (chosen, upstream_bytes) = match coding {
        AnswerCoding::Decoded {
            coding,
            encoded,
            decoded,
            for_client,
        } => (for_client, Some((coding, encoded, decoded))),
        _ if body.len() >= COMPRESS_FROM_BYTES => {
            (crate::coding::choose_for_client(accepted, None), None)
        }
        _ => (None, None),
    };
    let Some(chosen) = chosen.filter(|_| !body.is_empty()) else {
        return body;
    };
    let body = match upstream_bytes {
        // No step changed it: the upstream's own bytes, not compressed a
        // second time.
        Some((coding, encoded, decoded)) if coding == chosen && decoded == body => encoded,
        _ => Bytes::from(crate::coding::encode(chosen, &body)),
    };
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static(chosen.token()));
    headers::add_vary(headers, "accept-encoding");
    body
}

/// The gateway's own headers on any answer: what step 15 sealed, and
/// what the Japanese rules changed and found in the request.
pub(super) fn gateway_headers(
    headers: &mut http::HeaderMap,
    seal: Option<&SealOutcome>,
    report: &TextReport,
) {
    if let Some(seal) = seal {
        seal.write_headers(headers);
    }
    for (name, value) in [
        (crate::japanese::INKAN_TEXT, report.header_value()),
        (crate::japanese::INKAN_JP_CORE, report.jpcore_header_value()),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
}
