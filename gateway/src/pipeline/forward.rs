//! Step 13, forward. Runs on every request not answered by an earlier
//! step. Builds the upstream request — same method, path and query (the
//! normalized query; `_format` pointing at JSON when bridging), end-to-end
//! headers only, `X-Forwarded-*`, `X-Request-Id`, the `Authorization`
//! policy, only the content codings the gateway can decode — and sends
//! it. A write to be sealed asks for the stored version back (`Prefer:
//! return=representation`) unless the client asked for less. Results: the
//! upstream's answer, whatever its status; 502 when the upstream cannot be
//! reached, 504 when it does not answer in time, 400 for a URL that
//! cannot be forwarded.

use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE,
    HOST,
};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};

use super::facts::{Outgoing, RequestFacts, ResponsePlan};
use super::Gateway;
use crate::body::{BoxError, ResponseBody};
use crate::error::GatewayError;
use crate::fhir::format::ContentType;
use crate::headers::{self, ClientFacts, X_REQUEST_ID};

/// `Prefer` (RFC 7240), which the http crate does not name.
const PREFER: HeaderName = HeaderName::from_static("prefer");

impl Gateway {
    pub(super) async fn forward(
        &self,
        parts: http::request::Parts,
        outgoing: &Outgoing,
        facts: &RequestFacts,
        plan: &ResponsePlan,
        sealing: bool,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let client_prefer = parts.headers.get(PREFER).and_then(|v| v.to_str().ok());
        let representation =
            sealing && crate::seal::write::wants_representation(facts.interaction, client_prefer);
        let mut request = self.upstream_request(parts, outgoing, facts, plan)?;
        if representation {
            request
                .headers_mut()
                .insert(PREFER, HeaderValue::from_static("return=representation"));
        }
        let response = self.upstream.client().send(request).await?;
        Ok(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
    }

    pub(super) fn upstream_request(
        &self,
        parts: http::request::Parts,
        outgoing: &Outgoing,
        facts: &RequestFacts,
        plan: &ResponsePlan,
    ) -> Result<Request<Full<bytes::Bytes>>, GatewayError> {
        let mut uri = self.upstream.url(&facts.fhir_path);
        if let Some(query) = &outgoing.query {
            uri.push('?');
            match plan.bridge_response {
                true => uri.push_str(&replace_format_param(query, "json")),
                false => uri.push_str(query),
            }
        }
        let uri: Uri = uri.parse().map_err(|_| GatewayError::MalformedRequest {
            detail: "the request URL cannot be forwarded".into(),
        })?;
        let mut headers = parts.headers;
        let client = ClientFacts {
            peer: facts.conn.peer,
            proto: if facts.conn.tls { "https" } else { "http" }.into(),
            host: headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| parts.uri.authority().map(|a| a.to_string())),
        };
        headers::prepare_upstream_request_headers(
            &mut headers,
            &client,
            self.config.trust_forwarded_headers,
        );
        // Offer the upstream only codings the gateway can look into.
        match crate::coding::upstream_accept_encoding(&facts.client_accept_encoding) {
            Some(offer) => headers.insert(ACCEPT_ENCODING, offer),
            None => headers.remove(ACCEPT_ENCODING),
        };
        if let Ok(id) = HeaderValue::from_str(&facts.request_id) {
            headers.insert(X_REQUEST_ID, id);
        }
        if let Some(authorization) = self.upstream.gateway_authorization() {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        if plan.bridge_response {
            headers.insert(ACCEPT, HeaderValue::from_static("application/fhir+json"));
        }
        if let Some(ct) = &outgoing.content_type {
            if let Ok(value) = HeaderValue::from_str(&render_content_type(ct, &headers)) {
                headers.insert(CONTENT_TYPE, value);
            }
        }
        headers.remove(CONTENT_LENGTH);
        let body = outgoing.body.clone();
        let has_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        if !body.is_empty() || has_body {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// The content type to send upstream: the client's own header when the
/// body was not converted, else the converted type.
fn render_content_type(ct: &ContentType, original: &http::HeaderMap) -> String {
    match original.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(value) if ContentType::parse(value) == *ct => value.to_owned(),
        _ => match &ct.charset {
            Some(charset) => format!("{}; charset={charset}", ct.essence),
            None => ct.essence.clone(),
        },
    }
}

/// `query` with every `_format` value replaced by `value` (percent-encoded).
pub(super) fn replace_format_param(query: &str, value: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("_format", _)) => format!("_format={encoded}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}
