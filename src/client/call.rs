//! [`ClientCall`]: one outgoing call, from its headers to its recording, shared by the adapters.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::ClientState;
use super::metrics::CallLabels;
use super::target::{Target, itoa_u16};
use crate::context::current::{mark_downstream, outgoing};
use crate::core::http::{method_label, status_str};
use crate::core::names::CLIENT_TARGET;
use crate::traces::propagation::{format_context, parse_traceparent, parse_tracestate};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");

/// The CLIENT span names, in the order of [`crate::core::http::METHODS`].
const SPAN_NAMES: [&str; 10] = [
    "HTTP GET",
    "HTTP HEAD",
    "HTTP POST",
    "HTTP PUT",
    "HTTP DELETE",
    "HTTP CONNECT",
    "HTTP OPTIONS",
    "HTTP TRACE",
    "HTTP PATCH",
    "HTTP",
];

/// One outgoing call in flight: its CLIENT span and what its metric needs. Finished once, with
/// a response or an error; dropped before that (the caller gave up), it is recorded once with
/// `error_type="cancelled"`.
pub(crate) struct ClientCall {
    state: Arc<ClientState>,
    span: tracing::Span,
    start: Instant,
    method: &'static str,
    address: String,
    port: u16,
    /// The trace the call was made in, to match the downstream's `traceresponse`.
    trace_id: Option<u128>,
    done: bool,
}

impl ClientCall {
    /// Opens the CLIENT span (a child of the current span, or a root of its own) and writes the
    /// propagation headers into `headers`: `traceparent` (the CLIENT span as parent, with the
    /// sampled flag this service already knows), the upstream's validated `tracestate`, and
    /// the correlation ID (unless the caller set that header itself).
    pub(crate) fn start(
        state: &Arc<ClientState>,
        method: &Method,
        target: &Target<'_>,
        headers: &mut HeaderMap,
    ) -> Self {
        let (method, method_idx) = method_label(method);
        let address = target.address().into_owned();
        let port = target.port();
        let span = state.in_scope(|| {
            tracing::info_span!(
                target: CLIENT_TARGET,
                "HTTP",
                otel.name = SPAN_NAMES[method_idx],
                otel.kind = "client",
                "http.request.method" = method,
                "server.address" = address.as_str(),
                "server.port" = port,
                "url.full" = target.url_full(),
                "http.response.status_code" = tracing::field::Empty,
                "error.type" = tracing::field::Empty,
                "otel.status_code" = tracing::field::Empty,
            )
        });
        let trace_id = match outgoing(&span) {
            Some(out) => {
                let sampled = match &state.sampler {
                    Some(sampler) => sampler.propagated_sampled(out.trace_id, &out.root),
                    None => out.root.remote_sampled.unwrap_or(false),
                };
                headers.insert(
                    TRACEPARENT.clone(),
                    format_context(out.trace_id, out.span_id, sampled),
                );
                match out
                    .root
                    .tracestate
                    .as_deref()
                    .and_then(|t| HeaderValue::from_str(t).ok())
                {
                    Some(ts) => {
                        headers.insert(TRACESTATE.clone(), ts);
                    }
                    None => drop_invalid_tracestate(headers),
                }
                if let Some(id) = &out.correlation_id
                    && !headers.contains_key(&state.request_id_header)
                    && let Ok(value) = HeaderValue::from_str(id)
                {
                    headers.insert(state.request_id_header.clone(), value);
                }
                Some(out.trace_id)
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
            trace_id,
            done: false,
        }
    }

    /// The CLIENT span, to enter while the call runs.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The response head arrived: records the status, reads `traceresponse`, observes the
    /// duration. 4xx and 5xx set `error.type`; 5xx also marks the span as an error (which keeps
    /// the trace); 4xx do not, like on the server side (most are expected answers).
    pub(crate) fn finish_response(mut self, status: StatusCode, headers: &HeaderMap) {
        self.done = true;
        let code = status_str(status);
        let error_type = if status.as_u16() >= 400 { code } else { "" };
        self.span
            .record("http.response.status_code", status.as_u16());
        if !error_type.is_empty() {
            self.span.record("error.type", error_type);
        }
        if status.is_server_error() {
            self.span.record("otel.status_code", "ERROR");
        }
        if let (Some(trace_id), Some(value)) = (self.trace_id, headers.get(&TRACERESPONSE))
            && let Some(response) = parse_traceparent(value.as_bytes())
            && response.trace_id == trace_id
            && response.sampled
        {
            mark_downstream(&self.span);
        }
        self.observe(code, error_type);
    }

    /// The call failed before a response: `error_type` names why, and the span is an error.
    pub(crate) fn finish_error(mut self, error_type: &str) {
        self.done = true;
        self.span.record("error.type", error_type);
        self.span.record("otel.status_code", "ERROR");
        self.observe("", error_type);
    }

    fn observe(&self, status: &'static str, error_type: &str) {
        let port = itoa_u16(self.port);
        self.state.metrics.observe(
            &CallLabels {
                method: self.method,
                address: &self.address,
                port: port.as_str(),
                status,
                error_type,
            },
            self.start.elapsed().as_secs_f64(),
        );
    }
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        if !self.done {
            self.span.record("error.type", "cancelled");
            self.observe("", "cancelled");
        }
    }
}

/// Removes a `tracestate` the caller set that breaks the spec's grammar or size.
fn drop_invalid_tracestate(headers: &mut HeaderMap) {
    if headers.contains_key(&TRACESTATE) && parse_tracestate(headers.get_all(&TRACESTATE)).is_none()
    {
        headers.remove(&TRACESTATE);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn span_names_follow_the_method_table() {
        for (name, method) in super::SPAN_NAMES.iter().zip(crate::core::http::METHODS) {
            match method {
                "_OTHER" => assert_eq!(*name, "HTTP"),
                m => assert_eq!(*name, format!("HTTP {m}")),
            }
        }
    }
}
