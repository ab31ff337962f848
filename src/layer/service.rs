//! [`ObsService`]: what happens when a request arrives.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};

use super::future::{RequestRecord, ResponseFuture, TraceIds};
use super::state::RequestState;
use super::{RequestInfo, Route, RouteExtractor};
use crate::context::handoff::{
    HandedFields, RequestTrace, take_opened, with_request_fields, with_request_trace,
};
use crate::core::escape::push_json_str;
use crate::core::grpc::is_grpc;
use crate::core::http::method_label;
use crate::core::ids::{CorrelationId, new_span_id, new_trace_id};
use crate::core::names::{REDACTED, REQUEST_TARGET};
use crate::traces::propagation::{parse_traceparent, parse_tracestate};

/// The second header a correlation ID is accepted from.
static ALT_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The W3C trace context headers.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The service [`super::ObsLayer`] wraps around the inner service.
///
/// Its error type is the inner service's: nothing the crate does on the request path fails.
#[derive(Clone)]
pub struct ObsService<S> {
    inner: S,
    state: Arc<RequestState>,
    routes: Option<Arc<dyn RouteExtractor>>,
}

impl<S> fmt::Debug for ObsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObsService")
            .field("scoped", &self.state.scope.is_some())
            .finish_non_exhaustive()
    }
}

impl<S> ObsService<S> {
    pub(crate) fn new(
        inner: S,
        state: Arc<RequestState>,
        routes: Option<Arc<dyn RouteExtractor>>,
    ) -> Self {
        Self {
            inner,
            state,
            routes,
        }
    }

    fn route_of(&self, parts: &http::request::Parts) -> Route {
        if let Some(extractor) = &self.routes {
            return extractor.route(parts).unwrap_or(Route::UNMATCHED);
        }
        #[cfg(feature = "axum")]
        if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
            return Route::from(matched.clone());
        }
        Route::UNMATCHED
    }
}

/// The correlation ID of a request: a valid incoming one, else a fresh one.
fn correlation_of(headers: &HeaderMap, primary: &HeaderName) -> (CorrelationId, HeaderValue) {
    for name in [primary, &ALT_HEADER] {
        if let Some(value) = headers.get(name)
            && let Some(id) = CorrelationId::parse_bytes(value.as_bytes())
        {
            return (id, value.clone());
        }
    }
    let id = CorrelationId::generate();
    let value = id.to_header_value();
    (id, value)
}

/// Pre-renders the configured request headers as access-line entries.
fn render_headers(state: &RequestState, headers: &HeaderMap) -> String {
    let Some(render) = &state.render else {
        return String::new();
    };
    let mut out = String::new();
    for logged in &state.log_headers {
        let Some(value) = headers.get(&logged.name) else {
            continue;
        };
        out.push_str(&logged.prefix);
        if logged.sensitive {
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
        } else {
            match value.to_str() {
                Ok(text) => push_json_str(&mut out, text, render.value_cap),
                Err(_) => push_json_str(
                    &mut out,
                    &String::from_utf8_lossy(value.as_bytes()),
                    render.value_cap,
                ),
            }
        }
    }
    out
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for ObsService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let (mut parts, body) = req.into_parts();
        let (correlation_id, header_value) =
            correlation_of(&parts.headers, &self.state.request_id_header);
        let (method, method_idx) = method_label(&parts.method);
        let route = self.route_of(&parts);
        let header_entries = render_headers(&self.state, &parts.headers);

        let trace_input = self.state.traces.as_ref().map(|t| {
            // Several `traceparent` lines combine (RFC 9110 §5.3) into a value that is not a
            // valid `traceparent`: the trace restarts, as W3C's test suite expects.
            let mut lines = parts.headers.get_all(&TRACEPARENT).iter();
            let parent = match (lines.next(), lines.next()) {
                (Some(v), None) => parse_traceparent(v.as_bytes()),
                _ => None,
            };
            let forced = parts
                .headers
                .get(&t.forced_header)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(t.forced_value.as_bytes()))
                && t.sampler.admit_forced();
            // `tracestate` is meaningful only with a valid `traceparent` (W3C §3.3).
            let tracestate = match parent {
                Some(_) if parts.headers.contains_key(&TRACESTATE) => {
                    parse_tracestate(parts.headers.get_all(&TRACESTATE))
                }
                _ => None,
            };
            RequestTrace {
                trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
                span_id: new_span_id(),
                parent,
                forced,
                tracestate,
            }
        });
        // gRPC calls are POSTs: other methods skip the header lookup.
        let grpc = parts.method == http::Method::POST && is_grpc(&parts.headers);
        let info = Arc::new(RequestInfo {
            method,
            route,
            uri: parts.uri.clone(),
        });
        // Under the instance's own JSON subscriber, the request's fields are handed to it as
        // they are (see `traces::record::RequestFields`); other subscribers (`pretty`, span
        // directives in the filter, a user's own) get them as `tracing` fields.
        let open_span = |lean: bool| {
            let span = if lean {
                tracing::info_span!(
                    target: REQUEST_TARGET,
                    "request",
                    "http.response.status_code" = tracing::field::Empty,
                    "error.type" = tracing::field::Empty,
                    "otel.status_code" = tracing::field::Empty,
                    "otel.status_message" = tracing::field::Empty,
                    "rpc.system.name" = tracing::field::Empty,
                    "rpc.method" = tracing::field::Empty,
                    "rpc.response.status_code" = tracing::field::Empty,
                )
            } else {
                tracing::info_span!(
                    target: REQUEST_TARGET,
                    "request",
                    correlation_id = correlation_id.as_str(),
                    "http.request.method" = method,
                    "http.route" = info.route.as_str(),
                    "url.path" = info.uri.path(),
                    "http.response.status_code" = tracing::field::Empty,
                    "error.type" = tracing::field::Empty,
                    "otel.status_code" = tracing::field::Empty,
                    "otel.status_message" = tracing::field::Empty,
                    "rpc.system.name" = tracing::field::Empty,
                    "rpc.method" = tracing::field::Empty,
                    "rpc.response.status_code" = tracing::field::Empty,
                )
            };
            if grpc {
                // `rpc.method` is recorded when the call ends (an unimplemented method is
                // `_OTHER`); the span is then named by it when kept.
                span.record("rpc.system.name", "grpc");
            }
            span
        };
        let open = |lean: bool| match &trace_input {
            Some(input) => {
                let span = with_request_trace(input.clone(), || open_span(lean));
                (span, take_opened())
            }
            None => (open_span(lean), None),
        };
        let (span, opened, own) = self.state.in_scope(|| {
            let own = self.state.current_is_own_json();
            let (span, opened) = if own {
                let handed = HandedFields {
                    correlation_id: correlation_id.0.clone(),
                    fields: info.clone(),
                };
                with_request_fields(handed, || open(true))
            } else {
                open(false)
            };
            (span, opened, own)
        });
        // The sampled flag a caller sees in `traceresponse`: what is known at the start
        // (an error at the end sets it too).
        let trace = match (opened, &self.state.traces, &trace_input) {
            (Some((trace_id, span_id)), Some(t), Some(input)) => Some(TraceIds {
                trace_id,
                span_id,
                sampled_hint: t.sampler.known_kept(
                    trace_id,
                    input.forced,
                    input.parent.map(|p| p.sampled),
                ),
            }),
            _ => None,
        };
        parts.extensions.insert(correlation_id);
        let record = RequestRecord::new(
            self.state.clone(),
            start,
            header_value,
            info,
            method_idx,
            header_entries,
            span,
            trace,
            grpc,
            own,
        );
        let record = record.with_client(&parts.extensions);
        #[cfg(feature = "sentry")]
        let record = record.with_sentry(&parts.headers);
        let req = Request::from_parts(parts, body);
        let inner = &mut self.inner;
        let called = record.in_span(|| catch_unwind(AssertUnwindSafe(|| inner.call(req))));
        match called {
            Ok(future) => ResponseFuture::pending(future, record),
            Err(payload) => ResponseFuture::panicked(payload, record),
        }
    }
}
