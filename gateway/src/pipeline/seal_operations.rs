//! Step 8, seal operations. Runs on admitted requests while the ledger is
//! open. `$proof`, `$verify` and their OperationDefinitions are answered
//! from the ledger, bound to the caller, and never forwarded (the contract
//! is in [`crate::seal::operations`]). Changes nothing. Results: the
//! answer, or the operation's error (401/403/404 as the upstream decided
//! for the caller, 404 without a proof, 429 over the `$verify` limit, 502
//! for an altered copy).

use bytes::Bytes;
use http::Response;

use super::facts::RequestFacts;
use super::Gateway;
use crate::body::ResponseBody;
use crate::error::GatewayError;
use crate::seal::operations::{self, OperationRequest, SealOperation};

impl Gateway {
    /// The seal operation this request is, if the ledger is open and it is one.
    pub(super) fn seal_operation(&self, facts: &RequestFacts) -> Option<SealOperation> {
        self.sealer.as_ref()?;
        operations::classify(&facts.method, &facts.fhir_path)
    }

    pub(super) async fn answer_seal_operation(
        &self,
        operation: SealOperation,
        parts: &http::request::Parts,
        body: &Bytes,
        facts: &RequestFacts,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let Some(sealer) = &self.sealer else {
            return Err(GatewayError::NotFound {
                base_path: self.config.base_path.clone(),
            });
        };
        let request = OperationRequest {
            headers: &parts.headers,
            body,
            wanted: facts.wanted,
            peer: facts.conn.peer.ip(),
        };
        // An access record lives in the audit repository: the caller's
        // right to read it is asked there.
        let audit_event =
            crate::fhir::path::resource_type_of(&facts.fhir_path) == Some("AuditEvent");
        let holder = match (&self.audit_repository, audit_event) {
            (Some(repository), true) => repository,
            _ => &self.upstream,
        };
        operations::answer(sealer, holder, &self.verify_limiter, operation, request).await
    }
}
