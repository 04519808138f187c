//! The request pipeline. [`Gateway::handle`] and the two functions it
//! calls decide the order of the steps, and nothing else does; each step
//! lives in its own file, and its doc comment says when it runs, what it
//! may change and what each of its results means.
//!
//! | step | file | |
//! |---|---|---|
//! | 1 identify | `mod.rs` | the request id |
//! | 2 admin | `admin.rs` | `/-/` endpoints, never forwarded |
//! | 3 route | `route.rs` | FHIR path, interaction, public base → `RequestFacts` |
//! | 4 authenticate | `authorize.rs` | the caller; 401 without a valid token in `jwt` mode |
//! | 5 receive | `receive.rs` | the body, within limits, content coding undone |
//! | 6 admit | `admission.rs` | a concurrency permit, the in-flight gauge |
//! | 7 authorize | `authorize.rs` | SMART scopes and patient context → `Grant`; 403 |
//! | 8 seal operations | `seal_operations.rs` | `$proof`, `$verify` from the ledger |
//! | 9 negotiate | `negotiate.rs` | the XML bridge, verify-on-read → `ResponsePlan` |
//! | 10 request body | `request_body.rs` | media type, charsets, Japanese text, XML → JSON |
//! | 11 search values | `search_values.rs` | query and form values normalized |
//! | 12 journal | `journal.rs` | intent recorded before a sealed write leaves |
//! | 13 forward | `forward.rs` | the upstream request, sent |
//! | 14 decode | `decode.rs` | the answer's content coding undone for inspection |
//! | 15 seal | `seal.rs` | the written versions appended to the ledger |
//! | 16 inspect | `inspect.rs` | headers relayed, the body buffered or streamed |
//! | 17 verify | `verify.rs` | returned versions compared with their seals |
//! | 18 shape | `shape.rs` | URLs rewritten, XML, charset, CapabilityStatement |
//! | 19 encode | `encode.rs` | the client's content coding, digests, seal headers |
//! | 20 observe | `observe.rs` | metrics and the access log; errors as OperationOutcomes |
//! | 21 account | `account.rs` | the access record sealed before the answer leaves |
//!
//! To add a step: a file here with an `impl Gateway` block and its
//! contract, one line in the function that runs it, one row above.

mod account;
mod admin;
mod admission;
mod authorize;
mod decode;
mod encode;
mod facts;
mod forward;
mod inspect;
mod journal;
mod negotiate;
mod observe;
mod receive;
mod request_body;
mod route;
mod seal;
mod seal_operations;
mod search_values;
mod shape;
mod state;
mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body::Body;

pub use admin::ADMIN_PREFIX;
pub use observe::error_response;
pub use state::{Connection, Faults, Gateway};

use crate::body::{BoxError, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::format::ContentType;
use facts::{AccessNotes, RequestFacts};

impl Gateway {
    /// Serves one request. Every routed request, answered or refused, is
    /// observed (step 20) and accounted for (step 21); every answer
    /// carries the request id.
    pub async fn handle<B>(
        self: Arc<Self>,
        request: Request<B>,
        conn: Connection,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        // 1. Identify: keep the client's X-Request-Id or make one; it is
        //    logged, forwarded upstream and echoed in the response.
        let request_id = crate::headers::request_id(request.headers());
        // 2. Admin: paths under /-/ are answered here, never forwarded.
        if request.uri().path().starts_with(ADMIN_PREFIX) {
            let response = self.admin(&request).await;
            return observe::with_request_id(response, &request_id);
        }
        // 3. Route: what the request is, fixed from here on.
        let facts = match self.route(&request, &conn, request_id, started) {
            Ok(facts) => facts,
            Err(refused) => return self.refuse_unrouted(refused, started),
        };
        let mut notes = AccessNotes::default();
        let response = match self.serve(request, &facts, &mut notes).await {
            Ok(response) => self.record(response, &facts),
            // 20. Observe: metrics, the access log line, the refusal.
            Err(error) => {
                notes.refusal = Some(error.to_string());
                self.fail(error, &facts)
            }
        };
        // 21. Account: the access record is durable before the answer
        //     leaves (or the answer becomes a 500).
        self.account(response, &facts, &mut notes).await
    }

    /// Steps 4 to 8, then the forwarding steps.
    async fn serve<B>(
        &self,
        request: Request<B>,
        facts: &RequestFacts,
        notes: &mut AccessNotes,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        // 4. Authenticate: the caller, before any body is read. The TLS
        //    client certificate names it even when the token is refused.
        notes.caller.certificate_subject =
            facts.conn.certificate_subject.as_deref().map(str::to_owned);
        notes.caller = self.identify(request.headers(), facts).await?;
        // 5. Receive: the whole body, before admission (a slow body holds
        //    no concurrency permit), bounded by its own slots.
        let received = self.receive(request).await?;
        // 6. Admit: a concurrency permit and the in-flight gauge, both
        //    released by drop (a reset request cannot leak them).
        let _admitted = self.admit()?;
        // 7. Authorize: scopes and patient context (batch entries are in
        //    the body, hence after step 5).
        notes.grant = self.authorize(notes, &received.body, facts)?;
        // 8. Seal operations: answered from the ledger, never forwarded.
        if let Some(operation) = self.seal_operation(facts) {
            return self
                .answer_seal_operation(operation, &received.parts, &received.body, facts)
                .await;
        }
        self.forward_and_respond(received.parts, received.body, facts, notes)
            .await
    }

    /// Steps 9 to 19: the request goes upstream, the answer comes back.
    async fn forward_and_respond(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
        facts: &RequestFacts,
        notes: &mut AccessNotes,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        // 9. Negotiate: the XML bridge and verify-on-read for this request.
        // The body's media type, parsed once for steps 7 and 8.
        let body_type = ContentType::from_headers(&parts.headers);
        let plan = self
            .negotiate(&parts.headers, body_type.as_ref(), facts)
            .await;
        // The ledger, when this request is a write it seals.
        let sealer = self.sealer_for(facts.interaction);
        let original_digest = sealer.map(|_| seal::digest(&body));
        // Reads made for the seal act for the client (writes only).
        let client_authorization = sealer.and_then(|_| parts.headers.get(AUTHORIZATION).cloned());
        // 10. Request body: forwardable media type and charset, Japanese
        //    text normalized, XML converted when bridging.
        let mut outgoing =
            self.prepare_request_body(body, body_type, &mut parts.headers, &plan, facts)?;
        // 11. Search values: normalized like the stored values.
        self.normalize_search_values(&mut outgoing, facts)?;
        // A patient context pins a search to the patient, and a write may
        // not name another patient.
        pin_search(&mut outgoing, &notes.grant);
        self.hold_write_to_patient(&notes.grant, &outgoing.body, facts)?;
        // 12. Journal: a write to be sealed is recorded before it leaves.
        let journal = match sealer {
            Some(sealer) => Some(
                self.journal_write(sealer, client_authorization.as_ref(), &outgoing, facts)
                    .await?,
            ),
            None => None,
        };
        // 13. Forward: the upstream request, built and sent.
        let answer = self
            .forward(parts, &outgoing, facts, &plan, sealer.is_some())
            .await?;
        // A refused write stored nothing: its journal entry is settled now.
        let journal = journal.and_then(|j| self.settle_if_refused(j, answer.status()));
        // 14. Decode: an answer the gateway looks into loses its coding.
        let (answer, coding) = self.decode(answer, facts, sealer.is_some()).await?;
        // 15. Seal: a successful write's versions, before the client hears.
        let (answer, seal) = match journal {
            Some(journal) => {
                let written = seal::Written {
                    original_digest,
                    sent_body: &outgoing.body,
                    coding: &coding,
                };
                self.seal(journal, answer, written, facts).await?
            }
            None => (answer, None),
        };
        // 16. Inspect: relay the head; buffer a FHIR body or stream it on.
        let (mut head, body) = match self.inspect(answer, facts, &plan, &coding).await? {
            inspect::Inspected::Streamed(mut response) => {
                self.hold_answer(notes, None, facts)?;
                let headers = response.headers_mut();
                encode::gateway_headers(headers, seal.as_ref(), &outgoing.text_report);
                return Ok(response);
            }
            inspect::Inspected::Buffered { head, body } => (head, body),
        };
        // 17. Verify: returned versions against their seals.
        let body = self.verify(body, &mut head, facts, &plan)?;
        // The answer stays within the token's scopes and patient context;
        // the patients it names go into the access record.
        self.hold_answer(notes, Some(&body), facts)?;
        if self.auditor.is_some() && head.format == crate::fhir::format::WireFormat::Json {
            let max = self.config.audit.max_patients_per_request;
            crate::audit::patients::in_answer(&body, &mut notes.patients, max);
        }
        // 18. Shape: public URLs, the XML bridge, the client's charset.
        let body = self.shape(body, &mut head, facts, &plan)?;
        // 19. Encode: the client's content coding, the digest, then the
        //     seal and text headers (streamed answers get those too).
        let mut response = self.encode(body, head, facts, coding, seal.is_some());
        encode::gateway_headers(response.headers_mut(), seal.as_ref(), &outgoing.text_report);
        Ok(response)
    }
}

/// Adds the patient parameter a patient context requires to a search.
fn pin_search(outgoing: &mut facts::Outgoing, grant: &crate::auth::Grant) {
    let Some((name, value)) = &grant.added_search_parameter else {
        return;
    };
    let pin = format!(
        "{name}={}",
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
    );
    outgoing.query = Some(match outgoing.query.take().filter(|q| !q.is_empty()) {
        Some(query) => format!("{query}&{pin}"),
        None => pin,
    });
}
