//! Prometheus metrics, served at `/-/metrics`. Labels carry the interaction
//! and status only: never ids, paths or query values.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub interaction: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~65 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 18,
    ))
}

/// All of the gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge<i64, AtomicI64>,
    /// Gateway-produced errors by kind (`upstream_unreachable`, …).
    pub gateway_errors: Family<KindLabels, Counter>,
    /// FHIR responses too large to inspect, streamed without rewriting.
    pub uninspected_responses: Counter,
    /// Bodies converted by the XML bridge, by direction.
    pub xml_conversions: Family<KindLabels, Counter>,
    /// Versions checked by verify-on-read, by result (`verified`,
    /// `tampered`, `unsealed`, `unchecked`).
    pub read_verifications: Family<KindLabels, Counter>,
    /// Request-body text changes by kind (`charset_decoded`,
    /// `charset_detected`, `kana-widened`, `variants-folded`, …).
    pub text_changes: Family<KindLabels, Counter>,
    /// Per anchor backend, refreshed at each scrape from the ledger.
    pub anchor_lag_checkpoints: Family<BackendLabels, Gauge<i64, AtomicI64>>,
    pub anchor_lag_seconds: Family<BackendLabels, Gauge<i64, AtomicI64>>,
    pub anchor_failures: Family<BackendLabels, Gauge<i64, AtomicI64>>,
    /// Writes by seal result (`sealed`, `failed`).
    pub seals: Family<KindLabels, Counter>,
    /// Access records by result (`sealed`: events sealed and queued;
    /// `failed`: a request whose answer was withheld; `delivered`).
    pub access_records: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("inkan");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let gateway_errors = Family::<KindLabels, Counter>::default();
        let uninspected_responses = Counter::default();
        let xml_conversions = Family::<KindLabels, Counter>::default();
        let read_verifications = Family::<KindLabels, Counter>::default();
        let seals = Family::<KindLabels, Counter>::default();
        let access_records = Family::<KindLabels, Counter>::default();
        let text_changes = Family::<KindLabels, Counter>::default();
        let anchor_lag_checkpoints = Family::<BackendLabels, Gauge<i64, AtomicI64>>::default();
        let anchor_lag_seconds = Family::<BackendLabels, Gauge<i64, AtomicI64>>::default();
        let anchor_failures = Family::<BackendLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "anchor_lag_checkpoints",
            "Checkpoints signed since the last one the backend anchored",
            anchor_lag_checkpoints.clone(),
        );
        registry.register(
            "anchor_lag_seconds",
            "Age of the oldest checkpoint the backend has not anchored",
            anchor_lag_seconds.clone(),
        );
        registry.register(
            "anchor_failures",
            "Failed anchoring attempts since the backend's last success",
            anchor_failures.clone(),
        );
        registry.register(
            "text_changes",
            "Changes made to request-body text (Japanese charsets and normalization), by kind",
            text_changes.clone(),
        );
        registry.register(
            "read_verifications",
            "Versions checked against the ledger on read, by result",
            read_verifications.clone(),
        );
        registry.register(
            "seals",
            "Writes sealed in the ledger, by result (failed: committed upstream, needs repair)",
            seals.clone(),
        );
        registry.register(
            "access_records",
            "BALP AuditEvents by result (sealed and queued, failed, delivered to the audit repository)",
            access_records.clone(),
        );
        registry.register(
            "http_requests",
            "FHIR requests served, by interaction and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request head to response head, by interaction and status",
            latency.clone(),
        );
        registry.register(
            "http_in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "gateway_errors",
            "Errors answered by the gateway itself, by kind",
            gateway_errors.clone(),
        );
        registry.register(
            "uninspected_responses",
            "FHIR responses over limits.max_inspected_response_bytes streamed without URL rewriting",
            uninspected_responses.clone(),
        );
        registry.register(
            "xml_conversions",
            "Bodies converted between FHIR XML and JSON, by direction",
            xml_conversions.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            gateway_errors,
            uninspected_responses,
            xml_conversions,
            read_verifications,
            seals,
            access_records,
            text_changes,
            anchor_lag_checkpoints,
            anchor_lag_seconds,
            anchor_failures,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Increments a gauge for as long as it lives: the decrement runs even
/// when the future holding it is dropped midway (a client's reset).
#[derive(Debug)]
pub struct GaugeGuard(Gauge<i64, AtomicI64>);

impl GaugeGuard {
    pub fn enter(gauge: &Gauge<i64, AtomicI64>) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
