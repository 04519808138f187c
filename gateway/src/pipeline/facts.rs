//! What the steps pass on. [`RequestFacts`] are fixed by routing (step 3)
//! and read-only afterwards; [`ResponsePlan`] is decided by negotiation
//! (step 9); [`Outgoing`] is the request as it will leave (steps 10, 11);
//! [`AnswerCoding`] is what decoding (step 14) did to the upstream's
//! content coding.

use std::time::Instant;

use bytes::Bytes;
use http::Method;

use crate::coding::Coding;
use crate::fhir::format::{ContentType, Wanted};
use crate::fhir::interaction::Interaction;
use crate::japanese::TextReport;
use crate::seal::verify_read::Shape;

/// The request as routing understood it.
#[derive(Debug)]
pub(super) struct RequestFacts {
    pub request_id: String,
    /// When the request arrived (for the latency metric).
    pub started: Instant,
    /// The same, in seconds since the epoch (for verify-on-read).
    pub started_unix: i64,
    /// The client's connection (peer address for per-caller limits and
    /// `X-Forwarded-For`; whether it is TLS).
    pub conn: super::Connection,
    pub method: Method,
    /// Path after the FHIR base, e.g. `/Patient/1`.
    pub fhir_path: String,
    /// The query as the client sent it.
    pub query: Option<String>,
    pub interaction: Interaction,
    pub wanted: Wanted,
    /// The client's `_format` value when it used one (restored in links).
    pub client_format_param: Option<String>,
    /// The gateway's public FHIR base for this request.
    pub public_base: String,
    /// The client's `Accept-Encoding` header(s), and nothing else.
    pub client_accept_encoding: http::HeaderMap,
}

/// How the answer is shaped for the client.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ResponsePlan {
    /// The request body is FHIR XML to convert to JSON for the upstream.
    pub bridge_request: bool,
    /// The client sent XML (converted or not).
    pub client_sent_xml: bool,
    /// The client wants XML and the upstream is asked for JSON instead.
    pub bridge_response: bool,
    /// A CapabilityStatement while the XML bridge serves XML: it must list
    /// the XML formats the gateway adds.
    pub advertise_xml: bool,
    /// A CapabilityStatement while the ledger is open: it lists `$proof`
    /// and `$verify`.
    pub advertise_seal_ops: bool,
    /// The legacy charset the client wants the answer in, if any.
    pub response_charset: Option<profiles_jp::charset::JpCharset>,
    /// Whether (and how) step 17 verifies the versions in the answer.
    pub verify: Option<Shape>,
}

/// The request as it will be forwarded.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub body: Bytes,
    pub content_type: Option<ContentType>,
    /// The query to forward (search values normalized by step 11).
    pub query: Option<String>,
    /// What steps 10 and 11 changed in the text.
    pub text_report: TextReport,
}

/// The upstream's content coding after step 14.
#[derive(Debug, Default)]
pub(super) enum AnswerCoding {
    /// The upstream sent it plain.
    #[default]
    Plain,
    /// Decoded for inspection; `encoded` is the upstream's own bytes,
    /// resent when no step changed the body.
    Decoded {
        coding: Coding,
        encoded: Bytes,
        decoded: Bytes,
        /// The coding the client gets the final body in, if any.
        for_client: Option<Coding>,
    },
    /// Still encoded: too large to decode, or `unknown` coding. Streamed
    /// untouched.
    StillEncoded { unknown: Option<String> },
}

/// What the access record of a request says, gathered while it is
/// served: the caller (step 4), the grant (step 7), the patients an
/// answer names (step 17), a refusal (step 20); step 21 writes it.
#[derive(Debug, Default)]
pub(super) struct AccessNotes {
    pub caller: crate::auth::Caller,
    pub grant: crate::auth::Grant,
    /// Patient ids, in order, without repeats (at most one more than
    /// `audit.max_patients_per_request`).
    pub patients: Vec<String>,
    /// The gateway's refusal, when it answered with an error.
    pub refusal: Option<String>,
}
