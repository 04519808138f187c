//! Step 6, admit. Runs once the body is in. Takes one of
//! `limits.max_concurrent_requests` permits and counts the request in the
//! in-flight gauge; both are released when the returned guard drops, so a
//! request cancelled midway (an HTTP/2 reset drops its future) cannot leak
//! them. Changes nothing. Results: the guard; 503 with `Retry-After` when
//! every permit is taken.

use tokio::sync::OwnedSemaphorePermit;

use super::Gateway;
use crate::error::GatewayError;
use crate::metrics::GaugeGuard;

/// Held while a request is served.
#[derive(Debug)]
pub(super) struct Admitted {
    _permit: OwnedSemaphorePermit,
    _in_flight: GaugeGuard,
}

impl Gateway {
    pub(super) fn admit(&self) -> Result<Admitted, GatewayError> {
        let permit = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| GatewayError::Overloaded)?;
        Ok(Admitted {
            _permit: permit,
            _in_flight: GaugeGuard::enter(&self.metrics.in_flight),
        })
    }
}
