//! The connection to the upstream FHIR server: a pooled HTTP/1.1 client
//! (https verified by rustls), with the connect and response timeouts, and
//! the one retry policy: only GET and HEAD are retried, only when no
//! connection could be made, so a request is never sent twice.

use std::sync::Arc;
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
use crate::fhir::rewrite::{BaseUrl, Rewriter};

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

/// The one `Authorization` policy: the gateway's own upstream token when
/// one is configured, else whatever the client sent.
pub fn upstream_authorization<'a>(
    gateway_token: Option<&'a HeaderValue>,
    client: Option<&'a HeaderValue>,
) -> Option<&'a HeaderValue> {
    gateway_token.or(client)
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
/// (no user:password, no query — API keys live there). One rule for the
/// whole project: [`ledger::backends::redact_url`].
pub fn redact_url(url: &str) -> String {
    ledger::backends::redact_url(url)
}

/// Why one of the gateway's own reads of the upstream failed. The text
/// names the path after the upstream's address, never the address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The URL could not be made into a request.
    #[error("cannot build a request for {path}")]
    BadUrl { path: String },
    /// No answer: unreachable, timed out, or not HTTP.
    #[error("GET {path} failed: {source}")]
    Send {
        path: String,
        source: Box<GatewayError>,
    },
    /// The upstream answered, but not with 2xx.
    #[error("the upstream answered {status} to GET {path}")]
    Refused {
        path: String,
        status: http::StatusCode,
    },
    /// The body broke off or exceeded the internal read limit.
    #[error("GET {path}: the body broke off or exceeds the limit")]
    Body { path: String },
    /// A content coding the gateway cannot undo, or corrupt coded bytes.
    #[error("GET {path}: cannot decode its Content-Encoding {coding:?}")]
    Coding { path: String, coding: String },
    /// The answer is not the FHIR JSON that was asked for.
    #[error("the answer to GET {path} is not {expected}")]
    NotFhir {
        path: String,
        expected: &'static str,
    },
}

impl ReadError {
    /// A stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadError::BadUrl { .. } => "bad_url",
            ReadError::Send { .. } => "send",
            ReadError::Refused { .. } => "refused",
            ReadError::Body { .. } => "body",
            ReadError::Coding { .. } => "coding",
            ReadError::NotFhir { .. } => "not_fhir",
        }
    }

    /// Which side is at fault: a URL the gateway built is the gateway's;
    /// everything else is the upstream's (or the way to it).
    pub fn fault(&self) -> crate::error::Fault {
        match self {
            ReadError::BadUrl { .. } => crate::error::Fault::Gateway,
            _ => crate::error::Fault::Upstream,
        }
    }
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
    /// the whole body; an error when it is not a 2xx. Errors name the
    /// path, never the upstream's address (they can reach clients in
    /// `Inkan-Seal` and OperationOutcomes).
    pub async fn get_fhir_json(
        &self,
        url: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Bytes, ReadError> {
        let (status, _, body) = self.get_fhir_json_answer(url, authorization).await?;
        if !status.is_success() {
            return Err(ReadError::Refused {
                path: path_of(url).to_owned(),
                status,
            });
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
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), ReadError> {
        let path = || path_of(url).to_owned();
        let mut request = Request::get(url)
            .header(ACCEPT, "application/fhir+json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| ReadError::BadUrl { path: path() })?;
        if let Some(auth) = authorization {
            request.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        let response = self.send(request).await.map_err(|source| ReadError::Send {
            path: path(),
            source: Box::new(source),
        })?;
        let (parts, body) = response.into_parts();
        let coding = crate::coding::body_coding(&parts.headers);
        // Bounded: an upstream (or whoever answers in its name) cannot make
        // the gateway buffer without end.
        let body = http_body_util::Limited::new(body, INTERNAL_READ_LIMIT as usize)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| ReadError::Body { path: path() })?;
        // The gateway asks for identity; a server may compress anyway.
        let body = match coding {
            crate::coding::BodyCoding::Identity => body,
            crate::coding::BodyCoding::Known(coding) => {
                crate::coding::decode(coding, &body, INTERNAL_READ_LIMIT)
                    .map(Bytes::from)
                    .map_err(|_| ReadError::Coding {
                        path: path(),
                        coding: coding.token().to_owned(),
                    })?
            }
            crate::coding::BodyCoding::Unsupported(named) => {
                return Err(ReadError::Coding {
                    path: path(),
                    coding: named,
                })
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

/// The upstream as the gateway reads it for itself (seals, recovery,
/// verification, audits): the client, the base it connects to, the
/// rewriter that knows the bases the upstream calls itself, and the
/// `Authorization` to read with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UpstreamReader {
    client: Upstream,
    /// The configured base URL, without a trailing slash.
    base: Arc<str>,
    rewriter: Arc<Rewriter>,
    authorization: Option<HeaderValue>,
}

impl UpstreamReader {
    /// A reader of the configured upstream with the gateway's own
    /// `Authorization` (`upstream.bearer_token_file`), if any.
    pub fn new(config: &UpstreamConfig) -> Result<UpstreamReader, ConfigError> {
        let mut bases = Vec::new();
        for url in std::iter::once(&config.url).chain(&config.also_known_as) {
            bases.push(BaseUrl::parse(url).ok_or_else(|| {
                ConfigError::Invalid(format!("not an absolute http(s) base URL: {url:?}"))
            })?);
        }
        Ok(UpstreamReader {
            client: Upstream::new(config)?,
            base: Arc::from(config.url.trim_end_matches('/')),
            rewriter: Arc::new(Rewriter::new(bases)),
            authorization: configured_authorization(config)?,
        })
    }

    /// The HTTP client, for forwarding requests.
    pub fn client(&self) -> &Upstream {
        &self.client
    }

    /// The configured base, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The rewriter between the upstream's bases and a public one.
    pub fn rewriter(&self) -> &Rewriter {
        &self.rewriter
    }

    /// The gateway's own `Authorization`, if configured.
    pub fn gateway_authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// This reader acting for a client whose request carried `client`:
    /// the [`upstream_authorization`] policy decides which one it sends.
    pub fn acting_for(&self, client: Option<&HeaderValue>) -> UpstreamReader {
        UpstreamReader {
            authorization: upstream_authorization(self.authorization.as_ref(), client).cloned(),
            ..self.clone()
        }
    }

    /// This reader sending exactly `authorization`, never the gateway's
    /// own token: for reads that must be decided for the caller alone.
    pub fn with_authorization(&self, authorization: Option<&HeaderValue>) -> UpstreamReader {
        UpstreamReader {
            authorization: authorization.cloned(),
            ..self.clone()
        }
    }

    /// The upstream URL of a path after the base (`/Patient/1`).
    pub fn url(&self, fhir_path: &str) -> String {
        format!("{}{fhir_path}", self.base)
    }

    /// GETs a path after the base (query included) as FHIR JSON: the body
    /// of a 2xx answer.
    pub async fn get(&self, fhir_path: &str) -> Result<Bytes, ReadError> {
        self.get_url(&self.url(fhir_path)).await
    }

    /// GETs an absolute upstream URL (a `next` link already followed with
    /// [`UpstreamReader::follow`]) as FHIR JSON.
    pub async fn get_url(&self, url: &str) -> Result<Bytes, ReadError> {
        self.client
            .get_fhir_json(url, self.authorization.as_ref())
            .await
    }

    /// GETs a path after the base and returns whatever the upstream
    /// answered (status, headers, body).
    pub async fn get_answer(
        &self,
        fhir_path: &str,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), ReadError> {
        self.client
            .get_fhir_json_answer(&self.url(fhir_path), self.authorization.as_ref())
            .await
    }

    /// A paging link (`next`) as the upstream wrote it, made into a URL
    /// the gateway can connect to: links use the base the upstream
    /// advertises, which may differ from the configured one.
    pub fn follow(&self, link: &str) -> String {
        self.rewriter
            .rewrite_url(link, &self.base)
            .unwrap_or_else(|| link.to_owned())
    }

    /// The upstream's CapabilityStatement (JSON). Learns the base it
    /// advertises (`implementation.url`), so its links can be followed.
    pub async fn capability_statement(&self) -> Result<serde_json::Value, ReadError> {
        let body = self.get("/metadata").await?;
        let not_fhir = || ReadError::NotFhir {
            path: path_of(&self.url("/metadata")).to_owned(),
            expected: "a CapabilityStatement",
        };
        let capability: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| not_fhir())?;
        if capability["resourceType"] != "CapabilityStatement" {
            return Err(not_fhir());
        }
        if let Some(base) = capability["implementation"]["url"]
            .as_str()
            .and_then(BaseUrl::parse)
        {
            self.rewriter.learn(base);
        }
        Ok(capability)
    }
}

#[cfg(test)]
mod redaction_tests {
    // The redaction rule itself is tested in `ledger::backends`.
    #[test]
    fn messages_name_the_path_not_the_upstream() {
        assert_eq!(
            super::path_of("http://10.1.2.3:8080/fhir/Patient/1"),
            "/fhir/Patient/1"
        );
        assert_eq!(
            super::redact_url("https://user:secret@fhir.example/r4?key=1"),
            "https://fhir.example/r4"
        );
    }
}
