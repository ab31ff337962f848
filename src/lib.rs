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
//! ## gRPC
//!
//! A request with `content-type: application/grpc*` is a gRPC call: classified by its
//! [`GrpcCode`] (from a trailers-only head, or from the trailers at the end of the stream;
//! server faults are errors, client faults are not), recorded in
//! `rpc_server_call_duration_seconds` instead of the HTTP histogram, with a span named by the
//! method and the gRPC status on the access line. A stream dropped before its trailers is
//! `cancelled`. The client layer does the same for calls through a tonic `Channel`
//! (`rpc_client_call_duration_seconds`).
//!
//! ## Outgoing calls
//!
//! [`client_layer()`] (any tower HTTP client) and, with feature `reqwest`,
//! [`reqwest::Middleware`](crate::reqwest) instrument the calls a service makes: a CLIENT span
//! in the current trace, `traceparent` / `tracestate` / `x-request-id` sent downstream,
//! `http_client_request_duration_seconds`, and **downstream-aware keeping**: when the
//! downstream's `traceresponse` says it kept the trace (it failed, or logged an ERROR, even if
//! this service absorbed it), this service keeps its part too (reason `downstream`), so the
//! trace is whole in every service. A caller that fails *after* a successful downstream call
//! cannot reach back: the downstream already dropped its part; a collector tier with tail
//! sampling covers that case (see the README).
//!
//! ```
//! use tower::Layer;
//!
//! let obs = mercenary_obs::Obs::builder().log_writer(std::io::sink()).build().unwrap();
//! let transport = tower::service_fn(|_req: http::Request<String>| async {
//!     Ok::<_, std::io::Error>(http::Response::new(String::new()))
//! });
//! let client = obs.client_layer().layer(transport); // `mercenary_obs::client_layer()` after init()
//! # let _ = client;
//! ```
//!
//! ## Business metrics, audit and security events
//!
//! [`counter!`], [`gauge!`] and [`histogram!`] register in the instance `init()` installed (the
//! metrics-only default before it). The family is resolved once per call site: with literal
//! label values the call costs one atomic load plus the increment; with run-time values, a hash
//! lookup that allocates nothing when the series exists. Each metric holds at most 1000 series
//! (configurable); new label sets past the cap fold into an `_other` series counted in
//! `mercenary_obs_metric_overflow_total{metric}`. Invalid literal names and malformed label
//! lists do not compile; run-time mistakes are logged once and become no-ops.
//!
//! [`audit!`] writes a JSON line with `"audit":true` to the audit sink
//! ([`ObsBuilder::audit_writer`]) and is never dropped; [`security_event!`] writes a WARNING
//! line. Both are counted (`audit_events_total{action,outcome}`,
//! `security_events_total{kind}`), redacted, and pass whatever `RUST_LOG` says.
//!
//! ```
//! let (user_id, email_hash) = (42, "5f2b");
//! mercenary_obs::audit!(actor = user_id, action = "permission.grant", resource = "project:42", outcome = "success");
//! mercenary_obs::security_event!(kind = "failed_login", actor = email_hash);
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
//! A panic is a log line too: [`ObsBuilder::init`] installs a panic hook that writes it as one
//! `CRITICAL` line (target `mercenary_obs::panic`, with `exception.message`, `code.filepath`,
//! `code.lineno`, the request's IDs, and `exception.stacktrace` when `RUST_BACKTRACE` asks for
//! it) instead of Rust's text on stderr; see [`ObsBuilder::panic_hook`].
//!
//! ## Instances
//!
//! [`ObsBuilder::init`] installs an instance globally (the `tracing` subscriber, and the instance
//! that [`layer()`] and the macros use). [`ObsBuilder::build`] makes an independent instance that
//! installs nothing: its layer makes its own subscriber current around each request, so several
//! can run in one process, which is what tests want.
//!
//! ## Monitoring kit
//!
//! [`monitoring`] generates the Prometheus alert and recording rules, their `promtool` unit
//! tests, Grafana dashboards and an Alertmanager routing example from the metric names the code
//! emits (checked in under `monitoring/`, with runbooks in `docs/runbooks/`). [`db`] gives the
//! pool and query metrics its database alerts and dashboard use; with feature `tokio`, the
//! `tokio_runtime_*` gauges feed the runtime dashboard. Every metric name, label name and log
//! target the crate emits is a constant in [`names`], which the kit reads too.
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | route labels from `MatchedPath`, the [`CorrelationId`] extractor, [`axum::metrics_router`] |
//! | `otlp` | yes | OTLP/HTTP protobuf export of kept traces (without it they stay in the `/debug/traces` ring) |
//! | `grpc` | no | OTLP/gRPC export (tonic) |
//! | `sentry` | no | Sentry error reporting with `SENTRY_DSN`: ERROR events, one event per failed request linked to its trace and log lines, breadcrumbs, a non-blocking transport (see below) |
//! | `reqwest` | no | `reqwest::Middleware` for `reqwest-middleware` (reqwest 0.13) |
//! | `tokio` | yes | tokio runtime gauges (`tokio_runtime_workers`, `tokio_runtime_alive_tasks`, `tokio_runtime_global_queue_depth`) |
//!
//! ## Sentry
//!
//! With the `sentry` feature and a DSN (`SENTRY_DSN`, or `ObsBuilder::sentry_dsn`), an instance
//! owns a Sentry client. ERROR events (and [`critical!`], sent as `fatal`) become Sentry events
//! with their fields, INFO and WARNING events breadcrumbs. Every request classified as an error
//! (5xx, `Err`, panic) gives exactly one event, even when the handler logged nothing and never
//! two when it logged an ERROR, tagged `correlation_id`, `trace_id`, `http.route`,
//! `http.request.method` (and `http.response.status_code`), with the panic message and backtrace
//! for panics. Each request has its own hub, and the event's trace context is the request's OTel
//! trace ID, the one in its log lines and exported spans. Redaction runs on every event and
//! breadcrumb. The transport never blocks a request: a bounded queue, one thread, timeouts,
//! `429`/`Retry-After` honoured, drops counted in `mercenary_obs_sentry_events_dropped_total`.
//!
//! ## Decisions
//!
//! Where a choice was not obvious (how business-metric handles are returned, which sink audit
//! lines use, why spans are recorded by the crate's own layer rather than
//! `tracing-opentelemetry`, how Sentry's panic hook is chained, …), the reasons are written
//! down in `docs/DECISIONS.md` in the repository; `docs/ARCHITECTURE.md` maps the modules.

#![cfg_attr(docsrs, feature(doc_cfg))]

// The layers, bottom to top (a module imports only modules of lower layers; a test guards it):
// core → metrics, traces → context, db → logging, sentry, client → layer → obs → axum, macros,
// monitoring, reqwest.
mod client;
mod context;
mod core;
pub mod db;
mod layer;
mod logging;
mod macros;
mod metrics;
mod obs;
#[cfg(feature = "sentry")]
mod sentry;
mod traces;

#[cfg(feature = "axum")]
pub mod axum;
pub mod monitoring;
#[cfg(feature = "reqwest")]
pub mod reqwest;

pub use self::client::tower::{ClientBody, ClientFuture, ClientLayer, ClientService};
pub use self::context::current::correlation_id;
pub use self::core::env;
pub use self::core::error::Error;
pub use self::core::grpc::GrpcCode;
pub use self::core::ids::CorrelationId;
pub use self::core::names;
pub use self::core::outcome::{Outcome, Severity};
pub use self::core::redact::DEFAULT_SENSITIVE;
pub use self::layer::options::DEFAULT_LOG_HEADERS;
pub use self::layer::{
    ObsLayer, ObsService, Principal, ResponseBody, ResponseFuture, Route, RouteExtractor,
};
pub use self::logging::LogFormat;
pub use self::metrics::options::DEFAULT_DURATION_BUCKETS;
pub use self::metrics::{Counter, Gauge, Histogram, HistogramTimer, MetricsService};
pub use self::obs::{Obs, ObsBuilder, ObsGuard};
pub use self::traces::options::{OtlpCompression, OtlpProtocol};

/// The tower layer bound to the global instance (the one [`ObsBuilder::init`] installed), or to
/// a metrics-only default when `init` has not been called. Call `init` first.
pub fn layer() -> ObsLayer {
    Obs::global().layer()
}

/// The client tower layer bound to the global instance: instruments outgoing HTTP calls (see
/// [`ClientLayer`]). Call `init` first.
pub fn client_layer() -> ClientLayer {
    Obs::global().client_layer()
}

/// A tower `Service` answering `GET /metrics` for the global instance.
pub fn metrics_service() -> MetricsService {
    Obs::global().metrics_service()
}

#[doc(hidden)]
pub mod __private {
    pub use ::tracing;

    pub use crate::core::exemplar::SeriesExemplar;

    pub use crate::metrics::business::{
        CounterKind, Desc, DynSite, GaugeKind, HistogramKind, Kind, LabelRef, StaticSite,
        ViaDisplay, ViaStr, Wrap, by_name,
    };
}
