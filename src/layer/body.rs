//! [`ResponseBody`]: releases the in-flight gauge when the body ends or is dropped, and records
//! a gRPC call when its trailers arrive.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::{InFlight, RequestRecord};
use crate::core::grpc::GrpcCode;
use crate::core::outcome::Outcome;

pin_project! {
    /// The response body: the inner service's body, or an empty one for a panic's 500.
    ///
    /// `http_server_active_requests` counts the request until this body has been sent to the
    /// end, failed, or been dropped (a client that went away mid-stream). A gRPC call whose
    /// status comes in the trailers is recorded when they pass (its duration is the whole
    /// stream's), or once as `cancelled` when the body is dropped before them.
    pub struct ResponseBody<B> {
        #[pin]
        inner: Option<B>,
        in_flight: Option<InFlight>,
        // A gRPC call waiting for its trailers, and its HTTP status (boxed: most bodies are
        // not, and a small body is cheaper to move).
        pending: Option<Box<(RequestRecord, StatusCode)>>,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                drop(pending.0.finish(Outcome::Cancelled, None, None));
            }
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner: Some(inner),
            in_flight: Some(in_flight),
            pending: None,
        }
    }

    pub(crate) fn empty(in_flight: InFlight) -> Self {
        Self {
            inner: None,
            in_flight: Some(in_flight),
            pending: None,
        }
    }

    /// A gRPC response whose status will come in the trailers.
    pub(crate) fn grpc(inner: B, record: RequestRecord, status: StatusCode) -> Self {
        Self {
            inner: Some(inner),
            in_flight: None,
            pending: Some(Box::new((record, status))),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("empty", &self.inner.is_none())
            .field("grpc_pending", &self.pending.is_some())
            .finish()
    }
}

/// Records a pending gRPC call with `outcome`; the body keeps the in-flight guard until it ends.
fn settle(
    pending: &mut Option<Box<(RequestRecord, StatusCode)>>,
    in_flight: &mut Option<InFlight>,
    outcome: impl FnOnce(StatusCode) -> Outcome,
) {
    if let Some(pending) = pending.take() {
        let (record, status) = *pending;
        *in_flight = Some(record.finish(outcome(status), None, None));
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.as_pin_mut() {
            None => {
                this.in_flight.take();
                Poll::Ready(None)
            }
            Some(body) => {
                let polled = body.poll_frame(cx);
                if this.pending.is_some() {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(trailers) = frame.trailers_ref() {
                                let code =
                                    GrpcCode::from_headers(trailers).unwrap_or(GrpcCode::UNKNOWN);
                                settle(this.pending, this.in_flight, |s| Outcome::Grpc(s, code));
                            }
                        }
                        // The stream ended without a status: a protocol error to the client.
                        Poll::Ready(None) => settle(this.pending, this.in_flight, |s| {
                            Outcome::Grpc(s, GrpcCode::UNKNOWN)
                        }),
                        Poll::Ready(Some(Err(_))) => settle(this.pending, this.in_flight, |_| {
                            Outcome::Failed(std::any::type_name::<B::Error>())
                        }),
                        Poll::Pending => {}
                    }
                }
                if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
                    this.in_flight.take();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}
