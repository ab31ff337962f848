//! The security alert: a surge of failed logins in the `security_events_total` counter.

use crate::monitoring::names::SECURITY_EVENTS;
use crate::monitoring::text::{num, prom_duration, secs};
use crate::monitoring::{MonitoringConfig, Severity};

use super::series::{Series, timing};
use super::template::{Fmt, label, tpl};
use super::{Alert, AlertTest};

/// `FailedLoginSurge`: failed logins per second over the rate window above
/// `failed_logins_per_second` (other security events, here `unauthorized`, do not count).
pub(super) fn failed_logins(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let (step, eval) = timing(secs(c.rate_window), c.failed_logins_for);
    let n = eval / step + 2;
    let t = c.failed_logins_per_second;
    let logins = |per_s: f64| {
        vec![
            s.counter(
                SECURITY_EVENTS,
                &[("kind", "failed_login")],
                per_s * step as f64,
                n,
            ),
            s.counter(
                SECURITY_EVENTS,
                &[("kind", "unauthorized")],
                10.0 * t * step as f64,
                n,
            ),
        ]
    };
    vec![Alert {
        name: "FailedLoginSurge".into(),
        severity: Severity::Ticket,
        expr: format!(
            "sum by ({svc}) (rate({SECURITY_EVENTS}{{{sel}, kind=\"failed_login\"}}[{rw}])) > {}",
            num(t)
        ),
        hold: c.failed_logins_for,
        labels: vec![],
        summary: tpl!["Surge of failed logins on ", label(svc)],
        description: tpl![
            label(svc),
            " records ",
            Fmt::Fixed2,
            format!(
                " failed logins/s over the last {rw} (threshold {}/s).",
                num(t)
            ),
        ],
        runbook: "security-incidents",
        test: AlertTest {
            interval: step,
            eval,
            fire: logins(2.0 * t),
            quiet: logins(0.95 * t),
            labels: s.out(&[]),
            value: 2.0 * t,
            more: vec![],
        },
    }]
}
