//! Bearer JWT validation (`[auth] mode = "jwt"`): signatures with the
//! issuer's public keys, then `iss`, `aud`, `exp` and `nbf`.
//!
//! Keys come from a JWKS file or from the issuer's OpenID Connect
//! discovery document (`jwks_uri`), cached; a token with an unknown `kid`
//! triggers one refresh, at most once per `jwks_refresh_min_interval`, so
//! a flood of forged `kid`s cannot turn the gateway into a load generator
//! against the identity provider. Only RS256, ES256 and EdDSA: never
//! `none`, never an HMAC (a public key used as an HMAC secret is the
//! classic confusion; no HMAC key is ever built here).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;
use crate::error::ConfigError;
use crate::upstream::Upstream;

/// The claims the gateway reads. Others are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub azp: Option<String>,
    pub scope: Option<String>,
    #[serde(rename = "fhirUser")]
    pub fhir_user: Option<String>,
    pub patient: Option<String>,
    pub jti: Option<String>,
}

/// Why a token was not accepted. The text goes to the client in the
/// OperationOutcome and `WWW-Authenticate`: it names the check, never a
/// key or the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidToken(pub String);

struct KeyCache {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
    last_refresh_attempt: Option<Instant>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of debug output; the ids say enough.
        f.debug_struct("KeyCache")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("fetched", &self.fetched)
            .finish_non_exhaustive()
    }
}

/// Where the keys come from.
#[derive(Debug)]
enum KeySource {
    File,
    Discovery {
        issuer: String,
        client: Box<Upstream>,
    },
}

/// Validates bearer JWTs for one issuer.
#[derive(Debug)]
pub struct JwtValidator {
    issuer: String,
    audience: Vec<String>,
    leeway: u64,
    cache_for: Duration,
    refresh_min_interval: Duration,
    source: KeySource,
    /// Read by every request; written only after a fetch.
    cache: std::sync::RwLock<KeyCache>,
    /// One fetch at a time. Taken only by requests that need a refresh
    /// (an unknown kid, stale keys): a token with a known kid never waits
    /// for the identity provider.
    refreshing: tokio::sync::Mutex<()>,
}

impl JwtValidator {
    pub fn new(config: &AuthConfig) -> Result<JwtValidator, ConfigError> {
        let invalid = |what: &str| ConfigError::Invalid(format!("auth: {what}"));
        let issuer = config
            .issuer
            .clone()
            .ok_or_else(|| invalid("mode = \"jwt\" needs issuer"))?;
        if config.audience.is_empty() {
            return Err(invalid(
                "mode = \"jwt\" needs audience (the FHIR base URL tokens are issued for)",
            ));
        }
        let mut keys = HashMap::new();
        let source = match &config.jwks_file {
            Some(path) => {
                let text = std::fs::read(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let set: JwkSet = serde_json::from_slice(&text)
                    .map_err(|e| invalid(&format!("jwks_file is not a JWK set: {e}")))?;
                keys = usable_keys(&set);
                if keys.is_empty() {
                    return Err(invalid("jwks_file has no RS256, ES256 or EdDSA key"));
                }
                KeySource::File
            }
            None => {
                let plain_http = issuer.starts_with("http://");
                if plain_http && !is_loopback_url(&issuer) {
                    return Err(invalid(
                        "the issuer must be https (plain http only on loopback, for tests)",
                    ));
                }
                let client = Upstream::new(&crate::config::UpstreamConfig {
                    url: issuer.clone(),
                    ca_file: config.ca_file.clone(),
                    ..Default::default()
                })?;
                KeySource::Discovery {
                    issuer: issuer.trim_end_matches('/').to_owned(),
                    client: Box::new(client),
                }
            }
        };
        Ok(JwtValidator {
            issuer,
            audience: config.audience.clone(),
            leeway: config.leeway_seconds,
            cache_for: Duration::from_secs(config.jwks_cache_seconds),
            refresh_min_interval: Duration::from_secs(config.jwks_refresh_min_interval_seconds),
            source,
            refreshing: tokio::sync::Mutex::new(()),
            cache: std::sync::RwLock::new(KeyCache {
                fetched: (!keys.is_empty()).then(Instant::now),
                keys,
                last_refresh_attempt: None,
            }),
        })
    }

    /// The issuer's keys now, fetching them when none are cached yet (a
    /// start-up check; failures are logged and retried by requests).
    pub async fn prefetch(&self) -> Result<usize, InvalidToken> {
        let _one_fetch = self.refreshing.lock().await;
        self.refresh(true).await?;
        Ok(self.read_cache().keys.len())
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, KeyCache> {
        // The cache holds no invariant a panicking writer could break.
        self.cache
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached key for `kid`/`alg`, and whether the cache is stale.
    fn cached(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> (Option<(DecodingKey, Algorithm)>, bool) {
        let cache = self.read_cache();
        let stale = cache.fetched.is_none_or(|at| at.elapsed() > self.cache_for);
        (pick(&cache.keys, kid, alg), stale)
    }

    /// Validates `token`; its claims when every check passes.
    pub async fn validate(&self, token: &str) -> Result<Claims, InvalidToken> {
        let invalid = |why: &str| InvalidToken(why.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the token is not a signed JWT with a supported algorithm"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(invalid(
                "the token's algorithm is not accepted (RS256, ES256, EdDSA)",
            ));
        }
        let (key, key_alg) = self.key_for(header.kid.as_deref(), header.alg).await?;
        if key_alg != header.alg {
            return Err(invalid("the token's algorithm does not match its key"));
        }
        let mut validation = Validation::new(key_alg);
        validation.algorithms = vec![key_alg];
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind::*;
            invalid(match e.kind() {
                ExpiredSignature => "the token has expired",
                ImmatureSignature => "the token is not valid yet (nbf)",
                InvalidIssuer => "the token was issued by another issuer",
                InvalidAudience => "the token is for another audience",
                InvalidSignature => "the token's signature does not verify",
                MissingRequiredClaim(_) => "the token lacks exp, iss or aud",
                InvalidAlgorithm => "the token's algorithm does not match its key",
                _ => "the token is malformed",
            })
        })?;
        Ok(data.claims)
    }

    /// The key named `kid` (or the only key of `alg` when the token names
    /// none), refreshing the cache once when it is unknown or stale.
    async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<(DecodingKey, Algorithm), InvalidToken> {
        if let (Some(found), false) = self.cached(kid, alg) {
            return Ok(found);
        }
        let _one_fetch = self.refreshing.lock().await;
        // Another request may have refreshed while this one waited.
        if let (Some(found), false) = self.cached(kid, alg) {
            return Ok(found);
        }
        let refreshed = self.refresh(false).await;
        // A failed refresh keeps serving the keys it has.
        match (self.cached(kid, alg).0, refreshed) {
            (Some(found), _) => Ok(found),
            (None, Err(error)) => Err(error),
            (None, Ok(())) => Err(InvalidToken(
                "the token's signing key (kid) is not the issuer's".into(),
            )),
        }
    }

    /// Fetches the issuer's keys (discovery only), at most once per
    /// `refresh_min_interval` unless `force`. The caller holds
    /// `refreshing`; the cache is locked only to read and to store.
    async fn refresh(&self, force: bool) -> Result<(), InvalidToken> {
        let KeySource::Discovery { issuer, client } = &self.source else {
            return Ok(());
        };
        {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            let too_soon = cache
                .last_refresh_attempt
                .is_some_and(|at| at.elapsed() < self.refresh_min_interval);
            if too_soon && !force {
                return Err(InvalidToken(
                    "the token's signing key (kid) is unknown (key refresh rate-limited)".into(),
                ));
            }
            cache.last_refresh_attempt = Some(Instant::now());
        }
        match fetch_keys(issuer, client).await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "identity provider keys fetched");
                let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                cache.keys = keys;
                cache.fetched = Some(Instant::now());
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the identity provider's keys");
                Err(InvalidToken(
                    "the identity provider's keys are unavailable".into(),
                ))
            }
        }
    }
}

fn pick(
    keys: &HashMap<String, (DecodingKey, Algorithm)>,
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<(DecodingKey, Algorithm)> {
    match kid {
        Some(kid) => keys.get(kid).cloned(),
        None => {
            let mut of_alg = keys.values().filter(|(_, a)| *a == alg);
            match (of_alg.next(), of_alg.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => None,
            }
        }
    }
}

/// Discovery document → `jwks_uri` → the JWK set. The discovery
/// document's `issuer` must be the configured one (OpenID Connect
/// Discovery §4.3), or a document served elsewhere could name other keys.
async fn fetch_keys(
    issuer: &str,
    client: &Upstream,
) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
    let discovery_url = format!("{issuer}/.well-known/openid-configuration");
    let body = client
        .get_fhir_json(&discovery_url, None)
        .await
        .map_err(|e| e.to_string())?;
    let discovery: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("discovery document: {e}"))?;
    if discovery["issuer"]
        .as_str()
        .map(|s| s.trim_end_matches('/'))
        != Some(issuer)
    {
        return Err("the discovery document names another issuer".into());
    }
    let jwks_uri = discovery["jwks_uri"]
        .as_str()
        .ok_or("the discovery document has no jwks_uri")?;
    if !jwks_uri.starts_with("https://") && !is_loopback_url(jwks_uri) {
        return Err("jwks_uri must be https".into());
    }
    let body = client
        .get_fhir_json(jwks_uri, None)
        .await
        .map_err(|e| e.to_string())?;
    let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("JWK set: {e}"))?;
    Ok(usable_keys(&set))
}

/// The signing keys of a set the gateway accepts, by `kid`: RSA (RS256),
/// P-256 (ES256), Ed25519 (EdDSA). Symmetric keys and keys without a
/// `kid` beside others are skipped.
fn usable_keys(set: &JwkSet) -> HashMap<String, (DecodingKey, Algorithm)> {
    let mut keys = HashMap::new();
    for (n, jwk) in set.keys.iter().enumerate() {
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => continue,
        };
        // A key published for encryption, or for another algorithm, does
        // not verify signatures here.
        let for_signing = !matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        );
        let alg_matches = jwk
            .common
            .key_algorithm
            .is_none_or(|declared| format!("{declared:?}") == format!("{alg:?}"));
        if !for_signing || !alg_matches {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{n}"));
        keys.insert(kid, (key, alg));
    }
    keys
}

fn is_loopback_url(url: &str) -> bool {
    // Parsed, not split: `http://localhost:1@evil.example/` has the host
    // evil.example.
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
    !userinfo
        && matches!(
            uri.host(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        )
}

/// The claims of a token read without checking anything: what passthrough
/// mode records as unverified. `None` for a token that is not a JWT.
pub fn unverified_claims(token: &str) -> Option<Claims> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// An identity provider on a free port: discovery and an empty JWK
    /// set, counting the fetches of the set.
    async fn provider() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served_issuer, counter) = (issuer.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (issuer, counter) = (served_issuer.clone(), counter.clone());
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let (issuer, counter) = (issuer.clone(), counter.clone());
                        async move {
                            let body = match request.uri().path() {
                            "/.well-known/openid-configuration" => {
                                serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string()
                            }
                            _ => {
                                counter.fetch_add(1, Ordering::SeqCst);
                                r#"{"keys":[]}"#.to_owned()
                            }
                        };
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        (issuer, fetches)
    }

    fn token_with_kid(kid: &str) -> String {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.c2ln",
            b64(serde_json::json!({"alg": "ES256", "kid": kid})),
            b64(serde_json::json!({"sub": "x"}))
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_kids_refresh_the_keys_once_however_many_arrive() {
        let (issuer, fetches) = provider().await;
        let validator = Arc::new(
            JwtValidator::new(&AuthConfig {
                mode: crate::config::AuthMode::Jwt,
                issuer: Some(issuer),
                audience: vec!["https://fhir.test/fhir".into()],
                jwks_refresh_min_interval_seconds: 2,
                ..AuthConfig::default()
            })
            .unwrap(),
        );
        validator.prefetch().await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "the start-up fetch");
        // Right after it, an unknown kid is refused without a fetch.
        assert!(validator.validate(&token_with_kid("early")).await.is_err());
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "rate-limited");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        // Twenty forged kids at once: one refresh, the rest rate-limited.
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let validator = validator.clone();
                tokio::spawn(async move {
                    validator
                        .validate(&token_with_kid(&format!("forged-{i}")))
                        .await
                })
            })
            .collect();
        for task in tasks {
            let refused = task.await.unwrap().unwrap_err();
            assert!(refused.0.contains("kid"), "{refused}");
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "one refresh for twenty unknown kids"
        );
    }

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        let cases: &[(&str, bool)] = &[
            ("http://127.0.0.1:8080/x", true),
            ("http://localhost/x", true),
            ("http://[::1]:9/", true),
            ("http://localhost:1@evil.example/", false),
            ("http://127.0.0.1.evil.example/", false),
            ("http://example.jp/", false),
        ];
        for (url, expected) in cases {
            assert_eq!(is_loopback_url(url), *expected, "{url}");
        }
    }
}
