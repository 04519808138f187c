//! Step 2, admin. Runs first, for paths under `/-/`, which no FHIR path
//! can start with. Answers them itself and never forwards them; changes
//! nothing. The endpoints:
//!
//! | path          | answer                                                        |
//! |---------------|---------------------------------------------------------------|
//! | `/-/livez`    | 200 while the process serves requests                         |
//! | `/-/readyz`   | 200 when the upstream answers its CapabilityStatement, else 503 |
//! | `/-/metrics`  | Prometheus text exposition                                    |
//! | `/-/log/checkpoint`, `/-/log/tile/…` | the seal's log in the C2SP tlog-tiles layout (when sealing is on) |
//!
//! `/-/livez` and the log are open to anyone (they reveal no health data);
//! every other path needs `Authorization: Bearer <admin token>` from
//! `[admin] token_file` — 401 without it, 403 while none is configured.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use super::observe::error_response;
use super::state::token_digest;
use super::Gateway;
use crate::body::{self, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::format::WireFormat;

/// The admin prefix. No FHIR path segment can start with `-` (resource
/// types, `$operations`, `_history`, `_search` and `metadata` never do), so
/// nothing under it can collide with the FHIR API.
pub const ADMIN_PREFIX: &str = "/-/";

/// True for the admin paths that need the admin token. `/-/livez` and the
/// log are public; unknown paths get the same 404 with or without a token.
fn is_protected(path: &str) -> bool {
    matches!(path, "/-/readyz" | "/-/metrics")
}

/// Checks the admin bearer token. Digests are compared, not the tokens:
/// the comparison's timing tells nothing about the token.
fn authorize(gateway: &Gateway, headers: &http::HeaderMap) -> Result<(), GatewayError> {
    let Some(expected) = &gateway.admin_token_digest else {
        return Err(GatewayError::AdminClosed);
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(token) if token_digest(token) == *expected => Ok(()),
        _ => Err(GatewayError::AdminUnauthorized),
    }
}

impl Gateway {
    pub(super) async fn admin<B>(&self, request: &http::Request<B>) -> Response<ResponseBody> {
        admin(self, request).await
    }
}

async fn admin<B>(gateway: &Gateway, request: &http::Request<B>) -> Response<ResponseBody> {
    let method = request.method();
    let path = request.uri().path();
    if is_protected(path) {
        if let Err(error) = authorize(gateway, request.headers()) {
            return error_response(&error, WireFormat::Json);
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let mut response = error_response(
            &GatewayError::MethodNotAllowed {
                method: method.to_string(),
            },
            WireFormat::Json,
        );
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/-/livez" => json(StatusCode::OK, r#"{"status":"live"}"#.into()),
        "/-/readyz" => match gateway.probe_capabilities().await {
            Ok(_) => json(StatusCode::OK, r#"{"status":"ready"}"#.into()),
            Err(error) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "not ready", "reason": error.to_string()}).to_string(),
            ),
        },
        "/-/metrics" => {
            if let Some(sealer) = &gateway.sealer {
                refresh_anchor_gauges(gateway, sealer.ledger());
            }
            let mut response = Response::new(body::full(gateway.metrics.encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ if path.starts_with("/-/log/") && gateway.sealer.is_some() => {
            let tiles = gateway.sealer.as_ref().map(|s| s.ledger().tiles_dir());
            log_file(tiles.as_deref(), &path["/-/log/".len()..])
        }
        _ => error_response(
            &GatewayError::NotFound {
                base_path: gateway.config.base_path.clone(),
            },
            WireFormat::Json,
        ),
    }
}

fn json(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Serves one file of the log's tiles directory, read-only. Only the
/// tlog-tiles names (`checkpoint`, `tile/…`) are reachable.
fn log_file(tiles: Option<&std::path::Path>, relative: &str) -> Response<ResponseBody> {
    let allowed = relative == "checkpoint"
        || (relative.starts_with("tile/")
            && relative
                .split('/')
                .all(|segment| !segment.is_empty() && segment != ".." && segment != ".")
            && relative
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)));
    let file = tiles
        .filter(|_| allowed)
        .and_then(|dir| crate::seal::blocking(|| std::fs::read(dir.join(relative)).ok()));
    match file {
        Some(bytes) => {
            let mut response = Response::new(body::full(bytes));
            let (content_type, cache) = if relative == "checkpoint" {
                ("text/plain; charset=utf-8", "no-cache")
            } else if relative.contains(".p/") {
                ("application/octet-stream", "no-cache")
            } else {
                // Full tiles never change.
                (
                    "application/octet-stream",
                    "public, max-age=31536000, immutable",
                )
            };
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
                .headers_mut()
                .insert(http::header::CACHE_CONTROL, HeaderValue::from_static(cache));
            response
        }
        None => error_response(
            &GatewayError::NoSuchLogFile {
                path: relative.to_owned(),
            },
            WireFormat::Json,
        ),
    }
}

/// Reads each anchor backend's lag from the ledger into the gauges.
fn refresh_anchor_gauges(gateway: &Gateway, ledger: &ledger::log::Ledger) {
    let Ok(lags) = crate::seal::blocking(|| ledger.anchor_status()) else {
        return;
    };
    let metrics = &gateway.metrics;
    for lag in lags {
        let labels = crate::metrics::BackendLabels {
            backend: lag.backend.clone(),
        };
        metrics
            .anchor_lag_checkpoints
            .get_or_create(&labels)
            .set(i64::try_from(lag.lag_checkpoints).unwrap_or(i64::MAX));
        metrics
            .anchor_lag_seconds
            .get_or_create(&labels)
            .set(lag.lag_seconds);
        metrics
            .anchor_failures
            .get_or_create(&labels)
            .set(i64::try_from(lag.health.failures).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(token: Option<&str>) -> Gateway {
        let mut config = crate::config::Config::default();
        config.upstream.url = "http://127.0.0.1:9/fhir".into();
        config.ledger.seal_writes = false;
        let mut gateway = Gateway::new(config).unwrap();
        gateway.admin_token_digest = token.map(token_digest);
        gateway
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn protected_admin_paths_need_the_configured_token() {
        let token = "0123456789abcdef-admin";
        let configured = gateway(Some(token));
        let closed = gateway(None);
        let cases: &[(&Gateway, Option<&str>, Option<u16>)] = &[
            (&configured, Some("Bearer 0123456789abcdef-admin"), None),
            (&configured, Some("bearer 0123456789abcdef-admin"), None),
            (
                &configured,
                Some("Bearer 0123456789abcdef-admiN"),
                Some(401),
            ),
            (&configured, Some("Basic 0123456789abcdef-admin"), Some(401)),
            (&configured, None, Some(401)),
            (&closed, Some("Bearer 0123456789abcdef-admin"), Some(403)),
            (&closed, None, Some(403)),
        ];
        for (gateway, authorization, refused) in cases {
            let answer = authorize(gateway, &headers(*authorization));
            assert_eq!(
                answer.err().map(|e| e.status().as_u16()),
                *refused,
                "{authorization:?}"
            );
        }
        assert!(is_protected("/-/metrics") && is_protected("/-/readyz"));
        assert!(!is_protected("/-/livez") && !is_protected("/-/log/checkpoint"));
    }
}
