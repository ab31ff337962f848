//! Sentry error reporting (feature `sentry`).
//!
//! With a DSN (`SENTRY_DSN` or [`ObsBuilder::sentry_dsn`]) an instance owns its own Sentry
//! [`Client`] and a main [`Hub`] bound to it; nothing global is touched by `build()`. `init()`
//! also binds the client to Sentry's process-wide main hub, so events outside requests are
//! reported too.
//!
//! What is reported:
//!
//! - **`tracing` events**, through `sentry-tracing`'s `ErrorLayer` and `BreadcrumbLayer`, added to
//!   the instance's subscriber: ERROR events (and `critical!`, sent at level `fatal`) become
//!   Sentry events carrying their fields (context `Rust Tracing Fields`); INFO and WARNING events
//!   become breadcrumbs; DEBUG and TRACE are ignored. The crate's own access line and export
//!   warnings are not sent (the request-level event below replaces the access line). No Sentry
//!   spans or transactions are made: traces are the OTLP pipeline's job.
//! - **One event per failed request** (5xx, `Err`, panic), made when the request's outcome is
//!   final, unless an ERROR-level event was already captured on the request's hub (a handler's
//!   `tracing::error!`): a request produces exactly one event. A panic's event carries the panic
//!   message as an exception of type `panic` and the backtrace of the panicking thread. 2xx, 4xx
//!   and cancelled requests produce none.
//! - Every event captured inside a request carries the tags `correlation_id`, `trace_id`,
//!   `http.route`, `http.request.method` (plus `http.response.status_code` and `error.type` on the
//!   request-level event), the request (method, URL without its query string, headers with
//!   sensitive ones redacted), the transaction name `METHOD route`, and a `trace` context whose
//!   trace and span IDs are the request's OTel IDs: the same as in the log lines and the
//!   exported spans, so Sentry → trace links work (Sentry's SDK does not read W3C
//!   `traceparent`; the layer does).
//!
//! **A hub per request.** The layer makes a [`Hub`] for each request from the instance's hub and
//! makes it current around every poll of the request future (and the inner service's `call`),
//! so breadcrumbs and tags never leak between concurrent requests. Work a handler spawns onto
//! other tasks does not inherit it (bind it with `sentry::SentryFutureExt::bind_hub`).
//!
//! **Backtraces of panics.** The layer catches panics, and by then the stack has unwound. So the
//! first instance with Sentry installs a chained panic hook (the previous hook still runs) that
//! records the panicking thread's stack only while that thread is polling a request of an
//! instance with Sentry on; anywhere else it does nothing.
//!
//! **Redaction** (the log lines' rules) runs in `before_send` and `before_breadcrumb` on every event and
//! breadcrumb: values of tags, extra data, context fields, breadcrumb data and request headers
//! whose names are sensitive become `[REDACTED]` (recursively), the values of sensitive
//! parameters in any URL-like string (`?token=…`) too, the request's query string and cookies
//! are removed, and `send_default_pii` stays off.
//!
//! **The transport** is the crate's own rather than Sentry's `ureq`/`reqwest` transports: those
//! drop silently when their queue is full, and their flush blocks on a full queue. This one is a
//! bounded queue (`ObsBuilder::sentry_queue_size`, default 100 envelopes) feeding one thread
//! that posts with `ureq` (rustls, webpki roots; connect and whole-request timeouts,
//! `ObsBuilder::sentry_timeout`, default 5 s). Requests only ever `try_send`. It honours
//! `X-Sentry-Rate-Limits`, `Retry-After` and bare 429s with Sentry's own `RateLimiter`: while
//! limited, nothing is sent and queued events are dropped. Every event not delivered is counted in
//! `mercenary_obs_sentry_events_dropped_total{reason}` (`queue_full`, `rate_limited`,
//! `send_failed`, `shut_down`). Flushing waits until the queue is empty, within a timeout; the
//! thread is never joined, so shutdown never hangs on a hanging endpoint.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use ::sentry::protocol::{
    Context, Event, Exception, Frame, Level, Map, Mechanism, Request, SpanId, Stacktrace,
    TraceContext, TraceId, Url, Value,
};
use ::sentry::transports::{RateLimiter, RateLimitingCategory};
use ::sentry::types::Dsn;
use ::sentry::{
    Breadcrumb, Client, ClientOptions, Envelope, Hub, Transport, TransportFactory, TransportOptions,
};
use ::sentry_tracing::{BreadcrumbLayer, ErrorLayer};
use http::HeaderMap;
use prometheus::IntCounterVec;
use tracing_core::{Event as TracingEvent, Level as TracingLevel, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::core::env::{self, EnvVars, Setting};
use crate::core::error::Error;
use crate::core::http::status_str;
use crate::core::names::ACCESS_TARGET;
use crate::core::names::SENTRY_EVENTS_DROPPED;
use crate::core::outcome::Outcome;
use crate::core::redact::{REDACTED, Redactor};

/// The `tracing-fields` context `sentry-tracing` puts an event's fields in.
const FIELDS_CONTEXT: &str = "Rust Tracing Fields";

/// Sentry settings as given (`ObsBuilder::sentry_*`) and read from `SENTRY_DSN`,
/// `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE`.
#[derive(Default)]
pub(crate) struct SentryOptions {
    pub(crate) dsn: Setting<String>,
    pub(crate) environment: Setting<String>,
    pub(crate) release: Setting<String>,
    pub(crate) sample_rate: Option<f32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) queue_size: Option<usize>,
    pub(crate) transport: Option<Arc<dyn TransportFactory>>,
}

impl SentryOptions {
    /// Reads `SENTRY_DSN`, `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE` (validated in `build()`).
    pub(crate) fn read_env(&mut self, vars: &mut EnvVars) {
        for (name, setting) in [
            (env::SENTRY_DSN, &mut self.dsn),
            (env::SENTRY_ENVIRONMENT, &mut self.environment),
            (env::SENTRY_RELEASE, &mut self.release),
        ] {
            if let Some(value) = vars.get(name) {
                setting.env = Some(value.trim().to_string());
            }
        }
    }
}

/// Validated Sentry settings.
pub(crate) struct SentryConfig {
    dsn: Dsn,
    environment: Option<String>,
    release: Option<String>,
    sample_rate: f32,
    timeout: Duration,
    queue_size: usize,
    transport: Option<Arc<dyn TransportFactory>>,
}

/// Validates the Sentry settings: `None` when no DSN is set (Sentry off).
pub(crate) fn resolve(settings: &mut SentryOptions) -> Result<Option<SentryConfig>, Error> {
    let sample_rate = settings.sample_rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_rate) {
        return Err(Error::InvalidSetting {
            setting: "ObsBuilder::sentry_sample_rate",
            value: sample_rate.to_string(),
            expected: "a number from 0 to 1".into(),
        });
    }
    let timeout = settings.timeout.unwrap_or(Duration::from_secs(5));
    if timeout.is_zero() {
        return Err(Error::InvalidSetting {
            setting: "ObsBuilder::sentry_timeout",
            value: format!("{timeout:?}"),
            expected: "a timeout above 0".into(),
        });
    }
    let queue_size = settings.queue_size.unwrap_or(100);
    if queue_size == 0 {
        return Err(Error::InvalidSetting {
            setting: "ObsBuilder::sentry_queue_size",
            value: "0".into(),
            expected: "a number of events above 0".into(),
        });
    }
    let Some((text, from_code)) = settings.dsn.take() else {
        return Ok(None);
    };
    let from_env = !from_code;
    let expected = "a Sentry DSN such as https://PUBLIC_KEY@o0.ingest.sentry.io/PROJECT_ID";
    let dsn = text.trim().parse::<Dsn>().map_err(|_| match from_env {
        true => Error::InvalidEnv {
            variable: env::SENTRY_DSN,
            value: text.clone(),
            expected: expected.into(),
        },
        false => Error::InvalidSetting {
            setting: "ObsBuilder::sentry_dsn",
            value: text.clone(),
            expected: expected.into(),
        },
    })?;
    Ok(Some(SentryConfig {
        dsn,
        environment: settings.environment.take().map(|(v, _)| v),
        release: settings.release.take().map(|(v, _)| v),
        sample_rate,
        timeout,
        queue_size,
        transport: settings.transport.take(),
    }))
}

/// The Sentry side of an instance.
pub(crate) struct SentryState {
    client: Arc<Client>,
    hub: Arc<Hub>,
}

/// What [`start`] needs besides the validated settings.
pub(crate) struct SentryStart<'a> {
    pub(crate) registry: &'a prometheus::Registry,
    pub(crate) redact: &'a [String],
    pub(crate) service_name: &'a str,
    pub(crate) service_version: &'a str,
    pub(crate) environment: &'a str,
    pub(crate) shutdown_timeout: Duration,
}

/// Makes the instance's client, its hub, and registers the drop counter.
pub(crate) fn start(config: SentryConfig, with: SentryStart<'_>) -> Result<SentryState, Error> {
    let dropped = IntCounterVec::new(
        prometheus::Opts::new(
            SENTRY_EVENTS_DROPPED,
            "Sentry events that were not delivered, by reason.",
        ),
        &["reason"],
    )
    .and_then(|c| with.registry.register(Box::new(c.clone())).map(|()| c))
    .map_err(|e| Error::MetricRegistration {
        metric: SENTRY_EVENTS_DROPPED.into(),
        reason: e.to_string(),
    })?;
    let redactor = Arc::new(Redactor::new(with.redact));
    let mut options = ClientOptions::new();
    options.dsn = Some(config.dsn);
    options.environment = config
        .environment
        .or_else(|| (with.environment != "unknown").then(|| with.environment.to_string()))
        .map(Cow::Owned);
    options.release = config
        .release
        .or_else(|| {
            (with.service_version != "unknown")
                .then(|| format!("{}@{}", with.service_name, with.service_version))
        })
        .map(Cow::Owned);
    options = options.sample_rate(config.sample_rate);
    options.send_default_pii = false;
    options.attach_stacktrace = false;
    options.default_integrations = false;
    options.shutdown_timeout = with.shutdown_timeout;
    options.integrations = vec![Arc::new(
        ::sentry::integrations::backtrace::ProcessStacktraceIntegration::new(),
    )];
    let r = redactor.clone();
    options.before_send = Some(Arc::new(move |event| Some(redact_event(&r, event))));
    let r = redactor;
    options.before_breadcrumb = Some(Arc::new(move |mut crumb| {
        redact_breadcrumb(&r, &mut crumb);
        Some(crumb)
    }));
    options.transport = Some(match config.transport {
        Some(transport) => transport,
        None => Arc::new(HttpTransportFactory {
            queue_size: config.queue_size,
            timeout: config.timeout,
            dropped: DropCounters::new(&dropped),
        }),
    });
    let client = Arc::new(Client::with_options(options));
    let hub = Arc::new(Hub::new(Some(client.clone()), Default::default()));
    install_panic_hook();
    Ok(SentryState { client, hub })
}

impl SentryState {
    /// Binds the client to Sentry's process-wide main hub, and to this thread's hub (which is
    /// another one when the main hub was made on another thread), for `init()`. Threads that
    /// used Sentry before keep their own hub.
    pub(crate) fn bind_main(&self) {
        Hub::main().bind_client(Some(self.client.clone()));
        Hub::current().bind_client(Some(self.client.clone()));
    }

    /// Waits until queued events are sent (or dropped), within `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        self.client.flush(Some(timeout))
    }

    /// Flushes within `timeout`, then closes the client: later events are not sent.
    pub(crate) fn close(&self, timeout: Duration) -> bool {
        self.client.close(Some(timeout))
    }
}

// ---------------------------------------------------------------------------------------------
// The `tracing` layer.

/// `sentry-tracing`'s error and breadcrumb layers, for the events that concern Sentry.
pub(crate) struct SentryEventsLayer {
    errors: ErrorLayer,
    breadcrumbs: BreadcrumbLayer,
}

/// The layer the log pipeline adds to the subscriber.
pub(crate) fn events_layer() -> SentryEventsLayer {
    SentryEventsLayer {
        errors: ErrorLayer::new(),
        breadcrumbs: BreadcrumbLayer::new(),
    }
}

impl<S> Layer<S> for SentryEventsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &TracingEvent<'_>, ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > TracingLevel::INFO
            || meta.target() == ACCESS_TARGET
            || meta.target() == crate::core::names::EXPORT_TARGET
            || !Hub::with_active(|_| true)
        {
            return;
        }
        if level == TracingLevel::ERROR {
            self.errors.on_event(event, ctx);
        } else {
            self.breadcrumbs.on_event(event, ctx);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per request.

thread_local! {
    /// Whether this thread is polling a request of an instance with Sentry on.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The stack of the last panic on this thread while armed.
    static PANIC_STACK: RefCell<Option<Stacktrace>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ARMED.with(Cell::get) {
                let stack =
                    ::sentry::integrations::backtrace::current_stacktrace().map(trim_panic_frames);
                PANIC_STACK.with(|slot| {
                    if let Ok(mut slot) = slot.try_borrow_mut() {
                        *slot = stack;
                    }
                });
            }
            previous(info);
        }));
    });
}

/// Removes the frames of the panic machinery (and of this hook) from the top of the stack.
fn trim_panic_frames(mut stack: Stacktrace) -> Stacktrace {
    // Frames are outermost first: the machinery is at the end.
    let is_machinery = |f: &Frame| {
        f.function.as_deref().is_some_and(|name| {
            [
                "core::panicking::",
                "std::panicking::begin_panic",
                "std::panicking::panic_",
                "std::panicking::rust_panic",
                "rust_begin_unwind",
                "__rustc::rust_begin_unwind",
                "std::sys::backtrace::__rust_end_short_backtrace",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        })
    };
    if let Some(first) = stack.frames.iter().position(is_machinery) {
        stack.frames.truncate(first);
    }
    stack
}

/// The Sentry side of one request: its hub, and whether an error event was captured on it.
pub(crate) struct RequestSentry {
    hub: Arc<Hub>,
    captured: Arc<AtomicBool>,
    panic_stack: Mutex<Option<Stacktrace>>,
}

/// The request data attached to the events captured on a request's hub.
struct RequestData {
    method: &'static str,
    url: Option<Url>,
    headers: HeaderMap,
}

/// What a request is, for [`RequestSentry::start`].
pub(crate) struct RequestInfo<'a> {
    pub(crate) headers: &'a HeaderMap,
    pub(crate) uri: &'a http::Uri,
    pub(crate) method: &'static str,
    pub(crate) route: &'a str,
    pub(crate) correlation_id: &'a str,
    /// (trace ID, span ID) of the request span.
    pub(crate) ids: Option<(u128, u64)>,
}

impl RequestSentry {
    /// A hub for the request, with its tags, transaction, trace context and request data.
    pub(crate) fn start(state: &SentryState, info: RequestInfo<'_>) -> RequestSentry {
        let hub = Arc::new(Hub::new_from_top(&state.hub));
        let captured = Arc::new(AtomicBool::new(false));
        let data = RequestData {
            method: info.method,
            url: request_url(info.headers, info.uri),
            headers: info.headers.clone(),
        };
        let flag = captured.clone();
        hub.configure_scope(|scope| {
            scope.set_tag("correlation_id", info.correlation_id);
            scope.set_tag("http.request.method", info.method);
            scope.set_tag("http.route", info.route);
            scope.set_transaction(Some(&transaction_name(info.method, info.route)));
            if let Some((trace_id, span_id)) = info.ids {
                let mut hex = String::with_capacity(32);
                crate::core::escape::push_hex(&mut hex, &trace_id.to_be_bytes());
                scope.set_tag("trace_id", hex);
                scope.set_context(
                    "trace",
                    Context::Trace(Box::new(TraceContext {
                        trace_id: TraceId::from(trace_id.to_be_bytes()),
                        span_id: SpanId::from(span_id.to_be_bytes()),
                        op: Some("http.server".into()),
                        ..Default::default()
                    })),
                );
            }
            scope.add_event_processor(move |mut event| {
                if event.level >= Level::Error {
                    flag.store(true, Ordering::Relaxed);
                }
                if event.request.is_none() {
                    event.request = Some(data.to_request());
                }
                Some(event)
            });
        });
        RequestSentry {
            hub,
            captured,
            panic_stack: Mutex::new(None),
        }
    }

    /// Runs `f` with the request's hub current (and the panic hook armed).
    pub(crate) fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        Hub::run(self.hub.clone(), || {
            let was_armed = ARMED.with(|a| a.replace(true));
            let out = f();
            ARMED.with(|a| a.set(was_armed));
            if let Some(stack) = PANIC_STACK.with(|s| s.try_borrow_mut().ok()?.take())
                && let Ok(mut slot) = self.panic_stack.lock()
            {
                *slot = Some(stack);
            }
            out
        })
    }

    /// Reports a failed request, unless an error event was captured on its hub already.
    pub(crate) fn finish(
        &self,
        outcome: Outcome,
        panic_message: Option<&str>,
        method: &str,
        route: &str,
    ) {
        if !outcome.is_error() || self.captured.load(Ordering::Relaxed) {
            return;
        }
        let mut event = Event {
            level: Level::Error,
            logger: Some("mercenary_obs".into()),
            ..Default::default()
        };
        let shown_route = if route.is_empty() {
            "(unmatched route)"
        } else {
            route
        };
        if let Some(status) = outcome.status() {
            event.tags.insert(
                "http.response.status_code".into(),
                status_str(status).into(),
            );
            event.contexts.insert(
                "response".into(),
                Context::Response(Box::new(::sentry::protocol::ResponseContext {
                    status_code: Some(u64::from(status.as_u16())),
                    ..Default::default()
                })),
            );
        }
        event
            .tags
            .insert("error.type".into(), outcome.error_type().into());
        match outcome {
            Outcome::Panicked => {
                let message = panic_message.unwrap_or("panic");
                let stacktrace = self.panic_stack.lock().ok().and_then(|mut s| s.take());
                event.exception = vec![Exception {
                    ty: "panic".into(),
                    value: Some(message.to_string()),
                    stacktrace,
                    mechanism: Some(Mechanism {
                        ty: "panic".into(),
                        handled: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]
                .into();
                event.message = Some(format!("panic in {method} {shown_route}: {message}"));
            }
            Outcome::Failed(error_type) => {
                event.message = Some(format!(
                    "{method} {shown_route} failed: the service returned Err({error_type})"
                ));
            }
            _ => {
                let status = outcome.status().map_or("", status_str);
                event.message = Some(format!("{method} {shown_route} answered {status}"));
            }
        }
        self.hub.capture_event(event);
    }
}

fn transaction_name(method: &str, route: &str) -> String {
    if route.is_empty() {
        method.to_string()
    } else {
        format!("{method} {route}")
    }
}

/// `scheme://host/path` of a request, without its query string.
fn request_url(headers: &HeaderMap, uri: &http::Uri) -> Option<Url> {
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(http::header::HOST)?.to_str().ok())?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let mut url = Url::parse(&format!("{scheme}://{host}")).ok()?;
    url.set_path(uri.path());
    Some(url)
}

impl RequestData {
    fn to_request(&self) -> Request {
        let mut headers = Map::new();
        for (name, value) in &self.headers {
            if name == http::header::COOKIE {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_string())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        Request {
            url: self.url.clone(),
            method: Some(self.method.to_string()),
            headers,
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Redaction.

fn redact_event(r: &Redactor, mut event: Event<'static>) -> Event<'static> {
    let critical = matches!(
        event.contexts.get(FIELDS_CONTEXT),
        Some(Context::Other(fields)) if fields.get("critical") == Some(&Value::Bool(true))
    );
    if critical {
        event.level = Level::Fatal;
    }
    for (key, value) in event.tags.iter_mut() {
        if r.is_sensitive(key) {
            *value = REDACTED.into();
        } else {
            scrub_query(r, value);
        }
    }
    redact_entries(r, event.extra.iter_mut());
    for (_, context) in event.contexts.iter_mut() {
        if let Context::Other(fields) = context {
            redact_entries(r, fields.iter_mut());
        }
    }
    if let Some(message) = &mut event.message {
        scrub_query(r, message);
    }
    for exception in event.exception.values.iter_mut() {
        if let Some(value) = &mut exception.value {
            scrub_query(r, value);
        }
    }
    if let Some(request) = &mut event.request {
        if let Some(url) = &mut request.url {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
        }
        request.query_string = None;
        request.cookies = None;
        request.data = None;
        for (name, value) in request.headers.iter_mut() {
            if r.is_sensitive(name) {
                *value = REDACTED.into();
            } else {
                scrub_query(r, value);
            }
        }
        for (name, value) in request.env.iter_mut() {
            if r.is_sensitive(name) {
                *value = REDACTED.into();
            }
        }
    }
    for crumb in event.breadcrumbs.values.iter_mut() {
        redact_breadcrumb(r, crumb);
    }
    event
}

fn redact_breadcrumb(r: &Redactor, crumb: &mut Breadcrumb) {
    if let Some(message) = &mut crumb.message {
        scrub_query(r, message);
    }
    redact_entries(r, crumb.data.iter_mut());
}

fn redact_entries<'a>(r: &Redactor, entries: impl Iterator<Item = (&'a String, &'a mut Value)>) {
    for (key, value) in entries {
        if r.is_sensitive(key) {
            *value = Value::String(REDACTED.into());
        } else {
            redact_value(r, value);
        }
    }
}

fn redact_value(r: &Redactor, value: &mut Value) {
    match value {
        Value::Object(map) => redact_entries(r, map.iter_mut()),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(r, v)),
        Value::String(s) => scrub_query(r, s),
        _ => {}
    }
}

/// Replaces the values of sensitive parameters of a query string in `text` (`?token=…`).
fn scrub_query(r: &Redactor, text: &mut String) {
    let Some(q) = text.find('?') else { return };
    if !text[q..].contains('=') {
        return;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..=q]);
    let mut rest = &text[q + 1..];
    loop {
        let end = rest
            .find(|c: char| c == '&' || c == '#' || c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        let (pair, tail) = rest.split_at(end);
        match pair.split_once('=') {
            Some((name, _)) if r.is_sensitive(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ => out.push_str(pair),
        }
        match tail.chars().next() {
            Some('&') => {
                out.push('&');
                rest = &tail[1..];
            }
            _ => {
                out.push_str(tail);
                break;
            }
        }
    }
    *text = out;
}

// ---------------------------------------------------------------------------------------------
// The transport.

/// The drop counters, one per reason.
#[derive(Clone)]
struct DropCounters {
    queue_full: prometheus::IntCounter,
    rate_limited: prometheus::IntCounter,
    send_failed: prometheus::IntCounter,
    shut_down: prometheus::IntCounter,
}

impl DropCounters {
    fn new(vec: &IntCounterVec) -> Self {
        Self {
            queue_full: vec.with_label_values(&["queue_full"]),
            rate_limited: vec.with_label_values(&["rate_limited"]),
            send_failed: vec.with_label_values(&["send_failed"]),
            shut_down: vec.with_label_values(&["shut_down"]),
        }
    }
}

/// Events in an envelope (the unit the counters count).
fn events_in(envelope: &Envelope) -> u64 {
    envelope
        .items()
        .filter(|item| {
            matches!(
                item,
                ::sentry::protocol::EnvelopeItem::Event(_)
                    | ::sentry::protocol::EnvelopeItem::Transaction(_)
            )
        })
        .count() as u64
}

struct HttpTransportFactory {
    queue_size: usize,
    timeout: Duration,
    dropped: DropCounters,
}

impl TransportFactory for HttpTransportFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(HttpTransport::start(
            options,
            self.queue_size,
            self.timeout,
            self.dropped.clone(),
        ))
    }
}

/// Envelopes queued or being sent, and a condition variable to wait for none.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Pending {
    fn add(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
    }

    fn done(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.idle.notify_all();
            }
        }
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut n) = self.count.lock() else {
            return false;
        };
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = match self.idle.wait_timeout(n, left) {
                Ok((n, _)) => n,
                Err(_) => return false,
            };
        }
        true
    }
}

/// A bounded queue in front of one thread that posts envelopes with `ureq`.
struct HttpTransport {
    sender: Mutex<Option<SyncSender<Envelope>>>,
    pending: Arc<Pending>,
    dropped: DropCounters,
}

impl HttpTransport {
    fn start(
        options: TransportOptions,
        queue_size: usize,
        timeout: Duration,
        dropped: DropCounters,
    ) -> Self {
        let (tx, rx) = sync_channel(queue_size);
        let pending = Arc::new(Pending::default());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(options.user_agent.as_ref())
            .max_idle_connections(2)
            .build()
            .into();
        let worker = Worker {
            agent,
            url: options.dsn.envelope_api_url().to_string(),
            auth: options.dsn.to_auth(Some(&options.user_agent)).to_string(),
            pending: pending.clone(),
            dropped: dropped.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("mercenary-obs-sentry".into())
            .spawn(move || worker.run(rx));
        Self {
            // Without a thread, every event is dropped and counted.
            sender: Mutex::new(spawned.ok().map(|_| tx)),
            pending,
            dropped,
        }
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        let events = events_in(&envelope);
        let Ok(sender) = self.sender.lock() else {
            return;
        };
        let Some(sender) = sender.as_ref() else {
            self.dropped.shut_down.inc_by(events);
            return;
        };
        self.pending.add();
        match sender.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.pending.done();
                self.dropped.queue_full.inc_by(events);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.done();
                self.dropped.shut_down.inc_by(events);
            }
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.pending.wait_idle(timeout)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        // The thread ends once the queue is empty; it is not waited for.
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        flushed
    }
}

struct Worker {
    agent: ureq::Agent,
    url: String,
    auth: String,
    pending: Arc<Pending>,
    dropped: DropCounters,
}

impl Worker {
    fn run(self, rx: Receiver<Envelope>) {
        let mut limiter = RateLimiter::new();
        for envelope in rx {
            let events = events_in(&envelope);
            let category = if events > 0 {
                RateLimitingCategory::Error
            } else {
                RateLimitingCategory::Any
            };
            if limiter.is_disabled(category).is_some() {
                self.dropped.rate_limited.inc_by(events);
            } else {
                self.send(&envelope, events, &mut limiter);
            }
            self.pending.done();
        }
    }

    fn send(&self, envelope: &Envelope, events: u64, limiter: &mut RateLimiter) {
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.dropped.send_failed.inc_by(events);
            return;
        }
        let response = self
            .agent
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header("Content-Type", "application/x-sentry-envelope")
            .send(&body[..]);
        let mut response = match response {
            Ok(response) => response,
            Err(_) => {
                self.dropped.send_failed.inc_by(events);
                return;
            }
        };
        let header = |name: &str| response.headers().get(name)?.to_str().ok();
        let status = response.status().as_u16();
        if let Some(limits) = header("x-sentry-rate-limits") {
            limiter.update_from_sentry_header(limits);
        } else if let Some(retry_after) = header("retry-after") {
            limiter.update_from_retry_after(retry_after);
        } else if status == 429 {
            limiter.update_from_429();
        }
        // Read (a bounded amount of) the body so the connection can be reused.
        let _ = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec();
        if status == 429 {
            self.dropped.rate_limited.inc_by(events);
        } else if !(200..300).contains(&status) {
            self.dropped.send_failed.inc_by(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_of_sensitive_parameters_are_scrubbed() {
        let r = Redactor::new(crate::core::redact::DEFAULT_SENSITIVE);
        let mut s = "GET /a?token=abc&x=1&api_key=zz#frag done".to_string();
        scrub_query(&r, &mut s);
        assert_eq!(
            s,
            "GET /a?token=[REDACTED]&x=1&api_key=[REDACTED]#frag done"
        );
        let mut plain = "no query here".to_string();
        scrub_query(&r, &mut plain);
        assert_eq!(plain, "no query here");
    }

    #[test]
    fn panic_machinery_is_trimmed() {
        let frame = |f: &str| Frame {
            function: Some(f.into()),
            ..Default::default()
        };
        let stack = Stacktrace {
            frames: vec![
                frame("main"),
                frame("app::handler"),
                frame("std::panicking::begin_panic"),
                frame("mercenary_obs::sentry::install_panic_hook"),
            ],
            ..Default::default()
        };
        let trimmed = trim_panic_frames(stack);
        assert_eq!(trimmed.frames.len(), 2);
    }
}
