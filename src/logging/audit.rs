//! Where audit lines go when their sink is stalled: the fallback.
//!
//! An audit line waits for room in its sink's queue at most `audit_max_wait` (2 s by default);
//! while that sink has not written since such a timeout, later audit lines do not wait at all.
//! A line that did not get in goes to the fallback instead (standard error, or the spill file
//! the user configured), through a writer thread of its own, and is counted in
//! `mercenary_obs_audit_lines_failed_total{outcome="diverted"}`; if the fallback's queue is full
//! too, the line is counted with `outcome="lost"`. The first diversion, and the first after the
//! sink wrote again, also writes one CRITICAL line to the fallback saying the audit sink is
//! stalled (at most one a minute).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use super::writer::LineWriter;
use crate::core::escape::push_json_str;
use crate::core::names::AUDIT_TARGET;

/// How often the "audit sink stalled" line is written at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The fallback of one instance's audit lines.
pub(crate) struct AuditFallback {
    writer: LineWriter,
    /// What the fallback is, for the CRITICAL line: `standard error` or the spill file's path.
    name: String,
    /// `,"service":"…"`
    service_json: String,
    diverted: IntCounter,
    last_warning: Mutex<Option<Instant>>,
}

impl AuditFallback {
    /// A fallback writing through `writer` (whose dropped lines are counted as lost by its
    /// `on_drop`).
    pub(crate) fn new(
        writer: LineWriter,
        name: String,
        service: &str,
        diverted: IntCounter,
    ) -> Self {
        let mut service_json = String::from(",\"service\":");
        push_json_str(&mut service_json, service, 1024);
        Self {
            writer,
            name,
            service_json,
            diverted,
            last_warning: Mutex::new(None),
        }
    }

    /// Writes an audit line its sink did not take in time.
    pub(crate) fn divert(&self, line: &[u8]) {
        self.diverted.inc();
        let warn = {
            let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let due = last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        if warn {
            self.writer.push(self.stalled_line().as_bytes());
        }
        self.writer.push(line);
    }

    fn stalled_line(&self) -> String {
        let mut line = String::with_capacity(256);
        line.push_str("{\"timestamp\":\"");
        crate::core::time::push_now(&mut line);
        line.push_str("\",\"level\":\"CRITICAL\",\"target\":\"");
        line.push_str(AUDIT_TARGET);
        line.push_str("\",\"message\":");
        push_json_str(
            &mut line,
            &format!(
                "audit sink stalled: audit lines go to {} until it writes again",
                self.name
            ),
            1024,
        );
        line.push_str(&self.service_json);
        line.push_str("}\n");
        line
    }

    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        self.writer.flush(timeout)
    }

    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        self.writer.shutdown(timeout)
    }
}
