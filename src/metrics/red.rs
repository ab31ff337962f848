//! The RED metrics of HTTP servers (OpenTelemetry HTTP semantic conventions as mapped to
//! Prometheus), `target_info`, and the log pipeline's drop counter.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use std::sync::Arc;

use crate::core::error::Error;
use crate::core::exemplar::{ExemplarTable, PendingExemplar, label_name_hash, series_key_hashed};
use crate::core::http::METHODS;
use crate::core::names::{
    ACTIVE_REQUESTS, AUDIT_LINES_FAILED, ERROR_TYPE_LABEL, LOG_LINES_DROPPED, METHOD_LABEL,
    REQUEST_DURATION, ROUTE_LABEL, STATUS_LABEL, TARGET_INFO,
};
use crate::core::resource::Resource;

/// The duration histogram's label names, hashed once for the exemplars' series keys.
static NAME_HASHES: std::sync::LazyLock<[u64; 4]> = std::sync::LazyLock::new(|| {
    [METHOD_LABEL, ROUTE_LABEL, STATUS_LABEL, ERROR_TYPE_LABEL].map(label_name_hash)
});

/// The request metrics of one instance.
#[derive(Clone)]
pub(crate) struct RedMetrics {
    pub(crate) duration: HistogramVec,
    /// One handle per entry of [`METHODS`], resolved once.
    pub(crate) active: [IntGauge; 10],
    pub(crate) log_lines_dropped: IntCounter,
    /// Audit lines that missed their sink: `diverted` to the fallback, `lost`.
    pub(crate) audit_diverted: IntCounter,
    pub(crate) audit_lost: IntCounter,
    /// The duration histogram's exemplars (set by `metrics::start`).
    pub(crate) exemplars: Option<Arc<ExemplarTable>>,
}

impl RedMetrics {
    /// Observes a request's duration in its series; returns the exemplar to attach to the
    /// request's trace when `traced` (none when the histogram has no exemplar table).
    #[inline]
    pub(crate) fn observe_duration(
        &self,
        labels: [&str; 4],
        seconds: f64,
        traced: bool,
    ) -> PendingExemplar {
        self.duration.with_label_values(&labels).observe(seconds);
        match &self.exemplars {
            Some(table) if traced => {
                let series = series_key_hashed(NAME_HASHES.iter().copied().zip(labels));
                table.pending(series, seconds, 0)
            }
            _ => PendingExemplar::default(),
        }
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    c: C,
) -> Result<C, Error> {
    registry
        .register(Box::new(c.clone()))
        .map_err(|e| Error::MetricRegistration {
            metric: name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(c)
}

fn build_err(name: &str, e: prometheus::Error) -> Error {
    Error::MetricRegistration {
        metric: name.to_string(),
        reason: e.to_string(),
    }
}

impl RedMetrics {
    pub(crate) fn register(
        registry: &Registry,
        buckets: &[f64],
        resource: &Resource,
    ) -> Result<Self, Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION,
                "Duration of HTTP server requests, to the response head.",
            )
            .buckets(buckets.to_vec()),
            &[METHOD_LABEL, ROUTE_LABEL, STATUS_LABEL, ERROR_TYPE_LABEL],
        )
        .map_err(|e| build_err(REQUEST_DURATION, e))?;
        let duration = register(registry, REQUEST_DURATION, duration)?;

        let active = IntGaugeVec::new(
            Opts::new(
                ACTIVE_REQUESTS,
                "Number of HTTP server requests in flight (until the response body ends).",
            ),
            &[METHOD_LABEL],
        )
        .map_err(|e| build_err(ACTIVE_REQUESTS, e))?;
        let active = register(registry, ACTIVE_REQUESTS, active)?;
        let active = METHODS.map(|m| active.with_label_values(&[m]));

        let info = IntGaugeVec::new(
            Opts::new(
                TARGET_INFO,
                "Target metadata: the service that exposes these metrics.",
            ),
            &["service_name", "service_version", "deployment_environment"],
        )
        .map_err(|e| build_err(TARGET_INFO, e))?;
        let info = register(registry, TARGET_INFO, info)?;
        info.with_label_values(&[
            &resource.service_name,
            &resource.service_version,
            &resource.environment,
        ])
        .set(1);

        let log_lines_dropped = IntCounter::new(
            LOG_LINES_DROPPED,
            "Application log lines dropped because the log queue was full.",
        )
        .map_err(|e| build_err(LOG_LINES_DROPPED, e))?;
        let log_lines_dropped = register(registry, LOG_LINES_DROPPED, log_lines_dropped)?;
        let audit_failed = IntCounterVec::new(
            Opts::new(
                AUDIT_LINES_FAILED,
                "Audit lines their sink did not take in time: diverted to the fallback, or lost when the fallback was full too.",
            ),
            &["outcome"],
        )
        .map_err(|e| build_err(AUDIT_LINES_FAILED, e))?;
        let audit_failed = register(registry, AUDIT_LINES_FAILED, audit_failed)?;

        Ok(Self {
            duration,
            active,
            log_lines_dropped,
            audit_diverted: audit_failed.with_label_values(&["diverted"]),
            audit_lost: audit_failed.with_label_values(&["lost"]),
            exemplars: None,
        })
    }
}

/// Registers the `process_*` collector (Linux only; elsewhere a no-op).
pub(crate) fn register_process_metrics(registry: &Registry) -> Result<(), Error> {
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        registry
            .register(Box::new(pc))
            .map_err(|e| Error::MetricRegistration {
                metric: "process_*".into(),
                reason: e.to_string(),
            })?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
    Ok(())
}
