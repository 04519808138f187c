//! An RFC 3161 time-stamp authority reached over HTTP(S): the request,
//! then the answer validated completely ([`crate::tsa`]) before it
//! becomes a receipt.

use std::io::Read;
use std::time::Duration;

use super::http::describe_http_error;
use super::AnchorBackend;
use crate::store::StoredCheckpoint;
use crate::tsa::{self, TrustAnchors};
use crate::Error;

/// Largest TSA answer read (a token with a certificate chain is a few KB).
const MAX_TSA_RESPONSE: u64 = 1024 * 1024;

/// An RFC 3161 time-stamp authority reached over HTTP(S).
pub struct Rfc3161Anchor {
    url: String,
    trust: TrustAnchors,
    policy: Option<String>,
    authorization: Option<String>,
    agent: ureq::Agent,
    interval: Duration,
}

/// How to reach a TSA; the gateway builds it from `[anchors.rfc3161]`.
#[derive(Debug)]
pub struct Rfc3161Options {
    /// The TSA's URL (may carry an API key: it is redacted in every
    /// message).
    pub url: String,
    /// The CA certificates the TSA's signing certificate must chain to.
    pub trust: TrustAnchors,
    /// The TSA policy OID to ask for and require, if any.
    pub policy: Option<String>,
    /// An `Authorization` header value (HTTP basic auth), if any.
    pub authorization: Option<String>,
    /// TLS for `https://` TSAs (roots, client certificate).
    pub tls: rustls::ClientConfig,
    /// Time allowed for one exchange.
    pub timeout: Duration,
    /// The least time between two anchorings.
    pub interval: Duration,
}

impl Rfc3161Anchor {
    /// A backend for the TSA `options` describe. The policy OID must parse.
    pub fn new(options: Rfc3161Options) -> Result<Rfc3161Anchor, Error> {
        if let Some(policy) = &options.policy {
            tsa::request("", 0, Some(policy))?;
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(options.timeout)
            .tls_config(std::sync::Arc::new(options.tls))
            .build();
        Ok(Rfc3161Anchor {
            url: options.url,
            trust: options.trust,
            policy: options.policy,
            authorization: options.authorization,
            agent,
            interval: options.interval,
        })
    }
}

impl std::fmt::Debug for Rfc3161Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc3161Anchor")
            .field("url", &super::redact_url(&self.url))
            .field("policy", &self.policy)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl AnchorBackend for Rfc3161Anchor {
    fn name(&self) -> &str {
        "rfc3161"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    /// One fresh nonce per attempt; the answer is validated completely
    /// (ledger::tsa) before it becomes a receipt.
    fn anchor(&self, checkpoint: &StoredCheckpoint) -> Result<String, Error> {
        // URLs often carry API keys: errors (stored, logged, shown by
        // `inkan anchors status`) name the TSA by scheme, host and path.
        let failed = |reason: String| {
            Error::Anchor(format!("TSA {}: {reason}", super::redact_url(&self.url)))
        };
        let nonce: u64 = rand::random();
        let query = tsa::request(&checkpoint.note, nonce, self.policy.as_deref())?;
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/timestamp-query")
            .set("Accept", "application/timestamp-reply");
        if let Some(authorization) = &self.authorization {
            request = request.set("Authorization", authorization);
        }
        let response = request
            .send_bytes(&query)
            .map_err(|e| failed(describe_http_error(&e)))?;
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_TSA_RESPONSE)
            .read_to_end(&mut body)
            .map_err(|e| failed(format!("the answer broke off: {e}")))?;
        let stamp = tsa::accept_response(
            &body,
            &checkpoint.note,
            nonce,
            self.policy.as_deref(),
            &self.trust,
        )?;
        // The receipt travels in proof bundles to patients and insurers.
        Ok(stamp.receipt(&super::redact_url(&self.url)))
    }
}
