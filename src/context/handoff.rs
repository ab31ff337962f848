//! The hand-off between the tower layer and the subscriber, in one place.
//!
//! The request layer (`crate::layer`) and the layers of the `tracing` subscriber (the span
//! context layer here, the JSON formatter in `crate::logging`) run on the same thread but
//! cannot call each other: `tracing` sits between them, and only field values cross it. Three
//! thread-locals carry what fields cannot, each set and taken within one synchronous call on
//! one thread, so nothing leaks between requests:
//!
//! | what | set by | around | read by |
//! |---|---|---|---|
//! | [`RequestTrace`]: the trace ID, span ID, remote parent and `trace: true` decided from the request headers | the layer ([`with_request_trace`]) | `info_span!` of the request span | the context layer's `on_new_span` ([`take_request_trace`]), for spans with the request target only |
//! | [`HandedFields`]: the request's correlation ID, method, route and path, for a request span opened without them as fields | the layer ([`with_request_fields`]) | the same `info_span!` | the context layer's `on_new_span` ([`take_request_fields`]), for spans with the request target only |
//! | the (trace ID, span ID) the request span got | the context layer ([`set_opened`]) | the same `info_span!` | the layer, right after it ([`take_opened`]), for `traceresponse` |
//! | extra access-line entries (the logged request headers, pre-rendered JSON) | the layer ([`with_access_extra`]) | the access-line event | the JSON formatter ([`push_access_extra`]), for events with the access target only |
//!
//! A subscriber that is not this crate's never takes the first value; the layer clears it
//! after the span is opened, so it cannot be picked up by a later span.

use std::cell::{Cell, RefCell};

use crate::traces::propagation::RemoteParent;
use crate::traces::record::RequestFields;

/// What the tower layer decided about a request's trace before opening its span.
#[derive(Clone, Debug)]
pub(crate) struct RequestTrace {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) parent: Option<RemoteParent>,
    pub(crate) forced: bool,
    /// The validated incoming `tracestate` (only with a valid `traceparent`).
    pub(crate) tracestate: Option<std::sync::Arc<str>>,
}

/// The request's own fields, handed to the context layer instead of being recorded as
/// `tracing` fields (see [`crate::traces::record::RequestFields`]).
pub(crate) struct HandedFields {
    pub(crate) correlation_id: std::sync::Arc<str>,
    pub(crate) fields: std::sync::Arc<dyn RequestFields>,
}

thread_local! {
    /// Layer → context layer, across `info_span!` of the request span.
    static NEXT_REQUEST: Cell<Option<RequestTrace>> = const { Cell::new(None) };
    /// Layer → context layer, across `info_span!` of a request span opened without fields.
    static NEXT_FIELDS: Cell<Option<HandedFields>> = const { Cell::new(None) };
    /// Context layer → layer: the IDs the request span got.
    static OPENED: Cell<Option<(u128, u64)>> = const { Cell::new(None) };
    /// Layer → JSON formatter, across the access-line event.
    static ACCESS_EXTRA: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `open` (which opens the request span) with `trace` handed to the span layer.
#[inline]
pub(crate) fn with_request_trace<R>(trace: RequestTrace, open: impl FnOnce() -> R) -> R {
    NEXT_REQUEST.with(|c| c.set(Some(trace)));
    let out = open();
    NEXT_REQUEST.with(|c| c.set(None));
    out
}

/// Takes what the tower layer handed over (called by the span layer for request spans).
#[inline]
pub(crate) fn take_request_trace() -> Option<RequestTrace> {
    NEXT_REQUEST.with(Cell::take)
}

/// Runs `open` (which opens a request span declared without its own fields) with `fields`
/// handed to the span layer.
#[inline]
pub(crate) fn with_request_fields<R>(fields: HandedFields, open: impl FnOnce() -> R) -> R {
    NEXT_FIELDS.with(|c| c.set(Some(fields)));
    let out = open();
    NEXT_FIELDS.with(|c| drop(c.take()));
    out
}

/// Takes the request fields the tower layer handed over (called by the span layer for request
/// spans).
#[inline]
pub(crate) fn take_request_fields() -> Option<HandedFields> {
    NEXT_FIELDS.with(Cell::take)
}

/// Records the IDs the request span just got (called by the span layer).
#[inline]
pub(crate) fn set_opened(trace_id: u128, span_id: u64) {
    OPENED.with(|c| c.set(Some((trace_id, span_id))));
}

/// The (trace ID, span ID) of the request span opened last on this thread, taken.
#[inline]
pub(crate) fn take_opened() -> Option<(u128, u64)> {
    OPENED.with(Cell::take)
}

/// Runs `emit` with `extra` (`,"k":"v"…`, already escaped) appended to the access line.
#[inline]
pub(crate) fn with_access_extra(extra: &str, emit: impl FnOnce()) {
    if extra.is_empty() {
        emit();
        return;
    }
    let set = ACCESS_EXTRA.with(|e| match e.try_borrow_mut() {
        Ok(mut e) => {
            e.clear();
            e.push_str(extra);
            true
        }
        Err(_) => false,
    });
    emit();
    if set {
        ACCESS_EXTRA.with(|e| {
            if let Ok(mut e) = e.try_borrow_mut() {
                e.clear();
            }
        });
    }
}

/// Appends the access line's extra entries, if the layer set any (called by the formatter).
#[inline]
pub(crate) fn push_access_extra(line: &mut String) {
    ACCESS_EXTRA.with(|e| {
        if let Ok(e) = e.try_borrow() {
            line.push_str(&e);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_trace_is_taken_once_and_cleared_after_the_span() {
        let trace = RequestTrace {
            trace_id: 7,
            span_id: 9,
            parent: None,
            forced: true,
            tracestate: None,
        };
        let taken = with_request_trace(trace.clone(), || {
            (take_request_trace(), take_request_trace())
        });
        assert_eq!(
            taken.0.map(|t| (t.trace_id, t.span_id, t.forced)),
            Some((7, 9, true))
        );
        assert!(taken.1.is_none(), "a second span must not get the same IDs");
        // Not taken inside: cleared afterwards all the same.
        with_request_trace(trace, || ());
        assert!(take_request_trace().is_none());
    }

    #[test]
    fn opened_ids_are_taken_once() {
        set_opened(1, 2);
        assert_eq!(take_opened(), Some((1, 2)));
        assert_eq!(take_opened(), None);
    }

    #[test]
    fn access_extra_is_seen_only_inside() {
        let mut inside = String::new();
        with_access_extra(",\"a\":1", || push_access_extra(&mut inside));
        assert_eq!(inside, ",\"a\":1");
        let mut after = String::new();
        push_access_extra(&mut after);
        assert!(after.is_empty());
    }
}
