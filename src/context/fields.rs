//! Span fields as JSON: rendered once per span (eagerly, or lazily from the recorded
//! attributes when traces are on), inherited by children, and the IDs appended.

use std::fmt;
use std::sync::Arc;

use tracing_core::Subscriber;
use tracing_core::field::{Field, Visit};
use tracing_subscriber::registry::LookupSpan;

use super::entries::JsonEntries;
use super::layer::SpanContext;
use crate::core::escape::{push_f64, push_hex_u64, push_i64, push_json_str};
use crate::core::names::{CORRELATION_FIELD, REDACTED};
use crate::core::render::RenderSettings;
use crate::traces::record::RequestAttrs;

/// Appends the entries of `parent` whose keys `child` does not have.
#[inline]
pub(crate) fn inherit_fields(child: &mut SpanContext, parent: &SpanContext) {
    for &(key, start, end) in &parent.keys {
        if child.keys.iter().any(|(k, _, _)| *k == key) {
            continue;
        }
        let from = child.fields_json.len() as u32;
        child
            .fields_json
            .push_str(&parent.fields()[start as usize..end as usize]);
        child.keys.push((key, from, child.fields_json.len() as u32));
    }
}

/// Renders, from their recorded attributes, the JSON fields of the span an event is logged in
/// and of its ancestors that have not been rendered yet (root-most first, so each inherits its
/// parent's). Skipped when the event's own fields shadow every field of a local root (the
/// access line): then only the IDs, rendered eagerly, are written.
pub(crate) fn ensure_rendered<S>(
    settings: &RenderSettings,
    span: &tracing_subscriber::registry::SpanRef<'_, S>,
    event_keys: &[(&'static str, u32, u32)],
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    {
        let ext = span.extensions();
        let Some(data) = ext.get::<SpanContext>() else {
            return;
        };
        if data.rendered {
            return;
        }
        let shadowed = data.record.as_ref().is_some_and(|r| {
            r.field_names()
                .all(|n| n == CORRELATION_FIELD || event_keys.iter().any(|(k, _, _)| *k == n))
        });
        if shadowed && span.parent().is_none() {
            return;
        }
    }
    if span.parent().is_none() {
        // A local root (the request span): no ancestor to render first. A lean request span
        // with no other field is not rendered at all: its line writes its fields itself
        // (`line_request_fields`), which is cheaper than keeping them for a next line that
        // most requests do not log.
        if span
            .extensions()
            .get::<SpanContext>()
            .is_some_and(|d| line_request_fields(d).is_some())
        {
            return;
        }
        let mut ext = span.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanContext>() {
            render_from_record(settings, data, None);
        }
        return;
    }
    let chain: Vec<_> = span
        .scope()
        .take_while(|s| {
            s.extensions()
                .get::<SpanContext>()
                .is_some_and(|d| !d.rendered)
        })
        .collect();
    for s in chain.iter().rev() {
        let parent = s.parent();
        let parent_ext = parent.as_ref().map(|p| p.extensions());
        let parent_ctx = parent_ext.as_ref().and_then(|e| e.get::<SpanContext>());
        let mut ext = s.extensions_mut();
        if let Some(data) = ext.get_mut::<SpanContext>() {
            render_from_record(settings, data, parent_ctx);
        }
    }
}

thread_local! {
    /// Where a lazily recorded span's fields are rendered before they go in front of its IDs.
    static FIELDS: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Writes a lazily recorded span's fields (and its parent's) in front of its IDs.
fn render_from_record(
    settings: &RenderSettings,
    data: &mut SpanContext,
    parent: Option<&SpanContext>,
) {
    if data.rendered {
        return;
    }
    let mut spare = String::new();
    FIELDS.with(|cell| {
        let mut guard = cell.try_borrow_mut();
        let out = match guard.as_mut() {
            Ok(out) => &mut **out,
            Err(_) => &mut spare,
        };
        out.clear();
        // The IDs stay where they are (`ids_start` is 0 for a span not rendered yet, or past
        // nothing but them): only the fields before them are rebuilt.
        data.fields_json.drain(..data.ids_start as usize);
        data.keys.clear();
        if let Some(record) = &data.record {
            if let Some(attrs) = &record.request {
                render_request_fields(out, &mut data.keys, attrs, settings.value_cap);
            }
            for (name, kv) in record.names.iter().zip(&record.attributes) {
                if *name == CORRELATION_FIELD {
                    continue;
                }
                let start = out.len() as u32;
                out.push(',');
                push_json_str(out, name, settings.value_cap);
                out.push(':');
                match &kv.value {
                    opentelemetry::Value::Bool(b) => {
                        out.push_str(if *b { "true" } else { "false" })
                    }
                    opentelemetry::Value::I64(i) => push_i64(out, *i),
                    opentelemetry::Value::F64(f) if f.is_finite() => push_f64(out, *f),
                    // Strings were capped (and redacted) when recorded.
                    other => push_json_str(out, &other.as_str(), usize::MAX),
                }
                data.keys.push((name, start, out.len() as u32));
            }
        }
        if let Some(parent) = parent.filter(|p| p.rendered) {
            for &(key, start, end) in &parent.keys {
                if data.keys.iter().any(|(k, _, _)| *k == key) {
                    continue;
                }
                let from = out.len() as u32;
                out.push_str(&parent.fields()[start as usize..end as usize]);
                data.keys.push((key, from, out.len() as u32));
            }
        }
        let deferred_ids = data.fields_json.is_empty();
        data.fields_json.insert_str(0, out);
        data.ids_start = out.len() as u32;
        if deferred_ids {
            // A child whose IDs were deferred when it was opened.
            render_ids(data, settings.value_cap);
        }
    });
    data.rendered = true;
}

/// `,"name":` of each field a line shows of a request span (its names need no escaping).
pub(crate) const REQUEST_FIELD_PREFIXES: [&str; 3] = [
    ",\"http.request.method\":",
    ",\"http.route\":",
    ",\"url.path\":",
];

/// The fields a line logged in `data` writes itself: those of a lean request span that is a
/// local root, not rendered, and has no other field (see [`ensure_rendered`]).
#[inline]
pub(crate) fn line_request_fields(data: &SpanContext) -> Option<&RequestAttrs> {
    let record = data.record.as_ref()?;
    if data.rendered || data.local_root != data.span_id || !record.names.is_empty() {
        return None;
    }
    record.request.as_ref()
}

/// Renders a request span's own fields as the entry writer renders them as `tracing` fields.
#[inline]
pub(crate) fn render_request_fields(
    out: &mut String,
    keys: &mut Vec<(&'static str, u32, u32)>,
    attrs: &RequestAttrs,
    cap: usize,
) {
    render_request_entries(
        out,
        attrs,
        cap,
        |_| false,
        |name, start, end| keys.push((name, start, end)),
    );
}

/// Appends a request span's own fields but those `skip` names; `wrote(name, start, end)` is
/// told where each entry went.
#[inline]
pub(crate) fn render_request_entries(
    out: &mut String,
    attrs: &RequestAttrs,
    cap: usize,
    skip: impl Fn(&str) -> bool,
    mut wrote: impl FnMut(&'static str, u32, u32),
) {
    for ((name, value, redacted), prefix) in
        attrs.line_entries().into_iter().zip(REQUEST_FIELD_PREFIXES)
    {
        if skip(name) {
            continue;
        }
        let start = out.len() as u32;
        if name.len() <= cap {
            out.push_str(prefix);
        } else {
            out.push(',');
            push_json_str(out, name, cap);
            out.push(':');
        }
        if redacted {
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
        } else {
            push_json_str(out, value, cap);
        }
        wrote(name, start, out.len() as u32);
    }
}

impl SpanContext {
    /// `,"correlation_id":…,"trace_id":…,"span_id":…` (JSON mode).
    #[inline]
    pub(crate) fn ids(&self) -> &str {
        &self.fields_json[self.ids_start as usize..]
    }

    /// The rendered fields (JSON mode).
    #[inline]
    pub(crate) fn fields(&self) -> &str {
        &self.fields_json[..self.ids_start as usize]
    }
}

/// `,"span_id":"0123456789abcdef"`
pub(crate) const SPAN_ID_SUFFIX: usize = 29;

/// Whether `child`'s IDs are `parent`'s with another span ID.
#[inline]
pub(crate) fn same_ids_prefix(parent: &SpanContext, child: &SpanContext) -> bool {
    parent.ids().len() >= SPAN_ID_SUFFIX
        && parent.trace_id == child.trace_id
        && match (&parent.correlation_id, &child.correlation_id) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
}

/// Appends the IDs after the fields.
#[inline]
pub(crate) fn render_ids(data: &mut SpanContext, cap: usize) {
    let s = &mut data.fields_json;
    s.reserve(110);
    if let Some(cid) = &data.correlation_id {
        s.push_str(",\"correlation_id\":");
        push_json_str(s, cid, cap);
    }
    s.push_str(",\"trace_id\":\"");
    push_hex_u64(s, (data.trace_id >> 64) as u64);
    push_hex_u64(s, data.trace_id as u64);
    s.push_str("\",\"span_id\":\"");
    push_hex_u64(s, data.span_id);
    s.push('"');
}

/// Renders visited fields as `,"key":value` entries (redacted, escaped, capped).
pub(crate) struct FieldRenderer<'a> {
    settings: &'a RenderSettings,
    render: bool,
    pub(crate) out: String,
    pub(crate) keys: Vec<(&'static str, u32, u32)>,
    pub(crate) correlation_id: Option<Arc<str>>,
}

impl<'a> FieldRenderer<'a> {
    /// `render`: whether to write JSON (else it only captures the correlation ID).
    #[inline]
    pub(crate) fn new(settings: &'a RenderSettings, render: bool) -> Self {
        Self {
            settings,
            render,
            out: String::new(),
            keys: Vec::new(),
            correlation_id: None,
        }
    }

    /// The entry writer, when JSON is to be written.
    #[inline]
    fn entries(&mut self) -> Option<JsonEntries<'_>> {
        if !(self.settings.json && self.render) {
            return None;
        }
        Some(JsonEntries {
            settings: self.settings,
            out: &mut self.out,
            keys: &mut self.keys,
        })
    }
}

impl Visit for FieldRenderer<'_> {
    #[inline]
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == CORRELATION_FIELD {
            if crate::core::ids::is_valid(value.as_bytes()) {
                self.correlation_id = Some(Arc::from(value));
            }
        } else if let Some(mut e) = self.entries() {
            e.record_str(field, value);
        }
    }

    #[inline]
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == CORRELATION_FIELD {
            self.record_str(field, &format!("{value:?}"));
        } else if let Some(mut e) = self.entries() {
            e.record_debug(field, value);
        }
    }

    #[inline]
    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Some(mut e) = self.entries() {
            e.record_i64(field, value);
        }
    }

    #[inline]
    fn record_u64(&mut self, field: &Field, value: u64) {
        if let Some(mut e) = self.entries() {
            e.record_u64(field, value);
        }
    }

    #[inline]
    fn record_i128(&mut self, field: &Field, value: i128) {
        if let Some(mut e) = self.entries() {
            e.record_i128(field, value);
        }
    }

    #[inline]
    fn record_u128(&mut self, field: &Field, value: u128) {
        if let Some(mut e) = self.entries() {
            e.record_u128(field, value);
        }
    }

    #[inline]
    fn record_bool(&mut self, field: &Field, value: bool) {
        if let Some(mut e) = self.entries() {
            e.record_bool(field, value);
        }
    }

    #[inline]
    fn record_f64(&mut self, field: &Field, value: f64) {
        if let Some(mut e) = self.entries() {
            e.record_f64(field, value);
        }
    }

    #[inline]
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}
