//! What handler code reads from the current span: its context and correlation ID.

use std::cell::Cell;
use std::sync::Arc;

use tracing_core::Dispatch;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use super::layer::SpanContext;
use crate::core::exemplar::{self, PendingExemplar};
use crate::core::ids::CorrelationId;
use crate::traces::record::RequestEnd;
use crate::traces::sampler::RootInfo;

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

thread_local! {
    /// Whether this thread runs code that is not the crate's (a recorded value's `Debug` or
    /// `Display`) while a span's extensions are locked. See [`ForeignCode`].
    static FOREIGN_CODE: Cell<bool> = const { Cell::new(false) };
}

/// Marks, while alive, that this thread runs code that is not the crate's (a field value's
/// `Debug`) with a span's extensions locked. That code may panic, and the panic hook must then
/// not lock them again: a second lock on this thread would deadlock (or, once the lock is
/// poisoned, panic inside the hook, which aborts the process).
///
/// When that code does panic, the mark stays set on this thread: the lock it held is poisoned
/// from then on, so later panics on this thread are written without the span's IDs.
pub(crate) struct ForeignCode {
    was: bool,
    /// Whether the thread was already unwinding when the mark was set.
    unwinding: bool,
}

impl ForeignCode {
    #[inline]
    pub(crate) fn enter() -> Self {
        Self {
            was: FOREIGN_CODE.try_with(|c| c.replace(true)).unwrap_or(true),
            unwinding: std::thread::panicking(),
        }
    }
}

impl Drop for ForeignCode {
    #[inline]
    fn drop(&mut self) {
        let panicked_inside = std::thread::panicking() && !self.unwinding;
        if !panicked_inside {
            let _ = FOREIGN_CODE.try_with(|c| c.set(self.was));
        }
    }
}

/// The IDs of the current span (correlation ID, trace ID, span ID), for the panic hook: `None`
/// outside a span of this crate's subscribers, and whenever reading them could lock a span
/// that this thread holds locked (see [`ForeignCode`]).
pub(crate) fn panic_ids() -> Option<(Option<Arc<str>>, u128, u64)> {
    if FOREIGN_CODE.try_with(Cell::get).unwrap_or(true) {
        return None;
    }
    with_current_context(|c| (c.correlation_id.clone(), c.trace_id, c.span_id))
}

/// Runs `f` on the [`RootInfo`] of `span`'s local root: the span itself or its nearest ancestor
/// that started a trace in this process.
pub(crate) fn mark_root<S>(
    span: &tracing_subscriber::registry::SpanRef<'_, S>,
    f: impl FnOnce(&mut RootInfo),
) where
    S: for<'a> LookupSpan<'a>,
{
    for s in span.scope() {
        let mut ext = s.extensions_mut();
        if let Some(root) = ext.get_mut::<SpanContext>().and_then(|c| c.root.as_mut()) {
            f(root);
            return;
        }
    }
}

/// Runs `f` with `span` as the registry sees it, when it was opened by a subscriber that keeps
/// [`SpanContext`]s.
fn with_registry_span<R>(
    span: &tracing::Span,
    f: impl FnOnce(tracing_subscriber::registry::SpanRef<'_, Registry>) -> Option<R>,
) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        f(registry.span(id)?)
    })
    .flatten()
}

/// Where an outgoing call is made: the current span's trace, its ID (the CLIENT span's
/// parent), its correlation ID and what its local root knows.
pub(crate) struct CallContext {
    pub(crate) trace_id: u128,
    pub(crate) parent_span_id: u64,
    /// The span ID of the current span's local root.
    pub(crate) local_root: u64,
    pub(crate) correlation_id: Option<Arc<str>>,
    /// What the local root knows (forced, the upstream's flag, its `tracestate`).
    pub(crate) root: RootInfo,
    /// The current span, to tell its local root what the call learnt.
    pub(crate) parent: tracing::Span,
}

/// The context of a call made now, when the current span is one of this crate's subscribers.
pub(crate) fn call_context() -> Option<CallContext> {
    let parent = tracing::Span::current();
    let (trace_id, parent_span_id, local_root, correlation_id, root) =
        with_registry_span(&parent, |s| {
            let ext = s.extensions();
            let c = ext.get::<SpanContext>()?;
            let root = match &c.root {
                Some(root) => root.clone(),
                None => s.scope().skip(1).find_map(|a| {
                    a.extensions()
                        .get::<SpanContext>()
                        .and_then(|c| c.root.clone())
                })?,
            };
            Some((
                c.trace_id,
                c.span_id,
                c.local_root,
                c.correlation_id.clone(),
                root,
            ))
        })?;
    Some(CallContext {
        trace_id,
        parent_span_id,
        local_root,
        correlation_id,
        root,
        parent,
    })
}

/// Notes on `span`'s local root that a span of its trace ended as an error.
pub(crate) fn mark_error(span: &tracing::Span) {
    with_registry_span(span, |s| {
        mark_root(&s, |root| root.error_seen = true);
        Some(())
    });
}

/// Notes on `span`'s local root that a downstream service kept this trace (sampling rule
/// `downstream`).
pub(crate) fn mark_downstream(span: &tracing::Span) {
    with_registry_span(span, |s| {
        mark_root(&s, |root| root.downstream = true);
        Some(())
    });
}

/// Attaches an exemplar observed in `span` to `span`'s local root, which publishes it if its
/// trace is kept (its span ID is `span`'s unless the caller set one).
pub(crate) fn add_exemplar(span: &tracing::Span, mut p: PendingExemplar) {
    if !p.is_some() {
        return;
    }
    with_registry_span(span, |s| {
        if p.span_id == 0 {
            p.span_id = s.extensions().get::<SpanContext>()?.span_id;
        }
        mark_root(&s, |root| root.exemplars.push(p));
        Some(())
    });
}

/// Lets metric handles (`Histogram::observe_with_exemplar`...) attach exemplars to the current
/// span's trace.
pub(crate) fn install_exemplar_hook() {
    exemplar::set_attach(|p| add_exemplar(&tracing::Span::current(), p));
}

/// Whether what `span`'s local root learnt while it ran already keeps its trace: a downstream
/// kept it, or an ERROR was logged in it.
pub(crate) fn root_keeps(span: &tracing::Span) -> bool {
    with_registry_span(span, |s| {
        s.scope().find_map(|a| {
            a.extensions()
                .get::<SpanContext>()
                .and_then(|c| c.root.as_ref().map(|r| r.downstream || r.error_seen))
        })
    })
    .unwrap_or(false)
}

/// The end of a request, in one look at its span: attaches the request's exemplar to its local
/// root (see [`add_exemplar`]), tells whether that root already keeps its trace (see
/// [`root_keeps`]), and runs `f` with the span's own context and whether it has a parent.
///
/// `end`: how the request ended, taken by the span's record as it is when it can
/// ([`SpanRecord::end_request`](crate::traces::record::SpanRecord::end_request)); the last
/// value returned is `false` when the caller has to record it as the span's fields instead.
pub(crate) fn end_request<R>(
    span: &tracing::Span,
    mut exemplar: PendingExemplar,
    end: Option<RequestEnd<'_>>,
    f: impl FnOnce(&SpanContext, bool) -> Option<R>,
) -> (bool, Option<R>, bool) {
    with_registry_span(span, |s| {
        let has_parent = s.parent().is_some();
        let (span_id, out, ended) = {
            let mut ext = s.extensions_mut();
            let c = ext.get_mut::<SpanContext>()?;
            let ended = end.is_some_and(|end| match c.record.as_mut() {
                Some(record) => record.end_request(end),
                // Nothing records the span's fields: the JSON lines take the status from the
                // request, not from its span.
                None => true,
            });
            (c.span_id, f(c, has_parent), ended)
        };
        if exemplar.span_id == 0 {
            exemplar.span_id = span_id;
        }
        let mut keeps = false;
        mark_root(&s, |root| {
            if exemplar.is_some() {
                root.exemplars.push(exemplar);
            }
            keeps = root.downstream || root.error_seen;
        });
        Some((keeps, out, ended))
    })
    .unwrap_or((false, None, false))
}
