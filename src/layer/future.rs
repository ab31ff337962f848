//! [`ResponseFuture`]: classify, record, log; and record a dropped request once, as cancelled.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;

use super::abuse::{ClientKey, Reason, Report};
use super::state::RequestState;
use super::{RequestInfo, ResponseBody};
use crate::context::handoff::with_access_extra;
use crate::context::layer::SpanContext;
use crate::core::grpc::{GrpcCode, rpc_method};
use crate::core::http::status_str;
use crate::core::names::{ACCESS_TARGET, CORRELATION_FIELD, SECURITY_TARGET};
use crate::core::outcome::{Outcome, Severity};
use crate::logging::access::{ACCESS_KEYS, AccessFields, AccessLines};
use crate::traces::record::{REQUEST_END_NAMES, RequestEnd};

/// How a request's access line is written (see [`RequestRecord::finish`]).
#[derive(Clone, Copy)]
enum Access<'a> {
    /// As a `tracing` event.
    Event,
    /// Directly, by the instance's writer.
    Direct(&'a AccessLines),
    /// Not at all: the filter leaves it out.
    Filtered,
}

/// Keeps `http_server_active_requests{http_request_method}` raised while alive.
pub(crate) struct InFlight {
    state: Arc<RequestState>,
    method_idx: usize,
}

impl InFlight {
    fn start(state: Arc<RequestState>, method_idx: usize) -> Self {
        state.red.active[method_idx].inc();
        Self { state, method_idx }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.red.active[self.method_idx].dec();
    }
}

/// The request's trace, for the `traceresponse` header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled_hint: bool,
}

/// The `traceresponse` header (W3C Trace Context Level 2).
static TRACERESPONSE: http::HeaderName = http::HeaderName::from_static("traceresponse");

/// Everything needed to record a request once it ends, whichever way it ends.
pub(crate) struct RequestRecord {
    state: Arc<RequestState>,
    start: Instant,
    header_value: HeaderValue,
    /// The method, route and path, shared with the request span's record.
    info: Arc<RequestInfo>,
    header_entries: String,
    span: tracing::Span,
    trace: Option<TraceIds>,
    /// A gRPC call: recorded in the RPC histogram, classified by `grpc-status`.
    grpc: bool,
    /// The request is seen by the instance's own JSON subscriber
    /// (`RequestState::current_is_own_json`): its INFO access line may be written directly.
    own: bool,
    in_flight: InFlight,
    /// The request's Sentry hub, when Sentry is on.
    #[cfg(feature = "sentry")]
    sentry: Option<crate::sentry::RequestSentry>,
    /// Who sent it, when the suspicious-usage detector is on.
    client: Option<ClientKey>,
}

impl RequestRecord {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        state: Arc<RequestState>,
        start: Instant,
        header_value: HeaderValue,
        info: Arc<RequestInfo>,
        method_idx: usize,
        header_entries: String,
        span: tracing::Span,
        trace: Option<TraceIds>,
        grpc: bool,
        own: bool,
    ) -> Self {
        let in_flight = InFlight::start(state.clone(), method_idx);
        Self {
            state,
            start,
            header_value,
            info,
            header_entries,
            span,
            trace,
            grpc,
            own,
            in_flight,
            #[cfg(feature = "sentry")]
            sentry: None,
            client: None,
        }
    }

    /// Gives the request its own Sentry hub (tags, trace context, request data), when the
    /// instance reports to Sentry.
    #[cfg(feature = "sentry")]
    pub(crate) fn with_sentry(mut self, headers: &http::HeaderMap) -> Self {
        let Some(sentry) = &self.state.sentry else {
            return self;
        };
        let ids = match self.trace {
            Some(t) => Some((t.trace_id, t.span_id)),
            None => self.in_span(|| {
                crate::context::current::with_current_context(|c| (c.trace_id, c.span_id))
            }),
        };
        let correlation_id = self.header_value.to_str().unwrap_or_default();
        let sentry = crate::sentry::RequestSentry::start(
            sentry,
            crate::sentry::RequestInfo {
                headers,
                uri: &self.info.uri,
                method: self.info.method,
                route: self.info.route.as_str(),
                correlation_id,
                ids,
            },
        );
        self.sentry = Some(sentry);
        self
    }

    /// Runs `f` inside the request span, with the instance's subscriber (and the request's
    /// Sentry hub) current.
    pub(crate) fn in_span<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "sentry")]
        if let Some(sentry) = &self.sentry {
            return sentry.run(|| self.state.in_scope(|| self.span.in_scope(f)));
        }
        self.state.in_scope(|| self.span.in_scope(f))
    }

    /// Records the outcome everywhere (histogram, span, access line) and hands back the
    /// in-flight guard, which the response body keeps.
    ///
    /// With `headers` (the response's), it also writes the response headers (see
    /// [`RequestRecord::decorate`]), from the same look at the request span.
    pub(super) fn finish(
        mut self,
        outcome: Outcome,
        panic_message: Option<&str>,
        headers: Option<&mut http::HeaderMap>,
    ) -> InFlight {
        let elapsed = self.start.elapsed();
        // Moved to the response, not cloned: a clone of a value built from a slice allocates.
        let correlation = std::mem::replace(&mut self.header_value, HeaderValue::from_static(""));
        let status = outcome.status();
        let status_label = status.map_or("", status_str);
        let error_type = outcome.error_type();
        let rpc = self.grpc.then(|| self.rpc_status(outcome));
        let exemplar = match rpc {
            Some((method, code)) => {
                self.span.record("rpc.method", method);
                self.span.record("rpc.response.status_code", code.name());
                self.state.rpc.observe(
                    &["grpc", method, code.name(), error_type],
                    elapsed.as_secs_f64(),
                )
            }
            None => self.state.red.observe_duration(
                [
                    self.info.method,
                    self.info.route.as_str(),
                    status_label,
                    error_type,
                ],
                elapsed.as_secs_f64(),
                self.state.traces.is_some(),
            ),
        };
        let end = RequestEnd {
            status: status.map(|s| s.as_u16()),
            error_type,
            error: outcome.is_error(),
            message: panic_message,
            elapsed,
        };
        // A lean request span (the instance's own subscriber, HTTP) hands how it ended to its
        // record as it is, like its other fields; the others record it as `tracing` fields.
        let direct_end = self.own && rpc.is_none();
        if !direct_end {
            self.record_end(end);
        }
        // One look at the request span: the exemplar goes to its local root (published with
        // the trace if it is kept and exported), the root says whether it keeps the trace
        // already (for `traceresponse`), and an INFO access line is written from its context.
        let access = self.access_path(outcome, rpc.is_some());
        let (keeps, written, ended) = crate::context::current::end_request(
            &self.span,
            exemplar,
            direct_end.then_some(end),
            |sc, has_parent| match access {
                Access::Direct(lines) => {
                    self.write_access_line(lines, outcome, elapsed, sc, has_parent)
                }
                Access::Event | Access::Filtered => None,
            },
        );
        if direct_end && !ended {
            self.record_end(end);
        }
        if let Some(headers) = headers {
            self.decorate_headers(headers, correlation, outcome, keeps);
        }
        if written.is_none() && !matches!(access, Access::Filtered) {
            self.in_span(|| self.log_access(outcome, elapsed, panic_message, rpc));
        }
        if let Some(status) = status
            && (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN)
            && self.state.unauthorized_events
        {
            self.in_span(|| self.log_unauthorized(status));
        }
        if let Some(status) = status {
            self.count_suspicious(status);
        }
        #[cfg(feature = "sentry")]
        if let Some(sentry) = &self.sentry {
            match rpc {
                // A gRPC call is named by its method: `gRPC package.Service/Method`.
                Some((method, _)) => sentry.finish(outcome, panic_message, "gRPC", method),
                None => sentry.finish(
                    outcome,
                    panic_message,
                    self.info.method,
                    self.info.route.as_str(),
                ),
            }
        }
        let RequestRecord {
            in_flight, span, ..
        } = self;
        // The request span ends at the response head, like the duration.
        drop(span);
        in_flight
    }

    /// Records how the request ended as the request span's fields.
    fn record_end(&self, end: RequestEnd<'_>) {
        if let Some(status) = end.status {
            self.span.record(REQUEST_END_NAMES[0], status);
        }
        if !end.error_type.is_empty() {
            self.span.record(REQUEST_END_NAMES[1], end.error_type);
        }
        if end.error {
            self.span.record("otel.status_code", "ERROR");
            if let Some(message) = end.message {
                self.span.record("otel.status_message", message);
            }
        }
    }

    /// The `rpc_method` label and the gRPC code of a gRPC call's outcome: the code the client
    /// sees (`CANCELLED` for a call dropped early, the HTTP mapping for a response without
    /// `grpc-status`); a method the server does not implement is `_OTHER`, so paths a client
    /// makes up add no series.
    fn rpc_status(&self, outcome: Outcome) -> (&str, GrpcCode) {
        let code = match outcome {
            Outcome::Grpc(_, code) => code,
            Outcome::Cancelled => GrpcCode::CANCELLED,
            Outcome::Failed(_) | Outcome::Panicked => GrpcCode::UNKNOWN,
            Outcome::Success(s) | Outcome::ClientError(s) | Outcome::ServerError(s) => {
                GrpcCode::from_http(s)
            }
        };
        let method = match rpc_method(self.info.uri.path()) {
            Some(m) if code != GrpcCode::UNIMPLEMENTED => m,
            _ => "_OTHER",
        };
        (method, code)
    }

    /// Notes who sent the request (the suspicious-usage detector's key), from its extensions.
    pub(crate) fn with_client(mut self, extensions: &http::Extensions) -> Self {
        if self.state.abuse.is_some() {
            self.client = ClientKey::from_extensions(extensions);
        }
        self
    }

    /// A principal the response names wins over what the request carried.
    fn note_response_client(&mut self, extensions: &http::Extensions) {
        if self.state.abuse.is_some()
            && let Some(p @ ClientKey::Principal(_)) = ClientKey::from_extensions(extensions)
        {
            self.client = Some(p);
        }
    }

    /// Counts a 401/403 or unmatched-route answer for its client; the one that crosses the
    /// threshold in a minute gives a `suspicious_usage` security event.
    fn count_suspicious(&self, status: StatusCode) {
        let (Some(detector), Some(client)) = (&self.state.abuse, &self.client) else {
            return;
        };
        let reason = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Reason::Unauthorized
        } else if status == StatusCode::NOT_FOUND && self.info.route.as_str().is_empty() {
            Reason::UnmatchedRoute
        } else {
            return;
        };
        if let Some(report) = detector.observe(client, reason) {
            self.in_span(|| log_suspicious(&report, reason));
        }
    }

    /// A `security_event!` of kind `unauthorized` for a 401 or 403 response.
    fn log_unauthorized(&self, status: StatusCode) {
        // What `security_event!(kind = "unauthorized", ...)` expands to.
        tracing::event!(
            target: SECURITY_TARGET,
            tracing::Level::WARN,
            {
                kind = "unauthorized",
                "http.request.method" = self.info.method,
                "http.route" = self.info.route.as_str(),
                "url.path" = self.info.uri.path(),
                "http.response.status_code" = status.as_u16(),
            },
            "security event"
        );
    }

    /// How the access line is written: without a `tracing` event (see `logging::access`) for
    /// an INFO line when the instance has a direct writer, else as an event (a WARNING or
    /// ERROR line, a gRPC call, the `pretty` format, span directives in the filter).
    fn access_path(&self, outcome: Outcome, rpc: bool) -> Access<'_> {
        let Some(lines) = &self.state.access else {
            return Access::Event;
        };
        if !self.own || rpc || outcome.severity() != Severity::Info {
            return Access::Event;
        }
        if self
            .state
            .in_scope(|| tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO))
        {
            Access::Direct(lines)
        } else {
            Access::Filtered
        }
    }

    /// Writes an INFO access line from the request span's context `sc`, exactly as the
    /// formatter would write the event; `None` when the span's context cannot be copied as is
    /// (the event is emitted then).
    fn write_access_line(
        &self,
        lines: &AccessLines,
        outcome: Outcome,
        elapsed: Duration,
        sc: &SpanContext,
        has_parent: bool,
    ) -> Option<()> {
        let status = outcome.status().map(|s| s.as_u16());
        let fields = AccessFields {
            method: self.info.method,
            route: self.info.route.as_str(),
            path: self.info.uri.path(),
            status,
            duration_micros: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            headers: &self.header_entries,
            at: sc.record.as_ref().and_then(|r| r.end),
        };
        // The keys the line writes: span fields under the same keys are left out.
        let in_line =
            |key: &str| ACCESS_KEYS.contains(&key) && (status.is_some() || key != ACCESS_KEYS[3]);
        let ids = sc.ids();
        if ids.is_empty() {
            return None;
        }
        if sc.rendered {
            let text = sc.fields();
            let entries = sc.keys.iter().filter(|(k, _, _)| !in_line(k));
            lines.write(
                &fields,
                ids,
                entries.map(|&(_, start, end)| &text[start as usize..end as usize]),
            );
            return Some(());
        }
        // Not rendered yet: the formatter renders it unless the line shadows every field of a
        // local root; only that case is written here.
        let shadowed = !has_parent
            && sc.record.as_ref().is_some_and(|r| {
                r.field_names()
                    .all(|n| n == CORRELATION_FIELD || in_line(n))
            });
        if !shadowed {
            return None;
        }
        lines.write(&fields, ids, std::iter::empty());
        Some(())
    }

    fn log_access(
        &self,
        outcome: Outcome,
        elapsed: Duration,
        panic_message: Option<&str>,
        rpc: Option<(&str, GrpcCode)>,
    ) {
        let rpc_system = rpc.map(|_| "grpc");
        let rpc_method = rpc.map(|(m, _)| m);
        let rpc_status = rpc.map(|(_, c)| c.name());
        let method = self.info.method;
        let route = self.info.route.as_str();
        let path = self.info.uri.path();
        let status = outcome.status().map(|s| s.as_u16());
        let error_type = Some(outcome.error_type()).filter(|e| !e.is_empty());
        // Whole microseconds, so the number prints short.
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        with_access_extra(&self.header_entries, || match outcome.severity() {
            Severity::Info => tracing::event!(
                target: ACCESS_TARGET,
                tracing::Level::INFO,
                {
                    "http.request.method" = method,
                    "http.route" = route,
                    "url.path" = path,
                    "http.response.status_code" = status,
                    duration_ms,
                    "rpc.system.name" = rpc_system,
                    "rpc.method" = rpc_method,
                    "rpc.response.status_code" = rpc_status,
                },
                "request completed"
            ),
            Severity::Warning => tracing::event!(
                target: ACCESS_TARGET,
                tracing::Level::WARN,
                {
                    "http.request.method" = method,
                    "http.route" = route,
                    "url.path" = path,
                    "http.response.status_code" = status,
                    duration_ms,
                    "error.type" = error_type,
                    "rpc.system.name" = rpc_system,
                    "rpc.method" = rpc_method,
                    "rpc.response.status_code" = rpc_status,
                },
                "request completed"
            ),
            Severity::Error => tracing::event!(
                target: ACCESS_TARGET,
                tracing::Level::ERROR,
                {
                    "http.request.method" = method,
                    "http.route" = route,
                    "url.path" = path,
                    "http.response.status_code" = status,
                    duration_ms,
                    "error.type" = error_type,
                    "exception.message" = panic_message,
                    "rpc.system.name" = rpc_system,
                    "rpc.method" = rpc_method,
                    "rpc.response.status_code" = rpc_status,
                },
                "request completed"
            ),
        });
    }

    /// Writes the response headers of a request that goes on (a gRPC call classified at its
    /// trailers); the others get theirs from [`RequestRecord::finish`].
    fn decorate<B>(&self, response: &mut Response<B>, outcome: Outcome) {
        let keeps = crate::context::current::root_keeps(&self.span);
        let correlation = self.header_value.clone();
        self.decorate_headers(response.headers_mut(), correlation, outcome, keeps);
    }

    /// The correlation ID echoed, and `traceresponse`; `root_keeps`: what the local root learnt
    /// while it ran keeps its trace.
    fn decorate_headers(
        &self,
        headers: &mut http::HeaderMap,
        correlation: HeaderValue,
        outcome: Outcome,
        root_keeps: bool,
    ) {
        headers.insert(self.state.request_id_header.clone(), correlation);
        if let Some(t) = self.trace {
            // Kept for sure: decided up front, failed, or learnt while running (a downstream
            // kept the trace, an ERROR was logged); only a slow request is not known yet.
            let sampled = t.sampled_hint || outcome.is_error() || root_keeps;
            headers.insert(
                TRACERESPONSE.clone(),
                crate::traces::propagation::format_context(t.trace_id, t.span_id, sampled),
            );
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Pending { #[pin] future: F },
        Panicked { payload: Option<Box<dyn Any + Send>> },
        Done,
    }
}

pin_project! {
    /// The response future of [`super::ObsService`].
    ///
    /// When the inner future completes it records the request; when it panics it answers 500
    /// (or re-raises, see `ObsBuilder::catch_panics`); when it is dropped before completing (the
    /// client went away) it records the request once as `cancelled`. Polling it again after it
    /// completed returns `Pending` instead of panicking.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        record: Option<RequestRecord>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(record) = this.project().record.take() {
                drop(record.finish(Outcome::Cancelled, None, None));
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn pending(future: F, record: RequestRecord) -> Self {
        Self {
            state: State::Pending { future },
            record: Some(record),
        }
    }

    pub(crate) fn panicked(payload: Box<dyn Any + Send>, record: RequestRecord) -> Self {
        Self {
            state: State::Panicked {
                payload: Some(payload),
            },
            record: Some(record),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.record.is_none())
            .finish()
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any>"
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(record) = this.record.as_ref() else {
            return Poll::Pending;
        };
        let payload = match this.state.as_mut().project() {
            StateProj::Pending { future } => {
                match record.in_span(|| catch_unwind(AssertUnwindSafe(|| future.poll(cx)))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => {
                        this.state.set(State::Done);
                        let Some(record) = this.record.take() else {
                            return Poll::Pending;
                        };
                        return Poll::Ready(match result {
                            Ok(mut response) if record.grpc => {
                                let status = response.status();
                                // Trailers-only (an error before any message), or a response
                                // without gRPC framing: classified now. Else at the trailers.
                                let code =
                                    GrpcCode::from_headers(response.headers()).or_else(|| {
                                        (status != StatusCode::OK)
                                            .then(|| GrpcCode::from_http(status))
                                    });
                                match code {
                                    Some(code) => {
                                        let outcome = Outcome::Grpc(status, code);
                                        let in_flight = record.finish(
                                            outcome,
                                            None,
                                            Some(response.headers_mut()),
                                        );
                                        Ok(response.map(|b| ResponseBody::new(b, in_flight)))
                                    }
                                    None => {
                                        record.decorate(
                                            &mut response,
                                            Outcome::Grpc(status, GrpcCode::OK),
                                        );
                                        Ok(response.map(|b| ResponseBody::grpc(b, record, status)))
                                    }
                                }
                            }
                            Ok(mut response) => {
                                let mut record = record;
                                record.note_response_client(response.extensions());
                                let outcome = Outcome::from_status(response.status());
                                let in_flight =
                                    record.finish(outcome, None, Some(response.headers_mut()));
                                Ok(response.map(|b| ResponseBody::new(b, in_flight)))
                            }
                            Err(err) => {
                                let outcome = Outcome::Failed(std::any::type_name::<E>());
                                drop(record.finish(outcome, None, None));
                                Err(err)
                            }
                        });
                    }
                    Err(payload) => payload,
                }
            }
            StateProj::Panicked { payload } => match payload.take() {
                Some(p) => p,
                None => return Poll::Pending,
            },
            StateProj::Done => return Poll::Pending,
        };
        this.state.set(State::Done);
        let Some(record) = this.record.take() else {
            return Poll::Pending;
        };
        let catch = record.state.catch_panics;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let in_flight = record.finish(
            Outcome::Panicked,
            Some(panic_text(&*payload)),
            Some(response.headers_mut()),
        );
        if !catch {
            drop(in_flight);
            std::panic::resume_unwind(payload);
        }
        Poll::Ready(Ok(response.map(|()| ResponseBody::empty(in_flight))))
    }
}

/// What `security_event!(kind = "suspicious_usage", ...)` expands to, with the client's kind
/// and keyed hash (never its address or name).
fn log_suspicious(report: &Report, reason: Reason) {
    tracing::event!(
        target: SECURITY_TARGET,
        tracing::Level::WARN,
        {
            kind = "suspicious_usage",
            reason = reason.as_str(),
            "client.kind" = report.kind,
            "client.hash" = report.hash.as_str(),
            count = report.count,
            "window.seconds" = 60,
        },
        "security event"
    );
}
