//! The request pipeline. [`Gateway::handle`] runs the steps in order; each
//! step is a function below whose doc comment states when it runs, what it
//! may change, and what each of its results means.
//!
//! Later features hang on these steps: Japanese normalization on the request
//! body (step 6), sealing on the upstream's answer to writes and verification
//! on reads (step 8).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use sha2::Digest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{self, BoxError, Buffered, ResponseBody};
use crate::config::{Config, VerifyReads, XmlMode};
use crate::error::{ConfigError, GatewayError};
use crate::fhir::format::{self, ContentType, Wanted, WireFormat};
use crate::fhir::interaction::Interaction;
use crate::fhir::outcome;
use crate::fhir::rewrite::{BaseUrl, Rewriter};
use crate::fhir::xml_bridge;
use crate::headers::{
    self, ClientFacts, X_FORWARDED_HOST, X_FORWARDED_PREFIX, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::metrics::{KindLabels, Metrics, RequestLabels};
use crate::upstream::Upstream;

/// `Prefer` (RFC 7240), which the http crate does not name.
const PREFER: HeaderName = HeaderName::from_static("prefer");

/// The admin prefix. No FHIR path segment can start with `-` (resource
/// types, `$operations`, `_history`, `_search` and `metadata` never do), so
/// nothing under it can collide with the FHIR API.
pub const ADMIN_PREFIX: &str = "/-/";

/// What the gateway knows about the upstream's XML support.
const XML_UNKNOWN: u8 = 0;
const XML_NATIVE: u8 = 1;
const XML_BRIDGED: u8 = 2;

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    upstream: Upstream,
    /// `upstream.url` without a trailing slash.
    upstream_base: String,
    pub rewriter: Rewriter,
    pub metrics: Metrics,
    admission: Arc<Semaphore>,
    /// Requests whose body is being read or held (see step 4).
    body_slots: Arc<Semaphore>,
    xml_support: AtomicU8,
    /// `Authorization` value the gateway sends instead of the client's.
    upstream_authorization: Option<HeaderValue>,
    shutting_down: AtomicBool,
    /// Whether the listener speaks TLS (for the derived public base).
    listener_tls: bool,
    /// The ledger, when `ledger.seal_writes` is on.
    pub sealer: Option<crate::seal::Sealer>,
    /// Japanese charsets and normalization of request bodies.
    japanese: crate::japanese::Japanese,
    /// Search parameter types the upstream declares (`Patient.family` →
    /// `string`; `*.name` for system-wide ones), for rule 7.
    search_param_types: std::sync::RwLock<std::collections::HashMap<String, String>>,
    /// SHA-256 of the admin bearer token (`[admin] token_file`), compared
    /// digest to digest so the comparison's timing says nothing about it.
    pub(crate) admin_token_digest: Option<[u8; 32]>,
    /// `$verify` requests per caller and minute.
    verify_limiter: crate::seal_ops::RateLimiter,
    /// Fault injection for the crash tests (`INKAN_FAULT_SEAL_DELAY_MS`):
    /// a pause between the upstream's commit and the seal.
    fault_seal_delay: Option<std::time::Duration>,
}

/// Per-connection facts the pipeline needs.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: std::net::SocketAddr,
    pub tls: bool,
}

/// Everything the steps learn about one request, passed from step to step.
#[derive(Debug)]
struct Exchange {
    request_id: String,
    /// When the request arrived, in seconds since the epoch.
    started_unix: i64,
    /// The client's address (the TCP peer), for per-caller limits.
    peer: std::net::IpAddr,
    method: Method,
    /// Path after the FHIR base, e.g. `/Patient/1`.
    fhir_path: String,
    query: Option<String>,
    interaction: Interaction,
    wanted: Wanted,
    /// True when the client wants XML and the upstream gets JSON instead.
    bridge_response: bool,
    /// True for a CapabilityStatement while the XML bridge serves XML: it
    /// must list the XML formats the gateway adds.
    advertise_xml: bool,
    /// Whether step 8 adds `Repr-Digest` (sealed writes).
    repr_digest: bool,
    /// True for a CapabilityStatement while the ledger is open: it lists
    /// the `$proof` and `$verify` operations.
    advertise_seal_ops: bool,
    /// The legacy charset the client wants the response in, if any.
    response_charset: Option<profiles_jp::charset::JpCharset>,
    /// Whether (and how) step 8b verifies the versions in the answer.
    verify: Option<crate::verify_read::Shape>,
    /// The client's `_format` value when it used one (restored in links).
    client_format_param: Option<String>,
    public_base: String,
    /// The client's `Accept-Encoding` header(s), and nothing else.
    client_accept_encoding: http::HeaderMap,
    /// Set by step 7a when it decoded the upstream's answer: the coding the
    /// client gets it in again (step 8), if any.
    client_coding: Option<crate::coding::Coding>,
    /// Set by step 7a with what it decoded: step 8 sends the upstream's own
    /// compressed bytes when no step changed the body, instead of
    /// compressing it again.
    upstream_coded: Option<UpstreamCoded>,
    /// Set by step 7a when the upstream's answer is still in a content
    /// coding (too large to decode, or a coding the gateway does not know):
    /// step 8 streams it untouched. The coding's name when it is unknown.
    still_encoded: bool,
    unknown_coding: Option<String>,
}

/// Below this size an answer goes out plain even to a client that accepts
/// compression: the saving is smaller than a TCP segment.
const COMPRESS_FROM_BYTES: usize = 1024;

/// An upstream answer as it came (compressed) and as step 7a decoded it.
#[derive(Debug)]
struct UpstreamCoded {
    coding: crate::coding::Coding,
    encoded: Bytes,
    decoded: Bytes,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Gateway, ConfigError> {
        let upstream = Upstream::new(&config.upstream)?;
        let upstream_base = config.upstream.url.trim_end_matches('/').to_owned();
        let mut bases = Vec::new();
        for url in std::iter::once(&config.upstream.url).chain(&config.upstream.also_known_as) {
            bases.push(BaseUrl::parse(url).ok_or_else(|| {
                ConfigError::Invalid(format!("not an absolute http(s) base URL: {url:?}"))
            })?);
        }
        let upstream_authorization = crate::upstream::configured_authorization(&config.upstream)?;
        let xml_support = match config.upstream.xml {
            XmlMode::Auto => XML_UNKNOWN,
            XmlMode::Native => XML_NATIVE,
            XmlMode::Bridge => XML_BRIDGED,
        };
        let sealer = if config.ledger.seal_writes {
            Some(crate::seal::Sealer::open(&config.ledger, &config.anchors)?)
        } else {
            None
        };
        let fault_seal_delay = std::env::var("INKAN_FAULT_SEAL_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis);
        if fault_seal_delay.is_some() {
            tracing::warn!("INKAN_FAULT_SEAL_DELAY_MS is set: seals are delayed (testing only)");
        }
        let japanese = crate::japanese::Japanese::from_config(&config.japanese)?;
        let admin_token_digest = match &config.admin.token_file {
            Some(path) => {
                let token = crate::secret_file::read_text(path, "admin.token_file")?;
                if token.len() < 16 {
                    return Err(ConfigError::Invalid(
                        "admin.token_file: the token must be at least 16 characters".into(),
                    ));
                }
                Some(crate::admin::token_digest(&token))
            }
            None => None,
        };
        Ok(Gateway {
            admin_token_digest,
            verify_limiter: crate::seal_ops::RateLimiter::per_minute(
                config.limits.verify_requests_per_minute,
            ),
            japanese,
            search_param_types: std::sync::RwLock::new(std::collections::HashMap::new()),
            sealer,
            fault_seal_delay,
            admission: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            body_slots: Arc::new(Semaphore::new(config.limits.max_bodies_in_progress)),
            listener_tls: config.tls.is_some(),
            upstream,
            upstream_base,
            rewriter: Rewriter::new(bases),
            metrics: Metrics::new(),
            xml_support: AtomicU8::new(xml_support),
            upstream_authorization,
            shutting_down: AtomicBool::new(false),
            config,
        })
    }

    /// The upstream as the seal steps read it (with the gateway's own
    /// `Authorization`, if configured).
    pub fn upstream_view(&self) -> crate::seal::UpstreamView<'_> {
        crate::seal::UpstreamView {
            upstream: &self.upstream,
            base: &self.upstream_base,
            rewriter: &self.rewriter,
            authorization: self.upstream_authorization.as_ref(),
        }
    }

    /// From now on new requests get 503; in-flight ones finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Serves one request. The pipeline, in order:
    pub async fn handle<B>(
        self: Arc<Self>,
        request: Request<B>,
        conn: Connection,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        // 1. Identify: keep the client's X-Request-Id or make one; it is
        //    logged, forwarded upstream and echoed in the response.
        let request_id = headers::request_id(request.headers());
        // 2. Admin: paths under /-/ (health, metrics) are answered here and
        //    never forwarded.
        if request.uri().path().starts_with(ADMIN_PREFIX) {
            let response = crate::admin::handle(&self, &request).await;
            return with_request_id(response, &request_id);
        }
        // 3. Route: the path must be under the FHIR base (404 otherwise);
        //    the interaction is classified for metrics and later steps.
        let wanted = format::negotiate(request.headers(), request.uri().query());
        let mut exchange = match self.route(&request, &conn, request_id, wanted) {
            Ok(exchange) => exchange,
            Err((error, request_id)) => {
                return self.finish_error(error, wanted, &request_id, Interaction::Other, started)
            }
        };
        // 4. Read the body: within the size and time limits (413, 408), in a
        //    content coding the gateway can decode (415; corrupt data 400).
        //    Before admission, so slow bodies hold no concurrency permit
        //    (they are bounded by the body timeout and the connection cap).
        // A request that arrives after SIGTERM is refused now; one whose
        // body is still arriving when it comes is finished (graceful).
        if self.shutting_down.load(Ordering::SeqCst) {
            return self.fail(GatewayError::ShuttingDown, &exchange, started);
        }
        // Bodies are buffered before admission, so their number has its own
        // bound (`limits.max_bodies_in_progress`): memory stays at most that
        // many times `max_request_body_bytes`. Bodiless requests need none.
        let _body_slot = if request.body().is_end_stream() {
            None
        } else {
            match self.body_slots.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => return self.fail(GatewayError::Overloaded, &exchange, started),
            }
        };
        let (mut parts, body) = request.into_parts();
        let body = match self.read_client_body(&mut parts.headers, body).await {
            Ok(body) => body,
            Err(error) => return self.fail(error, &exchange, started),
        };
        // 5. Admit: take a concurrency permit or answer 503 with Retry-After.
        let _permit = match self.admit() {
            Ok(permit) => permit,
            Err(error) => return self.fail(error, &exchange, started),
        };
        // Counted by a guard: a client's HTTP/2 reset drops this future
        // midway, and the gauge must still come down.
        let _in_flight = crate::metrics::GaugeGuard::enter(&self.metrics.in_flight);
        // 5a. Seal operations: `$proof`, `$verify` and their
        //     OperationDefinitions are answered from the ledger, never
        //     forwarded (see seal_ops.rs).
        let seal_operation = self
            .sealer
            .as_ref()
            .and_then(|_| crate::seal_ops::classify(&parts.method, &exchange.fhir_path));
        let response = match seal_operation {
            Some(operation) => self.seal_operation(operation, parts, body, &exchange).await,
            None => {
                self.handle_admitted(parts, body, &conn, &mut exchange)
                    .await
            }
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => return self.fail(error, &exchange, started),
        };
        // 9. Record: metrics and one access-log line (no bodies, no query
        //    values: search values are health data).
        self.record(&exchange, response.status(), started);
        with_request_id(response, &exchange.request_id)
    }

    /// Steps 6 to 8, which run holding a concurrency permit.
    async fn handle_admitted(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
        conn: &Connection,
        exchange: &mut Exchange,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        // 6. Negotiate: decide whether the XML bridge is in play for this
        //    request (client wants or sends XML, upstream speaks only JSON).
        exchange.response_charset = self.japanese.wanted_charset(&parts.headers);
        let request_type = ContentType::from_headers(&parts.headers);
        let sends_xml = request_type
            .as_ref()
            .is_some_and(|ct| ct.format == WireFormat::Xml);
        // Probe (at most once) only when XML or the CapabilityStatement is involved.
        let xml_involved = exchange.wanted == Wanted::Xml || sends_xml;
        let is_capabilities = exchange.interaction == Interaction::Capabilities;
        let upstream_bridged = (xml_involved || is_capabilities) && self.xml_bridged().await;
        let bridge = xml_involved && upstream_bridged;
        // A read the gateway verifies is fetched as JSON and rendered as XML
        // here even when the upstream speaks XML: the seal is of the stored
        // JSON, and an upstream's own XML need not be the same data (one
        // tested server rewrites instants and decimals in its XML), so the
        // client gets exactly what was checked.
        exchange.verify = self.verify_shape(exchange.interaction);
        let verified_xml = exchange.verify.is_some() && exchange.wanted == Wanted::Xml;
        exchange.bridge_response = (bridge || verified_xml) && exchange.wanted == Wanted::Xml;
        exchange.advertise_xml = is_capabilities && upstream_bridged;
        exchange.advertise_seal_ops = is_capabilities && self.sealer.is_some();
        // 6b. The body (read in step 4) must be in a media type and charset
        //     the gateway can forward (415), and is converted from XML to
        //     JSON when bridging (400 when it is not FHIR XML).
        // Kept for the seal: the hash of exactly what the client sent (after
        // its content coding, which is transport, not content).
        let sealing = self.sealer.is_some() && crate::seal::seals(exchange.interaction);
        let original_digest: Option<[u8; 32]> = sealing.then(|| sha2::Sha256::digest(&body).into());
        let client_authorization = parts.headers.get(AUTHORIZATION).cloned();
        let (body, request_type, mut text_report) =
            self.prepare_request_body(body, request_type, bridge)?;
        // Native XML that step 6 normalized goes upstream as JSON; a client
        // that named no format still expects its answer in XML, as the
        // server would have sent it for an XML body.
        let now_json = request_type
            .as_ref()
            .is_some_and(|ct| ct.format == WireFormat::Json);
        if sends_xml && now_json && !bridge && exchange.wanted == Wanted::Unspecified {
            parts
                .headers
                .insert(ACCEPT, HeaderValue::from_static("application/fhir+xml"));
        }
        // Search values: decoded from a legacy charset and normalized like
        // the stored values of their parameter's type (rule 7).
        let searching = matches!(
            exchange.interaction,
            Interaction::SearchType | Interaction::SearchSystem
        );
        if searching {
            if let Some(query) = exchange.query.clone() {
                let mut query_report = crate::japanese::TextReport::default();
                let normalized = self.japanese.normalize_query(
                    &query,
                    |name| self.search_param_type(&exchange.fhir_path, name),
                    &mut query_report,
                )?;
                if let Some(normalized) = normalized {
                    exchange.query = Some(normalized);
                }
                self.count_text_changes(&query_report);
                text_report.merge(&query_report);
            }
        }
        // The same for a `_search` form body: its pairs are search values.
        let (body, request_type) = match request_type {
            Some(mut ct) if searching && ct.is_form() && !body.is_empty() => {
                let mut form_report = crate::japanese::TextReport::default();
                let normalized = self.japanese.normalize_form(
                    &body,
                    ct.charset.as_deref(),
                    |name| self.search_param_type(&exchange.fhir_path, name),
                    &mut form_report,
                )?;
                self.count_text_changes(&form_report);
                text_report.merge(&form_report);
                match normalized {
                    Some(form) => {
                        // Re-encoded as UTF-8 percent-escapes.
                        ct.charset = ct.charset.map(|_| "utf-8".into());
                        (Bytes::from(form), Some(ct))
                    }
                    None => (body, Some(ct)),
                }
            }
            other => (body, other),
        };
        let authorization = self
            .upstream_authorization
            .as_ref()
            .or(client_authorization.as_ref());
        let view = crate::seal::UpstreamView {
            authorization,
            ..self.upstream_view()
        };
        // A conditional delete names no resource: find what its condition
        // matches now, so the tombstones can be sealed after the delete.
        let mut matched = Vec::new();
        let mut seal_failures = Vec::new();
        if sealing && exchange.interaction == Interaction::ConditionalDelete {
            match view
                .conditional_matches(&exchange.fhir_path, exchange.query.as_deref().unwrap_or(""))
                .await
            {
                Ok(found) => matched = found,
                Err(reason) => seal_failures.push(format!(
                    "could not resolve the conditional delete before forwarding it: {reason}"
                )),
            }
        }
        let sent_body = body.clone();
        // The intent journal: recorded durably before the write leaves, so
        // a crash before its seal is completed later (see recovery.rs).
        // No journal, no forwarding: nothing may be written unsealed.
        let intent = match &self.sealer {
            Some(sealer) if sealing => {
                let intent = crate::recovery::WriteIntent {
                    interaction: exchange.interaction.as_str().to_owned(),
                    path: exchange.fhir_path.clone(),
                    matched: matched.clone(),
                };
                let description = serde_json::to_string(&intent).unwrap_or_default();
                let (answer, opened) = tokio::sync::oneshot::channel();
                sealer.ledger.open_intent_then(&description, move |result| {
                    let _ = answer.send(result);
                });
                let opened = opened
                    .await
                    .map_err(|_| GatewayError::Ledger {
                        detail: "the ledger's appender stopped".into(),
                    })?
                    .map_err(|e| GatewayError::Ledger {
                        detail: e.to_string(),
                    })?;
                Some(opened)
            }
            _ => None,
        };
        let client_prefer = parts
            .headers
            .get(PREFER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // 7. Forward: build the upstream request (end-to-end headers,
        //    X-Forwarded-*, Authorization policy) and send it; 502 when the
        //    upstream cannot be reached, 504 when it does not answer in time.
        //    A write to be sealed asks for the stored version back (`Prefer:
        //    return=representation`) unless the client asked for less.
        let mut upstream_request =
            self.upstream_request(parts, body, request_type, conn, exchange)?;
        if sealing
            && crate::seal::wants_representation(exchange.interaction, client_prefer.as_deref())
        {
            upstream_request
                .headers_mut()
                .insert(PREFER, HeaderValue::from_static("return=representation"));
        }
        // On a send error the intent stays open: the upstream may have
        // committed before the connection broke.
        let upstream_response = self.upstream.send(upstream_request).await?;
        let committed = upstream_response.status().is_success();
        if let (Some(id), Some(sealer), false) = (intent, &self.sealer, committed) {
            let _ = sealer.ledger.store().close_intent(id);
        }
        let (mut response_parts, upstream_body) = upstream_response.into_parts();
        let upstream_body = upstream_body.map_err(BoxError::from).boxed_unsync();
        // 7a. Decode: an answer the gateway looks into (FHIR JSON/XML, or a
        //     write to seal) is decoded from its content coding; everything
        //     else streams on compressed.
        let upstream_body = self
            .decode_upstream_coding(&mut response_parts, upstream_body, exchange, sealing)
            .await?;
        // 8a. Seal: a successful write's versions, as the upstream stored
        //     them, are appended to the ledger before the client hears
        //     about it (see seal.rs for the contract).
        let (upstream_body, seal) = match &self.sealer {
            Some(sealer) if sealing && committed => {
                let limit = self.config.limits.max_inspected_response_bytes;
                let (stored, upstream_body) = match body::buffer_upstream(upstream_body, limit)
                    .await?
                {
                    // Still compressed (step 7a): not the stored bytes; the seal reads them back.
                    Buffered::Whole(bytes) if exchange.still_encoded => (None, body::full(bytes)),
                    Buffered::Whole(bytes) => (Some(bytes.clone()), body::full(bytes)),
                    Buffered::TooLarge { head, rest } => (None, prepend(head, rest)),
                };
                let written = crate::seal::WrittenRequest {
                    interaction: exchange.interaction,
                    fhir_path: &exchange.fhir_path,
                    original_digest,
                    sent_body: &sent_body,
                    matched: &matched,
                };
                if let Some(delay) = self.fault_seal_delay {
                    tokio::time::sleep(delay).await;
                }
                let mut outcome = sealer
                    .seal_write(&view, written, &response_parts.headers, stored.as_deref())
                    .await;
                outcome.failures.append(&mut seal_failures);
                if let Some(id) = intent {
                    let _ = match outcome.failures.first() {
                        None => sealer.ledger.store().close_intent(id),
                        Some(reason) => sealer.ledger.store().fail_intent(id, reason),
                    };
                }
                let kind = if outcome.failures.is_empty() {
                    "sealed"
                } else {
                    "failed"
                };
                self.metrics.seals.get_or_create(&KindLabels { kind }).inc();
                for reason in &outcome.failures {
                    tracing::error!(request_id = %exchange.request_id, path = %exchange.fhir_path, %reason, "write committed upstream but NOT sealed; needs repair");
                }
                exchange.repr_digest = true;
                (upstream_body, Some(outcome))
            }
            _ => (upstream_body, None),
        };
        let upstream_response = Response::from_parts(response_parts, upstream_body);
        // 8. Respond: relay status and end-to-end headers, rewrite upstream
        //    URLs to the public base, convert JSON to XML when bridging, and
        //    stream what needs no inspection.
        let mut response = self.respond(upstream_response, exchange).await?;
        if let Some(seal) = seal {
            seal.write_headers(response.headers_mut());
        }
        for (name, value) in [
            (crate::japanese::INKAN_TEXT, text_report.header_value()),
            (
                crate::japanese::INKAN_JP_CORE,
                text_report.jpcore_header_value(),
            ),
        ] {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
                response.headers_mut().insert(name, v);
            }
        }
        Ok(response)
    }

    /// Step 6 helper. Reads a client's body within the size and time limits
    /// and undoes its content coding. The limit holds for the *decoded*
    /// size: a small compressed body that inflates past it is a 413, never
    /// memory held. An unknown coding is a 415, corrupt compressed bytes a
    /// 400. On success `headers` no longer carries `Content-Encoding`.
    async fn read_client_body<B>(
        &self,
        headers: &mut http::HeaderMap,
        body: B,
    ) -> Result<Bytes, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        use crate::coding::{self, BodyCoding, DecodeError};
        let limit = self.config.limits.max_request_body_bytes;
        let declared_length = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > limit) {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let coding = match coding::body_coding(headers) {
            BodyCoding::Identity => None,
            BodyCoding::Known(coding) => Some(coding),
            BodyCoding::Unsupported(named) => {
                return Err(GatewayError::UnsupportedMediaType {
                    detail: format!(
                        "the request body's Content-Encoding {named:?} is not supported (gzip, deflate, br, identity are)"
                    ),
                })
            }
        };
        let body =
            body::read_request_body(body, limit, self.config.limits.client_body_timeout()).await?;
        let Some(coding) = coding.filter(|_| !body.is_empty()) else {
            // No coding, or nothing coded (a GET that names one anyway).
            headers.remove(CONTENT_ENCODING);
            return Ok(body);
        };
        let decoded = coding::decode(coding, &body, limit).map_err(|error| match error {
            DecodeError::TooLarge { limit } => GatewayError::BodyTooLarge { limit },
            DecodeError::Corrupt { coding, reason } => GatewayError::MalformedRequest {
                detail: format!(
                    "the request body is not valid {} data: {reason}",
                    coding.token()
                ),
            },
        })?;
        headers.remove(CONTENT_ENCODING);
        Ok(Bytes::from(decoded))
    }

    /// Step 7a. Runs on every upstream answer. When the answer is in a
    /// content coding and the gateway will look into it (a FHIR JSON/XML
    /// body, or the answer to a write it seals), buffers and decodes it
    /// within `max_inspected_response_bytes`, removes `Content-Encoding`
    /// and records in `exchange.client_coding` the coding step 8 encodes
    /// the final body in (the upstream's, if the client accepts it).
    /// Anything else — HEAD, identity, other media types — passes
    /// untouched. An answer too large to decode, or in an unknown coding,
    /// stays encoded and `exchange.still_encoded` says so. Corrupt
    /// compressed bytes are a 502.
    async fn decode_upstream_coding(
        &self,
        parts: &mut http::response::Parts,
        upstream_body: ResponseBody,
        exchange: &mut Exchange,
        sealing: bool,
    ) -> Result<ResponseBody, GatewayError> {
        use crate::coding::{self, BodyCoding, DecodeError};
        if exchange.method == Method::HEAD {
            return Ok(upstream_body);
        }
        let coding = match coding::body_coding(&parts.headers) {
            BodyCoding::Identity => return Ok(upstream_body),
            BodyCoding::Known(coding) => coding,
            BodyCoding::Unsupported(named) => {
                tracing::warn!(request_id = %exchange.request_id, coding = %named, "the upstream answered in a content coding the gateway cannot decode");
                exchange.still_encoded = true;
                exchange.unknown_coding = Some(named);
                return Ok(upstream_body);
            }
        };
        let inspected = sealing
            || ContentType::from_headers(&parts.headers)
                .is_some_and(|ct| ct.format != WireFormat::Other);
        if !inspected {
            return Ok(upstream_body);
        }
        let limit = self.config.limits.max_inspected_response_bytes;
        let encoded = match body::buffer_upstream(upstream_body, limit).await? {
            Buffered::Whole(bytes) => bytes,
            Buffered::TooLarge { head, rest } => {
                exchange.still_encoded = true;
                return Ok(prepend(head, rest));
            }
        };
        if encoded.is_empty() {
            // 204, 304 and the like: nothing was encoded.
            parts.headers.remove(CONTENT_ENCODING);
            return Ok(body::full(encoded));
        }
        match coding::decode(coding, &encoded, limit) {
            Ok(decoded) => {
                let decoded = Bytes::from(decoded);
                parts.headers.remove(CONTENT_ENCODING);
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(decoded.len()));
                exchange.client_coding =
                    coding::choose_for_client(&exchange.client_accept_encoding, Some(coding));
                exchange.upstream_coded = Some(UpstreamCoded {
                    coding,
                    encoded,
                    decoded: decoded.clone(),
                });
                Ok(body::full(decoded))
            }
            Err(DecodeError::TooLarge { .. }) => {
                exchange.still_encoded = true;
                Ok(body::full(encoded))
            }
            Err(DecodeError::Corrupt { coding, reason }) => {
                tracing::warn!(request_id = %exchange.request_id, coding = coding.token(), %reason, "the upstream's compressed body is corrupt");
                Err(GatewayError::UpstreamProtocol)
            }
        }
    }

    /// Step 5a. Answers a seal operation from the ledger.
    async fn seal_operation(
        &self,
        operation: crate::seal_ops::SealOperation,
        parts: http::request::Parts,
        body: Bytes,
        exchange: &Exchange,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        use crate::seal_ops::{self, SealOperation};
        let Some(sealer) = &self.sealer else {
            return Err(GatewayError::Ledger {
                detail: "the ledger is not open".into(),
            });
        };
        let ledger = &sealer.ledger;
        // The caller's own credentials, never the gateway's upstream
        // token: the upstream decides whether *this caller* may read the
        // version before anything about its seal (the salt above all) is
        // released.
        let caller = parts.headers.get(AUTHORIZATION).cloned();
        match operation {
            SealOperation::ProofOfVersion(key) => {
                let check = self.caller_check(ledger, &key, caller.as_ref()).await?;
                let mut response = seal_ops::proof_response(ledger, &key, &parts.headers)?;
                seal_ops::mark_check(&mut response, &check);
                Ok(response)
            }
            SealOperation::ProofOfCurrent { resource_type, id } => {
                let url = format!("{}/{resource_type}/{id}", self.upstream_base);
                let answer = self.read_as_caller(&url, caller.as_ref()).await?;
                let current = seal_ops::caller_may_read(&answer)?;
                let crate::verify_read::EntryVersion::Stored(key) =
                    crate::verify_read::resource_version(&current)
                else {
                    return Err(GatewayError::NoProof {
                        detail: "the upstream's copy has no meta.versionId".into(),
                    });
                };
                if key.resource_type != resource_type || key.id != id {
                    return Err(GatewayError::NoProof {
                        detail: "the upstream answered with another resource".into(),
                    });
                }
                let check = seal_ops::require_verified(
                    &key,
                    ledger.check_version(&key, &current, anchor::resource::Format::Json),
                )?;
                let mut response = seal_ops::proof_response(ledger, &key, &parts.headers)?;
                seal_ops::mark_check(&mut response, &check);
                Ok(response)
            }
            SealOperation::Verify => {
                let caller_key = seal_ops::caller_key(caller.as_ref(), exchange.peer);
                if !self.verify_limiter.admit(caller_key) {
                    return Err(GatewayError::RateLimited);
                }
                let key = seal_ops::posted_version(&body)?;
                // Only about versions the caller may read: the same check as
                // `$proof`, without which `$verify` is an oracle for guesses.
                let answer = self
                    .read_as_caller(&self.version_url(&key), caller.as_ref())
                    .await?;
                if answer.0 != StatusCode::GONE {
                    seal_ops::caller_may_read(&answer)?;
                }
                seal_ops::verify_response(ledger, &body, exchange.wanted)
            }
            SealOperation::Definition(definition) => {
                seal_ops::definition_response(definition, exchange.wanted)
            }
        }
    }

    /// Step 5a helper: the upstream's URL of one version (a vread).
    fn version_url(&self, key: &anchor::store::VersionKey) -> String {
        format!(
            "{}/{}/{}/_history/{}",
            self.upstream_base, key.resource_type, key.id, key.version_id
        )
    }

    /// Step 5a helper: GETs `url` from the upstream with the caller's own
    /// `Authorization` and returns whatever it answered; 502 when no
    /// complete answer came (the reason is logged, not sent).
    async fn read_as_caller(
        &self,
        url: &str,
        caller: Option<&HeaderValue>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), GatewayError> {
        self.upstream
            .get_fhir_json_answer(url, caller)
            .await
            .map_err(|reason| {
                tracing::warn!(%reason, "a seal operation's read as the caller failed");
                GatewayError::UpstreamProtocol
            })
    }

    /// Step 5a helper: asks the upstream, as the caller, for version `key`
    /// and checks that what it returns is what was sealed. A sealed
    /// deletion counts when the upstream answers 410 Gone.
    async fn caller_check(
        &self,
        ledger: &anchor::ledger::Ledger,
        key: &anchor::store::VersionKey,
        caller: Option<&HeaderValue>,
    ) -> Result<anchor::ledger::VersionCheck, GatewayError> {
        let answer = self.read_as_caller(&self.version_url(key), caller).await?;
        if answer.0 == StatusCode::GONE {
            return crate::seal_ops::require_verified(key, ledger.check_deletion(key));
        }
        let bytes = crate::seal_ops::caller_may_read(&answer)?;
        crate::seal_ops::require_verified(
            key,
            ledger.check_version(key, &bytes, anchor::resource::Format::Json),
        )
    }

    /// Step 3. Resolves the FHIR path and the public base. Errors: 404 for
    /// paths outside the base, 400 for a bad Host header.
    fn route<B>(
        &self,
        request: &Request<B>,
        conn: &Connection,
        request_id: String,
        wanted: Wanted,
    ) -> Result<Exchange, (GatewayError, String)> {
        let base = self.config.base_path_trimmed();
        let path = request.uri().path();
        if let Err(detail) = check_path_segments(path) {
            return Err((GatewayError::MalformedRequest { detail }, request_id));
        }
        let fhir_path = match path.strip_prefix(base) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
            _ => {
                return Err((
                    GatewayError::NotFound {
                        base_path: self.config.base_path.clone(),
                    },
                    request_id,
                ))
            }
        };
        let public_base = match self.public_base(request, conn) {
            Ok(base) => base,
            Err(error) => return Err((error, request_id)),
        };
        Ok(Exchange {
            started_unix: anchor::clock::unix_seconds(),
            peer: conn.peer.ip(),
            interaction: Interaction::classify(request.method(), &fhir_path),
            method: request.method().clone(),
            fhir_path,
            query: request.uri().query().map(str::to_owned),
            client_format_param: format::format_param(request.uri().query()),
            wanted,
            bridge_response: false,
            advertise_xml: false,
            advertise_seal_ops: false,
            response_charset: None,
            repr_digest: false,
            verify: None,
            public_base,
            request_id,
            client_accept_encoding: request
                .headers()
                .get_all(ACCEPT_ENCODING)
                .iter()
                .map(|v| (ACCEPT_ENCODING, v.clone()))
                .collect(),
            client_coding: None,
            upstream_coded: None,
            still_encoded: false,
            unknown_coding: None,
        })
    }

    /// The gateway's public FHIR base for this request: configured, or
    /// derived from the scheme and `Host` (or trusted `X-Forwarded-*`).
    fn public_base<B>(
        &self,
        request: &Request<B>,
        conn: &Connection,
    ) -> Result<String, GatewayError> {
        if let Some(configured) = &self.config.public_base_url {
            return Ok(configured.trim_end_matches('/').to_owned());
        }
        let headers = request.headers();
        let header = |name: &http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let trusted = self.config.trust_forwarded_headers;
        let scheme = trusted
            .then(|| header(&X_FORWARDED_PROTO))
            .flatten()
            .filter(|p| p == "http" || p == "https")
            .unwrap_or_else(|| {
                if conn.tls || self.listener_tls {
                    "https".into()
                } else {
                    "http".into()
                }
            });
        let host = trusted
            .then(|| header(&X_FORWARDED_HOST))
            .flatten()
            .or_else(|| header(&HOST))
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| self.config.listen.to_string());
        if host.parse::<http::uri::Authority>().is_err() {
            return Err(GatewayError::MalformedRequest {
                detail: "the Host header is not a valid authority".into(),
            });
        }
        let prefix = trusted
            .then(|| header(&X_FORWARDED_PREFIX))
            .flatten()
            .map(|p| p.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(format!(
            "{scheme}://{host}{prefix}{}",
            self.config.base_path_trimmed()
        ))
    }

    /// Step 5. A permit for one request; `Overloaded` (503) when all are
    /// taken. (Shutdown is checked when the request arrives, step 4.)
    fn admit(&self) -> Result<OwnedSemaphorePermit, GatewayError> {
        self.admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| GatewayError::Overloaded)
    }

    /// Step 5 helper: does this upstream need the XML bridge? Probes the
    /// upstream's CapabilityStatement once in `auto` mode.
    async fn xml_bridged(&self) -> bool {
        match self.xml_support.load(Ordering::Relaxed) {
            XML_NATIVE => false,
            XML_BRIDGED => true,
            _ => match self.probe_capabilities().await {
                Ok(_) => self.xml_support.load(Ordering::Relaxed) == XML_BRIDGED,
                // Unknown: bridging is always safe (JSON is every server's
                // format); do not cache, probe again next time.
                Err(_) => true,
            },
        }
    }

    /// Fetches the upstream's CapabilityStatement (JSON). Learns its XML
    /// support (in `auto` mode) and the base it advertises. Used by the XML
    /// decision and by `/-/readyz`.
    pub async fn probe_capabilities(&self) -> Result<serde_json::Value, GatewayError> {
        let request = Request::get(format!("{}/metadata", self.upstream_base))
            .header(ACCEPT, "application/fhir+json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| GatewayError::UpstreamProtocol)?;
        let response = self.upstream.send(request).await?;
        if !response.status().is_success() {
            return Err(GatewayError::UpstreamProtocol);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| GatewayError::UpstreamProtocol)?
            .to_bytes();
        let capability: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| GatewayError::UpstreamProtocol)?;
        if capability["resourceType"] != "CapabilityStatement" {
            return Err(GatewayError::UpstreamProtocol);
        }
        if self.config.upstream.xml == XmlMode::Auto {
            let speaks_xml = capability["format"].as_array().is_some_and(|formats| {
                formats.iter().filter_map(|f| f.as_str()).any(|f| {
                    format::classify_media_type(f.split(';').next().unwrap_or(""))
                        == WireFormat::Xml
                })
            });
            let state = if speaks_xml { XML_NATIVE } else { XML_BRIDGED };
            if self.xml_support.swap(state, Ordering::Relaxed) != state {
                tracing::info!(
                    bridged = !speaks_xml,
                    "upstream XML support determined from its CapabilityStatement"
                );
            }
        }
        if let Some(base) = capability["implementation"]["url"]
            .as_str()
            .and_then(BaseUrl::parse)
        {
            self.rewriter.learn(base);
        }
        self.learn_search_param_types(&capability);
        Ok(capability)
    }

    /// The type of search parameter `name` on the resource type `fhir_path`
    /// names (`/Patient/_search` → `Patient`): as the upstream declares it,
    /// else as the R4 specification defines it (an upstream that declares
    /// no types still gets its standard parameters normalized).
    fn search_param_type(&self, fhir_path: &str, name: &str) -> Option<String> {
        let resource_type = fhir_path
            .split('/')
            .find(|s| !s.is_empty() && !s.starts_with('_'))
            .unwrap_or("*");
        let types = self
            .search_param_types
            .read()
            .unwrap_or_else(|e| e.into_inner());
        types
            .get(&format!("{resource_type}.{name}"))
            .or_else(|| types.get(&format!("*.{name}")))
            .cloned()
            .or_else(|| {
                profiles_jp::r4_search_params::r4_search_param_type(resource_type, name)
                    .map(str::to_owned)
            })
    }

    /// Records the search parameter types the upstream declares.
    fn learn_search_param_types(&self, capability: &serde_json::Value) {
        let mut learned = std::collections::HashMap::new();
        for rest in capability["rest"].as_array().into_iter().flatten() {
            let system = std::iter::once(("*", &rest["searchParam"]));
            let per_type = rest["resource"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((r["type"].as_str()?, &r["searchParam"])));
            for (resource_type, params) in system.chain(per_type) {
                for param in params.as_array().into_iter().flatten() {
                    if let (Some(name), Some(kind)) =
                        (param["name"].as_str(), param["type"].as_str())
                    {
                        learned.insert(format!("{resource_type}.{name}"), kind.to_owned());
                    }
                }
            }
        }
        if !learned.is_empty() {
            *self
                .search_param_types
                .write()
                .unwrap_or_else(|e| e.into_inner()) = learned;
        }
    }

    /// Step 6 helper. Checks the body's media type, decodes Japanese
    /// charsets to UTF-8 and normalizes the text (japanese.rs), validates
    /// FHIR JSON syntax, and converts FHIR XML to JSON when bridging.
    /// Returns the body, the content type to send upstream and what was
    /// changed in the text.
    fn prepare_request_body(
        &self,
        body: Bytes,
        content_type: Option<ContentType>,
        bridge: bool,
    ) -> Result<(Bytes, Option<ContentType>, crate::japanese::TextReport), GatewayError> {
        let mut report = crate::japanese::TextReport::default();
        let Some(mut ct) = content_type else {
            return Ok((body, None, report));
        };
        if body.is_empty() || ct.format == WireFormat::Other {
            return Ok((body, Some(ct), report));
        }
        let (body, decoded_from) = self.japanese.decode(body, ct.charset.as_deref())?;
        if decoded_from.is_some() {
            ct.charset = Some("utf-8".into());
        }
        report.decoded_from = decoded_from;
        let json = match ct.format {
            // Validated by process_json below (parsed once, not twice).
            WireFormat::Json => body,
            WireFormat::Xml if bridge => {
                let json =
                    xml_bridge::xml_to_json(&body).map_err(|e| GatewayError::MalformedRequest {
                        detail: e.to_string(),
                    })?;
                self.metrics
                    .xml_conversions
                    .get_or_create(&KindLabels {
                        kind: "request_xml_to_json",
                    })
                    .inc();
                ct = ContentType::parse("application/fhir+json");
                Bytes::from(json)
            }
            // Native XML: the text is checked and normalized in the JSON
            // model. Nothing to change → the client's XML goes on as sent;
            // otherwise the normalized resource goes as JSON (the upstream
            // answers in the format the client's Accept asks for).
            WireFormat::Xml if self.japanese.inspects_bodies() => {
                let json =
                    xml_bridge::xml_to_json(&body).map_err(|e| GatewayError::MalformedRequest {
                        detail: e.to_string(),
                    })?;
                let (json, changes, findings) = self.japanese.process_json(Bytes::from(json))?;
                for finding in &findings {
                    tracing::warn!(path = %finding.path, "JP Core: {}", finding.message);
                }
                report.jpcore_findings = findings;
                if changes.total() == 0 {
                    self.count_text_changes(&report);
                    return Ok((body, Some(ct), report));
                }
                report.changes = changes;
                self.count_text_changes(&report);
                return Ok((
                    json,
                    Some(ContentType::parse("application/fhir+json")),
                    report,
                ));
            }
            _ => return Ok((body, Some(ct), report)),
        };
        let (json, changes, findings) = self.japanese.process_json(json)?;
        report.changes = changes;
        for finding in &findings {
            tracing::warn!(path = %finding.path, "JP Core: {}", finding.message);
        }
        report.jpcore_findings = findings;
        self.count_text_changes(&report);
        Ok((json, Some(ct), report))
    }

    fn count_text_changes(&self, report: &crate::japanese::TextReport) {
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

    /// Step 7 helper. The upstream request: same method, path and query
    /// (with `_format` pointing at JSON when bridging), end-to-end headers
    /// only, `X-Forwarded-*`, and the configured Authorization policy.
    fn upstream_request(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        content_type: Option<ContentType>,
        conn: &Connection,
        exchange: &Exchange,
    ) -> Result<Request<Full<Bytes>>, GatewayError> {
        let mut uri = format!("{}{}", self.upstream_base, exchange.fhir_path);
        if let Some(query) = &exchange.query {
            uri.push('?');
            if exchange.bridge_response {
                uri.push_str(&replace_format_param(query, "json"));
            } else {
                uri.push_str(query);
            }
        }
        let uri: Uri = uri.parse().map_err(|_| GatewayError::MalformedRequest {
            detail: "the request URL cannot be forwarded".into(),
        })?;
        let mut headers = parts.headers;
        let facts = ClientFacts {
            peer: conn.peer,
            proto: if conn.tls {
                "https".into()
            } else {
                "http".into()
            },
            host: headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| parts.uri.authority().map(|a| a.to_string())),
        };
        headers::prepare_upstream_request_headers(
            &mut headers,
            &facts,
            self.config.trust_forwarded_headers,
        );
        // Offer the upstream only codings the gateway can look into.
        match crate::coding::upstream_accept_encoding(&exchange.client_accept_encoding) {
            Some(offer) => headers.insert(ACCEPT_ENCODING, offer),
            None => headers.remove(ACCEPT_ENCODING),
        };
        if let Ok(id) = HeaderValue::from_str(&exchange.request_id) {
            headers.insert(X_REQUEST_ID, id);
        }
        if let Some(authorization) = &self.upstream_authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        if exchange.bridge_response {
            headers.insert(ACCEPT, HeaderValue::from_static("application/fhir+json"));
        }
        if let Some(ct) = content_type {
            if let Ok(value) = HeaderValue::from_str(&render_content_type(&ct, &headers)) {
                headers.insert(CONTENT_TYPE, value);
            }
        }
        headers.remove(CONTENT_LENGTH);
        if !body.is_empty()
            || parts.method == Method::POST
            || parts.method == Method::PUT
            || parts.method == Method::PATCH
        {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Step 8. Relays the upstream's answer (upstream errors unchanged except
    /// for URL rewriting and the XML bridge). Buffers only FHIR JSON/XML
    /// bodies, up to `max_inspected_response_bytes`; everything else streams.
    async fn respond(
        &self,
        upstream: Response<ResponseBody>,
        exchange: &Exchange,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (mut parts, upstream_body) = upstream.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        // Only the gateway speaks for the seal: drop look-alikes first.
        headers::strip_gateway_owned(&mut parts.headers);
        for name in [LOCATION, CONTENT_LOCATION] {
            if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
                if let Some(public) = self.rewriter.rewrite_url(value, &exchange.public_base) {
                    if let Ok(v) = HeaderValue::from_str(&public) {
                        parts.headers.insert(name, v);
                    }
                }
            }
        }
        let response_type = ContentType::from_headers(&parts.headers);
        let format = response_type
            .as_ref()
            .map_or(WireFormat::Other, |ct| ct.format);
        let convert_to_xml = exchange.bridge_response && format == WireFormat::Json;
        if exchange.method == Method::HEAD || format == WireFormat::Other {
            return Ok(Response::from_parts(parts, upstream_body));
        }
        if exchange.still_encoded {
            // Step 7a could not decode it: relay it as the upstream sent it.
            if convert_to_xml {
                return Err(match &exchange.unknown_coding {
                    Some(named) => GatewayError::ResponseConversion {
                        target: "FHIR XML",
                        reason: format!("the upstream compressed it with {named:?}, which the gateway cannot decode"),
                    },
                    None => GatewayError::ResponseTooLarge {
                        limit: self.config.limits.max_inspected_response_bytes,
                    },
                });
            }
            self.metrics.uninspected_responses.inc();
            tracing::warn!(request_id = %exchange.request_id, "compressed FHIR response streamed without inspection (too large to decode, or an unknown coding)");
            return Ok(Response::from_parts(parts, upstream_body));
        }
        let limit = self.config.limits.max_inspected_response_bytes;
        let declared_length = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = match declared_length {
            Some(len) if len > limit => None,
            _ => match body::buffer_upstream(upstream_body, limit).await? {
                Buffered::Whole(bytes) => Some(Ok(bytes)),
                Buffered::TooLarge { head, rest } => Some(Err((head, rest))),
            },
        };
        let body = match body {
            Some(Ok(bytes)) => bytes,
            too_large => {
                if convert_to_xml {
                    return Err(GatewayError::ResponseTooLarge { limit });
                }
                self.metrics.uninspected_responses.inc();
                tracing::warn!(request_id = %exchange.request_id, limit, "FHIR response over the inspection limit streamed without URL rewriting");
                let stream = match too_large {
                    Some(Err((head, rest))) => prepend(head, rest),
                    _ => return Err(GatewayError::ResponseTooLarge { limit }),
                };
                return Ok(Response::from_parts(parts, stream));
            }
        };
        // 8b. Verify: versions in a read/history/search answer are compared
        //     with their seals (see verify_read.rs for the contract).
        let (body, verification) =
            self.verify_versions(body, parts.status, &parts.headers, format, exchange)?;
        if let Some(summary) = verification {
            if let Ok(v) = HeaderValue::from_str(&summary.header_value()) {
                parts.headers.insert(crate::verify_read::INKAN_VERIFY, v);
            }
            if summary.backfilled > 0 {
                parts.headers.insert(
                    crate::verify_read::INKAN_VERIFY_BACKFILLED,
                    HeaderValue::from(summary.backfilled),
                );
            }
        }
        let mut body = self.rewrite_body(body, format, exchange, convert_to_xml)?;
        if convert_to_xml {
            parts.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(WireFormat::Xml.fhir_media_type()),
            );
        }
        // The client asked for a legacy charset: encode, escaping what the
        // charset lacks (\uXXXX in JSON, &#x…; in XML), and say so.
        if let Some(charset) = exchange.response_charset {
            let xml = convert_to_xml || format == WireFormat::Xml;
            if let Some(encoded) = crate::japanese::Japanese::encode_response(&body, xml, charset) {
                body = Bytes::from(encoded);
                let media = if xml {
                    WireFormat::Xml
                } else {
                    WireFormat::Json
                }
                .fhir_media_type();
                let essence = media.split(';').next().unwrap_or(media);
                let value = format!(
                    "{essence}; charset={}",
                    crate::japanese::charset_label(charset)
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    parts.headers.insert(CONTENT_TYPE, v);
                }
            }
        }
        // The client gets the coding it asked for: the upstream's again
        // (step 7a decoded it), or, for an answer the upstream sent plain,
        // the client's preferred one once the body is worth compressing.
        let coding = match exchange.upstream_coded {
            Some(_) => exchange.client_coding,
            None if body.len() >= COMPRESS_FROM_BYTES => {
                crate::coding::choose_for_client(&exchange.client_accept_encoding, None)
            }
            None => None,
        };
        if !exchange.client_accept_encoding.is_empty() {
            headers::add_vary(&mut parts.headers, "accept-encoding");
        }
        if let Some(coding) = coding.filter(|_| !body.is_empty()) {
            body = match &exchange.upstream_coded {
                // No step changed it: the upstream's own bytes, not
                // compressed a second time.
                Some(original) if original.coding == coding && original.decoded == body => {
                    original.encoded.clone()
                }
                _ => Bytes::from(crate::coding::encode(coding, &body)),
            };
            parts
                .headers
                .insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token()));
            headers::add_vary(&mut parts.headers, "accept-encoding");
        }
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if exchange.repr_digest {
            // RFC 9530: the digest of the representation as sent.
            use base64::Engine;
            let digest =
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
            if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{digest}:")) {
                parts.headers.insert("repr-digest", v);
            }
        }
        Ok(Response::from_parts(parts, body::full(body)))
    }

    /// Step 8b helper: which shape of answer verify-on-read checks for this
    /// interaction, if any.
    fn verify_shape(&self, interaction: Interaction) -> Option<crate::verify_read::Shape> {
        use crate::verify_read::Shape;
        if self.sealer.is_none() || self.config.ledger.verify_reads == VerifyReads::Off {
            return None;
        }
        match interaction {
            Interaction::Read | Interaction::Vread => Some(Shape::Resource),
            Interaction::HistoryInstance
            | Interaction::HistoryType
            | Interaction::HistorySystem
            | Interaction::SearchType
            | Interaction::SearchSystem => Some(Shape::Bundle),
            _ => None,
        }
    }

    /// Step 8b. Checks the versions in a 200 FHIR JSON answer against the
    /// ledger (and a read's 404/410 against what is sealed); returns the
    /// (possibly annotated) body and the counts.
    fn verify_versions(
        &self,
        body: Bytes,
        status: StatusCode,
        response_headers: &http::HeaderMap,
        format: WireFormat,
        exchange: &Exchange,
    ) -> Result<(Bytes, Option<crate::verify_read::ReadVerification>), GatewayError> {
        use crate::verify_read::{ReadVerification, Shape};
        let (Some(shape), Some(sealer)) = (exchange.verify, &self.sealer) else {
            return Ok((body, None));
        };
        let policy = self.config.ledger.verify_reads;
        let request = self.read_request(exchange, response_headers);
        let missing = shape == Shape::Resource
            && (status == StatusCode::NOT_FOUND || status == StatusCode::GONE);
        if missing {
            let found =
                crate::verify_read::check_missing(&sealer.ledger, &request).map_err(|e| {
                    GatewayError::Ledger {
                        detail: e.to_string(),
                    }
                })?;
            let Some((reference, check)) = found else {
                return Ok((body, None));
            };
            tracing::error!(request_id = %exchange.request_id, %reference, status = status.as_u16(), "a sealed version is missing from the upstream");
            let summary = ReadVerification {
                tampered: 1,
                ..Default::default()
            };
            self.count_verifications(&summary);
            crate::verify_read::refuse_in_block_mode(&reference, &check, policy)?;
            return Ok((body, Some(summary)));
        }
        if status != StatusCode::OK || format != WireFormat::Json {
            return Ok((body, None));
        }
        let result =
            crate::verify_read::verify_response(&sealer.ledger, &body, shape, policy, &request);
        let (summary, edited) = match result {
            Ok(found) => found,
            Err(error) => {
                if let GatewayError::TamperedVersion { .. } = &error {
                    self.count_verifications(&ReadVerification {
                        tampered: 1,
                        ..Default::default()
                    });
                    tracing::error!(request_id = %exchange.request_id, "{error}");
                }
                return Err(error);
            }
        };
        self.count_verifications(&summary);
        if summary.tampered > 0 {
            tracing::error!(request_id = %exchange.request_id, path = %exchange.fhir_path, tampered = summary.tampered, "the upstream returned versions that do not match their seals");
        }
        Ok((edited.map(Bytes::from).unwrap_or(body), Some(summary)))
    }

    /// Step 8b helper: what the answer must match — type, id (and the
    /// version of a vread) from the path, the version the `ETag` names,
    /// whether the client asked for a subset.
    fn read_request(
        &self,
        exchange: &Exchange,
        response_headers: &http::HeaderMap,
    ) -> crate::verify_read::ReadRequest {
        let named = match exchange.interaction {
            Interaction::Read | Interaction::Vread => {
                crate::seal::parse_version_path(&exchange.fhir_path)
            }
            _ => None,
        };
        let (resource_type, id, version_id) = match named {
            Some((resource_type, id, version_id)) => (Some(resource_type), Some(id), version_id),
            None => (None, None, None),
        };
        // `_summary=false` asks for the whole resource: not a subset.
        let subset_requested = exchange.query.as_deref().is_some_and(|query| {
            query.split('&').any(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                name == "_elements" || (name == "_summary" && value != "false")
            })
        });
        crate::verify_read::ReadRequest {
            resource_type,
            id,
            version_id,
            etag_version: response_headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::seal::etag_version),
            subset_requested,
            started_at: exchange.started_unix,
        }
    }

    fn count_verifications(&self, summary: &crate::verify_read::ReadVerification) {
        for (kind, n) in [
            ("verified", summary.verified),
            ("tampered", summary.tampered),
            ("unsealed", summary.unsealed),
            ("unchecked", summary.unchecked),
        ] {
            if n > 0 {
                self.metrics
                    .read_verifications
                    .get_or_create(&KindLabels { kind })
                    .inc_by(u64::from(n));
            }
        }
    }

    /// Step 8 helper: URL rewriting, the client's view of a bridged
    /// response, then (when bridging) JSON → XML.
    fn rewrite_body(
        &self,
        body: Bytes,
        format: WireFormat,
        exchange: &Exchange,
        convert_to_xml: bool,
    ) -> Result<Bytes, GatewayError> {
        let rewritten = match format {
            WireFormat::Json => self.rewriter.rewrite_json(&body, &exchange.public_base),
            WireFormat::Xml => self.rewriter.rewrite_xml(&body, &exchange.public_base),
            WireFormat::Other => None,
        };
        let mut body = rewritten.map(Bytes::from).unwrap_or(body);
        let is_capabilities = exchange.interaction == Interaction::Capabilities;
        if format == WireFormat::Json
            && (exchange.advertise_xml || is_capabilities || convert_to_xml)
        {
            if let Some(adjusted) = self.restore_client_view(&body, exchange) {
                body = Bytes::from(adjusted);
            }
        }
        if !convert_to_xml || body.is_empty() {
            return Ok(body);
        }
        let (xml, dropped) = xml_bridge::json_to_xml_lenient(&body).map_err(|e| {
            GatewayError::ResponseConversion {
                target: "FHIR XML",
                reason: e.to_string(),
            }
        })?;
        if !dropped.is_empty() {
            crate::fhir::xml_bridge::log_dropped_once(&dropped);
        }
        self.metrics
            .xml_conversions
            .get_or_create(&KindLabels {
                kind: "response_json_to_xml",
            })
            .inc();
        Ok(Bytes::from(xml))
    }

    /// The client's view of what the gateway adds: a CapabilityStatement
    /// lists the XML formats the bridge serves and the seal operations,
    /// and bridged paging links keep the client's `_format`. `None` when
    /// nothing changes.
    fn restore_client_view(&self, body: &[u8], exchange: &Exchange) -> Option<Vec<u8>> {
        let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
        let mut changed = false;
        if exchange.advertise_xml && value["resourceType"] == "CapabilityStatement" {
            if let Some(formats) = value["format"].as_array_mut() {
                for xml in ["xml", "application/fhir+xml"] {
                    if !formats.iter().any(|f| f == xml) {
                        formats.push(serde_json::Value::String(xml.into()));
                        changed = true;
                    }
                }
            }
        }
        if exchange.advertise_seal_ops && value["resourceType"] == "CapabilityStatement" {
            changed |= crate::seal_ops::advertise(&mut value);
        }
        if exchange.interaction == Interaction::Capabilities
            && value["resourceType"] == "CapabilityStatement"
        {
            if let Some(extension) = self.japanese.capability_extension() {
                changed |= crate::japanese::advertise(&mut value, extension);
            }
        }
        let client_format = exchange
            .client_format_param
            .as_ref()
            .filter(|_| exchange.bridge_response);
        if let (Some(client_format), Some(links)) = (client_format, value["link"].as_array_mut()) {
            for link in links {
                if let Some(url) = link["url"].as_str() {
                    if let Some((base, query)) = url.split_once('?') {
                        let restored =
                            format!("{base}?{}", replace_format_param(query, client_format));
                        if restored != url {
                            link["url"] = serde_json::Value::String(restored);
                            changed = true;
                        }
                    }
                }
            }
        }
        changed.then(|| serde_json::to_vec(&value).ok()).flatten()
    }

    fn fail(
        &self,
        error: GatewayError,
        exchange: &Exchange,
        started: Instant,
    ) -> Response<ResponseBody> {
        self.finish_error(
            error,
            exchange.wanted,
            &exchange.request_id,
            exchange.interaction,
            started,
        )
    }

    /// Renders a gateway error as an OperationOutcome and records it.
    fn finish_error(
        &self,
        error: GatewayError,
        wanted: Wanted,
        request_id: &str,
        interaction: Interaction,
        started: Instant,
    ) -> Response<ResponseBody> {
        let status = error.status();
        let kind = error_kind(&error);
        self.metrics
            .gateway_errors
            .get_or_create(&KindLabels { kind })
            .inc();
        let detail = error.internal_detail().unwrap_or_default();
        tracing::warn!(
            request_id,
            status = status.as_u16(),
            kind,
            detail,
            "{error}"
        );
        let response = error_response(&error, wanted.outcome_format());
        self.observe(interaction, status, started);
        with_request_id(response, request_id)
    }

    fn record(&self, exchange: &Exchange, status: StatusCode, started: Instant) {
        self.observe(exchange.interaction, status, started);
        tracing::info!(
            target: "inkan::access",
            request_id = %exchange.request_id,
            method = %exchange.method,
            path = %exchange.fhir_path,
            query_params = %query_names(exchange.query.as_deref()),
            interaction = exchange.interaction.as_str(),
            status = status.as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
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
}

/// Refuses request paths a server behind the gateway could resolve to
/// somewhere else than they appear: dot segments (`..`, `.`, also
/// percent-encoded), encoded slashes and backslashes, NUL, `;` path
/// parameters and empty segments. No FHIR path has any of them, and
/// forwarding them would let a client reach upstream paths outside the
/// FHIR base (or past a rule of an authorizing proxy in front of it).
fn check_path_segments(path: &str) -> Result<(), String> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        let lowered = segment.to_ascii_lowercase();
        let decoded = lowered.replace("%2e", ".");
        let trailing = index + 1 == segments.len();
        let reason = if decoded == "." || decoded == ".." {
            Some("a dot segment")
        } else if segment.is_empty() && !trailing {
            Some("an empty segment")
        } else if segment.contains(';') {
            Some("a ';' path parameter")
        } else if ["%2f", "%5c", "%00", "\\"]
            .iter()
            .any(|bad| lowered.contains(bad))
        {
            Some("an encoded slash, backslash or NUL")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(format!(
                "the request path has {reason}, which no FHIR path has"
            ));
        }
    }
    Ok(())
}

/// An OperationOutcome response for `error` in `format`.
pub fn error_response(error: &GatewayError, format: WireFormat) -> Response<ResponseBody> {
    let body = outcome::render(error, format);
    let mut response = Response::new(body::full(body));
    *response.status_mut() = error.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.fhir_media_type()),
    );
    if matches!(error, GatewayError::AdminUnauthorized) {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"inkan-admin\""),
        );
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

fn with_request_id(
    mut response: Response<ResponseBody>,
    request_id: &str,
) -> Response<ResponseBody> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// A stable metric label for each error.
fn error_kind(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::UpstreamUnreachable => "upstream_unreachable",
        GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
        GatewayError::UpstreamProtocol => "upstream_protocol",
        GatewayError::ResponseConversion { .. } => "response_conversion",
        GatewayError::ResponseTooLarge { .. } => "response_too_large",
        GatewayError::BodyTooLarge { .. } => "body_too_large",
        GatewayError::BodyTimeout { .. } => "body_timeout",
        GatewayError::UnsupportedMediaType { .. } => "unsupported_media_type",
        GatewayError::NotAcceptable { .. } => "not_acceptable",
        GatewayError::MalformedRequest { .. } => "malformed_request",
        GatewayError::NotFound { .. } => "not_found",
        GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
        GatewayError::NoSuchLogFile { .. } => "no_such_log_file",
        GatewayError::InvalidText { .. } => "invalid_text",
        GatewayError::JpCoreViolations { .. } => "jp_core_violations",
        GatewayError::PrivateUseCharacter { .. } => "private_use_character",
        GatewayError::TamperedVersion { .. } => "tampered_version",
        GatewayError::NoProof { .. } => "no_proof",
        GatewayError::Ledger { .. } => "ledger",
        GatewayError::AdminUnauthorized => "admin_unauthorized",
        GatewayError::AdminClosed => "admin_closed",
        GatewayError::CallerMayNotRead { .. } => "caller_may_not_read",
        GatewayError::RateLimited => "rate_limited",
        GatewayError::Overloaded => "overloaded",
        GatewayError::ShuttingDown => "shutting_down",
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
fn replace_format_param(query: &str, value: &str) -> String {
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

/// Query parameter names only, for logs: `name,birthdate`.
fn query_names(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(name, _)| name))
        .collect::<Vec<_>>()
        .join(",")
}

/// A body that yields `head` and then the rest of `rest`.
fn prepend<B>(head: Bytes, rest: B) -> ResponseBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let head = Full::new(head).map_err(|never| match never {});
    let stream = chain::Chain::new(head, rest.map_err(Into::into));
    stream.boxed_unsync()
}

mod chain {
    //! A two-part body (no extra dependency for one adapter).
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};

    use crate::body::BoxError;

    #[derive(Debug)]
    pub struct Chain<A, B> {
        first: Option<A>,
        second: B,
    }

    impl<A, B> Chain<A, B> {
        pub fn new(first: A, second: B) -> Self {
            Chain {
                first: Some(first),
                second,
            }
        }
    }

    impl<A, B> Body for Chain<A, B>
    where
        A: Body<Data = Bytes, Error = BoxError> + Unpin,
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if let Some(first) = self.first.as_mut() {
                match Pin::new(first).poll_frame(cx) {
                    Poll::Ready(None) => self.first = None,
                    other => return other,
                }
            }
            Pin::new(&mut self.second).poll_frame(cx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_resolve_elsewhere_upstream_are_refused() {
        #[rustfmt::skip]
        let cases: &[(&str, bool)] = &[
            ("/fhir/Patient/1",                    true),
            ("/fhir/Patient/1/_history/2",          true),
            ("/fhir/",                              true),
            ("/fhir/Patient/$proof",                true),
            ("/fhir/../-/metrics",                  false),
            ("/fhir/Patient/..",                    false),
            ("/fhir/Patient/./1",                   false),
            ("/fhir/Patient/%2e%2e/secret",         false),
            ("/fhir/Patient/%2E./secret",           false),
            ("/fhir/Patient;jsessionid=1/1",        false),
            ("/fhir/Patient/1%2f..%2fsecret",       false),
            ("/fhir/Patient/1%5c..",                false),
            ("/fhir//Patient/1",                    false),
            ("/fhir/Patient/a%00b",                 false),
        ];
        for (path, allowed) in cases {
            assert_eq!(check_path_segments(path).is_ok(), *allowed, "{path}");
        }
    }

    #[test]
    fn format_param_is_replaced_everywhere() {
        assert_eq!(
            replace_format_param("a=1&_format=xml&b=2", "json"),
            "a=1&_format=json&b=2"
        );
        assert_eq!(replace_format_param("a=1", "json"), "a=1");
        assert_eq!(
            replace_format_param("_format=json", "application/fhir+xml"),
            "_format=application%2Ffhir%2Bxml"
        );
    }

    #[test]
    fn logs_carry_query_names_not_values() {
        assert_eq!(
            query_names(Some("name=%E5%B1%B1%E7%94%B0&birthdate=1970")),
            "name,birthdate"
        );
        assert_eq!(query_names(None), "");
    }
}

#[cfg(test)]
mod upstream_request_tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn search_parameter_types_come_from_the_upstream_else_from_r4() {
        let gateway = gateway(|_| {});
        // The upstream declared nothing: the R4 definitions answer.
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("/Patient", "family", Some("string")),
            ("/Patient/_search", "birthdate", Some("date")),
            ("/Observation", "code", Some("token")),
            ("/Observation", "subject", Some("reference")),
            ("/Patient", "_lastUpdated", Some("date")),
            ("/Patient", "no-such-parameter", None),
        ];
        for (path, name, expected) in cases {
            assert_eq!(
                gateway.search_param_type(path, name).as_deref(),
                *expected,
                "{path} {name}"
            );
        }
        // What the upstream declares wins.
        gateway.learn_search_param_types(&serde_json::json!({"rest": [{"resource": [
            {"type": "Patient", "searchParam": [{"name": "family", "type": "token"}]}
        ]}]}));
        assert_eq!(
            gateway.search_param_type("/Patient", "family").as_deref(),
            Some("token")
        );
    }

    fn gateway(extra: impl FnOnce(&mut Config)) -> Gateway {
        let mut config = Config::default();
        config.upstream.url = "http://127.0.0.1:9/fhir".into();
        // No ledger: these tests need none, and the default directory is
        // relative (tests running at once would share it in the source tree).
        config.ledger.seal_writes = false;
        extra(&mut config);
        Gateway::new(config).unwrap()
    }

    fn exchange(bridge: bool, query: Option<&str>) -> Exchange {
        Exchange {
            request_id: "rid-1".into(),
            started_unix: 0,
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            method: Method::GET,
            fhir_path: "/Patient".into(),
            query: query.map(str::to_owned),
            interaction: Interaction::SearchType,
            wanted: if bridge { Wanted::Xml } else { Wanted::Json },
            bridge_response: bridge,
            advertise_xml: false,
            advertise_seal_ops: false,
            response_charset: None,
            repr_digest: false,
            verify: None,
            client_format_param: None,
            public_base: "http://gw/fhir".into(),
            client_accept_encoding: http::HeaderMap::new(),
            client_coding: None,
            upstream_coded: None,
            still_encoded: false,
            unknown_coding: None,
        }
    }

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::get("http://gw/fhir/Patient");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn conn() -> Connection {
        Connection {
            peer: "192.0.2.1:4000".parse().unwrap(),
            tls: false,
        }
    }

    #[test]
    fn authorization_passes_through_by_default_and_multi_values_survive() {
        let gw = gateway(|_| {});
        let request = gw
            .upstream_request(
                parts(&[
                    ("authorization", "Bearer client-token"),
                    ("if-match", "W/\"1\""),
                    ("if-match", "W/\"2\""),
                    ("connection", "close"),
                    ("te", "trailers"),
                ]),
                Bytes::new(),
                None,
                &conn(),
                &exchange(false, Some("name=a&_count=2")),
            )
            .unwrap();
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:9/fhir/Patient?name=a&_count=2"
        );
        assert_eq!(request.headers()["authorization"], "Bearer client-token");
        assert_eq!(request.headers().get_all("if-match").iter().count(), 2);
        assert!(request.headers().get("connection").is_none());
        assert!(request.headers().get("te").is_none());
        assert_eq!(request.headers()["x-forwarded-for"], "192.0.2.1");
        assert_eq!(request.headers()["x-request-id"], "rid-1");
    }

    #[test]
    fn gateway_token_replaces_the_client_authorization() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("token");
        std::fs::write(&dir, "gateway-secret\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let gw = gateway(|c| c.upstream.bearer_token_file = Some(dir.clone()));
        let request = gw
            .upstream_request(
                parts(&[("authorization", "Bearer client-token")]),
                Bytes::new(),
                None,
                &conn(),
                &exchange(false, None),
            )
            .unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer gateway-secret");
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn bridged_requests_ask_the_upstream_for_json() {
        let gw = gateway(|_| {});
        let request = gw
            .upstream_request(
                parts(&[("accept", "application/fhir+xml")]),
                Bytes::new(),
                None,
                &conn(),
                &exchange(true, Some("name=a&_format=xml")),
            )
            .unwrap();
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:9/fhir/Patient?name=a&_format=json"
        );
        assert_eq!(request.headers()["accept"], "application/fhir+json");
    }
}
