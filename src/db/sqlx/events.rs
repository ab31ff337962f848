//! The queries sqlx logs: [`WithQueries`] wraps the instance's log filter, lets the
//! `sqlx::query` events through to [`QueryEvents`] whatever the filter says, and passes them
//! on to the other layers (the log formatter) only when the filter enables them.
//!
//! The event arrives when the statement has finished (sqlx's `QueryLogger` logs on drop), with
//! the statement, the rows and `elapsed_secs`; the span is recorded directly as a finished
//! CLIENT span handed to the tail sampler, starting `elapsed` before the event, as the client
//! layer records outgoing calls. An event inside a `db.query` span (a [`super::WatchedPool`]
//! query, or a [`crate::db::DbQuery`]) is left to that span, which times and classifies it.
//!
//! Everything here reads the span tree through the layer's `Context`, never through the
//! current dispatcher: inside an event callback a scoped dispatcher is not reachable.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Dispatch, Event, LevelFilter, Metadata};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::SpanRef;

use crate::core::exemplar::PendingExemplar;
use crate::core::ids::new_span_id;
use crate::core::names::{DB_TARGET, SQLX_QUERY_TARGET};
use crate::db::DbMetrics;
use crate::db::sql::{sanitize, statement};
use crate::traces::record::{FinishedSpan, LazyName};
use crate::traces::sampler::TailSampler;

/// The name of the spans of [`crate::db::DbQuery`] (and so of watched queries).
pub(crate) const DB_SPAN_NAME: &str = "db.query";

/// The trace context of a span, as the span context layer keeps it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanParent {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// The span ID of its local root.
    pub(crate) local_root: u64,
}

/// What the span context layer (above this module) provides, as functions the root installs.
#[derive(Clone, Copy)]
pub(crate) struct TraceHooks {
    /// The trace context of a span.
    pub(crate) context: fn(&SpanRef<'_, Registry>) -> Option<SpanParent>,
    /// Attaches an exemplar to a span's local root.
    pub(crate) add_exemplar: fn(&SpanRef<'_, Registry>, PendingExemplar),
}

/// Turns `sqlx::query` events into database spans and observations for one instance.
pub(crate) struct QueryEvents {
    pub(crate) metrics: Arc<DbMetrics>,
    /// `None`: traces are off (observations only).
    pub(crate) sampler: Option<Arc<TailSampler>>,
    pub(crate) hooks: TraceHooks,
}

/// The instance's log filter, with `sqlx::query` events let through to [`QueryEvents`] and
/// `db.query` spans always enabled (like request spans: a watched query's span is what tells
/// the events apart).
pub(crate) struct WithQueries<F> {
    inner: F,
    events: QueryEvents,
}

impl<F> WithQueries<F> {
    pub(crate) fn new(inner: F, events: QueryEvents) -> Self {
        WithQueries { inner, events }
    }
}

fn is_query(meta: &Metadata<'_>) -> bool {
    meta.target() == SQLX_QUERY_TARGET
}

fn is_db_span(meta: &Metadata<'_>) -> bool {
    meta.is_span() && meta.target() == DB_TARGET && meta.name() == DB_SPAN_NAME
}

/// Whether the current span is a `db.query` span, which records its query itself.
fn in_db_span(ctx: &Context<'_, Registry>) -> bool {
    ctx.lookup_current()
        .is_some_and(|span| is_db_span(span.metadata()))
}

impl<F: Layer<Registry>> Layer<Registry> for WithQueries<F> {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut Registry) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let inner = self.inner.register_callsite(meta);
        if is_query(meta) || is_db_span(meta) {
            Interest::always()
        } else {
            inner
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, Registry>) -> bool {
        if is_query(meta) {
            // sqlx asks before it formats its line: inside a `db.query` span nobody needs the
            // event unless the filter prints it.
            return !in_db_span(&ctx) || self.inner.enabled(meta, ctx);
        }
        is_db_span(meta) || self.inner.enabled(meta, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // sqlx logs statements at DEBUG by default.
        self.inner
            .max_level_hint()
            .map(|hint| hint.max(LevelFilter::DEBUG))
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, Registry>) -> bool {
        let meta = event.metadata();
        if !is_query(meta) {
            return self.inner.event_enabled(event, ctx);
        }
        let span = ctx.event_span(event);
        if !span.as_ref().is_some_and(|s| is_db_span(s.metadata())) {
            self.events.record(event, span.as_ref());
        }
        drop(span);
        self.inner.enabled(meta, ctx.clone()) && self.inner.event_enabled(event, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, Registry>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, span: &Id, values: &Record<'_>, ctx: Context<'_, Registry>) {
        self.inner.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, Registry>) {
        self.inner.on_follows_from(span, follows, ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, Registry>) {
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, Registry>) {
        self.inner.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, Registry>) {
        self.inner.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, Registry>) {
        self.inner.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &Id, new: &Id, ctx: Context<'_, Registry>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

/// The fields of a `sqlx::query` event (sqlx 0.8's `QueryLogger`).
#[derive(Default)]
struct QueryFields {
    /// The first four words of the statement (the whole of a short one).
    summary: String,
    /// `"\n\n{sql}\n"` when the statement is longer than its summary, else empty.
    statement: String,
    rows_returned: Option<u64>,
    elapsed_secs: Option<f64>,
}

impl Visit for QueryFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary.push_str(value),
            "db.statement" => self.statement.push_str(value),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows_returned = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, u64::try_from(value).unwrap_or(0));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = Some(value);
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {
        // `elapsed` is also logged as a `Duration`'s Debug text; `elapsed_secs` is read.
    }
}

impl QueryEvents {
    /// Records the query of a `sqlx::query` event logged inside `span` (`None`: outside any).
    fn record(&self, event: &Event<'_>, span: Option<&SpanRef<'_, Registry>>) {
        let mut fields = QueryFields::default();
        event.record(&mut fields);
        let sql = match fields.statement.trim() {
            "" => fields.summary.as_str(),
            full => full,
        };
        if sql.is_empty() {
            return;
        }
        let elapsed = fields
            .elapsed_secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        let system = self.metrics.sqlx_event_system();
        let st = statement(sql);
        let collection = st.collection.as_deref().unwrap_or_default();
        let pending = self
            .metrics
            .histogram_for(system, st.operation, collection, "")
            .observe_pending(elapsed);
        // Outside any span of ours the query is only counted: sqlx runs statements of its own
        // outside any span (connection setup, pool maintenance), each of which would else be a
        // trace.
        let (Some(sampler), Some(span)) = (&self.sampler, span) else {
            return;
        };
        let Some(parent) = (self.hooks.context)(span) else {
            return;
        };
        let end = SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(elapsed))
            .unwrap_or(end);
        let span_id = new_span_id();
        let mut attributes = Vec::with_capacity(6);
        attributes.push(KeyValue::new("db.system.name", system));
        if !st.operation.is_empty() {
            attributes.push(KeyValue::new("db.operation.name", st.operation));
        }
        if !collection.is_empty() {
            attributes.push(KeyValue::new("db.collection.name", collection.to_string()));
        }
        attributes.push(KeyValue::new("db.query.text", sanitize(sql, system)));
        if let Some(rows) = fields.rows_returned {
            attributes.push(KeyValue::new(
                "db.response.returned_rows",
                i64::try_from(rows).unwrap_or(i64::MAX),
            ));
        }
        let name: Cow<'static, str> = match (st.operation, collection) {
            ("", _) => Cow::Borrowed(system),
            (op, "") => Cow::Borrowed(op),
            (op, c) => Cow::Owned(format!("{op} {c}")),
        };
        let finished = FinishedSpan {
            trace_id: parent.trace_id,
            span_id,
            parent_span_id: parent.span_id,
            parent_is_remote: false,
            name,
            kind: SpanKind::Client,
            start,
            end,
            attributes,
            events: Vec::new(),
            error: false,
            error_event: false,
            status_message: None,
            lazy_name: LazyName::No,
        };
        (self.hooks.add_exemplar)(span, PendingExemplar { span_id, ..pending });
        sampler.on_span_end(finished, parent.local_root, None, None);
    }
}
