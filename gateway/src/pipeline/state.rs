//! The gateway's shared state: configuration, the upstream, the seal, the
//! limits' semaphores and the metrics, built once at start.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;

use crate::config::{Config, XmlMode};
use crate::error::ConfigError;
use crate::metrics::Metrics;
use crate::seal::operations::RateLimiter;
use crate::seal::Sealer;
use crate::upstream::UpstreamReader;

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    /// The upstream: forwarding client, bases, the gateway's own token.
    pub(super) upstream: UpstreamReader,
    pub metrics: Metrics,
    /// Concurrency permits (step 6).
    pub(super) admission: Arc<Semaphore>,
    /// Requests whose body is being read or held (step 5).
    pub(super) body_slots: Arc<Semaphore>,
    /// What the upstream does with XML, learned once (step 9).
    pub(super) xml_support: AtomicU8,
    pub(super) shutting_down: AtomicBool,
    /// The ledger, when `ledger.seal_writes` is on.
    pub(super) sealer: Option<Arc<Sealer>>,
    /// Japanese charsets and normalization of request bodies.
    pub(super) japanese: crate::japanese::Japanese,
    /// Search parameter types the upstream declares (`Patient.family` →
    /// `string`; `*.name` for system-wide ones), for step 11.
    pub(super) search_param_types: RwLock<std::collections::HashMap<String, String>>,
    /// SHA-256 of the admin bearer token (`[admin] token_file`), compared
    /// digest to digest so the comparison's timing says nothing about it.
    pub(super) admin_token_digest: Option<[u8; 32]>,
    /// `$verify` requests per caller and minute.
    pub(super) verify_limiter: RateLimiter,
    /// Bearer tokens, scopes and patient context (steps 5 and 9).
    pub(super) authenticator: crate::auth::Authenticator,
    /// Access records (step 21), when `[audit]` is on.
    pub(super) auditor: Option<Arc<crate::audit::Auditor>>,
    /// Where access records are delivered (the upstream unless
    /// `[audit] repository_url` names another server), when `[audit]` is
    /// on. `$proof` of an AuditEvent asks it, as the caller, for the record.
    pub(super) audit_repository: Option<UpstreamReader>,
    pub(super) faults: Faults,
}

/// Faults the crash tests inject. Only a test harness sets them, through
/// [`Gateway::with_faults`]; production code reads no environment for
/// them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// A pause between the upstream's commit and the seal (step 15): a
    /// kill in this window is a crash after commit, before seal.
    pub seal_delay: Option<std::time::Duration>,
}

/// Per-connection facts the pipeline needs.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: std::net::SocketAddr,
    pub tls: bool,
    /// The subject of the client's TLS certificate (RFC 4514), when it
    /// sent one the listener verified.
    pub certificate_subject: Option<Arc<str>>,
}

impl Gateway {
    pub fn new(config: Config) -> Result<Gateway, ConfigError> {
        let upstream = UpstreamReader::new(&config.upstream)?;
        let sealer = if config.ledger.seal_writes {
            Some(Arc::new(Sealer::open(&config.ledger, &config.anchors)?))
        } else {
            None
        };
        let admin_token_digest = match &config.admin.token_file {
            Some(path) => Some(read_admin_token_digest(path)?),
            None => None,
        };
        let auditor = match (&sealer, config.audit.enabled) {
            (Some(sealer), true) => Some(Arc::new(crate::audit::Auditor::new(
                &config,
                sealer.clone(),
            ))),
            _ => None,
        };
        let audit_repository = match auditor {
            Some(_) => Some(crate::audit::deliver::repository(&config, &upstream)?),
            None => None,
        };
        Ok(Gateway {
            authenticator: crate::auth::Authenticator::new(&config.auth)?,
            auditor,
            audit_repository,
            admin_token_digest,
            verify_limiter: RateLimiter::per_minute(config.limits.verify_requests_per_minute),
            japanese: crate::japanese::Japanese::from_config(&config.japanese)?,
            search_param_types: RwLock::new(std::collections::HashMap::new()),
            sealer,
            faults: Faults::default(),
            admission: Arc::new(Semaphore::new(config.limits.max_concurrent_requests)),
            body_slots: Arc::new(Semaphore::new(config.limits.max_bodies_in_progress)),
            upstream,
            metrics: Metrics::new(),
            xml_support: AtomicU8::new(XmlSupport::from_config(config.upstream.xml) as u8),
            shutting_down: AtomicBool::new(false),
            config,
        })
    }

    /// This gateway with test faults injected.
    pub fn with_faults(mut self, faults: Faults) -> Gateway {
        if faults.seal_delay.is_some() {
            tracing::warn!(
                "a seal delay is injected: seals wait after the upstream's commit (testing only)"
            );
        }
        self.faults = faults;
        self
    }

    /// The seal subsystem, when the ledger is open.
    pub fn sealer(&self) -> Option<&Arc<Sealer>> {
        self.sealer.as_ref()
    }

    /// The audit repository, when access records are on.
    pub fn audit_repository(&self) -> Option<&UpstreamReader> {
        self.audit_repository.as_ref()
    }

    /// Bearer token validation, for the start-up key fetch.
    pub fn authenticator(&self) -> &crate::auth::Authenticator {
        &self.authenticator
    }

    /// The upstream as the gateway reads it for itself.
    pub fn upstream(&self) -> &UpstreamReader {
        &self.upstream
    }

    /// From now on new requests get 503; in-flight ones finish.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// What the gateway knows about the upstream's XML support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum XmlSupport {
    Unknown = 0,
    Native = 1,
    Bridged = 2,
}

impl XmlSupport {
    pub(super) fn from_config(mode: XmlMode) -> XmlSupport {
        match mode {
            XmlMode::Auto => XmlSupport::Unknown,
            XmlMode::Native => XmlSupport::Native,
            XmlMode::Bridge => XmlSupport::Bridged,
        }
    }

    pub(super) fn load(from: u8) -> XmlSupport {
        match from {
            1 => XmlSupport::Native,
            2 => XmlSupport::Bridged,
            _ => XmlSupport::Unknown,
        }
    }
}

/// Reads `[admin] token_file` (owner-only) and keeps only its digest.
pub(super) fn read_admin_token_digest(path: &std::path::Path) -> Result<[u8; 32], ConfigError> {
    let token = crate::secret_file::read_text(path, "admin.token_file")?;
    if token.len() < 16 {
        return Err(ConfigError::Invalid(
            "admin.token_file: the token must be at least 16 characters".into(),
        ));
    }
    Ok(token_digest(&token))
}

/// SHA-256 of an admin token, the form the gateway keeps and compares.
pub(super) fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}
