//! Wall-clock time as the ledger records it (Unix seconds or
//! milliseconds; 0 if the clock is before 1970).

/// Seconds since the Unix epoch.
pub fn unix_seconds() -> i64 {
    since_epoch().map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> i64 {
    since_epoch().map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn since_epoch() -> Option<std::time::Duration> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
}
