//! What handler code reads from the current span: its context and correlation ID.

use std::sync::Arc;

use tracing_core::Dispatch;
use tracing_subscriber::registry::LookupSpan;

use super::layer::SpanContext;
use crate::core::ids::CorrelationId;

/// The correlation ID of the request being handled on this task, if any.
///
/// It is read from the current `tracing` span (the request span the layer opens, or any span
/// inside it), so it works in handler code, in child spans, and in tasks spawned with
/// `tracing::Instrument::in_current_span`. Outside a request, or when no `mercenary_obs`
/// subscriber is active, it returns `None`.
///
/// ```
/// assert!(mercenary_obs::correlation_id().is_none());
/// ```
pub fn correlation_id() -> Option<CorrelationId> {
    current_correlation_id().map(CorrelationId)
}

/// The correlation ID of the current span of the current dispatcher.
pub(crate) fn current_correlation_id() -> Option<Arc<str>> {
    with_current_context(|c| c.correlation_id.clone()).flatten()
}

/// Runs `f` with the [`SpanContext`] of the current span, if the current dispatcher keeps them.
pub(crate) fn with_current_context<R>(f: impl FnOnce(&SpanContext) -> R) -> Option<R> {
    let mut f = Some(f);
    tracing_core::dispatcher::get_default(|dispatch: &Dispatch| {
        let id = dispatch.current_span().id()?.clone();
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = registry.span(&id)?;
        let ext = span.extensions();
        let data = ext.get::<SpanContext>()?;
        f.take().map(|f| f(data))
    })
}
