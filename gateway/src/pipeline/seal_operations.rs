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
        // An access record in a separate audit repository: the caller's
        // token was issued for this FHIR server, not for that one, and is
        // not sent there. The gateway validated it and its scopes granted
        // this read of AuditEvent (step 7), so the gateway asks the
        // repository with its own credential; without validated tokens it
        // cannot vouch for the caller and refuses.
        let audit_event =
            crate::fhir::path::resource_type_of(&facts.fhir_path) == Some("AuditEvent");
        let separate_repository = self.config.audit.repository_url.is_some();
        let mut headers = parts.headers.clone();
        let holder = match (&self.audit_repository, audit_event && separate_repository) {
            (Some(repository), true) => {
                if !self.authenticator.enforces() {
                    return Err(GatewayError::Forbidden {
                        reason: "$proof of an access record in a separate audit repository needs [auth] mode = \"jwt\"; at the hospital, use inkan ledger proof".into(),
                    });
                }
                headers.remove(http::header::AUTHORIZATION);
                if let Some(own) = repository.gateway_authorization() {
                    headers.insert(http::header::AUTHORIZATION, own.clone());
                }
                repository
            }
            _ => &self.upstream,
        };
        let request = OperationRequest {
            headers: &headers,
            body,
            wanted: facts.wanted,
            peer: facts.conn.peer.ip(),
        };
        operations::answer(sealer, holder, &self.verify_limiter, operation, request).await
    }
}
