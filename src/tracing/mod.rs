//! Traces: span recording, error-aware tail sampling, W3C propagation, the in-memory ring, and
//! (feature `otlp`) OTLP export.
//!
//! The pipeline is the crate's own rather than `tracing-opentelemetry` + the SDK tracer: the
//! span layer that already gives every span its IDs for the log lines records the span's
//! attributes and events, the [`sampler::TailSampler`] buffers them per trace until the local
//! root ends, and only kept traces are converted to the SDK's `SpanData` and handed to the
//! official `opentelemetry-otlp` exporter. This records every span (as tail sampling must) for a
//! fraction of what `tracing-opentelemetry` with an always-on sampler costs per span (DESIGN §13),
//! and makes the IDs in log lines and exported spans the same by construction.

#[cfg(feature = "otlp")]
pub(crate) mod export;
pub(crate) mod propagation;
pub(crate) mod record;
pub(crate) mod ring;
pub(crate) mod sampler;

use std::cell::Cell;

use self::propagation::RemoteParent;

/// What the tower layer decided about a request's trace before opening its span.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestTrace {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) parent: Option<RemoteParent>,
    pub(crate) forced: bool,
}

thread_local! {
    /// Handed from the tower layer to the span layer across `info_span!` on the same thread.
    static NEXT_REQUEST: Cell<Option<RequestTrace>> = const { Cell::new(None) };
}

/// Runs `open` (which opens the request span) with `trace` handed to the span layer.
pub(crate) fn with_request_trace<R>(trace: RequestTrace, open: impl FnOnce() -> R) -> R {
    NEXT_REQUEST.with(|c| c.set(Some(trace)));
    let out = open();
    NEXT_REQUEST.with(|c| c.set(None));
    out
}

/// Takes what the tower layer handed over (called by the span layer for request spans).
pub(crate) fn take_request_trace() -> Option<RequestTrace> {
    NEXT_REQUEST.with(Cell::take)
}

/// Starts the OTLP export queue of an instance.
#[cfg(feature = "otlp")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn export_pipeline(
    registry: &prometheus::Registry,
    config: crate::builder::OtlpConfig,
    metrics: &sampler::TraceMetrics,
    service_name: &str,
    service_version: &str,
    environment: &str,
    resource_attributes: &[(String, String)],
    log_dispatch: std::sync::Arc<std::sync::OnceLock<tracing_core::dispatcher::WeakDispatch>>,
) -> Result<export::SpanExportQueue, crate::Error> {
    use opentelemetry::KeyValue;

    let exported = prometheus::IntCounter::new(
        sampler::SPANS_EXPORTED,
        "Spans the OTLP collector accepted.",
    )
    .and_then(|c| registry.register(Box::new(c.clone())).map(|()| c))
    .map_err(|e| crate::Error::MetricRegistration {
        metric: sampler::SPANS_EXPORTED.into(),
        reason: e.to_string(),
    })?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes(
            resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .chain([
                    KeyValue::new("service.name", service_name.to_string()),
                    KeyValue::new("service.version", service_version.to_string()),
                    KeyValue::new("deployment.environment.name", environment.to_string()),
                ]),
        )
        .build();
    export::SpanExportQueue::start(
        export::ExportConfig {
            endpoint: config.endpoint,
            protocol: match config.protocol {
                crate::OtlpProtocol::Grpc => export::Protocol::Grpc,
                crate::OtlpProtocol::HttpProtobuf => export::Protocol::HttpProtobuf,
            },
            headers: config.headers,
            timeout: config.timeout,
            schedule_delay: config.schedule_delay,
            max_queue_size: config.queue_size,
            max_export_batch_size: 512,
            resource,
            // The export thread has no subscriber of its own (so the HTTP/gRPC client's events
            // never loop back); its warnings go through the instance's log pipeline.
            warn: Box::new(move |reason| {
                if let Some(dispatch) = log_dispatch.get().and_then(|w| w.upgrade()) {
                    tracing_core::dispatcher::with_default(&dispatch, || {
                        ::tracing::warn!(target: "mercenary_obs::export", reason, "trace export failing");
                    });
                }
            }),
        },
        export::ExportCounters {
            queue_full: metrics.spans_dropped.with_label_values(&["queue_full"]),
            export_failed: metrics.spans_dropped.with_label_values(&["export_failed"]),
            exported,
        },
    )
}
