//! `,"key":value` entries: the one place that turns a field into JSON, for span fields and
//! event fields alike (redacted, escaped, capped; numbers stay numbers).

use std::fmt;

use tracing_core::field::{Field, Visit};

use crate::core::escape::{push_f64, push_i64, push_json_debug, push_json_str, push_u64};
use crate::core::names::REDACTED;
use crate::core::render::RenderSettings;

/// Appends one entry per visited field to `out`, noting each entry's key and byte range.
pub(crate) struct JsonEntries<'a> {
    pub(crate) settings: &'a RenderSettings,
    pub(crate) out: &'a mut String,
    /// (key, start, end) of each entry written.
    pub(crate) keys: &'a mut Vec<(&'static str, u32, u32)>,
}

impl JsonEntries<'_> {
    /// Writes one entry; `value` writes the value unless the key is sensitive.
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut String, usize)) {
        let name = field.name();
        let start = self.out.len() as u32;
        self.out.push(',');
        push_json_str(self.out, name, self.settings.value_cap);
        self.out.push(':');
        if self.settings.redactor.is_sensitive_static(name) {
            self.out.push('"');
            self.out.push_str(REDACTED);
            self.out.push('"');
        } else {
            value(self.out, self.settings.value_cap);
        }
        self.keys.push((name, start, self.out.len() as u32));
    }
}

impl Visit for JsonEntries<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out, cap| push_json_str(out, value, cap));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out, cap| push_json_debug(out, value, cap));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out, _| push_i64(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out, _| push_u64(out, value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |out, _| {
            use fmt::Write;
            let _ = write!(out, "{value}");
        });
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |out, _| {
            use fmt::Write;
            let _ = write!(out, "{value}");
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out, _| {
            out.push_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.entry(field, |out, _| push_f64(out, value));
        } else {
            self.record_str(field, &value.to_string());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}
