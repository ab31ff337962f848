//! The JSON formatter: one event, one line, fields in the documented order (timestamp, level, target, message, service, IDs, fields).
//!
//! `{"timestamp":…,"level":…,"target":…,"message":…,"service":…,"correlation_id":…,"trace_id":…,
//! "span_id":…, <event fields>, <span fields>}`. The span part is pre-rendered when the span is
//! created (see [`super::context`]), so an event costs its own fields plus a few copies.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use tracing_core::field::{Field, Visit};
use tracing_core::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::writer::LineWriter;
use crate::context::entries::JsonEntries;
use crate::context::fields::{line_request_fields, render_request_entries};
use crate::context::handoff::push_access_extra;
use crate::context::layer::SpanContext;
use crate::core::escape::{JsonStr, push_json_str};
use crate::core::names::{ACCESS_TARGET, AUDIT_TARGET};
use crate::core::render::RenderSettings;
use crate::core::time::push_now;

/// The field that turns an ERROR event into a CRITICAL one (see [`crate::critical!`]).
const CRITICAL_FIELD: &str = "critical";

#[derive(Default)]
struct Buffers {
    line: String,
    message: String,
    fields: String,
    keys: Vec<(&'static str, u32, u32)>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// The tracing layer that writes events as JSON lines.
pub(crate) struct JsonLayer {
    pub(crate) settings: Arc<RenderSettings>,
    /// `,"service":"…"`
    pub(crate) service_json: String,
    pub(crate) writer: LineWriter,
    /// The audit sink: audit lines wait for room there (bounded), then go to the fallback.
    pub(crate) audit: AuditOut,
    /// Write audit lines only (when the application lines use the pretty format).
    pub(crate) audit_only: bool,
}

/// Where audit lines go: their sink's writer, how long they wait for it, the fallback.
pub(crate) struct AuditOut {
    pub(crate) writer: LineWriter,
    pub(crate) max_wait: std::time::Duration,
    pub(crate) fallback: Arc<super::audit::AuditFallback>,
}

impl JsonLayer {
    pub(crate) fn new(
        settings: Arc<RenderSettings>,
        service: &str,
        writer: LineWriter,
        audit: AuditOut,
        audit_only: bool,
    ) -> Self {
        let mut service_json = String::from(",\"service\":");
        push_json_str(&mut service_json, service, settings.value_cap);
        Self {
            settings,
            service_json,
            writer,
            audit,
            audit_only,
        }
    }

    fn format<S>(&self, b: &mut Buffers, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        b.line.clear();
        b.message.clear();
        b.fields.clear();
        b.keys.clear();
        let meta = event.metadata();
        let mut visitor = EventVisitor {
            message: &mut b.message,
            entries: JsonEntries {
                settings: &self.settings,
                out: &mut b.fields,
                keys: &mut b.keys,
            },
            critical: false,
        };
        event.record(&mut visitor);
        let critical = visitor.critical;

        let line = &mut b.line;
        line.push_str("{\"timestamp\":\"");
        push_now(line);
        line.push_str("\",\"level\":\"");
        line.push_str(match *meta.level() {
            Level::TRACE => "TRACE",
            Level::DEBUG => "DEBUG",
            Level::INFO => "INFO",
            Level::WARN => "WARNING",
            Level::ERROR if critical => "CRITICAL",
            Level::ERROR => "ERROR",
        });
        line.push_str("\",\"target\":");
        push_json_str(line, meta.target(), self.settings.value_cap);
        line.push_str(",\"message\":\"");
        line.push_str(&b.message);
        line.push('"');
        line.push_str(&self.service_json);

        let span = ctx.event_span(event);
        if let Some(span) = &span {
            crate::context::fields::ensure_rendered(&self.settings, span, &b.keys);
        }
        let ext = span.as_ref().map(|s| s.extensions());
        let span_ctx = ext.as_ref().and_then(|e| e.get::<SpanContext>());
        if let Some(sc) = span_ctx {
            line.push_str(sc.ids());
        }
        line.push_str(&b.fields);
        if meta.target() == ACCESS_TARGET {
            push_access_extra(line);
        }
        if let Some(sc) = span_ctx {
            if let Some(attrs) = line_request_fields(sc) {
                // A lean request span's fields, written here rather than kept in the span.
                let keys = &b.keys;
                render_request_entries(
                    line,
                    attrs,
                    self.settings.value_cap,
                    |name| keys.iter().any(|(k, _, _)| *k == name),
                    |_, _, _| {},
                );
            } else if b.keys.is_empty() {
                line.push_str(sc.fields());
            } else {
                for &(key, start, end) in &sc.keys {
                    if !b.keys.iter().any(|(k, _, _)| *k == key) {
                        line.push_str(&sc.fields()[start as usize..end as usize]);
                    }
                }
            }
        }
        line.push_str("}\n");
    }
}

impl<S> tracing_subscriber::Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let audit = event.metadata().target() == AUDIT_TARGET;
        if self.audit_only && !audit {
            return;
        }
        let write = |b: &Buffers| {
            if audit {
                let line = b.line.as_bytes();
                if !self.audit.writer.push_bounded(line, self.audit.max_wait) {
                    self.audit.fallback.divert(line);
                }
            } else {
                self.writer.push(b.line.as_bytes());
            }
        };
        BUFFERS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut b) => {
                self.format(&mut b, event, &ctx);
                write(&b);
            }
            // An event logged while formatting another (from a `Debug` impl): fresh buffers.
            Err(_) => {
                let mut b = Buffers::default();
                self.format(&mut b, event, &ctx);
                write(&b);
            }
        });
    }
}

/// Splits the message and the `critical` flag from the event's other fields, which go through
/// the shared entry writer.
struct EventVisitor<'a> {
    message: &'a mut String,
    entries: JsonEntries<'a>,
    critical: bool,
}

impl Visit for EventVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let mut w = JsonStr::new(self.message, self.entries.settings.value_cap);
            let _ = fmt::Write::write_str(&mut w, value);
            w.finish();
        } else {
            self.entries.record_str(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let mut w = JsonStr::new(self.message, self.entries.settings.value_cap);
            let _ = fmt::write(&mut w, format_args!("{value:?}"));
            w.finish();
        } else {
            self.entries.record_debug(field, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == CRITICAL_FIELD {
            self.critical = value;
        } else {
            self.entries.record_bool(field, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entries.record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entries.record_u64(field, value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entries.record_i128(field, value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entries.record_u128(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entries.record_f64(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.entries.record_error(field, value);
    }
}
