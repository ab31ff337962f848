//! Per-span context: correlation ID, trace and span IDs, and the span's fields pre-rendered.
//!
//! [`ContextLayer`] gives every span a [`SpanContext`] when it is created, inheriting the
//! correlation ID and trace ID from its parent. A span with a `correlation_id` field starts a new
//! correlation scope (the request span the tower layer opens has one). The JSON formatter reads
//! this context for every event, so an event costs one extension lookup, not a walk up the tree.

use std::fmt;
use std::sync::Arc;

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Dispatch, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::escape::{push_f64, push_hex, push_i64, push_json_debug, push_json_str, push_u64};
use super::redact::{REDACTED, Redactor};

/// The name of the span field that carries the correlation ID.
pub(crate) const CORRELATION_FIELD: &str = "correlation_id";

/// What every span knows about its place in the request.
pub(crate) struct SpanContext {
    pub(crate) correlation_id: Option<Arc<str>>,
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// `,"correlation_id":"…","trace_id":"…","span_id":"…"` (JSON mode only).
    pub(crate) ids_json: String,
    /// The span's own fields, then its ancestors' fields not shadowed: `,"k":v,…` (JSON mode).
    pub(crate) fields_json: String,
    /// (key, start, end) of each entry of `fields_json`, to skip keys an event repeats.
    pub(crate) keys: Vec<(&'static str, u32, u32)>,
}

/// Settings the context layer and the JSON formatter share.
pub(crate) struct RenderSettings {
    pub(crate) redactor: Redactor,
    pub(crate) value_cap: usize,
    /// Whether to pre-render fields as JSON (off in `pretty` mode).
    pub(crate) json: bool,
}

/// The tracing layer that maintains [`SpanContext`]s.
pub(crate) struct ContextLayer {
    pub(crate) settings: Arc<RenderSettings>,
}

impl<S> tracing_subscriber::Layer<S> for ContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = FieldRenderer::new(&self.settings);
        attrs.record(&mut visitor);

        let parent = span.parent();
        let parent_ext = parent.as_ref().map(|p| p.extensions());
        let parent_ctx = parent_ext.as_ref().and_then(|e| e.get::<SpanContext>());

        let correlation_id = visitor
            .correlation_id
            .take()
            .or_else(|| parent_ctx.and_then(|p| p.correlation_id.clone()));
        let trace_id = parent_ctx.map(|p| p.trace_id).unwrap_or_else(new_trace_id);
        let span_id = new_span_id();

        let mut ctx_data = SpanContext {
            correlation_id,
            trace_id,
            span_id,
            ids_json: String::new(),
            fields_json: visitor.out,
            keys: visitor.keys,
        };
        if self.settings.json {
            if let Some(parent) = parent_ctx {
                inherit_fields(&mut ctx_data, parent);
            }
            ctx_data.ids_json = render_ids(&ctx_data, self.settings.value_cap);
        }
        drop(parent_ext);
        span.extensions_mut().insert(ctx_data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if !self.settings.json {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        if span.metadata().target() == super::filter::REQUEST_TARGET {
            // The request span's late fields (status, error type) are on the access line, and
            // no event is logged inside the span after it: rendering them would be wasted.
            return;
        }
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanContext>() else {
            return;
        };
        let mut visitor = FieldRenderer::new(&self.settings);
        values.record(&mut visitor);
        let fresh = visitor
            .keys
            .iter()
            .all(|(k, _, _)| data.keys.iter().all(|(dk, _, _)| dk != k));
        if fresh {
            // The usual case (a field declared `Empty`, recorded once): append.
            let base = data.fields_json.len() as u32;
            data.fields_json.push_str(&visitor.out);
            data.keys.extend(
                visitor
                    .keys
                    .into_iter()
                    .map(|(k, s, e)| (k, s + base, e + base)),
            );
            return;
        }
        // Later values of a key replace earlier ones: rebuild without the re-recorded keys.
        let mut rebuilt = SpanContext {
            correlation_id: data.correlation_id.clone(),
            trace_id: data.trace_id,
            span_id: data.span_id,
            ids_json: std::mem::take(&mut data.ids_json),
            fields_json: visitor.out,
            keys: visitor.keys,
        };
        inherit_fields(&mut rebuilt, data);
        *data = rebuilt;
    }
}

/// Appends the entries of `parent` whose keys `child` does not have.
fn inherit_fields(child: &mut SpanContext, parent: &SpanContext) {
    for &(key, start, end) in &parent.keys {
        if child.keys.iter().any(|(k, _, _)| *k == key) {
            continue;
        }
        let from = child.fields_json.len() as u32;
        child
            .fields_json
            .push_str(&parent.fields_json[start as usize..end as usize]);
        child.keys.push((key, from, child.fields_json.len() as u32));
    }
}

fn render_ids(data: &SpanContext, cap: usize) -> String {
    let mut s = String::with_capacity(120);
    if let Some(cid) = &data.correlation_id {
        s.push_str(",\"correlation_id\":");
        push_json_str(&mut s, cid, cap);
    }
    s.push_str(",\"trace_id\":\"");
    push_hex(&mut s, &data.trace_id.to_be_bytes());
    s.push_str("\",\"span_id\":\"");
    push_hex(&mut s, &data.span_id.to_be_bytes());
    s.push('"');
    s
}

/// A random, non-zero W3C trace ID.
pub(crate) fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// A random, non-zero W3C span ID.
pub(crate) fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

/// Renders visited fields as `,"key":value` entries (redacted, escaped, capped).
pub(crate) struct FieldRenderer<'a> {
    settings: &'a RenderSettings,
    pub(crate) out: String,
    pub(crate) keys: Vec<(&'static str, u32, u32)>,
    pub(crate) correlation_id: Option<Arc<str>>,
}

impl<'a> FieldRenderer<'a> {
    pub(crate) fn new(settings: &'a RenderSettings) -> Self {
        Self {
            settings,
            out: String::new(),
            keys: Vec::new(),
            correlation_id: None,
        }
    }

    /// Starts an entry; returns false when the value must be written as `[REDACTED]` (already
    /// written) or skipped.
    fn key(&mut self, field: &Field) -> Option<u32> {
        let name = field.name();
        if !self.settings.json {
            return None;
        }
        let start = self.out.len() as u32;
        self.out.push(',');
        push_json_str(&mut self.out, name, self.settings.value_cap);
        self.out.push(':');
        if self.settings.redactor.is_sensitive_static(name) {
            self.out.push('"');
            self.out.push_str(REDACTED);
            self.out.push('"');
            self.end(name, start);
            return None;
        }
        Some(start)
    }

    fn end(&mut self, name: &'static str, start: u32) {
        self.keys.push((name, start, self.out.len() as u32));
    }

    fn number(&mut self, field: &Field, write: impl FnOnce(&mut String)) {
        if let Some(start) = self.key(field) {
            write(&mut self.out);
            self.end(field.name(), start);
        }
    }
}

impl Visit for FieldRenderer<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == CORRELATION_FIELD {
            if crate::correlation::is_valid(value.as_bytes()) {
                self.correlation_id = Some(Arc::from(value));
            }
            return;
        }
        if let Some(start) = self.key(field) {
            push_json_str(&mut self.out, value, self.settings.value_cap);
            self.end(field.name(), start);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == CORRELATION_FIELD {
            let text = format!("{value:?}");
            if crate::correlation::is_valid(text.as_bytes()) {
                self.correlation_id = Some(Arc::from(text));
            }
            return;
        }
        if let Some(start) = self.key(field) {
            push_json_debug(&mut self.out, value, self.settings.value_cap);
            self.end(field.name(), start);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.number(field, |out| push_i64(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.number(field, |out| push_u64(out, value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.number(field, |out| {
            use fmt::Write;
            let _ = write!(out, "{value}");
        });
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.number(field, |out| {
            use fmt::Write;
            let _ = write!(out, "{value}");
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.number(field, |out| {
            out.push_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.number(field, |out| push_f64(out, value));
        } else {
            self.record_str(field, &value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
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
