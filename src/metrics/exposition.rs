//! Prometheus text exposition and the `/metrics` service.

use crate::core::names::CONTENT_TYPE;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus::{Encoder, Registry, TextEncoder};

/// Renders every metric of `registry` in the Prometheus text format.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail for I/O reasons; a family the encoder rejects (only
    // possible with hand-made collectors) is skipped rather than failing the whole scrape.
    for family in registry.gather() {
        let mut one = Vec::new();
        if TextEncoder::new()
            .encode(std::slice::from_ref(&family), &mut one)
            .is_ok()
        {
            out.extend_from_slice(&one);
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A tower `Service` answering `GET /metrics` (and `HEAD`) with the exposition of one instance.
///
/// Any other path answers 404 and any other method 405, so it can be mounted as a whole server
/// or routed to. Obtain it from [`crate::metrics_service`] or [`crate::Obs::metrics_service`].
#[derive(Clone)]
pub struct MetricsService {
    registry: Registry,
}

impl MetricsService {
    /// The service answering with the exposition of `registry`.
    pub(crate) fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

impl std::fmt::Debug for MetricsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<B> tower::Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let response = if req.uri().path() != "/metrics" {
            plain(StatusCode::NOT_FOUND, "not found\n")
        } else if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            r
        } else {
            let body = render(&self.registry);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        };
        ready(Ok(response))
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
