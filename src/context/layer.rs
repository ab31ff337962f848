//! [`ContextLayer`]: gives every span a [`SpanContext`] when it is created, inheriting the
//! correlation ID and trace ID from its parent, and, when traces are on, records the span for
//! the tail sampler. A span with a `correlation_id` field starts a new correlation scope (the
//! request span the tower layer opens has one). The JSON formatter reads this context for every
//! event, so an event costs one extension lookup, not a walk up the tree.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::current::ForeignCode;
use super::fields::{
    FieldRenderer, SPAN_ID_SUFFIX, inherit_fields, render_ids, render_request_fields,
    same_ids_prefix,
};
use super::handoff::{set_opened, take_request_fields, take_request_trace};
use crate::core::escape::push_hex_u64;
use crate::core::ids::{new_span_id, new_trace_id};
use crate::core::names::{CORRELATION_FIELD, REQUEST_TARGET};
use crate::core::render::RenderSettings;
use crate::traces::record::{
    AttributeVisitor, EventVisitor, FinishedSpan, LazyName, RequestAttrs, SpanRecord,
};
use crate::traces::sampler::{RootInfo, TailSampler};

/// What every span knows about its place in the request.
pub(crate) struct SpanContext {
    pub(crate) correlation_id: Option<Arc<str>>,
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// The span ID of its local root (its own for a root).
    pub(crate) local_root: u64,
    /// The parent's span ID (in process, or the remote caller's), 0 for none.
    pub(crate) parent_span_id: u64,
    pub(crate) parent_is_remote: bool,
    /// Set on local roots: what the sampler needs to know when the root ends.
    pub(crate) root: Option<RootInfo>,
    /// The span's recorded data, when traces are on.
    pub(crate) record: Option<SpanRecord>,
    /// JSON mode only, in one allocation: the span's own fields, then its ancestors' fields not
    /// shadowed (`,"k":v,…`, up to `ids_start`), then `,"correlation_id":"…","trace_id":"…",
    /// "span_id":"…"`.
    pub(crate) fields_json: String,
    pub(crate) ids_start: u32,
    /// Whether `fields_json` has been rendered. With traces on, a span's fields are recorded as
    /// attributes anyway, so the JSON is rendered from them only when an event inside the span
    /// (or a child) first needs it: spans that never log cost no JSON at all.
    pub(crate) rendered: bool,
    /// (key, start, end) of each entry of `fields_json`, to skip keys an event repeats.
    pub(crate) keys: Vec<(&'static str, u32, u32)>,
}

/// Span events recorded per span at most (WARNING and ERROR events).
const MAX_EVENTS_PER_SPAN: usize = 128;

/// The tracing layer that maintains [`SpanContext`]s and, when traces are on, records spans
/// for the tail sampler.
pub(crate) struct ContextLayer {
    pub(crate) settings: Arc<RenderSettings>,
    pub(crate) sampler: Option<Arc<TailSampler>>,
    /// Whether a request span may be opened without its own fields, handed over instead (see
    /// [`crate::traces::record::RequestFields`]): when nothing in this subscriber reads span
    /// fields but this layer (JSON lines, no span directives in the filter).
    pub(crate) takes_request_fields: bool,
    /// Which of the request span's own fields the settings redact (decided once).
    request_redacted: crate::traces::record::RequestRedaction,
}

impl ContextLayer {
    pub(crate) fn new(
        settings: Arc<RenderSettings>,
        sampler: Option<Arc<TailSampler>>,
        takes_request_fields: bool,
    ) -> Self {
        Self {
            request_redacted: RequestAttrs::redacted_under(&settings),
            settings,
            sampler,
            takes_request_fields,
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for ContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let meta = attrs.metadata();
        let parent = span.parent();
        let parent_ext = parent.as_ref().map(|p| p.extensions());
        let parent_ctx = parent_ext.as_ref().and_then(|e| e.get::<SpanContext>());
        let declared = meta.fields().len();
        let lazy = self.settings.json && self.sampler.is_some();
        let mut visitor = FieldRenderer::new(&self.settings, !lazy);
        if self.settings.json && !lazy {
            // Own fields, the parent's fields and IDs (about what is inherited), the IDs: one
            // allocation instead of a chain of reallocations.
            visitor
                .out
                .reserve(32 * declared + parent_ctx.map_or(0, |p| p.fields_json.len()) + 128);
            visitor
                .keys
                .reserve(declared + parent_ctx.map_or(0, |p| p.keys.len()));
        }
        let is_request = meta.target() == REQUEST_TARGET;
        // A request span opened without its own fields: the layer handed them over.
        let handed_fields = if is_request {
            take_request_fields()
        } else {
            None
        };
        let request_attrs = handed_fields.as_ref().map(|h| {
            RequestAttrs::new(
                h.correlation_id.clone(),
                h.fields.clone(),
                self.request_redacted,
                &self.settings,
            )
        });
        if let Some(attrs) = &request_attrs
            && self.settings.json
            && !lazy
        {
            render_request_fields(
                &mut visitor.out,
                &mut visitor.keys,
                attrs,
                self.settings.value_cap,
            );
        }
        // A lean request span's declared fields are recorded only by a user (its own and how
        // it ended are kept as they are): no room reserved for them.
        let capacity = if handed_fields.is_some() { 0 } else { declared };
        let mut record = self.sampler.as_ref().map(|_| SpanRecord {
            request: None,
            name: meta.name(),
            start: SystemTime::now(),
            end: None,
            kind: match meta.target() {
                REQUEST_TARGET => SpanKind::Server,
                _ => SpanKind::Internal,
            },
            attributes: Vec::with_capacity(capacity),
            names: Vec::with_capacity(capacity),
            events: Vec::new(),
            error: false,
            error_event: false,
            status_message: None,
            otel_name: None,
        });
        // One pass over the fields feeds both the JSON fragment and the span's attributes.
        // Their `Debug` runs with the parent's extensions locked.
        let foreign = ForeignCode::enter();
        attrs.record(&mut BothVisitor {
            json: &mut visitor,
            otel: record.as_mut().map(|record| AttributeVisitor {
                settings: &self.settings,
                record,
            }),
        });
        drop(foreign);
        if let (Some(attrs), Some(record)) = (request_attrs, record.as_mut()) {
            if parent_ctx.is_none() {
                // A local root: its fields stay as they are until its trace is decided.
                record.request = Some(attrs);
            } else {
                // Buffered like any child: recorded now.
                attrs.record_into(record);
            }
        }

        let handed = if is_request {
            take_request_trace()
        } else {
            None
        };

        let correlation_id = visitor
            .correlation_id
            .take()
            .or_else(|| handed_fields.map(|h| h.correlation_id))
            .or_else(|| parent_ctx.and_then(|p| p.correlation_id.clone()));
        let (trace_id, parent_span_id, parent_is_remote, root) = match (parent_ctx, &handed) {
            (Some(p), _) => (p.trace_id, p.span_id, false, None),
            (None, Some(h)) => (
                h.trace_id,
                h.parent.map_or(0, |p| p.span_id),
                h.parent.is_some(),
                Some(RootInfo {
                    forced: h.forced,
                    remote_sampled: h.parent.map(|p| p.sampled),
                    tracestate: h.tracestate.clone(),
                    ..RootInfo::default()
                }),
            ),
            (None, None) => (new_trace_id(), 0, false, Some(RootInfo::default())),
        };
        let span_id = handed.as_ref().map_or_else(new_span_id, |h| h.span_id);
        if is_request {
            set_opened(trace_id, span_id);
        }

        let mut ctx_data = SpanContext {
            correlation_id,
            trace_id,
            span_id,
            local_root: parent_ctx.map_or(span_id, |p| p.local_root),
            parent_span_id,
            parent_is_remote,
            root,
            record,
            fields_json: visitor.out,
            ids_start: 0,
            rendered: false,
            keys: visitor.keys,
        };
        if self.settings.json && lazy && parent_ctx.is_some() {
            // A lazily recorded child: its IDs are rendered with its fields, when a line
            // inside it first needs them (`fields::render_from_record`). Most child spans
            // (queries, outgoing calls) never log.
        } else if self.settings.json {
            if lazy {
                // One allocation for the IDs (`,"correlation_id":"…"` and the two hex IDs).
                let ids = 75 + ctx_data.correlation_id.as_ref().map_or(0, |c| 20 + c.len());
                ctx_data.fields_json.reserve(ids);
            } else {
                ctx_data.rendered = true;
                if let Some(parent) = parent_ctx {
                    inherit_fields(&mut ctx_data, parent);
                }
            }
            ctx_data.ids_start = ctx_data.fields_json.len() as u32;
            match parent_ctx {
                Some(p) if same_ids_prefix(p, &ctx_data) => {
                    // Same trace and correlation ID as the parent: only the span ID differs.
                    let ids = p.ids();
                    ctx_data
                        .fields_json
                        .push_str(&ids[..ids.len() - SPAN_ID_SUFFIX]);
                    ctx_data.fields_json.push_str(",\"span_id\":\"");
                    push_hex_u64(&mut ctx_data.fields_json, ctx_data.span_id);
                    ctx_data.fields_json.push('"');
                }
                _ => render_ids(&mut ctx_data, self.settings.value_cap),
            }
        }
        drop(parent_ext);
        span.extensions_mut().insert(ctx_data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let is_request = span.metadata().target() == REQUEST_TARGET;
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanContext>() else {
            return;
        };
        // The values' `Debug` runs with the span's extensions locked.
        let _foreign = ForeignCode::enter();
        if let Some(record) = data.record.as_mut() {
            values.record(&mut AttributeVisitor {
                settings: &self.settings,
                record,
            });
        }
        if !self.settings.json || is_request || !data.rendered {
            // The request span's late fields (status, error type) are on the access line, and
            // no event is logged inside the span after it: rendering them would be wasted. A
            // span not rendered yet will render its recorded attributes when first needed.
            return;
        }
        let mut visitor = FieldRenderer::new(&self.settings, true);
        values.record(&mut visitor);
        let fresh = visitor
            .keys
            .iter()
            .all(|(k, _, _)| data.keys.iter().all(|(dk, _, _)| dk != k));
        if fresh {
            // The usual case (a field declared `Empty`, recorded once): append.
            let ids = data.fields_json.split_off(data.ids_start as usize);
            let base = data.fields_json.len() as u32;
            data.fields_json.push_str(&visitor.out);
            data.ids_start = data.fields_json.len() as u32;
            data.fields_json.push_str(&ids);
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
            local_root: data.local_root,
            parent_span_id: data.parent_span_id,
            parent_is_remote: data.parent_is_remote,
            root: data.root.take(),
            record: data.record.take(),
            fields_json: visitor.out,
            ids_start: 0,
            rendered: true,
            keys: visitor.keys,
        };
        inherit_fields(&mut rebuilt, data);
        let ids = data.ids().to_string();
        rebuilt.ids_start = rebuilt.fields_json.len() as u32;
        rebuilt.fields_json.push_str(&ids);
        *data = rebuilt;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.sampler.is_none() || *event.metadata().level() > Level::WARN {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        if *event.metadata().level() == Level::ERROR {
            // The local root learns it too, for the `traceresponse` its request answers with.
            super::current::mark_root(&span, |root| root.error_seen = true);
        }
        let mut ext = span.extensions_mut();
        let Some(record) = ext.get_mut::<SpanContext>().and_then(|d| d.record.as_mut()) else {
            return;
        };
        if *event.metadata().level() == Level::ERROR {
            record.error_event = true;
        }
        if record.events.len() >= MAX_EVENTS_PER_SPAN {
            return;
        }
        let mut visitor = EventVisitor {
            settings: &self.settings,
            message: String::new(),
            attributes: Vec::new(),
        };
        // The fields' `Debug` runs with the span's extensions locked.
        let foreign = ForeignCode::enter();
        event.record(&mut visitor);
        drop(foreign);
        let level = if *event.metadata().level() == Level::ERROR {
            "ERROR"
        } else {
            "WARNING"
        };
        visitor.attributes.push(KeyValue::new("level", level));
        let name = if visitor.message.is_empty() {
            event.metadata().name().to_string()
        } else {
            visitor.message
        };
        record.events.push(opentelemetry::trace::Event::new(
            name,
            SystemTime::now(),
            visitor.attributes,
            0,
        ));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(sampler) = &self.sampler else { return };
        let Some(span) = ctx.span(&id) else { return };
        // Only what the sampler keeps is moved out; the rest is dropped in place with the
        // span's extensions.
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanContext>() else {
            return;
        };
        let Some(mut record) = data.record.take() else {
            return;
        };
        let root = data.root.take();
        let (trace_id, span_id, local_root) = (data.trace_id, data.span_id, data.local_root);
        let (parent_span_id, parent_is_remote) = (data.parent_span_id, data.parent_is_remote);
        drop(ext);
        let request = record.request.take();
        if record.error && root.is_none() {
            // A child ended as an error (a failed query, say): its trace is kept, and the
            // local root's `traceresponse` should say so.
            super::current::mark_root(&span, |root| root.error_seen = true);
        }
        let lazy_name = match (&record.otel_name, &record.kind, span.metadata().target()) {
            (None, SpanKind::Server, REQUEST_TARGET) => LazyName::Server,
            _ => LazyName::No,
        };
        let name: Cow<'static, str> = match record.otel_name {
            Some(n) => Cow::Owned(n),
            None => Cow::Borrowed(record.name),
        };
        let finished = FinishedSpan {
            trace_id,
            span_id,
            parent_span_id,
            parent_is_remote,
            name,
            kind: record.kind,
            start: record.start,
            end: record.end.unwrap_or_else(SystemTime::now),
            attributes: record.attributes,
            events: record.events,
            error: record.error,
            error_event: record.error_event,
            status_message: record.status_message,
            lazy_name,
        };
        let duration = finished
            .end
            .duration_since(finished.start)
            .unwrap_or_default();
        sampler.on_span_end(finished, local_root, root.map(|r| (r, duration)), request);
    }
}

/// Feeds one visit of a span's fields to the JSON renderer and the attribute recorder.
struct BothVisitor<'a, 'b> {
    json: &'a mut FieldRenderer<'b>,
    otel: Option<AttributeVisitor<'a>>,
}

impl Visit for BothVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.json.record_str(field, value);
        if let Some(otel) = &mut self.otel {
            match &self.json.correlation_id {
                // Share the correlation ID the JSON side already holds.
                Some(id) if field.name() == CORRELATION_FIELD => {
                    otel.push(field, opentelemetry::Value::String(id.clone().into()));
                }
                _ => otel.record_str(field, value),
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match &mut self.otel {
            Some(otel) => {
                let text = format!("{value:?}");
                self.json.record_str(field, &text);
                otel.record_str(field, &text);
            }
            None => self.json.record_debug(field, value),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.json.record_i64(field, value);
        if let Some(otel) = &mut self.otel {
            otel.record_i64(field, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.json.record_u64(field, value);
        if let Some(otel) = &mut self.otel {
            otel.record_u64(field, value);
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.json.record_f64(field, value);
        if let Some(otel) = &mut self.otel {
            otel.record_f64(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.json.record_bool(field, value);
        if let Some(otel) = &mut self.otel {
            otel.record_bool(field, value);
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.json.record_i128(field, value);
        if let Some(otel) = &mut self.otel {
            otel.record_debug(field, &value);
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.json.record_u128(field, value);
        if let Some(otel) = &mut self.otel {
            otel.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let text = value.to_string();
        self.record_str(field, &text);
    }
}
