//! `MERCENARY_OBS_LOG_FORMAT=pretty`: tracing-subscriber's human format, with the same redaction
//! and control-character escaping as the JSON lines, written through the same non-blocking writer.

use std::fmt::{self, Write as _};
use std::io;
use std::sync::Arc;

use tracing_core::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use super::writer::LineWriter;
use crate::context::current::ForeignCode;
use crate::core::names::REDACTED;
use crate::core::render::RenderSettings;

/// Formats fields as `key=value`, redacting sensitive names and escaping control characters.
pub(crate) struct PrettyFields {
    pub(crate) settings: Arc<RenderSettings>,
}

impl<'w> FormatFields<'w> for PrettyFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = PrettyVisitor {
            settings: &self.settings,
            writer,
            first: true,
            result: Ok(()),
        };
        // tracing-subscriber calls this with the span's extensions locked (new spans, recorded
        // values), and the values' `Debug` may panic.
        let _foreign = ForeignCode::enter();
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PrettyVisitor<'a, 'w> {
    settings: &'a RenderSettings,
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl PrettyVisitor<'_, '_> {
    fn write_value(&mut self, field: &Field, value: &str) {
        let name = field.name();
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let sensitive = self.settings.redactor.is_sensitive_static(name);
        let shown = if sensitive { REDACTED } else { value };
        let mut clean = String::with_capacity(shown.len().min(self.settings.value_cap));
        for c in shown.chars() {
            if clean.len() >= self.settings.value_cap {
                clean.push_str(crate::core::names::TRUNCATED);
                break;
            }
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                let _ = write!(clean, "{}", c.escape_default());
            } else {
                clean.push(c);
            }
        }
        let res = if name == "message" {
            write!(self.writer, "{sep}{clean}")
        } else {
            write!(self.writer, "{sep}{name}={clean}")
        };
        if res.is_err() {
            self.result = res;
        }
    }
}

impl Visit for PrettyVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write_value(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_value(field, &format!("{value:?}"));
    }
}

/// A `MakeWriter` that hands each formatted event to the non-blocking writer.
pub(crate) struct PrettySink(pub(crate) LineWriter);

impl io::Write for PrettySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PrettySinkMaker {
    type Writer = PrettySink;

    fn make_writer(&'a self) -> Self::Writer {
        PrettySink(self.0.clone())
    }
}

/// Makes [`PrettySink`]s.
pub(crate) struct PrettySinkMaker(pub(crate) LineWriter);
