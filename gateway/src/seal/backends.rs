//! The anchor backends configured in `[anchors]`, built from the
//! configuration: secrets read from owner-only files, TLS set up, then
//! handed to the HTTP clients in `ledger::backends` (`rfc3161`, `evm`).
//! The trait, its obligations and the clients live in the ledger crate;
//! here is only what depends on the gateway's configuration.

use std::time::Duration;

use ledger::backends::evm::{EvmAnchor, EvmOptions};
use ledger::backends::rfc3161::{Rfc3161Anchor, Rfc3161Options};
use ledger::backends::AnchorBackend;
use ledger::tsa::TrustAnchors;

use crate::config::{AnchorsConfig, EvmConfig, Rfc3161Config};
use crate::error::ConfigError;

/// The configured anchor backends (the local file backend is always there,
/// added by the ledger itself). `state_dir` is the ledger directory, where
/// a backend keeps what must survive a restart.
pub fn backends(
    config: &AnchorsConfig,
    state_dir: &std::path::Path,
) -> Result<Vec<Box<dyn AnchorBackend>>, ConfigError> {
    let mut backends: Vec<Box<dyn AnchorBackend>> = Vec::new();
    if let Some(rfc3161) = &config.rfc3161 {
        backends.push(Box::new(rfc3161_backend(rfc3161)?));
    }
    if let Some(evm) = &config.evm {
        backends.push(Box::new(evm_backend(evm, state_dir)?));
    }
    Ok(backends)
}

/// The TSA of `[anchors.rfc3161]`.
fn rfc3161_backend(config: &Rfc3161Config) -> Result<Rfc3161Anchor, ConfigError> {
    let basic_auth = config.username.is_some() || config.password_file.is_some();
    if basic_auth && !config.url.starts_with("https://") && !config.dangerous_basic_auth_over_http {
        return Err(ConfigError::Invalid(
            "anchors.rfc3161: basic auth sends the password in the clear over http://; \
                 use an https:// URL (or set dangerous_basic_auth_over_http = true)"
                .into(),
        ));
    }
    let pem = std::fs::read(&config.ca_file).map_err(|source| ConfigError::Read {
        path: config.ca_file.clone(),
        source,
    })?;
    let trust = TrustAnchors::from_pem(&pem)
        .map_err(|e| ConfigError::Invalid(format!("anchors.rfc3161.ca_file: {e}")))?;
    let authorization = match (&config.username, &config.password_file) {
        (Some(_), Some(_))
            if !config.url.starts_with("https://") && !config.dangerous_basic_auth_over_http =>
        {
            return Err(ConfigError::Invalid(
                "anchors.rfc3161: basic auth sends the password in the clear over http://; \
                     use an https:// URL (or set dangerous_basic_auth_over_http = true)"
                    .into(),
            ))
        }
        (Some(user), Some(file)) => {
            use base64::Engine;
            let password = crate::secret_file::read_text(file, "anchors.rfc3161.password_file")?;
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
    if config.client_cert_file.is_some() != config.client_key_file.is_some() {
        return Err(ConfigError::Invalid(
            "anchors.rfc3161: give both client_cert_file and client_key_file, or neither".into(),
        ));
    }
    let tls = crate::tls::client_tls(
        config.https_ca_file.as_deref(),
        config.client_cert_file.as_deref(),
        config.client_key_file.as_deref(),
    )?;
    Rfc3161Anchor::new(Rfc3161Options {
        url: config.url.clone(),
        trust,
        policy: config.policy_oid.clone(),
        authorization,
        tls,
        timeout: Duration::from_millis(config.timeout_ms),
        interval: Duration::from_millis(config.interval_ms),
    })
    .map_err(|e| ConfigError::Invalid(format!("anchors.rfc3161: {e}")))
}

/// The chain of `[anchors.evm]`.
fn evm_backend(config: &EvmConfig, state_dir: &std::path::Path) -> Result<EvmAnchor, ConfigError> {
    let text = crate::secret_file::read_text(&config.key_file, "anchors.evm.key_file")?;
    let bytes = hex::decode(text.trim().trim_start_matches("0x"))
        .map_err(|_| ConfigError::Invalid("anchors.evm.key_file: not a hex key".into()))?;
    let key = k256::ecdsa::SigningKey::from_slice(&bytes)
        .map_err(|_| ConfigError::Invalid("anchors.evm.key_file: not a secp256k1 key".into()))?;
    Ok(EvmAnchor::new(EvmOptions {
        rpc_url: config.rpc_url.clone(),
        chain_id: config.chain_id,
        key,
        confirmations: config.confirmations,
        interval: Duration::from_millis(config.interval_ms),
        timeout: Duration::from_millis(config.timeout_ms),
        max_fee_wei: u128::from(config.max_fee_gwei) * 1_000_000_000,
        pending_file: state_dir.join("evm-pending.json"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsa_basic_auth_needs_https_unless_dangerously_allowed() {
        let config = |url: &str, dangerous: bool| -> Rfc3161Config {
            toml::from_str(&format!(
                "url = \"{url}\"\nca_file = \"/nonexistent/ca.pem\"\nusername = \"u\"\npassword_file = \"/nonexistent/p\"\ndangerous_basic_auth_over_http = {dangerous}\n"
            ))
            .unwrap()
        };
        let refused = |url: &str, dangerous: bool| {
            rfc3161_backend(&config(url, dangerous))
                .unwrap_err()
                .to_string()
                .contains("in the clear")
        };
        assert!(refused("http://tsa.example/tsa", false));
        assert!(!refused("http://tsa.example/tsa", true));
        assert!(!refused("https://tsa.example/tsa", false));
    }
}
