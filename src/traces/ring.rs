//! The in-memory ring of recently kept traces, served as JSON at `/debug/traces` when no OTLP
//! endpoint is configured, so the demo shows sampling working with nothing else installed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::Value;
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;

use crate::core::escape::{push_f64, push_hex, push_json_str, push_u64};

struct KeptTrace {
    reason: &'static str,
    spans: Vec<SpanData>,
}

/// The most recent kept traces (a late span joins its trace when that is still in the ring).
pub(crate) struct TraceRing {
    capacity: usize,
    traces: Mutex<VecDeque<KeptTrace>>,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl TraceRing {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            traces: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    pub(crate) fn push(&self, reason: &'static str, spans: Vec<SpanData>) {
        if self.capacity == 0 || spans.is_empty() {
            return;
        }
        let trace_id = spans[0].span_context.trace_id();
        let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        // A late span joins its trace when that is among the most recent ones (late spans come
        // soon after their root; a bounded scan keeps every push cheap).
        if let Some(existing) = traces
            .iter_mut()
            .rev()
            .take(16)
            .find(|t| t.spans[0].span_context.trace_id() == trace_id)
        {
            existing.spans.extend(spans);
            return;
        }
        if traces.len() == self.capacity {
            traces.pop_front();
        }
        traces.push_back(KeptTrace { reason, spans });
    }

    /// `{"traces":[{"trace_id":…,"reason":…,"spans":[…]}]}`, most recent first.
    pub(crate) fn render_json(&self) -> String {
        let traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::from("{\"traces\":[");
        for (i, t) in traces.iter().rev().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"trace_id\":\"");
            push_hex(&mut out, &t.spans[0].span_context.trace_id().to_bytes());
            out.push_str("\",\"reason\":\"");
            out.push_str(t.reason);
            out.push_str("\",\"spans\":[");
            for (j, s) in t.spans.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                render_span(&mut out, s);
            }
            out.push_str("]}");
        }
        out.push_str("]}");
        out
    }
}

fn render_span(out: &mut String, s: &SpanData) {
    out.push_str("{\"span_id\":\"");
    push_hex(out, &s.span_context.span_id().to_bytes());
    out.push_str("\",\"parent_span_id\":\"");
    push_hex(out, &s.parent_span_id.to_bytes());
    out.push_str("\",\"name\":");
    push_json_str(out, &s.name, usize::MAX);
    let _ = write!(out, ",\"kind\":\"{:?}\"", s.span_kind);
    out.push_str(",\"start_unix_nanos\":");
    push_u64(out, nanos(s.start_time));
    out.push_str(",\"duration_ms\":");
    let d = s.end_time.duration_since(s.start_time).unwrap_or_default();
    push_f64(out, d.as_micros() as f64 / 1000.0);
    out.push_str(",\"status\":");
    match &s.status {
        Status::Error { description } => {
            out.push_str("\"error\",\"status_message\":");
            push_json_str(out, description, usize::MAX);
        }
        Status::Ok => out.push_str("\"ok\""),
        Status::Unset => out.push_str("\"unset\""),
    }
    out.push_str(",\"attributes\":{");
    for (k, kv) in s.attributes.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        push_json_str(out, kv.key.as_str(), usize::MAX);
        out.push(':');
        render_value(out, &kv.value);
    }
    out.push_str("},\"events\":[");
    for (k, e) in s.events.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_json_str(out, &e.name, usize::MAX);
        out.push_str(",\"attributes\":{");
        for (n, kv) in e.attributes.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            push_json_str(out, kv.key.as_str(), usize::MAX);
            out.push(':');
            render_value(out, &kv.value);
        }
        out.push_str("}}");
    }
    out.push_str("]}");
}

fn render_value(out: &mut String, v: &Value) {
    match v {
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::I64(i) => {
            let _ = write!(out, "{i}");
        }
        Value::F64(f) if f.is_finite() => push_f64(out, *f),
        other => push_json_str(out, &other.as_str(), usize::MAX),
    }
}
