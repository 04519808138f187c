//! The gateway's errors. Every error the gateway itself produces while serving
//! a request is a [`GatewayError`], and each variant maps to exactly one HTTP
//! status and one FHIR issue type; [`crate::fhir::outcome`] renders it as an
//! OperationOutcome in the negotiated format. Diagnostics never carry request
//! bodies, query values or internal error chains (those go to the log).

use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;

/// Why the gateway answered a request itself instead of relaying the
/// upstream's answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No connection to the upstream could be made (refused, DNS, TLS).
    #[error("the upstream FHIR server could not be reached")]
    UpstreamUnreachable,
    /// The upstream did not send response headers in time.
    #[error("the upstream FHIR server did not answer within {} ms", .after.as_millis())]
    UpstreamTimeout { after: Duration },
    /// The upstream connection broke or the upstream sent something that is
    /// not HTTP.
    #[error("the upstream FHIR server sent an invalid response")]
    UpstreamProtocol,
    /// The upstream's body could not be converted for the client (e.g. JSON
    /// that is not FHIR, when the client asked for XML).
    #[error("the upstream's response could not be converted to {target}: {reason}")]
    ResponseConversion {
        target: &'static str,
        reason: String,
    },
    /// The upstream's FHIR response was larger than the gateway may buffer to
    /// convert it.
    #[error("the upstream's response is larger than {limit} bytes and needs conversion")]
    ResponseTooLarge { limit: u64 },
    /// The request body exceeded `limits.max_request_body_bytes`.
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client took longer than `limits.client_body_timeout_ms` to send the
    /// body.
    #[error("the request body was not received within {} ms", .after.as_millis())]
    BodyTimeout { after: Duration },
    /// The body's media type or charset cannot be handled.
    #[error("unsupported media type: {detail}")]
    UnsupportedMediaType { detail: String },
    /// The client asked for a response format the gateway cannot produce.
    #[error("cannot produce the requested format: {detail}")]
    NotAcceptable { detail: String },
    /// The request is malformed (unparseable body, bad URL, bad header).
    #[error("malformed request: {detail}")]
    MalformedRequest { detail: String },
    /// The path is outside the FHIR base and the admin prefix.
    #[error("no FHIR endpoint at this path; the FHIR base is {base_path}")]
    NotFound { base_path: String },
    /// The admin endpoints are read-only.
    #[error("{method} is not allowed here; admin endpoints answer GET")]
    MethodNotAllowed { method: String },
    /// A file of the published log that does not exist.
    #[error("no such log file: {path}")]
    NoSuchLogFile { path: String },
    /// Verify-on-read in `block` mode: the version the upstream returned is
    /// not the version that was sealed.
    #[error("{reference} does not match its seal (leaf {leaf_index}): {reason}; the gateway withheld it")]
    TamperedVersion {
        reference: String,
        leaf_index: u64,
        reason: String,
    },
    /// Bytes invalid in their charset, or a control character in a string.
    #[error("{detail}")]
    InvalidText { detail: String },
    /// A private-use character (外字) under `japanese.private_use = "reject"`.
    #[error("{detail}")]
    PrivateUseCharacter { detail: String },
    /// `japanese.jpcore = "strict"`: the resource breaks JP Core checks.
    /// Each finding is (FHIRPath location, what is wrong).
    #[error("the resource does not meet JP Core ({} finding(s))", .findings.len())]
    JpCoreViolations { findings: Vec<(String, String)> },
    /// `$proof` for a version the ledger has no seal for (yet).
    #[error("no proof: {detail}")]
    NoProof { detail: String },
    /// The ledger could not be read or written. The cause (SQLite text,
    /// paths) goes to the log only; the client gets the fixed text and the
    /// request id.
    #[error("the seal ledger failed; the gateway's log has the detail under this request's X-Request-Id")]
    Ledger { source: ledger::Error },
    /// An admin endpoint without the admin bearer token, or a wrong one.
    #[error("this admin endpoint needs the admin bearer token")]
    AdminUnauthorized,
    /// An admin endpoint while no admin credential is configured.
    #[error("admin endpoints are closed: configure [admin] token_file to open them")]
    AdminClosed,
    /// `$proof` or `$verify` for a version the upstream, asked with the
    /// caller's own credentials, did not let the caller read (its status
    /// is relayed: 401, 403 or 404).
    #[error("the upstream did not let this caller read this version (HTTP {status})")]
    CallerMayNotRead { status: u16 },
    /// `[auth] mode = "jwt"` and the request carries no bearer token.
    #[error("this FHIR endpoint needs a bearer token")]
    MissingToken,
    /// `[auth] mode = "jwt"` and the bearer token failed validation.
    #[error("the bearer token was refused: {reason}")]
    InvalidToken { reason: String },
    /// The token is valid but its scopes or patient context do not allow
    /// this request.
    #[error("not allowed: {reason}")]
    Forbidden { reason: String },
    /// Too many `$verify` requests from one caller.
    #[error("too many $verify requests from this caller; retry later")]
    RateLimited,
    /// `limits.max_concurrent_requests` requests are already being served.
    #[error("the gateway is at its concurrency limit; retry shortly")]
    Overloaded,
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// The FHIR `IssueType` code (<http://hl7.org/fhir/issue-type>) for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueType {
    Transient,
    Timeout,
    Exception,
    TooLong,
    NotSupported,
    Structure,
    Invalid,
    NotFound,
    Throttled,
    Security,
    Invariant,
    Login,
    Forbidden,
}

impl IssueType {
    pub fn code(self) -> &'static str {
        match self {
            IssueType::Transient => "transient",
            IssueType::Timeout => "timeout",
            IssueType::Exception => "exception",
            IssueType::TooLong => "too-long",
            IssueType::NotSupported => "not-supported",
            IssueType::Structure => "structure",
            IssueType::Invalid => "invalid",
            IssueType::NotFound => "not-found",
            IssueType::Throttled => "throttled",
            IssueType::Security => "security",
            IssueType::Invariant => "invariant",
            IssueType::Login => "login",
            IssueType::Forbidden => "forbidden",
        }
    }
}

impl GatewayError {
    /// The one HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::UpstreamUnreachable
            | GatewayError::UpstreamProtocol
            | GatewayError::ResponseConversion { .. }
            | GatewayError::ResponseTooLarge { .. }
            | GatewayError::TamperedVersion { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::NoProof { .. } => StatusCode::NOT_FOUND,
            GatewayError::AdminUnauthorized
            | GatewayError::MissingToken
            | GatewayError::InvalidToken { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::AdminClosed => StatusCode::FORBIDDEN,
            GatewayError::CallerMayNotRead { status } => match status {
                401 => StatusCode::UNAUTHORIZED,
                403 => StatusCode::FORBIDDEN,
                _ => StatusCode::NOT_FOUND,
            },
            GatewayError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Ledger { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            GatewayError::MalformedRequest { .. } | GatewayError::InvalidText { .. } => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::PrivateUseCharacter { .. } | GatewayError::JpCoreViolations { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            GatewayError::NotFound { .. } | GatewayError::NoSuchLogFile { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Overloaded | GatewayError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The FHIR issue type reported in the OperationOutcome.
    pub fn issue_type(&self) -> IssueType {
        match self {
            GatewayError::UpstreamUnreachable | GatewayError::ShuttingDown => IssueType::Transient,
            GatewayError::UpstreamTimeout { .. } | GatewayError::BodyTimeout { .. } => {
                IssueType::Timeout
            }
            GatewayError::UpstreamProtocol
            | GatewayError::ResponseConversion { .. }
            | GatewayError::ResponseTooLarge { .. } => IssueType::Exception,
            GatewayError::BodyTooLarge { .. } => IssueType::TooLong,
            GatewayError::UnsupportedMediaType { .. } | GatewayError::NotAcceptable { .. } => {
                IssueType::NotSupported
            }
            GatewayError::MalformedRequest { .. } => IssueType::Structure,
            GatewayError::InvalidText { .. } | GatewayError::PrivateUseCharacter { .. } => {
                IssueType::Invalid
            }
            GatewayError::NotFound { .. } | GatewayError::NoSuchLogFile { .. } => {
                IssueType::NotFound
            }
            GatewayError::MethodNotAllowed { .. } => IssueType::NotSupported,
            GatewayError::Overloaded => IssueType::Throttled,
            GatewayError::TamperedVersion { .. } => IssueType::Security,
            GatewayError::JpCoreViolations { .. } => IssueType::Invariant,
            GatewayError::NoProof { .. } => IssueType::NotFound,
            GatewayError::Ledger { .. } => IssueType::Exception,
            GatewayError::CallerMayNotRead { status: 404 } => IssueType::NotFound,
            GatewayError::MissingToken | GatewayError::InvalidToken { .. } => IssueType::Login,
            GatewayError::Forbidden { .. } => IssueType::Forbidden,
            GatewayError::AdminUnauthorized
            | GatewayError::AdminClosed
            | GatewayError::CallerMayNotRead { .. } => IssueType::Security,
            GatewayError::RateLimited => IssueType::Throttled,
        }
    }

    /// A ledger failure (its cause is logged, never sent).
    pub fn ledger(source: ledger::Error) -> GatewayError {
        GatewayError::Ledger { source }
    }

    /// What the log gets beside the client-visible text: internal detail
    /// that must not reach clients.
    pub fn internal_detail(&self) -> Option<String> {
        match self {
            GatewayError::Ledger { source } => Some(source.to_string()),
            _ => None,
        }
    }

    /// Which side is at fault, for logs and alerts.
    pub fn fault(&self) -> Fault {
        match self {
            GatewayError::UpstreamUnreachable
            | GatewayError::UpstreamTimeout { .. }
            | GatewayError::UpstreamProtocol
            | GatewayError::ResponseConversion { .. }
            | GatewayError::ResponseTooLarge { .. }
            | GatewayError::TamperedVersion { .. } => Fault::Upstream,
            GatewayError::Ledger { .. }
            | GatewayError::Overloaded
            | GatewayError::ShuttingDown
            | GatewayError::AdminClosed => Fault::Gateway,
            _ => Fault::Client,
        }
    }

    /// A stable name for each error: the `kind` label of the error metric
    /// and of the log line.
    pub fn kind(&self) -> &'static str {
        match self {
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
            GatewayError::MissingToken => "missing_token",
            GatewayError::InvalidToken { .. } => "invalid_token",
            GatewayError::Forbidden { .. } => "forbidden",
            GatewayError::Overloaded => "overloaded",
            GatewayError::ShuttingDown => "shutting_down",
        }
    }
}

/// Which side caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request: fix it and send again (4xx).
    Client,
    /// The upstream server or what it returned.
    Upstream,
    /// The gateway itself: its ledger, its limits, its state.
    Gateway,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Gateway => "gateway",
        }
    }
}

/// Start-up errors: bad configuration, unreadable key files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
}
