//! The alerts on the service as its clients see it: the 5xx error rate, the p99 latency of the
//! request-duration histogram, and the scrape target being down.

use crate::monitoring::names;
use crate::monitoring::text::{humanize_duration, num, prom_duration, secs};
use crate::monitoring::{MonitoringConfig, Severity};

use super::series::{Series, timing};
use super::template::{Fmt, label, percent, tpl};
use super::{Alert, AlertTest};

/// The 5xx share of requests over `w`, 0 (not absent) when there are requests and no errors.
pub(super) fn error_ratio_expr(c: &MonitoringConfig, w: &str) -> String {
    let (sel, by, count) = (c.selector(), &c.service_label, names::count());
    format!(
        "(\n  sum by ({by}) (rate({count}{{{sel}, http_response_status_code=~\"5..\"}}[{w}]))\n  or\n  0 * sum by ({by}) (rate({count}{{{sel}}}[{w}]))\n)\n/\nsum by ({by}) (rate({count}{{{sel}}}[{w}]))"
    )
}

/// `HighErrorRate`: the 5xx share of requests over the rate window above `error_ratio`.
pub(super) fn error_rate(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let (step, eval) = timing(secs(c.rate_window), c.error_for);
    let n = eval / step + 2;
    let t = c.error_ratio;
    let fire = (2.0 * t).min((1.0 + t) / 2.0);
    let under = 0.95 * t;
    vec![Alert {
        name: "HighErrorRate".into(),
        severity: Severity::Page,
        expr: format!("{}\n> {}", error_ratio_expr(c, &rw), num(t)),
        hold: c.error_for,
        labels: vec![],
        summary: tpl!["High 5xx error rate on ", label(svc)],
        description: tpl![
            Fmt::Percent,
            " of the requests to ",
            label(svc),
            format!(
                " were answered 5xx over the last {rw} (threshold {}).",
                percent(t)
            ),
        ],
        runbook: "high-error-rate",
        test: AlertTest {
            interval: step,
            eval,
            fire: s.requests(100.0 * (1.0 - fire), 100.0 * fire, n),
            quiet: s.requests(100.0 * (1.0 - under), 100.0 * under, n),
            labels: s.out(&[]),
            value: fire,
        },
    }]
}

/// `HighLatency`: the p99 request duration over the rate window above `latency_p99_seconds`.
pub(super) fn latency(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let (step, eval) = timing(secs(c.rate_window), c.latency_for);
    let n = eval / step + 2;
    let b = &c.duration_buckets;
    let t = c.latency_p99_seconds;
    let nb = b.len() + 1;
    // Fire: every request in the bucket just above the first boundary at or over `t`.
    let lo = b.iter().position(|x| *x >= t).unwrap_or(b.len() - 1);
    let hi_idx = (lo + 1).min(b.len() - 1);
    let mut fire = vec![0.0; nb];
    fire[hi_idx] = 100.0;
    let fire_value = b[lo] + (b[hi_idx] - b[lo]) * 0.99;
    // Quiet: every request in the last bucket whose bound is at or under `t`.
    let under_idx = b.iter().rposition(|x| *x <= t).unwrap_or(0);
    let mut quiet = vec![0.0; nb];
    quiet[under_idx] = 100.0;
    vec![Alert {
        name: "HighLatency".into(),
        severity: Severity::Page,
        expr: format!(
            "histogram_quantile(0.99,\n  sum by ({svc}, le) (rate({}{{{sel}}}[{rw}]))\n)\n> {}",
            names::bucket(),
            num(t)
        ),
        hold: c.latency_for,
        labels: vec![],
        summary: tpl!["High p99 latency on ", label(svc)],
        description: tpl![
            "The p99 request duration of ",
            label(svc),
            " is ",
            Fmt::Duration,
            format!(" over the last {rw} (threshold {}).", humanize_duration(t)),
        ],
        runbook: "high-latency",
        test: AlertTest {
            interval: step,
            eval,
            fire: s.histogram(&fire, "200", n),
            quiet: s.histogram(&quiet, "200", n),
            labels: s.out(&[]),
            value: fire_value,
        },
    }]
}

/// `ServiceDown`: Prometheus cannot scrape an instance (`up == 0`).
pub(super) fn service_down(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let (step, eval) = timing(0, c.down_for);
    let n = eval / step + 2;
    let mut labels = s.base();
    labels.sort();
    vec![Alert {
        name: "ServiceDown".into(),
        severity: Severity::Page,
        expr: format!("up{{{sel}}} == 0"),
        hold: c.down_for,
        labels: vec![],
        summary: tpl![label(svc), " is down"],
        description: tpl![
            "Prometheus cannot scrape ",
            label("instance"),
            " of ",
            label(svc),
            " (up = ",
            Fmt::Int,
            format!(") for more than {}.", prom_duration(c.down_for)),
        ],
        runbook: "service-down",
        test: AlertTest {
            interval: step,
            eval,
            fire: vec![s.gauge("up", &[], 0.0, n)],
            quiet: vec![s.gauge("up", &[], 1.0, n)],
            labels,
            value: 0.0,
        },
    }]
}
