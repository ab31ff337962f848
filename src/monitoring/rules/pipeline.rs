//! The alerts on the telemetry pipeline itself: spans dropped on their way to the OTLP
//! collector, and events dropped on their way to Sentry.

use crate::monitoring::names::{EXPORT_REQUESTS, SENTRY_EVENTS_DROPPED, SPANS_DROPPED};
use crate::monitoring::text::{prom_duration, secs};
use crate::monitoring::{MonitoringConfig, Severity};

use super::series::{INSTANCE, Series, timing};
use super::template::{Fmt, label, tpl};
use super::{Alert, AlertTest};

/// `TraceExportFailing`: spans dropped because the export fails or its queue is full;
/// `TraceExportMostlyFailing`: most OTLP export calls fail or time out (the collector is down or
/// refuses, rather than an occasional lost batch).
pub(super) fn trace_export(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let (step, eval) = timing(secs(c.rate_window), c.export_failing_for);
    let n = eval / step + 2;
    let dropped = |per_s: f64| {
        vec![
            s.counter(
                SPANS_DROPPED,
                &[("reason", "export_failed")],
                per_s * step as f64,
                n,
            ),
            s.counter(SPANS_DROPPED, &[("reason", "buffer_full")], 0.0, n),
        ]
    };
    let calls = |failed: f64, timed_out: f64, success: f64| {
        vec![
            s.counter(
                EXPORT_REQUESTS,
                &[("outcome", "failed")],
                failed * step as f64,
                n,
            ),
            s.counter(
                EXPORT_REQUESTS,
                &[("outcome", "timed_out")],
                timed_out * step as f64,
                n,
            ),
            s.counter(
                EXPORT_REQUESTS,
                &[("outcome", "success")],
                success * step as f64,
                n,
            ),
        ]
    };
    vec![
        Alert {
            name: "TraceExportFailing".into(),
            severity: Severity::Ticket,
            expr: format!(
                "sum by ({svc}, instance) (rate({SPANS_DROPPED}{{{sel}, reason=~\"export_failed|queue_full\"}}[{rw}])) > 0"
            ),
            hold: c.export_failing_for,
            labels: vec![],
            summary: tpl!["Trace export failing on ", label(svc)],
            description: tpl![
                label("instance"),
                " of ",
                label(svc),
                " drops ",
                Fmt::Fixed2,
                " spans/s because the OTLP export fails or cannot keep up.",
            ],
            runbook: "trace-export-failing",
            test: AlertTest {
                interval: step,
                eval,
                fire: dropped(5.0),
                quiet: dropped(0.0),
                labels: s.out(&[("instance", INSTANCE)]),
                value: 5.0,
                more: vec![],
            },
        },
        Alert {
            name: "TraceExportMostlyFailing".into(),
            severity: Severity::Ticket,
            expr: format!(
                "sum by ({svc}, instance) (rate({EXPORT_REQUESTS}{{{sel}, outcome=~\"failed|timed_out\"}}[{rw}])) / sum by ({svc}, instance) (rate({EXPORT_REQUESTS}{{{sel}}}[{rw}])) > 0.5"
            ),
            hold: c.export_failing_for,
            labels: vec![],
            summary: tpl!["Most trace exports failing on ", label(svc)],
            description: tpl![
                label("instance"),
                " of ",
                label(svc),
                ": ",
                Fmt::Percent,
                " of its OTLP export calls fail or time out (after the exporter's retries).",
            ],
            runbook: "trace-export-failing",
            test: AlertTest {
                interval: step,
                eval,
                fire: calls(0.5, 0.25, 0.25),
                quiet: calls(0.4, 0.05, 0.55),
                labels: s.out(&[("instance", INSTANCE)]),
                value: 0.75,
                more: vec![],
            },
        },
    ]
}

/// `SentryEventsDropped`: Sentry events dropped (Sentry unreachable, slow or rate-limiting).
pub(super) fn sentry(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let (step, eval) = timing(secs(c.rate_window), c.sentry_dropped_for);
    let n = eval / step + 2;
    let dropped = |per_s: f64| vec![s.counter(SENTRY_EVENTS_DROPPED, &[], per_s * step as f64, n)];
    vec![Alert {
        name: "SentryEventsDropped".into(),
        severity: Severity::Info,
        expr: format!(
            "sum by ({svc}, instance) (rate({SENTRY_EVENTS_DROPPED}{{{sel}}}[{rw}])) > 0"
        ),
        hold: c.sentry_dropped_for,
        labels: vec![],
        summary: tpl!["Sentry events dropped on ", label(svc)],
        description: tpl![
            label("instance"),
            " of ",
            label(svc),
            " drops ",
            Fmt::Fixed2,
            " Sentry events/s: Sentry is unreachable, slow or rate-limiting.",
        ],
        runbook: "sentry-events-dropped",
        test: AlertTest {
            interval: step,
            eval,
            fire: dropped(2.0),
            quiet: dropped(0.0),
            labels: s.out(&[("instance", INSTANCE)]),
            value: 2.0,
            more: vec![],
        },
    }]
}
