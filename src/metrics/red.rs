//! The RED metric catalogue of DESIGN §4 and the crate's self-metrics.

use http::Method;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

use crate::error::Error;

/// `http_server_request_duration_seconds`
pub const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// `http_server_active_requests`
pub const ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// `target_info`
pub const TARGET_INFO: &str = "target_info";
/// `mercenary_obs_log_lines_dropped_total`
pub const LOG_LINES_DROPPED: &str = "mercenary_obs_log_lines_dropped_total";

/// The method label values: RFC 9110 methods, PATCH, and `_OTHER` for anything else.
pub(crate) const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The label value of a method and its index in [`METHODS`]. Clients choose methods, so
/// anything outside the known set is `_OTHER` (OTel semconv).
pub(crate) fn method_label(method: &Method) -> (&'static str, usize) {
    let idx = match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    };
    (METHODS[idx], idx)
}

/// The request metrics of one instance.
pub(crate) struct RedMetrics {
    pub(crate) duration: HistogramVec,
    /// One handle per entry of [`METHODS`], resolved once.
    pub(crate) active: [IntGauge; 10],
    pub(crate) log_lines_dropped: IntCounter,
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
        service_name: &str,
        service_version: &str,
        environment: &str,
    ) -> Result<Self, Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION,
                "Duration of HTTP server requests, to the response head.",
            )
            .buckets(buckets.to_vec()),
            &[
                "http_request_method",
                "http_route",
                "http_response_status_code",
                "error_type",
            ],
        )
        .map_err(|e| build_err(REQUEST_DURATION, e))?;
        let duration = register(registry, REQUEST_DURATION, duration)?;

        let active = IntGaugeVec::new(
            Opts::new(
                ACTIVE_REQUESTS,
                "Number of HTTP server requests in flight (until the response body ends).",
            ),
            &["http_request_method"],
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
        info.with_label_values(&[service_name, service_version, environment])
            .set(1);

        let log_lines_dropped = IntCounter::new(
            LOG_LINES_DROPPED,
            "Application log lines dropped because the log queue was full.",
        )
        .map_err(|e| build_err(LOG_LINES_DROPPED, e))?;
        let log_lines_dropped = register(registry, LOG_LINES_DROPPED, log_lines_dropped)?;

        Ok(Self {
            duration,
            active,
            log_lines_dropped,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_known_set_are_other() {
        assert_eq!(method_label(&Method::GET).0, "GET");
        assert_eq!(method_label(&Method::PATCH).0, "PATCH");
        assert_eq!(
            method_label(&Method::from_bytes(b"FOO").unwrap()).0,
            "_OTHER"
        );
        assert_eq!(
            method_label(&Method::from_bytes(b"get").unwrap()).0,
            "_OTHER"
        );
    }
}
