//! The Sentry side of one request: a [`Hub`] per request carrying its tags, transaction, trace
//! context and request data, made current around every poll, and the one event reported for a
//! failed request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ::sentry::Hub;
use ::sentry::protocol::{
    Context, Event, Exception, Level, Map, Mechanism, Request, SpanId, Stacktrace, TraceContext,
    TraceId, Url,
};
use http::HeaderMap;

use crate::core::http::status_str;
use crate::core::outcome::Outcome;

use super::SentryState;
use super::panic::{ARMED, PANIC_STACK};

/// The Sentry side of one request: its hub, and whether an error event was captured on it.
pub(crate) struct RequestSentry {
    hub: Arc<Hub>,
    captured: Arc<AtomicBool>,
    panic_stack: Mutex<Option<Stacktrace>>,
    /// The request's first error event (a handler's ERROR), held back until the response
    /// status is known so the one event of the request carries it.
    held: Arc<Mutex<Option<Event<'static>>>>,
    /// The response is known: events pass straight through.
    finished: Arc<AtomicBool>,
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
        let held: Arc<Mutex<Option<Event<'static>>>> = Arc::default();
        let finished = Arc::new(AtomicBool::new(false));
        let (hold, done) = (held.clone(), finished.clone());
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
                if event.request.is_none() {
                    event.request = Some(data.to_request());
                }
                if event.level >= Level::Error
                    && !flag.swap(true, Ordering::Relaxed)
                    && !done.load(Ordering::Relaxed)
                    && let Ok(mut slot) = hold.lock()
                {
                    // The request's one event: sent by `finish` with the response status.
                    *slot = Some(event);
                    return None;
                }
                Some(event)
            });
        });
        RequestSentry {
            hub,
            captured,
            panic_stack: Mutex::new(None),
            held,
            finished,
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

    /// Reports a failed request, unless an error event was captured on its hub already; that
    /// one, held back, is completed with the response and sent now.
    pub(crate) fn finish(
        &self,
        outcome: Outcome,
        panic_message: Option<&str>,
        method: &str,
        route: &str,
    ) {
        self.finished.store(true, Ordering::Relaxed);
        if let Some(mut event) = self.take_held() {
            add_response(&mut event, outcome);
            if outcome.is_error() {
                event
                    .tags
                    .insert("error.type".into(), outcome.error_type().into());
            }
            self.send_held(event);
            return;
        }
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
        add_response(&mut event, outcome);
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
            Outcome::Grpc(_, code) => {
                event
                    .tags
                    .insert("rpc.response.status_code".into(), code.name().into());
                event.message = Some(format!("{method} {shown_route} answered {}", code.name()));
            }
            _ => {
                let status = outcome.status().map_or("", status_str);
                event.message = Some(format!("{method} {shown_route} answered {status}"));
            }
        }
        self.hub.capture_event(event);
    }
}

impl RequestSentry {
    fn take_held(&self) -> Option<Event<'static>> {
        self.held.lock().ok()?.take()
    }

    /// Sends an event that already went through the request's scope (tags, breadcrumbs,
    /// request data) straight to the client: the scope is not applied twice.
    fn send_held(&self, event: Event<'static>) {
        if let Some(client) = self.hub.client() {
            client.capture_event(event, None);
        }
    }
}

impl Drop for RequestSentry {
    /// A request that never finished (its future dropped before the response) still sends
    /// the event it held.
    fn drop(&mut self) {
        if let Some(event) = self.take_held() {
            self.send_held(event);
        }
    }
}

/// The response status as a tag and the `response` context.
fn add_response(event: &mut Event<'static>, outcome: Outcome) {
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
