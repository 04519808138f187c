//! The gateway's configuration: one struct, read from a TOML file, then
//! overridden by `INKAN_*` environment variables, then by command-line flags.
//!
//! Unknown keys are an error at start-up (a typo in a limit must not silently
//! fall back to a default). Settings that weaken security are spelled
//! `dangerous_*`. Every field is documented in `docs/configuration.md`; the
//! rustdoc here is the source of that page.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Everything `inkan serve` needs. Defaults are safe for a single gateway on
/// one host; see each field.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gateway listens on. Default `127.0.0.1:8090`.
    pub listen: SocketAddr,
    /// Path under which the FHIR API is served, e.g. `/fhir`. Requests outside
    /// it (and outside the admin prefix `/-/`) get a 404 OperationOutcome.
    pub base_path: String,
    /// Public base URL of the gateway as clients should see it, e.g.
    /// `https://fhir.example-hospital.jp/fhir`. When unset, it is derived per
    /// request from the scheme, the `Host` header and `base_path` (or from
    /// `X-Forwarded-*` when `trust_forwarded_headers` is on).
    pub public_base_url: Option<String>,
    /// Trust `X-Forwarded-Proto/-Host/-Prefix/-For` sent by a reverse proxy in
    /// front of the gateway. Only turn on when every client reaches the
    /// gateway through such a proxy: otherwise clients could choose the URLs
    /// the gateway writes into responses.
    pub trust_forwarded_headers: bool,
    pub upstream: UpstreamConfig,
    pub limits: Limits,
    /// TLS on the listener. Absent: plain HTTP (a warning is logged when the
    /// listener is not on loopback).
    pub tls: Option<ListenerTls>,
    pub log: LogConfig,
    pub ledger: LedgerConfig,
    pub japanese: JapaneseConfig,
    pub anchors: AnchorsConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            base_path: "/fhir".to_owned(),
            public_base_url: None,
            trust_forwarded_headers: false,
            upstream: UpstreamConfig::default(),
            limits: Limits::default(),
            tls: None,
            log: LogConfig::default(),
            ledger: LedgerConfig::default(),
            japanese: JapaneseConfig::default(),
            anchors: AnchorsConfig::default(),
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

/// Who the caller is (docs/security.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `passthrough` (default): the upstream decides who may do what; a
    /// bearer JWT's claims are recorded in access records as unverified.
    /// `jwt`: the gateway validates bearer tokens (401 otherwise) and
    /// enforces SMART App Launch scopes and patient context (403).
    pub mode: AuthMode,
    /// The token issuer (`iss`). Its keys come from OpenID Connect
    /// discovery (`<issuer>/.well-known/openid-configuration` → `jwks_uri`)
    /// unless `jwks_file` is set. Must be https (plain http only on
    /// loopback). Required for `jwt`.
    pub issuer: Option<String>,
    /// Accepted audiences (`aud`): the FHIR base URL(s) the tokens are
    /// issued for, e.g. `https://fhir.example-hospital.jp/fhir`. Required
    /// for `jwt`.
    pub audience: Vec<String>,
    /// A JWK set file to use instead of discovery (keys never refreshed).
    pub jwks_file: Option<PathBuf>,
    /// CA certificates (PEM) for the issuer's https; default the system's.
    pub ca_file: Option<PathBuf>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    pub leeway_seconds: u64,
    /// Seconds the issuer's keys are cached. Default 3,600.
    pub jwks_cache_seconds: u64,
    /// A token with an unknown `kid` refreshes the keys at most once per
    /// this many seconds. Default 30.
    pub jwks_refresh_min_interval_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Passthrough,
            issuer: None,
            audience: Vec::new(),
            jwks_file: None,
            ca_file: None,
            leeway_seconds: 30,
            jwks_cache_seconds: 3600,
            jwks_refresh_min_interval_seconds: 30,
        }
    }
}

/// Whether the gateway validates bearer tokens itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Passthrough,
    Jwt,
}

/// Access records: one IHE BALP AuditEvent per request, sealed in the
/// ledger before the answer leaves and delivered to an audit repository
/// (docs/audit-trail.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record access. Default false. Needs `ledger.seal_writes`.
    pub enabled: bool,
    /// FHIR base URL of the audit repository. Default: the upstream
    /// (with the upstream's TLS settings and `bearer_token_file`).
    pub repository_url: Option<String>,
    /// Bearer token for the repository (owner-only file), when it is not
    /// the upstream.
    pub repository_bearer_token_file: Option<PathBuf>,
    /// Events per delivery (one transaction Bundle). Default 100.
    pub batch_size: usize,
    /// Milliseconds between delivery rounds when nothing is waiting.
    /// Default 500.
    pub delivery_interval_ms: u64,
    /// Patients named per request: one AuditEvent per request and patient
    /// (BALP), at most this many; the rest are counted in one event
    /// without a patient. Default 100.
    pub max_patients_per_request: usize,
    /// Name of this gateway in access records (`source.observer`).
    /// Default: `ledger.origin`.
    pub observer: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: false,
            repository_url: None,
            repository_bearer_token_file: None,
            batch_size: 100,
            delivery_interval_ms: 500,
            max_patients_per_request: 100,
            observer: None,
        }
    }
}

/// Who may use the admin endpoints under `/-/` (docs/security.md).
/// `/-/livez` and the published log (`/-/log/checkpoint`, `/-/log/tile/…`)
/// are open to all: a liveness probe tells nothing, and tiles and
/// checkpoints reveal no health data. Everything else (`/-/readyz`,
/// `/-/metrics`) needs the admin bearer token.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// File holding the admin bearer token (owner-only: mode 0600). Send it
    /// as `Authorization: Bearer <token>`. Unset: the protected admin
    /// endpoints answer 403.
    pub token_file: Option<PathBuf>,
}

/// Where checkpoints are anchored besides the local anchor file
/// (docs/anchors.md). Each backend anchors the latest checkpoint at its own
/// pace; an outage never touches the request path.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnchorsConfig {
    /// An RFC 3161 time-stamp authority.
    pub rfc3161: Option<Rfc3161Config>,
    /// An EVM chain (Hyperledger Besu, Ethereum) reached by JSON-RPC.
    pub evm: Option<EvmConfig>,
}

/// An EVM chain: each anchoring is a transaction whose data is the
/// checkpoint's payload (docs/anchors.md), signed locally.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvmConfig {
    /// The node's JSON-RPC endpoint.
    pub rpc_url: String,
    /// The chain id (EIP-155); the node must report the same.
    pub chain_id: u64,
    /// File holding the account's secp256k1 private key, hex (mode 0600).
    pub key_file: PathBuf,
    /// Blocks on top of the anchoring transaction before it counts.
    /// Default 12.
    #[serde(default = "default_evm_confirmations")]
    pub confirmations: u64,
    /// Anchor the latest checkpoint at most this often. Default 600,000
    /// (ten minutes).
    #[serde(default = "default_evm_interval_ms")]
    pub interval_ms: u64,
    /// Milliseconds to wait for the node and for confirmations in one
    /// attempt (later attempts keep waiting for the same transaction).
    /// Default 30,000.
    #[serde(default = "default_evm_timeout_ms")]
    pub timeout_ms: u64,
    /// The most the account pays per gas, in gwei. Default 500.
    #[serde(default = "default_evm_max_fee_gwei")]
    pub max_fee_gwei: u64,
}

fn default_evm_confirmations() -> u64 {
    12
}

fn default_evm_interval_ms() -> u64 {
    600_000
}

fn default_evm_timeout_ms() -> u64 {
    30_000
}

fn default_evm_max_fee_gwei() -> u64 {
    500
}

/// An RFC 3161 TSA (e.g. an accredited 総務大臣認定タイムスタンプ service).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc3161Config {
    /// The TSA's HTTP(S) endpoint (`application/timestamp-query`).
    pub url: String,
    /// PEM file of the TSA CA certificate(s) tokens must chain to.
    pub ca_file: PathBuf,
    /// TSA policy OID to request, when the TSA requires one; a token under
    /// another policy is refused.
    #[serde(default)]
    pub policy_oid: Option<String>,
    /// CA bundle for the TSA's HTTPS certificate (default: system roots).
    #[serde(default)]
    pub https_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for TSAs that authenticate by certificate,
    /// with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// HTTP basic authentication user, with `password_file`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Milliseconds to wait for the TSA. Default 10,000.
    #[serde(default = "default_tsa_timeout_ms")]
    pub timeout_ms: u64,
    /// Stamp the latest checkpoint at most this often. Default 60,000.
    #[serde(default = "default_tsa_interval_ms")]
    pub interval_ms: u64,
    /// Send the basic-auth password to an `http://` TSA, in the clear.
    /// Off: basic auth needs an `https://` URL (start-up fails otherwise).
    #[serde(default)]
    pub dangerous_basic_auth_over_http: bool,
}

fn default_tsa_timeout_ms() -> u64 {
    10_000
}

fn default_tsa_interval_ms() -> u64 {
    60_000
}

/// Japanese charsets and text normalization of request bodies (JP Core).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JapaneseConfig {
    /// `off` (bodies must be UTF-8: others get 415), `transcode-only`
    /// (Shift_JIS / EUC-JP / ISO-2022-JP bodies decoded to UTF-8, nothing
    /// else changed) or `jp-default` (default: decoded, then normalized
    /// field by field as docs/japanese.md describes).
    pub mode: JapaneseMode,
    /// Charset of bodies that declare none and are not valid UTF-8 (e.g.
    /// `"Shift_JIS"` for a legacy system that never says). Default: detect
    /// among the Japanese charsets, and refuse (400) when not confident.
    pub default_charset: Option<String>,
    /// Private-use code points (外字): `reject` (default: 422 naming the
    /// element and the code point), `allow`, or `map` with
    /// `private_use_map_file`.
    pub private_use: PrivateUseMode,
    /// For `private_use = "map"`: a TOML table of code point to
    /// replacement, e.g. `"U+E000" = "﨑"` (IVS sequences allowed).
    pub private_use_map_file: Option<PathBuf>,
    /// `Identifier.system` values whose `value` is ASCII by definition
    /// (full-width digits are folded). Exact, or a prefix ending in `.`,
    /// `:` or `/`. Default: JP Core's patient-ID OID prefix, the
    /// medical-institution code and the insurer number systems.
    pub ascii_identifier_systems: Vec<String>,
    /// Mapping-variant folding, as `[from, to]` pairs, one shared table per
    /// network. Default: the Microsoft forms to the JIS X 0208 forms
    /// (～→〜, ∥→‖, －→−, ￠→¢, ￡→£, ￢→¬).
    pub variant_table: Option<Vec<[String; 2]>>,
    /// JP Core checks on FHIR JSON bodies (docs/japanese.md): `off`,
    /// `warn` (default: an `Inkan-JP-Core` response header with the
    /// locations, and a log line) or `strict` (422 OperationOutcome, one
    /// issue per finding with its FHIRPath `expression`).
    pub jpcore: JpCoreMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JpCoreMode {
    Off,
    Warn,
    Strict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JapaneseMode {
    Off,
    TranscodeOnly,
    JpDefault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivateUseMode {
    Reject,
    Allow,
    Map,
}

impl Default for JapaneseConfig {
    fn default() -> Self {
        JapaneseConfig {
            mode: JapaneseMode::JpDefault,
            default_charset: None,
            private_use: PrivateUseMode::Reject,
            private_use_map_file: None,
            ascii_identifier_systems: profiles_jp::resource::DEFAULT_ASCII_IDENTIFIER_SYSTEMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            variant_table: None,
            jpcore: JpCoreMode::Warn,
        }
    }
}

/// The seal's Merkle log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Directory of the ledger (SQLite index, tiles, keys). Default
    /// `$XDG_DATA_HOME/inkan/ledger`, else `$HOME/.local/share/inkan/ledger`
    /// (never a directory relative to wherever the gateway was started:
    /// with neither variable set, `ledger.dir` is required). A ledger left
    /// in `./inkan-data/ledger` by an earlier version stops the start until
    /// `ledger.dir` names it.
    pub dir: PathBuf,
    /// The log's origin: the first line of every checkpoint and the signing
    /// key's name. Set it to something unique to your site, e.g.
    /// `ledger.example-hospital.jp/inkan`; it cannot change once the log has
    /// checkpoints. Default `localhost/inkan`.
    pub origin: String,
    /// The signing key file (Go note `PRIVATE+KEY+…` format). Default
    /// `<dir>/log.key`, generated with mode 0600 on first start.
    pub key_file: Option<PathBuf>,
    /// Milliseconds between checkpoints (one is signed only when the tree
    /// grew). Default 1,000.
    pub checkpoint_interval_ms: u64,
    /// Seal every version written through the gateway (create, update,
    /// patch, delete, their conditional forms, batch and transaction
    /// entries) as the upstream stored it, before the client hears the
    /// answer; serve `$proof`/`$verify` and the log under `/-/log/`.
    /// Default true. `false` makes inkan a plain pass-through proxy.
    pub seal_writes: bool,
    /// Verify-on-read, when `seal_writes` is on: `off`, `annotate` (default:
    /// an `Inkan-Verify` header with counts, and an extension on each
    /// Bundle entry) or `block` (also withhold tampered versions: a read
    /// answers 502, a Bundle entry's resource becomes an OperationOutcome).
    pub verify_reads: VerifyReads,
}

/// What verify-on-read does with its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyReads {
    Off,
    Annotate,
    Block,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            // Filled in by `Config::load` from the environment it is given.
            dir: PathBuf::new(),
            origin: "localhost/inkan".to_owned(),
            key_file: None,
            checkpoint_interval_ms: 1_000,
            seal_writes: true,
            verify_reads: VerifyReads::Annotate,
        }
    }
}

/// The documented default ledger directory under the user's data
/// directory (XDG base directories), if the environment names one. A
/// relative value is ignored, as the XDG specification asks.
pub fn default_ledger_dir(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    absolute("XDG_DATA_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".local/share")))
        .map(|data| data.join("inkan/ledger"))
}

/// Before `ledger.dir` defaulted to the user's data directory it defaulted
/// to `inkan-data/ledger` under the working directory. A ledger found there
/// is not silently replaced by a new, empty one with a new key: the
/// operator names it.
fn refuse_the_old_relative_default(working_dir: &Path) -> Result<(), ConfigError> {
    let old = working_dir.join("inkan-data/ledger");
    if old.join("ledger.sqlite").exists() {
        let absolute = std::fs::canonicalize(&old).unwrap_or(old);
        return Err(ConfigError::Invalid(format!(
            "a ledger from an earlier version is in {} (the old default ledger.dir); set ledger.dir = {:?} (or INKAN_LEDGER_DIR) to keep using it",
            absolute.display(),
            absolute.display().to_string()
        )));
    }
    Ok(())
}

impl LedgerConfig {
    pub fn options(&self) -> ledger::log::LedgerOptions {
        ledger::log::LedgerOptions {
            origin: self.origin.clone(),
            key_file: self.key_file.clone(),
        }
    }
}

/// The FHIR server behind the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL of the upstream FHIR server, e.g. `http://127.0.0.1:8080/fhir`.
    /// Required.
    pub url: String,
    /// Other bases the upstream writes into its responses (servers often
    /// advertise a configured name such as `http://localhost:8080` instead of
    /// the address we connect to). URLs under any of these, and under the
    /// `implementation.url` of the upstream's CapabilityStatement, are
    /// rewritten to the gateway's public base.
    pub also_known_as: Vec<String>,
    /// Milliseconds to establish a TCP (and TLS) connection. Default 5,000.
    pub connect_timeout_ms: u64,
    /// Milliseconds from sending a request until the upstream's response
    /// headers arrive. Default 60,000. Exceeded: 504.
    pub response_timeout_ms: u64,
    /// Extra attempts for GET/HEAD requests whose connection could not be
    /// established. Never applied to POST, PUT, PATCH or DELETE. Default 1.
    pub idempotent_connect_retries: u32,
    /// How XML clients are served: `auto` (default: bridge when the upstream's
    /// CapabilityStatement lists no XML format), `native` (forward XML as is),
    /// `bridge` (always convert XML to JSON upstream and back).
    pub xml: XmlMode,
    /// A file holding a bearer token the gateway sends upstream instead of the
    /// client's `Authorization` header. Absent (default): the client's
    /// `Authorization` passes through unchanged.
    pub bearer_token_file: Option<PathBuf>,
    /// PEM CA bundle to verify an `https://` upstream. Absent: system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain presented to the upstream (mTLS).
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key for `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// Idle upstream connections kept per host. Default 64.
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: String::new(),
            also_known_as: Vec::new(),
            connect_timeout_ms: 5_000,
            response_timeout_ms: 60_000,
            idempotent_connect_retries: 1,
            xml: XmlMode::Auto,
            bearer_token_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            pool_max_idle_per_host: 64,
        }
    }
}

/// How the gateway serves clients that speak FHIR XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XmlMode {
    Auto,
    Native,
    Bridge,
}

/// Bounds on what one client may cost the gateway.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted, in bytes. Default 32 MiB. Exceeded: 413.
    pub max_request_body_bytes: u64,
    /// Largest request head (request line plus headers), in bytes. Default
    /// 64 KiB (at least 8 KiB). Exceeded: the connection is refused with 431.
    pub max_header_bytes: usize,
    /// Milliseconds a client connection may sit with no bytes moving in either
    /// direction while no request is in flight, and the time allowed to send
    /// a request head. Default 60,000.
    pub client_idle_timeout_ms: u64,
    /// Milliseconds allowed to receive a whole request body. Default 60,000.
    /// Exceeded: 408.
    pub client_body_timeout_ms: u64,
    /// Requests handled at once; more get 503 with `Retry-After`. Default 1,024.
    /// Open client connections at most; past it new connections wait in
    /// the kernel's accept queue. Default 10000.
    /// Requests with a body being read or served at once; more get 503
    /// at once. Bodies are read before admission, so this bounds their
    /// memory: at most this many times `max_request_body_bytes`. Default 64.
    pub max_bodies_in_progress: usize,
    pub max_connections: usize,
    pub max_concurrent_requests: usize,
    /// Largest FHIR JSON/XML response the gateway buffers to rewrite base
    /// URLs or convert formats, in bytes. Default 64 MiB. Larger responses
    /// that need no format conversion stream through unmodified (logged and
    /// counted); ones that need conversion get 502.
    pub max_inspected_response_bytes: u64,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    /// Default 30.
    /// `$verify` requests one caller (one `Authorization` value, else one
    /// client address) may make per minute; more get 429. Default 120.
    pub verify_requests_per_minute: u32,
    pub shutdown_grace_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            client_idle_timeout_ms: 60_000,
            client_body_timeout_ms: 60_000,
            max_concurrent_requests: 1024,
            max_connections: 10_000,
            max_bodies_in_progress: 64,
            max_inspected_response_bytes: 64 * 1024 * 1024,
            verify_requests_per_minute: 120,
            shutdown_grace_seconds: 30,
        }
    }
}

impl Limits {
    pub fn client_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.client_idle_timeout_ms)
    }
    pub fn client_body_timeout(&self) -> Duration {
        Duration::from_millis(self.client_body_timeout_ms)
    }
}

/// TLS on the gateway's own listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle: when set, every client must present a certificate that
    /// chains to it (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `inkan=debug`. Default `info`.
    /// `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Environment variables that override file settings, with the key each one
/// sets. Kept in one table so `--help` and the docs can list them.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("INKAN_LISTEN", "listen"),
    ("INKAN_BASE_PATH", "base_path"),
    ("INKAN_PUBLIC_BASE_URL", "public_base_url"),
    ("INKAN_UPSTREAM_URL", "upstream.url"),
    ("INKAN_LOG_FORMAT", "log.format"),
    ("INKAN_LOG_LEVEL", "log.level"),
    ("INKAN_LEDGER_DIR", "ledger.dir"),
    ("INKAN_LEDGER_ORIGIN", "ledger.origin"),
];

impl Config {
    /// Reads `path` (when given) and applies environment overrides from
    /// `env`. Unknown keys are an error here; call [`Config::validate`] once
    /// command-line flags are applied too.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(e.to_string()))?
            }
            None => toml::Table::new(),
        };
        for (var, key) in ENV_OVERRIDES {
            if let Some(value) = env(var) {
                set_dotted(&mut table, key, value);
            }
        }
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        if config.ledger.dir.as_os_str().is_empty() {
            config.ledger.dir =
                default_ledger_dir(|name| env(name).map(Into::into)).unwrap_or_default();
            refuse_the_old_relative_default(Path::new("."))?;
        }
        Ok(config)
    }

    /// Checks what serde cannot: required values and cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.upstream.url.is_empty() {
            return Err(ConfigError::Invalid(
                "upstream.url is required (or --upstream / INKAN_UPSTREAM_URL)".into(),
            ));
        }
        let scheme_ok =
            self.upstream.url.starts_with("http://") || self.upstream.url.starts_with("https://");
        if !scheme_ok || self.upstream.url.parse::<http::Uri>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "upstream.url must be an http:// or https:// URL, got {:?}",
                self.upstream.url
            )));
        }
        let needs_ledger = self.ledger.seal_writes;
        if needs_ledger && self.ledger.dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "ledger.dir is required (or INKAN_LEDGER_DIR): neither $XDG_DATA_HOME nor $HOME names a data directory for the default".into(),
            ));
        }
        if !self.base_path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "base_path must start with '/', got {:?}",
                self.base_path
            )));
        }
        if self.base_path.starts_with("/-/") || self.base_path == "/-" {
            return Err(ConfigError::Invalid(
                "base_path may not be under the admin prefix /-/".into(),
            ));
        }
        if self.limits.max_header_bytes < 8192 {
            return Err(ConfigError::Invalid(
                "limits.max_header_bytes must be at least 8192".into(),
            ));
        }
        if self.limits.max_bodies_in_progress == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_bodies_in_progress must be at least 1".into(),
            ));
        }
        if self.limits.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections must be at least 1".into(),
            ));
        }
        if self.limits.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_concurrent_requests must be at least 1".into(),
            ));
        }
        if self.upstream.client_cert_file.is_some() != self.upstream.client_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "upstream.client_cert_file and upstream.client_key_file go together".into(),
            ));
        }
        if self.audit.enabled && !self.ledger.seal_writes {
            return Err(ConfigError::Invalid(
                "audit.enabled needs ledger.seal_writes: access records are sealed in the ledger"
                    .into(),
            ));
        }
        if self.audit.batch_size == 0 || self.audit.max_patients_per_request == 0 {
            return Err(ConfigError::Invalid(
                "audit.batch_size and audit.max_patients_per_request must be at least 1".into(),
            ));
        }
        if self.auth.mode == AuthMode::Jwt
            && (self.auth.issuer.is_none() || self.auth.audience.is_empty())
        {
            return Err(ConfigError::Invalid(
                "auth.mode = \"jwt\" needs auth.issuer and auth.audience".into(),
            ));
        }
        if let Some(public) = &self.public_base_url {
            if public.parse::<http::Uri>().is_err() || !public.contains("://") {
                return Err(ConfigError::Invalid(format!(
                    "public_base_url must be an absolute URL, got {public:?}"
                )));
            }
        }
        Ok(())
    }

    /// `base_path` without a trailing slash (`/` becomes the empty string), so
    /// it can be joined with `/Patient/1`.
    pub fn base_path_trimmed(&self) -> &str {
        self.base_path.trim_end_matches('/')
    }
}

/// Sets `a.b.c = value` in a TOML table, creating sub-tables as needed.
fn set_dotted(table: &mut toml::Table, dotted: &str, value: String) {
    let mut parts = dotted.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), toml::Value::String(value));
            return;
        }
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        match entry {
            toml::Value::Table(next) => current = next,
            _ => unreachable!("just made it a table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("inkan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        let home = |name: &str| (name == "HOME").then(|| "/home/test".to_owned());
        let config = Config::load(Some(&path), home)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_ledger_at_the_old_relative_default_is_named_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        refuse_the_old_relative_default(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("inkan-data/ledger")).unwrap();
        std::fs::write(dir.path().join("inkan-data/ledger/ledger.sqlite"), b"").unwrap();
        let refused = refuse_the_old_relative_default(dir.path())
            .unwrap_err()
            .to_string();
        assert!(refused.contains("set ledger.dir"), "{refused}");
        let config = Config::load(None, |name| {
            (name == "XDG_DATA_HOME").then(|| "/data".to_owned())
        })
        .unwrap();
        assert_eq!(config.ledger.dir, Path::new("/data/inkan/ledger"));
    }

    #[test]
    fn the_default_ledger_dir_is_under_the_users_data_directory_never_relative() {
        type Env = &'static [(&'static str, &'static str)];
        let table: &[(Env, Option<&str>)] = &[
            (
                &[("XDG_DATA_HOME", "/data"), ("HOME", "/home/a")],
                Some("/data/inkan/ledger"),
            ),
            (
                &[("HOME", "/home/a")],
                Some("/home/a/.local/share/inkan/ledger"),
            ),
            (
                &[("XDG_DATA_HOME", "rel"), ("HOME", "/home/a")],
                Some("/home/a/.local/share/inkan/ledger"),
            ),
            (&[("HOME", "relative")], None),
            (&[], None),
        ];
        for (env, expected) in table {
            let found = default_ledger_dir(|name| {
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).into())
            });
            assert_eq!(found.as_deref(), expected.map(Path::new), "{env:?}");
        }
        let mut config = Config::default();
        config.upstream.url = "http://127.0.0.1:9/fhir".into();
        config.ledger.dir = PathBuf::new();
        assert!(config.validate().is_err(), "no directory: refuse to start");
        config.ledger.seal_writes = false;
        config.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_an_error() {
        let err = load_str("upstream.url = \"http://127.0.0.1:1/fhir\"\nlisten_adress = \"x\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("listen_adress"), "{err}");
    }

    #[test]
    fn unknown_nested_key_is_an_error() {
        let err =
            load_str("[upstream]\nurl = \"http://127.0.0.1:1/fhir\"\ntimeout = 3\n").unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let config = Config::load(None, |var| match var {
            "INKAN_UPSTREAM_URL" => Some("http://127.0.0.1:9/fhir".into()),
            "INKAN_LISTEN" => Some("127.0.0.1:7777".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.upstream.url, "http://127.0.0.1:9/fhir");
        assert_eq!(config.listen.port(), 7777);
        assert_eq!(config.limits.max_request_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn missing_upstream_is_an_error() {
        let err = Config::load(None, |_| None)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("upstream.url"), "{err}");
    }

    #[test]
    fn admin_prefix_cannot_be_the_fhir_base() {
        let err = load_str("base_path = \"/-/fhir\"\nupstream.url = \"http://127.0.0.1:1/\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("admin prefix"), "{err}");
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/configuration.md shows every key; its example must load.
    #[test]
    fn documented_example_is_complete_and_valid() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        let path = std::env::temp_dir().join(format!("inkan-doc-{}.toml", std::process::id()));
        std::fs::write(&path, &doc[start..end]).unwrap();
        let config = Config::load(Some(&path), |_| None).unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.upstream.also_known_as,
            vec!["http://localhost:8080".to_owned()]
        );
        assert!(config.tls.is_some());
        // Every field of every table appears in the example: serialize the
        // loaded config (all optional fields are set there) and compare.
        let documented: toml::Table = doc[start..end].parse().unwrap();
        let actual = toml::Table::try_from(&config).unwrap();
        for (section, value) in &actual {
            assert!(
                documented.contains_key(section),
                "docs/configuration.md lacks {section}"
            );
            if let (Some(fields), Some(doc_fields)) =
                (value.as_table(), documented[section].as_table())
            {
                for field in fields.keys() {
                    assert!(
                        doc_fields.contains_key(field),
                        "docs/configuration.md lacks {section}.{field}"
                    );
                }
            }
        }
        let _ = std::fs::remove_file(path);
    }
}
