//! [`ClientLayer`]: the client instrumentation as a tower layer, for any
//! `Service<http::Request<B>>` client (hyper-util's `Client`, hyper's `SendRequest` wrapped in
//! a service, a tonic `Channel`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::ClientState;
use super::call::ClientCall;
use super::target::{Target, error_type};
use crate::core::grpc::{GrpcCode, is_grpc};

/// A tower layer instrumenting outgoing HTTP calls: each call gets a CLIENT span in the current
/// trace, `traceparent`/`tracestate`/`x-request-id` headers, and an observation of
/// `http_client_request_duration_seconds`; a sampled `traceresponse` from the downstream keeps
/// the local trace (reason `downstream`).
///
/// Made by [`crate::client_layer`] (the global instance) or [`crate::Obs::client_layer`]. Put
/// it directly around the transport, so each attempt (a retry too) is its own CLIENT span, as
/// the OpenTelemetry HTTP conventions ask. The inner service's error type must implement
/// `std::error::Error` (hyper-util's, hyper's and tonic's do); it is returned unchanged.
///
/// ```
/// use tower::Layer;
///
/// let obs = mercenary_obs::Obs::builder().log_writer(std::io::sink()).build().unwrap();
/// let client = tower::service_fn(|_req: http::Request<String>| async {
///     Ok::<_, std::io::Error>(http::Response::new(String::new()))
/// });
/// let client = obs.client_layer().layer(client);
/// # let _ = client;
/// ```
#[derive(Clone)]
pub struct ClientLayer {
    state: Arc<ClientState>,
}

impl fmt::Debug for ClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLayer").finish_non_exhaustive()
    }
}

impl ClientLayer {
    pub(crate) fn new(state: Arc<ClientState>) -> Self {
        Self { state }
    }
}

impl<S> tower::Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`ClientLayer`] wraps around a client.
#[derive(Clone)]
pub struct ClientService<S> {
    inner: S,
    state: Arc<ClientState>,
}

impl<S> fmt::Debug for ClientService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientService").finish_non_exhaustive()
    }
}

impl<S, B, RB> tower::Service<Request<B>> for ClientService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
    S::Error: std::error::Error + 'static,
{
    type Response = Response<ClientBody<RB>>;
    type Error = S::Error;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let grpc = is_grpc(&parts.headers);
        let call = ClientCall::start(
            &self.state,
            &parts.method,
            &Target::from_uri(&parts.uri),
            &mut parts.headers,
            grpc,
        );
        let req = Request::from_parts(parts, body);
        // The CLIENT span is not entered around the call: nothing of ours logs inside it, and
        // entering costs a registry push and pop (events the transport logs carry the
        // request's span).
        let future = self.inner.call(req);
        ClientFuture {
            future,
            call: Some(call),
        }
    }
}

pin_project! {
    /// The response future of [`ClientService`]: records the call when the response head
    /// arrives or the call fails, or as `cancelled` when dropped before.
    pub struct ClientFuture<F> {
        #[pin]
        future: F,
        call: Option<ClientCall>,
    }
}

impl<F, RB, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: std::error::Error + 'static,
{
    type Output = Result<Response<ClientBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.future.poll(cx));
        let call = this.call.take();
        Poll::Ready(match out {
            Ok(response) => {
                let pending =
                    call.and_then(|c| c.finish_head(response.status(), response.headers()));
                Ok(response.map(|inner| ClientBody {
                    inner,
                    call: pending,
                }))
            }
            Err(e) => {
                if let Some(call) = call {
                    call.finish_error(error_type(&e, std::any::type_name::<E>()));
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// The response body of [`ClientService`]: the inner body, unchanged. For a gRPC call whose
    /// status comes in the trailers, it records the call when they pass (or as `cancelled`
    /// when dropped before them).
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        call: Option<ClientCall>,
    }
}

impl<B> fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody")
            .field("grpc_pending", &self.call.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> ClientBody<B> {
    /// The inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for ClientBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if this.call.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        let code = GrpcCode::from_headers(trailers).unwrap_or(GrpcCode::UNKNOWN);
                        if let Some(call) = this.call.take() {
                            call.finish_grpc(code);
                        }
                    }
                }
                Poll::Ready(None) => {
                    if let Some(call) = this.call.take() {
                        call.finish_grpc(GrpcCode::UNKNOWN);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    if let Some(call) = this.call.take() {
                        call.finish_error(std::any::type_name::<B::Error>());
                    }
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
