//! Traces: span recording, error-aware tail sampling, W3C propagation, the in-memory ring, and
//! (feature `otlp`) OTLP export.
//!
//! The pipeline is the crate's own rather than `tracing-opentelemetry` + the SDK tracer: the
//! span context layer (`crate::context`), which already gives every span its IDs for the log
//! lines, records the span's attributes and events; the [`sampler::TailSampler`] buffers them
//! per trace until the local root ends; and only kept traces are converted to the SDK's
//! `SpanData` and handed to the official `opentelemetry-otlp` exporter. This records every span
//! (as tail sampling must) for a fraction of what `tracing-opentelemetry` with an always-on
//! sampler costs per span, and makes the IDs in log lines and exported spans the same by
//! construction.
//!
//! [`start`] turns a validated [`options::TracesConfig`] into a [`TracesHandle`].

#[cfg(feature = "otlp")]
pub(crate) mod export;
#[cfg(feature = "grpc")]
mod grpc;
pub(crate) mod options;
pub(crate) mod propagation;
pub(crate) mod record;
pub(crate) mod ring;
pub(crate) mod sampler;
#[cfg(feature = "otlp")]
mod target;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "otlp")]
mod transport;

use std::sync::Arc;
use std::time::Duration;

use crate::core::exemplar::Exemplars;

use http::{HeaderName, HeaderValue};

use self::options::TracesConfig;
use self::ring::TraceRing;
use self::sampler::{Sinks, TailSampler, TraceMetrics};
use crate::core::error::Error;
use crate::core::resource::Resource;

/// Where the exporter's warnings go (the export thread has no subscriber of its own, so the
/// HTTP/gRPC client's events never loop back): a function that logs one line.
pub(crate) type Warn = Box<dyn Fn(&str) + Send + Sync>;

/// The running trace side of an instance.
pub(crate) struct TracesHandle {
    pub(crate) sampler: Arc<TailSampler>,
    /// The request header and value that force a trace (`trace: true`).
    pub(crate) forced_header: HeaderName,
    pub(crate) forced_value: HeaderValue,
}

/// Registers the trace metrics and, when traces are on, starts the sampler and its sinks.
/// `None` when traces are off.
pub(crate) fn start(
    registry: &prometheus::Registry,
    config: TracesConfig,
    resource: &Resource,
    warn: Warn,
    exemplars: Arc<Exemplars>,
) -> Result<Option<TracesHandle>, Error> {
    let metrics = TraceMetrics::register(registry)?;
    if !config.enabled {
        return Ok(None);
    }
    let ring = config
        .otlp
        .is_none()
        .then(|| TraceRing::new(config.ring_size));
    #[cfg(not(feature = "otlp"))]
    if let Some(otlp) = &config.otlp {
        return Err(Error::InvalidSetting {
            setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: otlp.endpoint.clone(),
            expected: "no endpoint: this build has no `otlp` feature".into(),
        });
    }
    #[cfg(feature = "otlp")]
    let export = match config.otlp {
        None => None,
        Some(otlp) => Some(start_export(
            registry,
            otlp,
            &metrics,
            resource,
            warn,
            exemplars.clone(),
        )?),
    };
    #[cfg(not(feature = "otlp"))]
    let _ = (resource, warn);
    let sinks = Sinks {
        ring,
        #[cfg(feature = "otlp")]
        export,
        exemplars,
    };
    Ok(Some(TracesHandle {
        sampler: Arc::new(TailSampler::new(config.sampling, metrics, sinks)),
        forced_header: config.forced_header,
        forced_value: config.forced_value,
    }))
}

/// Starts the OTLP export queue of an instance.
#[cfg(feature = "otlp")]
fn start_export(
    registry: &prometheus::Registry,
    config: options::OtlpConfig,
    metrics: &TraceMetrics,
    resource: &Resource,
    warn: Warn,
    exemplars: Arc<Exemplars>,
) -> Result<export::SpanExportQueue, Error> {
    use opentelemetry::KeyValue;

    use crate::core::names::{EXPORT_REQUESTS, SPANS_EXPORTED};

    let exported =
        prometheus::IntCounter::new(SPANS_EXPORTED, "Spans the OTLP collector accepted.")
            .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
            .map_err(|e| Error::MetricRegistration {
                metric: SPANS_EXPORTED.into(),
                reason: e.to_string(),
            })?;
    let requests = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            EXPORT_REQUESTS,
            "OTLP export calls (one per batch, retries included), by outcome.",
        ),
        &["outcome"],
    )
    .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
    .map_err(|e| Error::MetricRegistration {
        metric: EXPORT_REQUESTS.into(),
        reason: e.to_string(),
    })?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(
            resource
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .chain([
                    KeyValue::new("service.name", resource.service_name.clone()),
                    KeyValue::new("service.version", resource.service_version.clone()),
                    KeyValue::new("deployment.environment.name", resource.environment.clone()),
                ]),
        )
        .build();
    export::SpanExportQueue::start(
        export::ExportConfig {
            endpoint: config.endpoint,
            protocol: match config.protocol {
                options::OtlpProtocol::Grpc => export::Protocol::Grpc,
                options::OtlpProtocol::HttpProtobuf => export::Protocol::HttpProtobuf,
            },
            headers: config.headers,
            gzip: config.compression == options::OtlpCompression::Gzip,
            tls: config.tls,
            timeout: config.timeout,
            schedule_delay: config.schedule_delay,
            max_queue_size: config.queue_size,
            max_export_batch_size: 512,
            resource,
            warn,
            exemplars,
        },
        export::ExportCounters {
            queue_full: metrics.spans_dropped.with_label_values(&["queue_full"]),
            export_failed: metrics.spans_dropped.with_label_values(&["export_failed"]),
            rejected: metrics.spans_dropped.with_label_values(&["rejected"]),
            exported,
            requests_success: requests.with_label_values(&["success"]),
            requests_failed: requests.with_label_values(&["failed"]),
            requests_timed_out: requests.with_label_values(&["timed_out"]),
        },
    )
}

impl TracesHandle {
    /// The most recent kept traces as JSON, when they go to the in-memory ring.
    pub(crate) fn recent_json(&self) -> Option<String> {
        self.sampler.sinks().ring.as_ref().map(|r| r.render_json())
    }

    /// Waits until every kept trace so far is exported, within `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        #[cfg(feature = "otlp")]
        if let Some(export) = &self.sampler.sinks().export {
            return export.flush(timeout);
        }
        let _ = timeout;
        true
    }

    /// Decides every buffered trace and exports what is kept, within `timeout`.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        self.sampler.decide_all();
        #[cfg(feature = "otlp")]
        if let Some(export) = &self.sampler.sinks().export {
            return export.shutdown(timeout);
        }
        let _ = timeout;
        true
    }
}
