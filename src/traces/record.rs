//! What a span records while it is open, and what it becomes when it ends.
//!
//! Recording is deliberately light: attributes are collected as OpenTelemetry `KeyValue`s while
//! the span's fields are visited anyway, and the conversion to the SDK's `SpanData` (name,
//! scope, status) happens only for spans of kept traces, which are a tenth of all.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use tracing_core::field::{Field, Visit};

use crate::core::names::SAMPLING_REASON;
use crate::core::redact::REDACTED;
use crate::core::render::RenderSettings;

/// The request span's own fields as the request layer holds them (method, route, path): turned
/// into attributes only when the trace is kept, and into JSON only when a line logged inside
/// the request needs them. Recording them as `tracing` fields would copy the route and the path
/// for every request, most of whose traces are dropped unread.
pub(crate) trait RequestFields: Send + Sync {
    /// `http.request.method` (a fixed label: `GET`, …, `_OTHER`).
    fn method(&self) -> &'static str;
    /// `http.route`.
    fn route(&self) -> &str;
    /// `url.path`.
    fn path(&self) -> &str;
}

/// The names of a request span's own fields, in the span's order: its correlation ID, then
/// [`RequestFields`].
pub(crate) const REQUEST_FIELD_NAMES: [&str; 4] = [
    crate::core::names::CORRELATION_FIELD,
    "http.request.method",
    "http.route",
    "url.path",
];

/// The fields a request span records when it ends, in the order the layer records them.
pub(crate) const REQUEST_END_NAMES: [&str; 2] = ["http.response.status_code", "error.type"];

/// How a request ended, as the layer would record it on its span: `http.response.status_code`,
/// `error.type`, and `otel.status_code = "ERROR"` with `otel.status_message` (see
/// [`SpanRecord::end_request`]).
#[derive(Clone, Copy)]
pub(crate) struct RequestEnd<'a> {
    pub(crate) status: Option<u16>,
    /// Empty when there is none.
    pub(crate) error_type: &'static str,
    pub(crate) error: bool,
    pub(crate) message: Option<&'a str>,
    /// How long the request took (monotonic): the span ends that long after it started.
    pub(crate) elapsed: std::time::Duration,
}

/// Whether each of a request span's own fields, and each of its [`REQUEST_END_NAMES`], is
/// redacted under an instance's settings (decided once per instance).
#[derive(Clone, Copy)]
pub(crate) struct RequestRedaction {
    fields: [bool; 4],
    end: [bool; 2],
}

/// A request span's own fields (its correlation ID and [`RequestFields`]) and, once it ended,
/// its status and error type, with what the instance's settings say of them.
#[derive(Clone)]
pub(crate) struct RequestAttrs {
    correlation_id: std::sync::Arc<str>,
    fields: std::sync::Arc<dyn RequestFields>,
    /// Whether each of [`REQUEST_FIELD_NAMES`] and [`REQUEST_END_NAMES`] is redacted.
    redacted: RequestRedaction,
    cap: usize,
    status: Option<u16>,
    error_type: &'static str,
}

impl RequestAttrs {
    /// `redacted`: [`RequestAttrs::redacted_under`] the instance's settings, decided once.
    pub(crate) fn new(
        correlation_id: std::sync::Arc<str>,
        fields: std::sync::Arc<dyn RequestFields>,
        redacted: RequestRedaction,
        settings: &RenderSettings,
    ) -> Self {
        Self {
            correlation_id,
            fields,
            redacted,
            cap: settings.value_cap,
            status: None,
            error_type: "",
        }
    }

    /// What `settings` redact of a request span's fields.
    pub(crate) fn redacted_under(settings: &RenderSettings) -> RequestRedaction {
        RequestRedaction {
            fields: REQUEST_FIELD_NAMES.map(|n| settings.redactor.is_sensitive(n)),
            end: REQUEST_END_NAMES.map(|n| settings.redactor.is_sensitive(n)),
        }
    }

    /// `http.response.status_code`, once the request ended with one.
    pub(crate) fn status(&self) -> Option<i64> {
        self.status.map(i64::from)
    }

    /// (name, value, redacted) of the fields a log line shows (the correlation ID is among the
    /// line's IDs instead), in order.
    pub(crate) fn line_entries(&self) -> [(&'static str, &str, bool); 3] {
        [
            (
                REQUEST_FIELD_NAMES[1],
                self.fields.method(),
                self.redacted.fields[1],
            ),
            (
                REQUEST_FIELD_NAMES[2],
                self.fields.route(),
                self.redacted.fields[2],
            ),
            (
                REQUEST_FIELD_NAMES[3],
                self.fields.path(),
                self.redacted.fields[3],
            ),
        ]
    }

    /// The fields as the attribute visitor records them: the correlation ID shared, the method
    /// a fixed string, the route and path capped; redacted where the settings say so.
    pub(crate) fn key_values(&self) -> [KeyValue; 4] {
        let values = [
            Value::String(self.correlation_id.clone().into()),
            Value::from(self.fields.method()),
            Value::from(cap_to(self.cap, self.fields.route())),
            Value::from(cap_to(self.cap, self.fields.path())),
        ];
        let mut i = 0;
        values.map(|value| {
            let name = REQUEST_FIELD_NAMES[i];
            let redacted = self.redacted.fields[i];
            i += 1;
            if redacted {
                KeyValue::new(name, REDACTED)
            } else {
                KeyValue::new(name, value)
            }
        })
    }

    /// Adds the fields in front of `record`'s attributes (a request span that is not a local
    /// root: it is buffered like any child, with its attributes).
    pub(crate) fn record_into(&self, record: &mut SpanRecord) {
        record.attributes.splice(0..0, self.key_values());
        record.names.splice(0..0, REQUEST_FIELD_NAMES);
    }

    /// Adds the fields in front of a kept root's attributes, and the status and error type
    /// after them (where the layer would have recorded them last).
    pub(crate) fn finish_into(&self, span: &mut FinishedSpan) {
        span.attributes.splice(0..0, self.key_values());
        let end = |i: usize, value: Value| {
            if self.redacted.end[i] {
                KeyValue::new(REQUEST_END_NAMES[i], REDACTED)
            } else {
                KeyValue::new(REQUEST_END_NAMES[i], value)
            }
        };
        if let Some(status) = self.status {
            span.attributes.push(end(0, Value::I64(status.into())));
        }
        if !self.error_type.is_empty() {
            let error_type = cap_to(self.cap, self.error_type);
            span.attributes.push(end(1, Value::from(error_type)));
        }
    }
}

/// An open span's recorded data.
pub(crate) struct SpanRecord {
    /// The request span's own fields, kept as they are (see [`RequestFields`]).
    pub(crate) request: Option<RequestAttrs>,
    pub(crate) name: &'static str,
    pub(crate) start: SystemTime,
    /// When a request span's request ended: its start plus the request's monotonic duration,
    /// the time its access line shows (the clock is not read again when it closes).
    pub(crate) end: Option<SystemTime>,
    pub(crate) kind: SpanKind,
    pub(crate) attributes: Vec<KeyValue>,
    /// The field name of each attribute (the same order), for rendering them as JSON later.
    pub(crate) names: Vec<&'static str>,
    pub(crate) events: Vec<Event>,
    /// `otel.status_code = "ERROR"` (the request span sets it on 5xx, `Err` and panics).
    pub(crate) error: bool,
    /// An ERROR event was logged inside this span.
    pub(crate) error_event: bool,
    pub(crate) status_message: Option<String>,
    /// `otel.name`, when the span set one.
    pub(crate) otel_name: Option<String>,
}

impl SpanRecord {
    /// Takes how a request ended as the layer's `Span::record` calls would, without them: kept
    /// as it is for a request span whose fields are (see [`RequestAttrs`]); `false` when the
    /// span has to record them as fields (a request span that is not a local root).
    pub(crate) fn end_request(&mut self, end: RequestEnd<'_>) -> bool {
        self.end = self.start.checked_add(end.elapsed);
        let Some(request) = self.request.as_mut() else {
            return false;
        };
        request.status = end.status;
        request.error_type = end.error_type;
        if end.error {
            self.error = true;
            if let Some(message) = end.message {
                self.status_message = Some(cap_to(request.cap, message));
            }
        }
        true
    }

    /// The names of the span's fields: the request fields (if kept as they are), then the
    /// recorded ones.
    pub(crate) fn field_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let request: &[&'static str] = if self.request.is_some() {
            &REQUEST_FIELD_NAMES
        } else {
            &[]
        };
        request.iter().chain(&self.names).copied()
    }
}

/// A span that has ended, waiting for its trace's decision.
pub(crate) struct FinishedSpan {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) parent_span_id: u64,
    pub(crate) parent_is_remote: bool,
    pub(crate) name: Cow<'static, str>,
    pub(crate) kind: SpanKind,
    pub(crate) start: SystemTime,
    pub(crate) end: SystemTime,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) events: Vec<Event>,
    pub(crate) error: bool,
    pub(crate) error_event: bool,
    pub(crate) status_message: Option<String>,
    /// How the name is built from the attributes, if the trace is kept.
    pub(crate) lazy_name: LazyName,
}

/// A kept span on its way to an exporter, made the SDK's [`SpanData`] where it is consumed (on
/// the export thread), not on the request path.
pub(crate) enum QueuedSpan {
    /// Already in the SDK's form (the export queue's own tests).
    #[cfg(test)]
    Data(SpanData),
    /// As the sampler holds it, with its trace's sampling reason and, for a request span whose
    /// own fields were kept as they are, those fields.
    Finished {
        span: FinishedSpan,
        reason: &'static str,
        request: Option<RequestAttrs>,
    },
}

impl QueuedSpan {
    /// The SDK form (see [`FinishedSpan::into_span_data`]).
    pub(crate) fn into_span_data(self) -> SpanData {
        match self {
            #[cfg(test)]
            QueuedSpan::Data(data) => data,
            QueuedSpan::Finished {
                mut span,
                reason,
                request,
            } => {
                if let Some(request) = request {
                    request.finish_into(&mut span);
                }
                span.into_span_data(reason)
            }
        }
    }
}

#[cfg(test)]
impl From<SpanData> for QueuedSpan {
    fn from(data: SpanData) -> Self {
        QueuedSpan::Data(data)
    }
}

/// A span name built from the span's attributes only when its trace is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LazyName {
    /// The name is the span's own.
    No,
    /// A request span: `{method} {route}`.
    Server,
    /// A CLIENT span of an outgoing call: `HTTP {method}`.
    Client,
}

/// `{method} {route}`, or `{method}` for unmatched requests (OTel HTTP span naming); the RPC
/// method (`package.Service/Method`) for a gRPC call (OTel RPC span naming).
fn request_span_name(attributes: &[KeyValue]) -> Cow<'static, str> {
    let get = |key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str())
    };
    if let Some(rpc) = get("rpc.method") {
        return Cow::Owned(rpc.into_owned());
    }
    match (get("http.request.method"), get("http.route")) {
        (Some(m), Some(r)) if !r.is_empty() => Cow::Owned(format!("{m} {r}")),
        (Some(m), _) => Cow::Owned(m.into_owned()),
        _ => Cow::Borrowed("request"),
    }
}

/// `HTTP {method}` (`HTTP` for `_OTHER`), the name of a CLIENT span.
fn client_span_name(attributes: &[KeyValue]) -> Cow<'static, str> {
    match attributes
        .iter()
        .find(|kv| kv.key.as_str() == "http.request.method")
        .map(|kv| kv.value.as_str())
    {
        Some(m) if m != "_OTHER" => Cow::Owned(format!("HTTP {m}")),
        _ => Cow::Borrowed("HTTP"),
    }
}

impl FinishedSpan {
    /// The response status recorded on a server span, if any.
    pub(crate) fn http_status(&self) -> Option<i64> {
        self.attributes
            .iter()
            .find_map(|kv| match (kv.key.as_str(), &kv.value) {
                ("http.response.status_code", Value::I64(v)) => Some(*v),
                _ => None,
            })
    }

    /// The SDK form, marked sampled and tagged with the sampling reason.
    pub(crate) fn into_span_data(mut self, reason: &'static str) -> SpanData {
        match self.lazy_name {
            LazyName::No => {}
            LazyName::Server => self.name = request_span_name(&self.attributes),
            LazyName::Client => self.name = client_span_name(&self.attributes),
        }
        self.attributes.push(KeyValue::new(SAMPLING_REASON, reason));
        let status = if self.error {
            Status::error(self.status_message.unwrap_or_default())
        } else {
            Status::Unset
        };
        let mut events = SpanEvents::default();
        events.events = self.events;
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(self.trace_id),
                SpanId::from(self.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::from(self.parent_span_id),
            parent_span_is_remote: self.parent_is_remote,
            span_kind: self.kind,
            name: self.name,
            start_time: self.start,
            end_time: self.end,
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope(),
        }
    }
}

fn scope() -> InstrumentationScope {
    static SCOPE: std::sync::OnceLock<InstrumentationScope> = std::sync::OnceLock::new();
    SCOPE
        .get_or_init(|| {
            InstrumentationScope::builder("mercenary_obs")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build()
        })
        .clone()
}

/// Turns visited fields into attributes: redacted, capped, numbers kept as numbers.
pub(crate) struct KeyValues<'a> {
    pub(crate) settings: &'a RenderSettings,
    pub(crate) out: &'a mut Vec<KeyValue>,
    /// Where to note each attribute's field name, when wanted.
    pub(crate) names: Option<&'a mut Vec<&'static str>>,
}

impl KeyValues<'_> {
    pub(crate) fn push(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if let Some(names) = self.names.as_mut() {
            names.push(name);
        }
        if self.settings.redactor.is_sensitive_static(name) {
            self.out.push(KeyValue::new(name, REDACTED));
        } else {
            self.out.push(KeyValue::new(name, value));
        }
    }
}

impl Visit for KeyValues<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let v = cap(self.settings, value);
        self.push(field, Value::from(v));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(v) => self.push(field, Value::I64(v)),
            Err(_) => self.push(field, Value::from(value.to_string())),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

/// Visits span fields into attributes, with the `otel.*` conventions of tracing-opentelemetry
/// (`otel.name`, `otel.kind`, `otel.status_code`, `otel.status_message`) and redaction.
pub(crate) struct AttributeVisitor<'a> {
    pub(crate) settings: &'a RenderSettings,
    pub(crate) record: &'a mut SpanRecord,
}

fn cap(settings: &RenderSettings, s: &str) -> String {
    cap_to(settings.value_cap, s)
}

fn cap_to(value_cap: usize, s: &str) -> String {
    if s.len() <= value_cap {
        return s.to_string();
    }
    let mut end = value_cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &s[..end], crate::core::escape::TRUNCATED)
}

impl AttributeVisitor<'_> {
    fn values(&mut self) -> KeyValues<'_> {
        KeyValues {
            settings: self.settings,
            out: &mut self.record.attributes,
            names: Some(&mut self.record.names),
        }
    }

    pub(crate) fn push(&mut self, field: &Field, value: Value) {
        self.values().push(field, value);
    }

    /// Handles the `otel.*` fields; returns whether the field was one of them.
    fn special(&mut self, field: &Field, value: &str) -> bool {
        match field.name() {
            "otel.name" => self.record.otel_name = Some(cap(self.settings, value)),
            "otel.kind" => {
                let is = |kind: &str| value.eq_ignore_ascii_case(kind);
                self.record.kind = if is("server") {
                    SpanKind::Server
                } else if is("client") {
                    SpanKind::Client
                } else if is("producer") {
                    SpanKind::Producer
                } else if is("consumer") {
                    SpanKind::Consumer
                } else {
                    SpanKind::Internal
                }
            }
            "otel.status_code" => self.record.error |= value.eq_ignore_ascii_case("error"),
            "otel.status_message" => self.record.status_message = Some(cap(self.settings, value)),
            _ => return false,
        }
        true
    }
}

impl Visit for AttributeVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.special(field, value) {
            return;
        }
        // Method names are a fixed set: share the static strings instead of copying.
        if field.name() == "http.request.method"
            && let Some(m) = crate::core::http::METHODS.iter().find(|m| **m == value)
        {
            self.push(field, Value::from(*m));
            return;
        }
        self.values().record_str(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values().record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values().record_u64(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values().record_f64(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values().record_bool(field, value);
    }
}

/// Visits an event into a span event (name = message, fields as attributes).
pub(crate) struct EventVisitor<'a> {
    pub(crate) settings: &'a RenderSettings,
    pub(crate) message: String,
    pub(crate) attributes: Vec<KeyValue>,
}

impl EventVisitor<'_> {
    fn values(&mut self) -> KeyValues<'_> {
        KeyValues {
            settings: self.settings,
            out: &mut self.attributes,
            names: None,
        }
    }
}

impl Visit for EventVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = cap(self.settings, value);
        } else {
            self.values().record_str(field, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.values().record_i64(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.values().record_u64(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.values().record_f64(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.values().record_bool(field, value);
    }
}
