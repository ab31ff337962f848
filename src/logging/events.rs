//! Audit and security events: their targets, and the layer that counts them.
//!
//! [`crate::audit!`] and [`crate::security_event!`] are `tracing` events with their own targets.
//! The filter always lets them through (whatever `RUST_LOG` says), the JSON formatter writes
//! audit lines to the audit sink with a blocking push (never dropped), and [`EventsLayer`]
//! counts them in the instance that receives them: `audit_events_total{action,outcome}` and
//! `security_events_total{kind}`, both capped like any business metric.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing_core::field::{Field, Visit};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::core::names::{AUDIT_EVENTS, AUDIT_TARGET, SECURITY_EVENTS, SECURITY_TARGET};
use crate::metrics::business::{BusinessMetrics, CounterKind, Desc, Family, Kind, LabelRef};

static AUDIT_DESC: Desc = Desc::new(Kind::Counter, AUDIT_EVENTS, &["action", "outcome"])
    .with_help("Audit events written to the audit sink, by action and outcome.");

static SECURITY_DESC: Desc = Desc::new(Kind::Counter, SECURITY_EVENTS, &["kind"])
    .with_help("Security events (failed logins, unauthorized access, suspicious usage), by kind.");

/// Counts audit and security events.
pub(crate) struct EventsLayer {
    audit: Option<Arc<Family<CounterKind>>>,
    security: Option<Arc<Family<CounterKind>>>,
}

impl EventsLayer {
    pub(crate) fn new(business: &BusinessMetrics) -> Self {
        Self {
            audit: business.family::<CounterKind>(&AUDIT_DESC, AUDIT_EVENTS),
            security: business.family::<CounterKind>(&SECURITY_DESC, SECURITY_EVENTS),
        }
    }
}

impl<S: Subscriber> Layer<S> for EventsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target == AUDIT_TARGET {
            if let Some(family) = &self.audit {
                let mut v = Pick::new(["action", "outcome"]);
                event.record(&mut v);
                let values = [LabelRef::Str(&v.values[0]), LabelRef::Str(&v.values[1])];
                if let Some(c) = family.series_ref(&values) {
                    c.inc();
                }
            }
        } else if target == SECURITY_TARGET
            && let Some(family) = &self.security
        {
            let mut v = Pick::new(["kind", ""]);
            event.record(&mut v);
            if let Some(c) = family.series_ref(&[LabelRef::Str(&v.values[0])]) {
                c.inc();
            }
        }
    }
}

/// Picks up to two fields' values as text.
struct Pick {
    names: [&'static str; 2],
    values: [String; 2],
}

impl Pick {
    fn new(names: [&'static str; 2]) -> Self {
        Self {
            names,
            values: [String::new(), String::new()],
        }
    }

    fn slot(&mut self, field: &Field) -> Option<&mut String> {
        let i = self
            .names
            .iter()
            .position(|n| !n.is_empty() && *n == field.name())?;
        let s = &mut self.values[i];
        s.clear();
        Some(s)
    }
}

impl Visit for Pick {
    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(s) = self.slot(field) {
            s.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if let Some(s) = self.slot(field) {
            let _ = write!(s, "{value:?}");
        }
    }
}
