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
//! | 4 receive | `receive.rs` | the body, within limits, content coding undone |
//! | 5 admit | `admission.rs` | a concurrency permit, the in-flight gauge |
//! | 6 seal operations | `seal_operations.rs` | `$proof`, `$verify` from the ledger |
//! | 7 negotiate | `negotiate.rs` | the XML bridge, verify-on-read → `ResponsePlan` |
//! | 8 request body | `request_body.rs` | media type, charsets, Japanese text, XML → JSON |
//! | 9 search values | `search_values.rs` | query and form values normalized |
//! | 10 journal | `journal.rs` | intent recorded before a sealed write leaves |
//! | 11 forward | `forward.rs` | the upstream request, sent |
//! | 12 decode | `decode.rs` | the answer's content coding undone for inspection |
//! | 13 seal | `seal.rs` | the written versions appended to the ledger |
//! | 14 inspect | `inspect.rs` | headers relayed, the body buffered or streamed |
//! | 15 verify | `verify.rs` | returned versions compared with their seals |
//! | 16 shape | `shape.rs` | URLs rewritten, XML, charset, CapabilityStatement |
//! | 17 encode | `encode.rs` | the client's content coding, digests, seal headers |
//! | 18 observe | `observe.rs` | metrics and the access log; errors as OperationOutcomes |
//!
//! To add a step: a file here with an `impl Gateway` block and its
//! contract, one line in the function that runs it, one row above.

mod admin;
mod admission;
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
use facts::RequestFacts;

impl Gateway {
    /// Serves one request. Every routed request, answered or refused, is
    /// observed (step 18); every answer carries the request id.
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
        match self.serve(request, &facts).await {
            Ok(response) => self.record(response, &facts),
            Err(error) => self.fail(error, &facts),
        }
    }

    /// Steps 4 to 6, then the forwarding steps.
    async fn serve<B>(
        &self,
        request: Request<B>,
        facts: &RequestFacts,
    ) -> Result<Response<ResponseBody>, GatewayError>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        // 4. Receive: the whole body, before admission (a slow body holds
        //    no concurrency permit), bounded by its own slots.
        let received = self.receive(request).await?;
        // 5. Admit: a concurrency permit and the in-flight gauge, both
        //    released by drop (a reset request cannot leak them).
        let _admitted = self.admit()?;
        // 6. Seal operations: answered from the ledger, never forwarded.
        if let Some(operation) = self.seal_operation(facts) {
            return self
                .answer_seal_operation(operation, &received.parts, &received.body, facts)
                .await;
        }
        self.forward_and_respond(received.parts, received.body, facts)
            .await
    }

    /// Steps 7 to 17: the request goes upstream, the answer comes back.
    async fn forward_and_respond(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
        facts: &RequestFacts,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        // 7. Negotiate: the XML bridge and verify-on-read for this request.
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
        // 8. Request body: forwardable media type and charset, Japanese
        //    text normalized, XML converted when bridging.
        let mut outgoing =
            self.prepare_request_body(body, body_type, &mut parts.headers, &plan, facts)?;
        // 9. Search values: normalized like the stored values.
        self.normalize_search_values(&mut outgoing, facts)?;
        // 10. Journal: a write to be sealed is recorded before it leaves.
        let journal = match sealer {
            Some(sealer) => Some(
                self.journal_write(sealer, client_authorization.as_ref(), &outgoing, facts)
                    .await?,
            ),
            None => None,
        };
        // 11. Forward: the upstream request, built and sent.
        let answer = self
            .forward(parts, &outgoing, facts, &plan, sealer.is_some())
            .await?;
        // A refused write stored nothing: its journal entry is settled now.
        let journal = journal.and_then(|j| self.settle_if_refused(j, answer.status()));
        // 12. Decode: an answer the gateway looks into loses its coding.
        let (answer, coding) = self.decode(answer, facts, sealer.is_some()).await?;
        // 13. Seal: a successful write's versions, before the client hears.
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
        // 14. Inspect: relay the head; buffer a FHIR body or stream it on.
        let (mut head, body) = match self.inspect(answer, facts, &plan, &coding).await? {
            inspect::Inspected::Streamed(mut response) => {
                let headers = response.headers_mut();
                encode::gateway_headers(headers, seal.as_ref(), &outgoing.text_report);
                return Ok(response);
            }
            inspect::Inspected::Buffered { head, body } => (head, body),
        };
        // 15. Verify: returned versions against their seals.
        let body = self.verify(body, &mut head, facts, &plan)?;
        // 16. Shape: public URLs, the XML bridge, the client's charset.
        let body = self.shape(body, &mut head, facts, &plan)?;
        // 17. Encode: the client's content coding, the digest, then the
        //     seal and text headers (streamed answers get those too).
        let mut response = self.encode(body, head, facts, coding, seal.is_some());
        encode::gateway_headers(response.headers_mut(), seal.as_ref(), &outgoing.text_report);
        Ok(response)
    }
}
