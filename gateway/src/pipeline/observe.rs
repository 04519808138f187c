//! Step 20, observe. Runs on every routed request, whatever happened:
//! the request metrics (count and latency per interaction and status) and
//! one access-log line (no bodies, no query values: search values are
//! health data). A request the gateway refused itself is answered here
//! with an OperationOutcome in the format the client wants, one status
//! per error, a fixed text, and the detail in the log under the request
//! id. Every answer carries `X-Request-Id`.

use std::time::Instant;

use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};

use super::facts::RequestFacts;
use super::route::Unrouted;
use super::Gateway;
use crate::body::{self, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::format::{Wanted, WireFormat};
use crate::fhir::interaction::Interaction;
use crate::fhir::outcome;
use crate::headers::X_REQUEST_ID;
use crate::japanese::TextReport;
use crate::metrics::{KindLabels, RequestLabels};

impl Gateway {
    /// An answered request: metrics, the access log, the request id.
    pub(super) fn record(
        &self,
        response: Response<ResponseBody>,
        facts: &RequestFacts,
    ) -> Response<ResponseBody> {
        let status = response.status();
        self.observe(facts.interaction, status, facts.started);
        tracing::info!(
            target: "inkan::access",
            request_id = %facts.request_id,
            method = %facts.method,
            path = %facts.fhir_path,
            query_params = %query_names(facts.query.as_deref()),
            interaction = facts.interaction.as_str(),
            status = status.as_u16(),
            duration_ms = facts.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        with_request_id(response, &facts.request_id)
    }

    /// A request the gateway refused after routing.
    pub(super) fn fail(&self, error: GatewayError, facts: &RequestFacts) -> Response<ResponseBody> {
        self.finish_error(
            error,
            facts.wanted,
            &facts.request_id,
            facts.interaction,
            facts.started,
        )
    }

    /// A request refused by routing.
    pub(super) fn refuse_unrouted(
        &self,
        refused: Unrouted,
        started: Instant,
    ) -> Response<ResponseBody> {
        self.finish_error(
            refused.error,
            refused.wanted,
            &refused.request_id,
            Interaction::Other,
            started,
        )
    }

    fn finish_error(
        &self,
        error: GatewayError,
        wanted: Wanted,
        request_id: &str,
        interaction: Interaction,
        started: Instant,
    ) -> Response<ResponseBody> {
        let status = error.status();
        let kind = error.kind();
        self.metrics
            .gateway_errors
            .get_or_create(&KindLabels { kind })
            .inc();
        let detail = error.internal_detail().unwrap_or_default();
        tracing::warn!(
            request_id,
            status = status.as_u16(),
            kind,
            fault = error.fault().as_str(),
            detail,
            "{error}"
        );
        let body = outcome::render_for_request(&error, wanted.outcome_format(), request_id);
        let response = outcome_response(&error, wanted.outcome_format(), body);
        self.observe(interaction, status, started);
        with_request_id(response, request_id)
    }

    fn observe(&self, interaction: Interaction, status: StatusCode, started: Instant) {
        let labels = RequestLabels {
            interaction: interaction.as_str(),
            status: status.as_u16(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts what the Japanese rules changed (steps 10 and 11).
    pub(super) fn count_text_changes(&self, report: &TextReport) {
        if let Some((_, detected)) = report.decoded_from {
            let kind = if detected {
                "charset_detected"
            } else {
                "charset_decoded"
            };
            self.metrics
                .text_changes
                .get_or_create(&KindLabels { kind })
                .inc();
        }
        for (kind, n) in report.changes.nonzero() {
            self.metrics
                .text_changes
                .get_or_create(&KindLabels { kind })
                .inc_by(n as u64);
        }
    }
}

/// An OperationOutcome response for `error` in `format`.
pub fn error_response(error: &GatewayError, format: WireFormat) -> Response<ResponseBody> {
    outcome_response(error, format, outcome::render(error, format))
}

/// The answer to `error`: its status, `body` (its OperationOutcome) and
/// the headers the error calls for.
fn outcome_response(
    error: &GatewayError,
    format: WireFormat,
    body: bytes::Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.fhir_media_type()),
    );
    // RFC 6750 §3: no error code when no token came; `invalid_token`
    // and `insufficient_scope` otherwise, with a description (ASCII, no
    // quotes, so it cannot break the header).
    let challenge = match error {
        GatewayError::AdminUnauthorized => Some("Bearer realm=\"inkan-admin\"".to_owned()),
        GatewayError::MissingToken => Some("Bearer realm=\"inkan\"".to_owned()),
        GatewayError::InvalidToken { reason } => Some(format!(
            "Bearer realm=\"inkan\", error=\"invalid_token\", error_description=\"{}\"",
            header_safe(reason)
        )),
        GatewayError::Forbidden { reason } => Some(format!(
            "Bearer realm=\"inkan\", error=\"insufficient_scope\", error_description=\"{}\"",
            header_safe(reason)
        )),
        _ => None,
    };
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    if matches!(
        error,
        GatewayError::Overloaded | GatewayError::ShuttingDown | GatewayError::RateLimited
    ) {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Text for a quoted header parameter: printable ASCII without `"` or `\`.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect()
}

pub(super) fn with_request_id(
    mut response: Response<ResponseBody>,
    request_id: &str,
) -> Response<ResponseBody> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// Query parameter names only, for logs: `name,birthdate`.
pub(super) fn query_names(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(name, _)| name))
        .collect::<Vec<_>>()
        .join(",")
}
