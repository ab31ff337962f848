//! The access line of a successful request, written straight to the log writer.
//!
//! An INFO access line has one reader: the JSON formatter. The span context layer records only
//! WARNING and ERROR events on spans, Sentry skips the access target, and the event counters
//! count audit and security events only. So the request layer renders it here, with its keys
//! pre-rendered, instead of building a `tracing` event that the formatter would then visit
//! field by field: the same line, byte for byte (a test compares the two), for about a fifth
//! of the work. WARNING and ERROR access lines, gRPC calls, the `pretty` format and filters
//! with span directives keep the `tracing` event.

use std::cell::RefCell;
use std::sync::Arc;

use super::writer::LineWriter;
use crate::core::escape::{push_json_str, push_millis, push_u64};
use crate::core::names::{ACCESS_TARGET, REDACTED};
use crate::core::render::RenderSettings;
use crate::core::time::{push_now, push_time};

/// The keys of an INFO access line, in the order the `tracing` event records them.
pub(crate) const ACCESS_KEYS: [&str; 5] = [
    "http.request.method",
    "http.route",
    "url.path",
    "http.response.status_code",
    "duration_ms",
];

/// What an INFO access line says about its request.
pub(crate) struct AccessFields<'a> {
    pub(crate) method: &'a str,
    pub(crate) route: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: Option<u16>,
    /// The duration in whole microseconds (written in milliseconds).
    pub(crate) duration_micros: u64,
    /// The logged request headers, pre-rendered (`,"http.request.header.…":"…"`).
    pub(crate) headers: &'a str,
    /// When the request ended, if its span knows (else the clock is read).
    pub(crate) at: Option<std::time::SystemTime>,
}

/// Writes INFO access lines of one instance (JSON format only).
pub(crate) struct AccessLines {
    settings: Arc<RenderSettings>,
    writer: LineWriter,
    /// `{"timestamp":"` … is written first; this is what follows the timestamp up to the IDs:
    /// `","level":"INFO","target":"mercenary_obs::access","message":"request completed","service":"…"`.
    head: String,
    /// `,"key":` for each of [`ACCESS_KEYS`], and whether its value is redacted.
    keys: [(String, bool); 5],
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

impl AccessLines {
    pub(crate) fn new(settings: Arc<RenderSettings>, service: &str, writer: LineWriter) -> Self {
        let mut head = String::from("\",\"level\":\"INFO\",\"target\":");
        push_json_str(&mut head, ACCESS_TARGET, settings.value_cap);
        head.push_str(",\"message\":");
        push_json_str(&mut head, "request completed", settings.value_cap);
        head.push_str(",\"service\":");
        push_json_str(&mut head, service, settings.value_cap);
        let keys = ACCESS_KEYS.map(|key| {
            let mut prefix = String::from(",");
            push_json_str(&mut prefix, key, settings.value_cap);
            prefix.push(':');
            (prefix, settings.redactor.is_sensitive(key))
        });
        Self {
            settings,
            writer,
            head,
            keys,
        }
    }

    /// Writes the line of a request whose span context gives `ids` (`,"correlation_id":…`)
    /// and `span_fields` (the span's rendered entries not shadowed by the line's own keys).
    pub(crate) fn write<'s>(
        &self,
        fields: &AccessFields<'_>,
        ids: &str,
        span_fields: impl Iterator<Item = &'s str>,
    ) {
        let mut fresh = String::new();
        LINE.with(|cell| {
            let mut guard = cell.try_borrow_mut();
            let line = match guard.as_mut() {
                Ok(line) => &mut **line,
                Err(_) => &mut fresh,
            };
            line.clear();
            line.push_str("{\"timestamp\":\"");
            match fields.at {
                Some(at) => push_time(line, at),
                None => push_now(line),
            }
            line.push_str(&self.head);
            line.push_str(ids);
            let cap = self.settings.value_cap;
            let strings = [fields.method, fields.route, fields.path];
            for ((prefix, redacted), value) in self.keys.iter().zip(strings) {
                line.push_str(prefix);
                if *redacted {
                    push_redacted(line);
                } else {
                    push_json_str(line, value, cap);
                }
            }
            if let Some(status) = fields.status {
                let (prefix, redacted) = &self.keys[3];
                line.push_str(prefix);
                if *redacted {
                    push_redacted(line);
                } else {
                    push_u64(line, u64::from(status));
                }
            }
            let (prefix, redacted) = &self.keys[4];
            line.push_str(prefix);
            if *redacted {
                push_redacted(line);
            } else {
                push_millis(line, fields.duration_micros);
            }
            line.push_str(fields.headers);
            for entry in span_fields {
                line.push_str(entry);
            }
            line.push_str("}\n");
            self.writer.push(line.as_bytes());
        });
    }
}

fn push_redacted(line: &mut String) {
    line.push('"');
    line.push_str(REDACTED);
    line.push('"');
}
