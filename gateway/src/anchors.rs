//! Anchor backends that talk to the outside world. The trait and its
//! obligations are in `anchor::anchor`; the RFC 3161 protocol and token
//! validation in `anchor::tsa` (pure). Here: the HTTP exchange.
//!
//! Each backend runs in its own ledger thread at its own pace, so a TSA
//! that is slow or down delays neither requests nor checkpoints; the
//! latest checkpoint stays pending in the ledger until it is anchored.

use std::io::Read;
use std::time::Duration;

use anchor::anchor::AnchorBackend;
use anchor::store::StoredCheckpoint;
use anchor::tsa::{self, TrustAnchors};

use crate::config::{AnchorsConfig, Rfc3161Config};
use crate::error::ConfigError;

/// Largest TSA answer read (a token with a certificate chain is a few KB).
const MAX_TSA_RESPONSE: u64 = 1024 * 1024;

/// The configured anchor backends (the local file backend is always there,
/// added by the ledger itself).
pub fn backends(config: &AnchorsConfig) -> Result<Vec<Box<dyn AnchorBackend>>, ConfigError> {
    let mut backends: Vec<Box<dyn AnchorBackend>> = Vec::new();
    if let Some(rfc3161) = &config.rfc3161 {
        backends.push(Box::new(Rfc3161Anchor::from_config(rfc3161)?));
    }
    Ok(backends)
}

/// An RFC 3161 time-stamp authority reached over HTTP(S).
pub struct Rfc3161Anchor {
    url: String,
    trust: TrustAnchors,
    policy: Option<String>,
    authorization: Option<String>,
    agent: ureq::Agent,
    interval: Duration,
}

impl std::fmt::Debug for Rfc3161Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rfc3161Anchor")
            .field("url", &self.url)
            .field("policy", &self.policy)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Rfc3161Anchor {
    pub fn from_config(config: &Rfc3161Config) -> Result<Rfc3161Anchor, ConfigError> {
        let pem = std::fs::read(&config.ca_file).map_err(|source| ConfigError::Read {
            path: config.ca_file.clone(),
            source,
        })?;
        let trust = TrustAnchors::from_pem(&pem)
            .map_err(|e| ConfigError::Invalid(format!("anchors.rfc3161.ca_file: {e}")))?;
        let authorization = match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                use base64::Engine;
                let password =
                    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                        path: file.clone(),
                        source,
                    })?;
                let pair = format!("{user}:{}", password.trim_end_matches(['\r', '\n']));
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "anchors.rfc3161: give both username and password_file, or neither".into(),
                ))
            }
        };
        if let Some(policy) = &config.policy_oid {
            tsa::request("", 0, Some(policy))
                .map_err(|e| ConfigError::Invalid(format!("anchors.rfc3161.policy_oid: {e}")))?;
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build();
        Ok(Rfc3161Anchor {
            url: config.url.clone(),
            trust,
            policy: config.policy_oid.clone(),
            authorization,
            agent,
            interval: Duration::from_millis(config.interval_ms),
        })
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
    /// (anchor::tsa) before it becomes a receipt.
    fn anchor(&self, checkpoint: &StoredCheckpoint) -> Result<String, anchor::Error> {
        let failed = |reason: String| anchor::Error::Anchor(format!("TSA {}: {reason}", self.url));
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
            .map_err(|e| failed(e.to_string()))?;
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_TSA_RESPONSE)
            .read_to_end(&mut body)
            .map_err(|e| failed(format!("the answer broke off: {e}")))?;
        let stamp = tsa::accept_response(&body, &checkpoint.note, nonce, &self.trust)?;
        Ok(stamp.receipt(&self.url))
    }
}
