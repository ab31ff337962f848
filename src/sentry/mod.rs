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
//! instance with Sentry on; anywhere else it does nothing. When `init()` then installs the JSON
//! panic hook over it without chaining, the JSON hook runs the recorder itself.
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

mod layer;
mod options;
mod panic;
mod redact;
mod request;
mod transport;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use ::sentry::{Client, ClientOptions, Hub};
use prometheus::IntCounterVec;

use crate::core::error::Error;
use crate::core::names::SENTRY_EVENTS_DROPPED;
use crate::core::redact::Redactor;

pub(crate) use layer::events_layer;
pub(crate) use options::{SentryConfig, SentryOptions, resolve};
pub(crate) use panic::panic_stack_recorder;
pub(crate) use request::{RequestInfo, RequestSentry};

use panic::install_panic_hook;
use redact::{redact_breadcrumb, redact_event};
use transport::{DropCounters, HttpTransportFactory};

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
