//! The seal subsystem: everything the gateway does with the ledger while
//! it serves requests.
//!
//! - [`write`](mod@write): sealing a successful write's versions, as the upstream
//!   stored them, before the client hears the answer;
//! - [`journal`]: the intent journal, recorded before a write leaves so
//!   that a crash between the upstream's commit and the seal is repaired;
//! - [`recovery`]: that repair, at start and periodically;
//! - [`verify_read`]: verify-on-read, comparing returned versions with
//!   their seals;
//! - [`operations`]: `$proof` and `$verify`, answered from the ledger;
//! - [`backends`]: the anchor backends configured in `[anchors]`.
//!
//! Arrows point one way: this subsystem uses FHIR knowledge
//! ([`crate::fhir`]) and the upstream client ([`crate::upstream`]), never
//! the request pipeline; the pipeline uses it only through [`Sealer`] and
//! the functions of these modules, never the ledger's storage directly.
//!
//! Bridging to the synchronous ledger happens in two places only, here:
//! appends (and journal entries) go through the ledger's group-commit
//! appender and are awaited without holding a thread ([`Sealer::append`],
//! [`Sealer::begin_write`] in [`journal`]); verify-on-read's index lookups run inline
//! ([`lookup`]: cached, and cheaper than any hand-off); everything else
//! that may wait for the disk (proofs, recovery's sweeps, tile files,
//! anchor status) runs through [`blocking`]. Intent updates are queued by
//! contract and run inline.

pub mod backends;
pub mod journal;
pub mod operations;
pub mod recovery;
pub mod verify_read;
pub mod write;

use std::sync::Arc;

use ledger::log::{Checkpointer, Ledger, SealReceipt, SealRequest};

use crate::config::{AnchorsConfig, LedgerConfig};
use crate::error::ConfigError;

/// Why a seal, a journal entry or a recovery did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Reading the upstream failed (the write's versions, a history).
    #[error(transparent)]
    Upstream(#[from] crate::upstream::ReadError),
    /// The upstream's answers do not say which version was written.
    #[error("{0}")]
    Unknowable(&'static str),
    /// The ledger failed. The text is fixed (it reaches clients in
    /// `Inkan-Seal`); [`SealError::internal_detail`] has the cause.
    #[error("the ledger could not store the seal")]
    Ledger(#[source] ledger::Error),
    /// The ledger's appender thread is gone (the process is stopping).
    #[error("the ledger's appender stopped")]
    AppenderStopped,
}

impl SealError {
    /// A stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SealError::Upstream(error) => error.kind(),
            SealError::Unknowable(_) => "unknowable_version",
            SealError::Ledger(error) => error.kind(),
            SealError::AppenderStopped => "appender_stopped",
        }
    }

    /// Which side is at fault: the upstream's answers, or the gateway's
    /// own ledger.
    pub fn fault(&self) -> crate::error::Fault {
        match self {
            SealError::Upstream(error) => error.fault(),
            SealError::Unknowable(_) => crate::error::Fault::Upstream,
            SealError::Ledger(_) | SealError::AppenderStopped => crate::error::Fault::Gateway,
        }
    }

    /// Detail for the log only: storage errors name paths and SQLite text.
    pub fn internal_detail(&self) -> Option<String> {
        match self {
            SealError::Ledger(error) => Some(error.to_string()),
            _ => None,
        }
    }
}

/// How a seal error is answered when it stops a request (the journal
/// could not be written): 500 with the cause logged — a stopped appender
/// too, which alerts must see as the ledger failing.
impl From<SealError> for crate::error::GatewayError {
    fn from(error: SealError) -> Self {
        use crate::error::GatewayError;
        match error {
            SealError::Ledger(source) => GatewayError::ledger(source),
            SealError::AppenderStopped => GatewayError::ledger(::ledger::Error::Store(
                "the ledger's appender stopped".into(),
            )),
            SealError::Upstream(_) | SealError::Unknowable(_) => GatewayError::UpstreamProtocol,
        }
    }
}

/// Verify-on-read's index lookups, run inline on the worker. They are
/// point lookups answered from the ledger's record cache or from SQLite
/// pages the OS keeps cached; handing the worker off first
/// ([`blocking`]) measured +40 % p50 on a single-connection read
/// (`bench/verify.sh`), far more than the lookup itself. Anything that can
/// take long or scan does not belong here.
pub fn lookup<T>(call: impl FnOnce() -> T) -> T {
    call()
}

/// The bridge for the ledger's calls that may wait on the disk (proofs,
/// scans, tile files) from async code. On the multi-threaded runtime the worker
/// first hands its other tasks to a sibling (`block_in_place`), so a slow
/// disk stalls no other request; elsewhere (current-thread runtimes in
/// tests, the CLI) the call simply runs.
pub fn blocking<T>(call: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// The open ledger and its checkpointer.
#[derive(Debug)]
pub struct Sealer {
    ledger: Arc<Ledger>,
    _checkpointer: Checkpointer,
}

impl Sealer {
    /// Opens the ledger with its anchor backends and starts its
    /// checkpointer.
    pub fn open(config: &LedgerConfig, anchors: &AnchorsConfig) -> Result<Sealer, ConfigError> {
        let mut ledger = Ledger::open(&config.dir, &config.options()).map_err(|e| {
            ConfigError::Invalid(format!(
                "cannot open the ledger in {}: {e}",
                config.dir.display()
            ))
        })?;
        for backend in backends::backends(anchors, &config.dir)? {
            ledger.add_backend(backend);
        }
        let ledger = Arc::new(ledger);
        let checkpointer = ledger.spawn_checkpointer(std::time::Duration::from_millis(
            config.checkpoint_interval_ms,
        ));
        Ok(Sealer {
            ledger,
            _checkpointer: checkpointer,
        })
    }

    /// The ledger, for lookups and proofs (call them through [`blocking`]
    /// from async code).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Appends seals durably in the ledger's next group commit; awaits the
    /// receipts without holding a thread.
    pub async fn append(&self, requests: Vec<SealRequest>) -> Result<Vec<SealReceipt>, SealError> {
        let (answer, receipts) = tokio::sync::oneshot::channel();
        self.ledger.seal_then(requests, move |result| {
            let _ = answer.send(result);
        });
        receipts
            .await
            .map_err(|_| SealError::AppenderStopped)?
            .map_err(SealError::Ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Fault, GatewayError};
    use crate::upstream::ReadError;

    #[test]
    fn seal_errors_name_their_kind_the_side_at_fault_and_their_answer() {
        let refused = || ReadError::Refused {
            path: "/fhir/Patient/1".into(),
            status: http::StatusCode::FORBIDDEN,
        };
        #[rustfmt::skip]
        let cases: Vec<(SealError, &str, Fault, u16)> = vec![
            (SealError::Upstream(refused()),                  "refused",            Fault::Upstream, 502),
            (SealError::Unknowable("no ETag"),                "unknowable_version", Fault::Upstream, 502),
            (SealError::Ledger(::ledger::Error::Store("disk".into())), "store",     Fault::Gateway,  500),
            (SealError::AppenderStopped,                      "appender_stopped",   Fault::Gateway,  500),
        ];
        for (error, kind, fault, status) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.fault(), fault, "{error}");
            assert_eq!(
                GatewayError::from(error).status().as_u16(),
                status,
                "{kind}"
            );
        }
    }
}
