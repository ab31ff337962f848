//! # mercenary_obs
//!
//! Production observability for any tower-based web service (axum, tonic, hyper) in two lines:
//! correlation IDs, RED metrics in Prometheus format, business-metric macros and structured JSON
//! logs.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! # async fn user() -> &'static str { "ok" }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let _guard = mercenary_obs::Obs::builder().service_name("mercenary-api").from_env().init()?;
//! let app: Router = Router::new()
//!     .route("/users/{id}", get(user))
//!     .merge(mercenary_obs::axum::metrics_router())
//!     .layer(mercenary_obs::layer());
//! # let _ = app; Ok(()) }
//! ```
//!
//! Every request then gets:
//!
//! - a **correlation ID**: a valid incoming `x-request-id` (or `x-correlation-id`) is kept, an
//!   invalid or missing one is replaced by a UUID v4; it is echoed on the response, available as
//!   [`correlation_id()`] and as an axum extractor, and written on every log line of the request;
//! - **RED metrics**: `http_server_request_duration_seconds{http_request_method, http_route,
//!   http_response_status_code, error_type}` and `http_server_active_requests`, with the route
//!   template as label (never the raw path) and unknown methods folded into `_OTHER`;
//! - one **access line** (`"message":"request completed"`) in the JSON log schema below, at INFO
//!   for 1xx–3xx, WARNING for 4xx and cancelled requests, ERROR for 5xx and panics;
//! - a **request span** that handler logs and child spans inherit, and a **trace** that is
//!   exported over OTLP when it is worth keeping: every error trace (5xx, `Err`, panic, or an
//!   ERROR event in any span), every request sent with `trace: true` (within 10/s), every trace
//!   an upstream sampled, and 10% of the rest, decided from the trace ID so every replica agrees.
//!
//! Handler code logs with `tracing` as usual:
//!
//! ```
//! # fn f(user_id: u64, plan: &str) {
//! mercenary_obs::counter!("user_signups_total", "plan" => plan).inc();
//! tracing::info!(user_id, "user signed up"); // one JSON line with correlation_id and trace_id
//! # }
//! ```
//!
//! ## Log lines
//!
//! One JSON object per line, fields in this order: `timestamp` (RFC 3339, UTC, microseconds),
//! `level` (`TRACE` `DEBUG` `INFO` `WARNING` `ERROR` `CRITICAL`), `target`, `message`, `service`,
//! `correlation_id`, `trace_id`, `span_id`, then the event's fields, then the enclosing spans'
//! fields (innermost first; a key is written once). `correlation_id`, `trace_id` and `span_id`
//! are left out of lines logged outside any span. Values are JSON-escaped (control characters,
//! ANSI escapes, U+2028/U+2029) and cut at 8 KiB, so one event is always one line. Fields and
//! headers named like `password`, `secret`, `token`, `authorization`, `cookie`, `api_key`,
//! `card_number` are written as `"[REDACTED]"`. Query strings are never logged.
//!
//! Lines go through a bounded queue to a writer thread: the request path never does I/O. When
//! the queue is full, lines are dropped and counted in `mercenary_obs_log_lines_dropped_total`.
//!
//! ## Instances
//!
//! [`ObsBuilder::init`] installs an instance globally (the `tracing` subscriber, and the instance
//! that [`layer()`] and the macros use). [`ObsBuilder::build`] makes an independent instance that
//! installs nothing: its layer makes its own subscriber current around each request, so several
//! can run in one process, which is what tests want.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | route labels from `MatchedPath`, the [`CorrelationId`] extractor, [`axum::metrics_router`] |
//! | `otlp` | yes | OTLP/HTTP protobuf export of kept traces (without it they stay in the `/debug/traces` ring) |
//! | `grpc` | no | OTLP/gRPC export (tonic) |
//!
//! ## Where this differs from the design document
//!
//! - Spans are recorded by the crate's own span layer and handed to the official
//!   `opentelemetry-otlp` exporter as the SDK's `SpanData`, instead of going through
//!   `tracing-opentelemetry` and the SDK tracer. Tail sampling must record every span, and
//!   `tracing-opentelemetry` with an always-on sampler costs several microseconds per span
//!   (DESIGN §13); this pipeline records a span for a fraction of that, converts only the spans
//!   of kept traces, and gives log lines and exported spans the same IDs by construction.
//!   `otel.name`, `otel.kind`, `otel.status_code` and `otel.status_message` fields work as with
//!   `tracing-opentelemetry`; WARNING and ERROR events become span events. With traces on, a
//!   span's fields are rendered into log lines from its recorded attributes, and only when a
//!   line inside the span needs them, so spans that never log cost no JSON; the `otel.*`
//!   fields are read as span settings and not written on log lines.
//! - A trace evicted from a full buffer, or whose root outlives `root_timeout`, is decided
//!   early with what is known (errors still kept), and counted in
//!   `mercenary_obs_traces_decided_early_total{cause}`; only the spans of those decided to be
//!   dropped count as `buffer_full` in `mercenary_obs_spans_dropped_total`.
//! - Request spans are always enabled, whatever `RUST_LOG` says, because they carry the
//!   correlation ID: with `RUST_LOG=warn` a handler's WARNING still has its `correlation_id`.
//! - A cancelled request has an empty `http_response_status_code` label (no response was sent,
//!   as OTel leaves the attribute unset) and `error_type="cancelled"`.
//! - The 500 answered for a panic has an empty body (so any body type works) and carries the
//!   correlation ID header. The access line of a panic carries `exception.message` (OTel's name).
//! - The access line also carries the request headers listed in `ObsBuilder::log_headers`, as
//!   `http.request.header.<name>` (OTel's name; default: `user-agent`), redacted like fields.
//! - An `Err` from the inner service has `error_type` set to the error's type name
//!   (`std::any::type_name`): low-cardinality, and says what failed.
//! - Beyond the design's surface: `ObsBuilder::from_vars` (the environment as pairs, for tests
//!   and config files), `Obs::dispatch`, `Obs::in_scope`, `Obs::flush` and
//!   `Obs::log_lines_dropped`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod classify;
mod correlation;
mod error;
mod layer;
mod logging;
mod metrics;
mod obs;
mod tracing;

#[cfg(feature = "axum")]
pub mod axum;

pub use builder::{DEFAULT_DURATION_BUCKETS, DEFAULT_LOG_HEADERS, ObsBuilder, OtlpProtocol, env};
pub use classify::{Outcome, Severity};
pub use correlation::{CorrelationId, correlation_id};
pub use error::Error;
pub use layer::{ObsLayer, ObsService, ResponseBody, ResponseFuture, Route, RouteExtractor};
pub use logging::redact::REDACTED;
pub use logging::{DEFAULT_SENSITIVE, LogFormat};
pub use metrics::{
    ACTIVE_REQUESTS, CONTENT_TYPE, Counter, Gauge, Histogram, LOG_LINES_DROPPED, MetricsService,
    REQUEST_DURATION, TARGET_INFO,
};
pub use obs::{Obs, ObsGuard};

/// The tower layer bound to the global instance (the one [`ObsBuilder::init`] installed), or to
/// a metrics-only default when `init` has not been called. Call `init` first.
pub fn layer() -> ObsLayer {
    Obs::global().layer()
}

/// A tower `Service` answering `GET /metrics` for the global instance.
pub fn metrics_service() -> MetricsService {
    Obs::global().metrics_service()
}

#[doc(hidden)]
pub mod __private {
    pub use ::tracing;

    use std::fmt::Display;

    pub fn counter(name: &str, labels: &[(&str, &dyn Display)]) -> crate::Counter {
        crate::Obs::global().counter(name, labels)
    }

    pub fn gauge(name: &str, labels: &[(&str, &dyn Display)]) -> crate::Gauge {
        crate::Obs::global().gauge(name, labels)
    }

    pub fn histogram(name: &str, labels: &[(&str, &dyn Display)]) -> crate::Histogram {
        crate::Obs::global().histogram(name, labels)
    }
}

/// A business counter of the global instance: `counter!("name", "label" => value, ...)`.
///
/// Label values are anything `Display`. A name that is not a valid Prometheus name, or a name
/// used before with other labels or another type, is logged once and gives a no-op handle.
///
/// ```
/// let plan = "pro";
/// mercenary_obs::counter!("user_signups_total", "plan" => plan).inc();
/// mercenary_obs::counter!("payments_total", "currency" => "EUR", "outcome" => "ok").inc_by(1);
/// ```
#[macro_export]
macro_rules! counter {
    ($name:expr $(, $key:literal => $value:expr)* $(,)?) => {
        $crate::__private::counter($name, &[$(($key, &$value as &dyn ::std::fmt::Display)),*])
    };
}

/// A business gauge of the global instance: `gauge!("name", "label" => value, ...)`.
///
/// ```
/// mercenary_obs::gauge!("active_sessions").set(12.0);
/// ```
#[macro_export]
macro_rules! gauge {
    ($name:expr $(, $key:literal => $value:expr)* $(,)?) => {
        $crate::__private::gauge($name, &[$(($key, &$value as &dyn ::std::fmt::Display)),*])
    };
}

/// A business histogram of the global instance: `histogram!("name", "label" => value, ...)`.
///
/// ```
/// mercenary_obs::histogram!("payment_amount_dollars", "currency" => "USD").observe(49.0);
/// ```
#[macro_export]
macro_rules! histogram {
    ($name:expr $(, $key:literal => $value:expr)* $(,)?) => {
        $crate::__private::histogram($name, &[$(($key, &$value as &dyn ::std::fmt::Display)),*])
    };
}

/// Logs an ERROR event that is written with level `CRITICAL` (it carries `critical = true`).
///
/// Takes what `tracing::error!` takes after the target:
///
/// ```
/// mercenary_obs::critical!(db = "primary", "database unreachable, serving from cache");
/// ```
#[macro_export]
macro_rules! critical {
    ($($arg:tt)+) => {
        $crate::__private::tracing::error!(critical = true, $($arg)+)
    };
}
