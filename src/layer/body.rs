//! [`ResponseBody`]: releases the in-flight gauge when the body ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::future::InFlight;

pin_project! {
    /// The response body: the inner service's body, or an empty one for a panic's 500.
    ///
    /// `http_server_active_requests` counts the request until this body has been sent to the
    /// end, failed, or been dropped (a client that went away mid-stream).
    pub struct ResponseBody<B> {
        #[pin]
        inner: Option<B>,
        in_flight: Option<InFlight>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner: Some(inner),
            in_flight: Some(in_flight),
        }
    }

    pub(crate) fn empty(in_flight: InFlight) -> Self {
        Self {
            inner: None,
            in_flight: Some(in_flight),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("empty", &self.inner.is_none())
            .finish()
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
