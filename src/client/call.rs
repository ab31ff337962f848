//! [`ClientCall`]: one outgoing call, from its headers to its recording, shared by the adapters.
//!
//! The CLIENT span is recorded here directly (IDs, attributes, times) and handed to the tail
//! sampler when the call ends, rather than opened as a `tracing` span: nothing logs inside it,
//! and a `tracing` span would cost a registry entry, every layer's hooks and a second
//! recording of the same data, for a span whose parent, attributes and end the call knows.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use opentelemetry::trace::SpanKind;
use opentelemetry::{KeyValue, Value};

use super::ClientState;
use super::metrics::CallLabels;
use super::target::{Target, itoa_u16};
use crate::context::current::{add_exemplar, call_context, mark_downstream, mark_error};
use crate::core::exemplar::PendingExemplar;
use crate::core::grpc::{GrpcCode, rpc_method};
use crate::core::http::{method_label, status_str};
use crate::core::ids::{new_span_id, new_trace_id};
use crate::traces::propagation::{format_context, parse_traceparent, parse_tracestate};
use crate::traces::record::{FinishedSpan, LazyName};
use crate::traces::sampler::RootInfo;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// The CLIENT span of a call, while it runs.
struct ClientSpan {
    trace_id: u128,
    span_id: u64,
    local_root: u64,
    /// The current span when the call was made (`None`: the call is a root of its own).
    parent: Option<(u64, tracing::Span)>,
    /// The root's info, when the call is a root of its own.
    root: Option<RootInfo>,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    error: bool,
}

/// One outgoing call in flight: its CLIENT span and what its metric needs. Finished once, with
/// a response or an error; dropped before that (the caller gave up), it is recorded once with
/// `error_type="cancelled"`.
pub(crate) struct ClientCall {
    state: Arc<ClientState>,
    /// `None` without a trace context of ours (no `mercenary_obs` subscriber current).
    span: Option<ClientSpan>,
    start: Instant,
    method: &'static str,
    address: Arc<str>,
    /// `None` when the URI has no host.
    port: Option<u16>,
    /// A gRPC call: its `package.Service/Method` (`_OTHER` when the path has another shape).
    rpc: Option<Box<str>>,
    done: bool,
}

impl ClientCall {
    /// Starts the CLIENT span (a child of the current span, or a root of its own) and writes
    /// the propagation headers into `headers`: `traceparent` (the CLIENT span as parent, with
    /// the sampled flag this service already knows), the upstream's validated `tracestate`, and
    /// the correlation ID (unless the caller set that header itself).
    pub(crate) fn start(
        state: &Arc<ClientState>,
        method: &Method,
        target: &Target<'_>,
        headers: &mut HeaderMap,
        grpc: bool,
    ) -> Self {
        let (method, _) = method_label(method);
        let rpc: Option<Box<str>> =
            grpc.then(|| rpc_method(target.path).unwrap_or("_OTHER").into());
        let address: Arc<str> = Arc::from(target.address().as_ref());
        let port = target.port();
        let span = open_span(state);
        let span = match span {
            Some((mut span, correlation_id, root)) => {
                let sampled = match &state.sampler {
                    Some(sampler) => sampler.propagated_sampled(span.trace_id, &root),
                    None => root.remote_sampled.unwrap_or(false),
                };
                headers.insert(
                    TRACEPARENT.clone(),
                    format_context(span.trace_id, span.span_id, sampled),
                );
                match root
                    .tracestate
                    .as_deref()
                    .and_then(|t| HeaderValue::from_str(t).ok())
                {
                    Some(ts) => {
                        headers.insert(TRACESTATE.clone(), ts);
                    }
                    None => drop_invalid_tracestate(headers),
                }
                if let Some(id) = &correlation_id
                    && !headers.contains_key(&state.request_id_header)
                    && let Ok(value) = HeaderValue::from_str(id)
                {
                    headers.insert(state.request_id_header.clone(), value);
                }
                if state.sampler.is_some() {
                    span.attributes.reserve(6);
                    match &rpc {
                        Some(rpc) => span.attributes.extend([
                            KeyValue::new("rpc.system.name", "grpc"),
                            KeyValue::new("rpc.method", rpc.to_string()),
                        ]),
                        None => span.attributes.extend([
                            KeyValue::new("http.request.method", method),
                            KeyValue::new("url.full", target.url_full()),
                        ]),
                    }
                    if let Some(port) = port {
                        span.attributes.extend([
                            KeyValue::new("server.address", Value::from(address.clone())),
                            KeyValue::new("server.port", i64::from(port)),
                        ]);
                    }
                    Some(span)
                } else {
                    None
                }
            }
            None => {
                // No trace of ours to continue: never pass on a context we cannot vouch for.
                if headers
                    .get(&TRACEPARENT)
                    .is_some_and(|v| parse_traceparent(v.as_bytes()).is_none())
                {
                    headers.remove(&TRACEPARENT);
                    headers.remove(&TRACESTATE);
                }
                drop_invalid_tracestate(headers);
                None
            }
        };
        ClientCall {
            state: state.clone(),
            span,
            start: Instant::now(),
            method,
            address,
            port,
            rpc,
            done: false,
        }
    }

    /// The response head arrived. An HTTP call is recorded now (see [`Self::finish_response`]);
    /// a gRPC call too when the head carries its status (trailers-only, or an HTTP error),
    /// else it is handed back, to be finished by its body at the trailers.
    pub(crate) fn finish_head(mut self, status: StatusCode, headers: &HeaderMap) -> Option<Self> {
        if self.rpc.is_none() {
            self.finish_response(status, headers);
            return None;
        }
        self.read_traceresponse(headers);
        let code = GrpcCode::from_headers(headers)
            .or_else(|| (status != StatusCode::OK).then(|| GrpcCode::from_http(status)));
        match code {
            Some(code) => {
                self.finish_grpc(code);
                None
            }
            None => Some(self),
        }
    }

    /// A gRPC call ended with `code` (from the trailers, or the head): server faults are
    /// errors, the others not (as on the server side).
    pub(crate) fn finish_grpc(mut self, code: GrpcCode) {
        self.done = true;
        let error_type = if code.is_server_fault() {
            code.name()
        } else {
            ""
        };
        if let Some(span) = &mut self.span {
            span.attributes
                .push(KeyValue::new("rpc.response.status_code", code.name()));
            if !error_type.is_empty() {
                span.attributes
                    .push(KeyValue::new("error.type", error_type));
            }
            span.error = code.is_server_fault();
        }
        self.observe(code.name(), error_type);
        self.record_span();
    }

    /// The response head of an HTTP call arrived: records the status, reads `traceresponse`,
    /// observes the duration. 4xx and 5xx set `error.type`; 5xx also marks the span as an error
    /// (which keeps the trace); 4xx do not, like on the server side (most are expected answers).
    pub(crate) fn finish_response(mut self, status: StatusCode, headers: &HeaderMap) {
        self.done = true;
        let code = status_str(status);
        let error_type = if status.as_u16() >= 400 { code } else { "" };
        if let Some(span) = &mut self.span {
            span.attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if !error_type.is_empty() {
                span.attributes
                    .push(KeyValue::new("error.type", error_type));
            }
            span.error = status.is_server_error();
        }
        self.read_traceresponse(headers);
        self.observe(code, error_type);
        self.record_span();
    }

    /// A sampled `traceresponse` for this trace: the downstream kept it, so the local root does.
    fn read_traceresponse(&mut self, headers: &HeaderMap) {
        if let Some(span) = &mut self.span
            && let Some(value) = headers.get(&TRACERESPONSE)
            && let Some(response) = parse_traceparent(value.as_bytes())
            && response.trace_id == span.trace_id
            && response.sampled
        {
            match (&span.parent, &mut span.root) {
                (Some((_, parent)), _) => mark_downstream(parent),
                (None, Some(root)) => root.downstream = true,
                (None, None) => {}
            }
        }
    }

    /// The call failed before a response: `error_type` names why, and the span is an error.
    pub(crate) fn finish_error(mut self, error_type: &'static str) {
        self.done = true;
        if let Some(span) = &mut self.span {
            span.attributes
                .push(KeyValue::new("error.type", error_type));
            span.error = true;
        }
        let status = if self.rpc.is_some() {
            "UNAVAILABLE"
        } else {
            ""
        };
        self.observe(status, error_type);
        self.record_span();
    }

    /// Observes the call's duration; the exemplar goes to the CLIENT span's local root (the
    /// request's, or its own when the call is a root).
    fn observe(&mut self, status: &'static str, error_type: &str) {
        let port = self.port.map(itoa_u16);
        let port = port.as_ref().map_or("", |p| p.as_str());
        let seconds = self.start.elapsed().as_secs_f64();
        let pending = if let Some(rpc) = &self.rpc {
            self.state.rpc.observe(
                &["grpc", rpc, status, error_type, &self.address, port],
                seconds,
            )
        } else {
            self.state.metrics.observe(
                &CallLabels {
                    method: self.method,
                    address: &self.address,
                    port,
                    status,
                    error_type,
                },
                seconds,
            )
        };
        if let Some(span) = &mut self.span {
            let pending = PendingExemplar {
                span_id: span.span_id,
                ..pending
            };
            match (&span.parent, &mut span.root) {
                (Some((_, parent)), _) => add_exemplar(parent, pending),
                (None, Some(root)) => root.exemplars.push(pending),
                (None, None) => {}
            }
        }
    }

    /// Hands the finished CLIENT span to the tail sampler; an error also tells the local root,
    /// for the `traceresponse` its request answers with.
    fn record_span(&mut self) {
        let (Some(span), Some(sampler)) = (self.span.take(), &self.state.sampler) else {
            return;
        };
        if span.error
            && let Some((_, parent)) = &span.parent
        {
            mark_error(parent);
        }
        let end = SystemTime::now();
        let finished = FinishedSpan {
            trace_id: span.trace_id,
            span_id: span.span_id,
            parent_span_id: span.parent.as_ref().map_or(0, |(id, _)| *id),
            parent_is_remote: false,
            name: match &self.rpc {
                Some(rpc) => Cow::Owned(rpc.to_string()),
                None => Cow::Borrowed("HTTP"),
            },
            kind: SpanKind::Client,
            start: span.start,
            end,
            attributes: span.attributes,
            events: Vec::new(),
            error: span.error,
            error_event: false,
            status_message: None,
            lazy_name: if self.rpc.is_some() {
                LazyName::No
            } else {
                LazyName::Client
            },
        };
        let root = span
            .root
            .map(|r| (r, end.duration_since(span.start).unwrap_or_default()));
        sampler.on_span_end(finished, span.local_root, root, None);
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        if !self.done {
            if let Some(span) = &mut self.span {
                span.attributes
                    .push(KeyValue::new("error.type", "cancelled"));
            }
            let status = if self.rpc.is_some() { "CANCELLED" } else { "" };
            self.observe(status, "cancelled");
            self.record_span();
        }
    }
}

/// The CLIENT span of a call made now, with the correlation ID and the local root's info:
/// a child of the current span of ours, or (with traces on) a root of its own outside any.
fn open_span(state: &ClientState) -> Option<(ClientSpan, Option<Arc<str>>, RootInfo)> {
    let span = |trace_id, span_id, local_root, parent, root| ClientSpan {
        trace_id,
        span_id,
        local_root,
        parent,
        root,
        start: SystemTime::now(),
        attributes: Vec::new(),
        error: false,
    };
    match state.in_scope(call_context) {
        Some(c) => Some((
            span(
                c.trace_id,
                new_span_id(),
                c.local_root,
                Some((c.parent_span_id, c.parent)),
                None,
            ),
            c.correlation_id,
            c.root,
        )),
        None if state.sampler.is_some() => {
            let id = new_span_id();
            let root = RootInfo::default();
            Some((
                span(new_trace_id(), id, id, None, Some(root.clone())),
                None,
                root,
            ))
        }
        None => None,
    }
}

/// Removes a `tracestate` the caller set that breaks the spec's grammar or size.
fn drop_invalid_tracestate(headers: &mut HeaderMap) {
    if headers.contains_key(&TRACESTATE) && parse_tracestate(headers.get_all(&TRACESTATE)).is_none()
    {
        headers.remove(&TRACESTATE);
    }
}
