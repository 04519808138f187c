//! Admin endpoints under `/-/`, never forwarded upstream:
//!
//! | path          | answer                                                        |
//! |---------------|---------------------------------------------------------------|
//! | `/-/livez`    | 200 while the process serves requests                         |
//! | `/-/readyz`   | 200 when the upstream answers its CapabilityStatement, else 503 |
//! | `/-/metrics`  | Prometheus text exposition                                    |

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Response, StatusCode};

use crate::body::{self, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::format::WireFormat;
use crate::pipeline::{error_response, Gateway};

pub async fn handle(gateway: &Gateway, method: &Method, path: &str) -> Response<ResponseBody> {
    if method != Method::GET && method != Method::HEAD {
        return error_response(
            &GatewayError::MalformedRequest {
                detail: "admin endpoints are read-only (GET)".into(),
            },
            WireFormat::Json,
        );
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
            let mut response = Response::new(body::full(gateway.metrics.encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
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
