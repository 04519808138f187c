//! The connection to the upstream FHIR server: a pooled HTTP/1.1 client
//! (https verified by rustls), with the connect and response timeouts, and
//! the one retry policy: only GET and HEAD are retried, only when no
//! connection could be made, so a request is never sent twice.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::UpstreamConfig;
use crate::error::{ConfigError, GatewayError};

/// The `Authorization` value the gateway sends upstream instead of the
/// client's, from `upstream.bearer_token_file`.
pub fn configured_authorization(
    config: &UpstreamConfig,
) -> Result<Option<HeaderValue>, ConfigError> {
    let Some(path) = &config.bearer_token_file else {
        return Ok(None);
    };
    let token = crate::secret_file::read_text(path, "upstream.bearer_token_file")?;
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| ConfigError::Invalid("bearer token is not a valid header value".into()))?;
    // Never indexed by HTTP/2 header compression, never shown in Debug.
    value.set_sensitive(true);
    Ok(Some(value))
}

/// The path and query of a URL, without its scheme and authority: what
/// messages that may reach a client say about an upstream request.
pub fn path_of(url: &str) -> &str {
    match url.find("://") {
        Some(at) => {
            let rest = &url[at + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        None => url,
    }
}

/// Redacts a URL for logs and status output: scheme, host and path only
/// (no user:password, no query — API keys live there).
pub fn redact_url(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "<unparseable URL>".into();
    };
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let scheme = uri.scheme_str().unwrap_or("http");
    format!("{scheme}://{host}{port}{}", uri.path())
}

/// The most a compressed answer to the gateway's own reads may decode to.
const INTERNAL_READ_LIMIT: u64 = 256 << 20;

/// A client for one upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    response_timeout: Duration,
    connect_retries: u32,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, ConfigError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(config)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Upstream {
            client,
            response_timeout: Duration::from_millis(config.response_timeout_ms),
            connect_retries: config.idempotent_connect_retries,
        })
    }

    /// GETs `url` as FHIR JSON (with `authorization` when given) and reads
    /// the whole body; the reason in words when it is not a 2xx. Reasons
    /// name the path, never the upstream's address (they can reach clients
    /// in `Inkan-Seal` and OperationOutcomes).
    pub async fn get_fhir_json(
        &self,
        url: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Bytes, String> {
        let path = path_of(url);
        let (status, _, body) = self.get_fhir_json_answer(url, authorization).await?;
        if !status.is_success() {
            return Err(format!("the upstream answered {status} to GET {path}"));
        }
        Ok(body)
    }

    /// GETs `url` as FHIR JSON and returns whatever the upstream answered:
    /// status, headers and the decoded body (at most 256 MiB either way).
    /// Errors only when no complete answer came.
    pub async fn get_fhir_json_answer(
        &self,
        url: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), String> {
        let path = path_of(url);
        let mut request = Request::get(url)
            .header(ACCEPT, "application/fhir+json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| format!("cannot build a request for {path}"))?;
        if let Some(auth) = authorization {
            request.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let response = self
            .send(request)
            .await
            .map_err(|e| format!("GET {path} failed: {e}"))?;
        let (parts, body) = response.into_parts();
        let coding = crate::coding::body_coding(&parts.headers);
        // Bounded: an upstream (or whoever answers in its name) cannot make
        // the gateway buffer without end.
        let body = http_body_util::Limited::new(body, INTERNAL_READ_LIMIT as usize)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| format!("GET {path}: the body broke off or exceeds the limit"))?;
        // The gateway asks for identity; a server may compress anyway.
        let body = match coding {
            crate::coding::BodyCoding::Identity => body,
            crate::coding::BodyCoding::Known(coding) => {
                crate::coding::decode(coding, &body, INTERNAL_READ_LIMIT)
                    .map(Bytes::from)
                    .map_err(|e| {
                        format!("GET {path}: cannot decode its {}: {e:?}", coding.token())
                    })?
            }
            crate::coding::BodyCoding::Unsupported(named) => {
                return Err(format!(
                    "GET {path}: answered in an unknown Content-Encoding {named:?}"
                ))
            }
        };
        Ok((parts.status, parts.headers, body))
    }

    /// Sends `request` and waits for the response head. The body is a
    /// `Full<Bytes>` so an idempotent request can be re-sent after a failed
    /// connect.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let retryable = request.method() == Method::GET || request.method() == Method::HEAD;
        let attempts = if retryable {
            1 + self.connect_retries
        } else {
            1
        };
        // Keep a copy of the request only when a retry may need it.
        let spare = (attempts > 1).then(|| (request.clone_parts(), request.body().clone()));
        let mut first = Some(request);
        let mut last_error = GatewayError::UpstreamUnreachable;
        for attempt in 0..attempts {
            let request = match (first.take(), &spare) {
                (Some(request), _) => request,
                (None, Some((parts, body))) => Request::from_parts(parts.clone(), body.clone()),
                (None, None) => break,
            };
            match tokio::time::timeout(self.response_timeout, self.client.request(request)).await {
                Err(_) => {
                    return Err(GatewayError::UpstreamTimeout {
                        after: self.response_timeout,
                    })
                }
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) if error.is_connect() => {
                    tracing::warn!(attempt, error = %error, "upstream connect failed");
                    last_error = GatewayError::UpstreamUnreachable;
                    if attempt + 1 < attempts {
                        tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "upstream request failed");
                    return Err(GatewayError::UpstreamProtocol);
                }
            }
        }
        Err(last_error)
    }
}

/// Cloning the head of a request (http's `Parts` is `Clone`, `Request` is not).
trait CloneParts {
    fn clone_parts(&self) -> http::request::Parts;
}

impl<B> CloneParts for Request<B> {
    fn clone_parts(&self) -> http::request::Parts {
        let mut builder = Request::builder()
            .method(self.method().clone())
            .uri(self.uri().clone())
            .version(self.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = self.headers().clone();
        }
        match builder.body(()) {
            Ok(request) => request.into_parts().0,
            Err(_) => Request::new(()).into_parts().0,
        }
    }
}

#[cfg(test)]
mod redaction_tests {
    // RPC and TSA URLs often embed API keys (in the path of some providers'
    // URLs too, but most in user:password and the query): logs, errors and
    // status output keep scheme, host, port and path only.
    #[test]
    fn urls_lose_credentials_and_queries() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("https://user:secret@tsa.example.jp/tsa?apikey=K", "https://tsa.example.jp/tsa"),
            ("http://10.0.0.7:8545",                            "http://10.0.0.7:8545/"),
            ("https://rpc.example/v3?key=abc",                  "https://rpc.example/v3"),
            ("not a url",                                       "<unparseable URL>"),
        ];
        for (url, redacted) in cases {
            assert_eq!(super::redact_url(url), *redacted, "{url}");
        }
        assert_eq!(
            super::path_of("http://10.1.2.3:8080/fhir/Patient/1"),
            "/fhir/Patient/1"
        );
    }
}
