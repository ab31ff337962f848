//! Outgoing HTTP calls: a CLIENT span in the current trace, W3C propagation downstream
//! (`traceparent`, `tracestate`, the correlation ID), `http_client_request_duration_seconds`,
//! and downstream-aware keeping (a sampled `traceresponse` keeps the local trace too).
//!
//! [`call::ClientCall`] holds what every adapter shares; [`tower::ClientLayer`] is the adapter
//! for any `Service<http::Request<B>>` client, the `reqwest` module at the crate root the one
//! for `reqwest-middleware`.

pub(crate) mod call;
pub(crate) mod metrics;
pub(crate) mod target;
pub(crate) mod tower;

use std::any::Any;
use std::sync::Arc;

use http::HeaderName;
use tracing_core::Dispatch;

use self::metrics::ClientMetrics;
use crate::metrics::rpc::RpcHistogram;
use crate::traces::sampler::TailSampler;

/// What outgoing calls of one instance need: the metric family, the sampler (for the sampled
/// flag sent downstream), the subscriber to open spans in, the correlation header's name.
pub(crate) struct ClientState {
    pub(crate) metrics: ClientMetrics,
    /// `rpc_client_call_duration_seconds`, for gRPC calls.
    pub(crate) rpc: RpcHistogram,
    /// `None` when traces are off.
    pub(crate) sampler: Option<Arc<TailSampler>>,
    /// The instance's subscriber, when it is not the global one (instances from `build()`).
    pub(crate) scope: Option<Dispatch>,
    /// The header the correlation ID travels in (`x-request-id` by default).
    pub(crate) request_id_header: HeaderName,
    /// Keeps the instance's pipelines running while a client holds this state (held, not read).
    #[allow(dead_code)]
    pub(crate) keep_alive: Option<Arc<dyn Any + Send + Sync>>,
}

impl ClientState {
    /// Runs `f` with the instance's subscriber current (a no-op for the global one).
    #[inline]
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.scope {
            Some(dispatch) => tracing_core::dispatcher::with_default(dispatch, f),
            None => f(),
        }
    }
}
