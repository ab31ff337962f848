//! The alerts on the service as its clients see it: the error rate and the p99 latency of the
//! calls it serves (HTTP requests and gRPC calls together), and the scrape target being down.

use crate::monitoring::names;
use crate::monitoring::text::{humanize_duration, num, prom_duration, promql_str, secs};
use crate::monitoring::{MonitoringConfig, Severity};

use super::cases::rpc_cases;
use super::series::{Series, Traffic, timing};
use super::template::{Fmt, label, percent, tpl};
use super::{Alert, AlertTest, Case};

/// The per-series rates of the HTTP requests and of the gRPC calls the service serves, as one
/// vector (`metric` is the suffix, `_count` or `_bucket`, `http` and `rpc` more matchers of
/// each): their label sets never meet (an HTTP series has `http_request_method`, a gRPC one
/// `rpc_system_name`), so `or` keeps every series of both. A sum over it has the service
/// whichever traffic it serves, where the sum of two sums would be empty when one is.
pub(super) fn served(c: &MonitoringConfig, suffix: &str, http: &str, rpc: &str, w: &str) -> String {
    let sel = c.selector();
    format!(
        "rate({}{suffix}{{{sel}{http}}}[{w}])\nor\nrate({}{suffix}{{{sel}{rpc}}}[{w}])",
        names::REQUEST_DURATION,
        names::RPC_SERVER_DURATION,
    )
}

/// `text` indented by `n` spaces, line by line.
pub(super) fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The share of the calls served over `w` that failed: HTTP requests answered 5xx and gRPC
/// calls with an `error_type` (server faults: `INTERNAL`, `UNAVAILABLE`, ...; a client fault
/// such as `NOT_FOUND` has none) other than `cancelled` (the client went away: not an error,
/// as for HTTP), out of all HTTP requests and gRPC calls. 0 (not absent) when
/// there are calls and no errors; present when the service serves only one of the two.
pub(super) fn error_ratio_expr(c: &MonitoringConfig, w: &str) -> String {
    let by = &c.service_label;
    let errors = served(
        c,
        "_count",
        ", http_response_status_code=~\"5..\"",
        ", error_type!=\"\", error_type!=\"cancelled\"",
        w,
    );
    let all = served(c, "_count", "", "", w);
    format!(
        "(\n  sum by ({by}) (\n{}\n  )\n  or\n  0 * sum by ({by}) (\n{}\n  )\n)\n/\nsum by ({by}) (\n{}\n)",
        indent(&errors, 4),
        indent(&all, 4),
        indent(&all, 2),
    )
}

/// The cases of an error-ratio alert with gRPC traffic ([`rpc_cases`], then a gRPC-only service
/// whose calls fail only with client faults), for an alert whose own cases put the error ratio
/// at `fire` and `under` with `per_step` calls a step. The last case also checks that the
/// service's ratio, recorded over the smallest burn-rate window, is there and 0.
pub(super) fn error_cases(
    c: &MonitoringConfig,
    fire: f64,
    under: f64,
    per_step: f64,
    n: u64,
) -> Vec<Case> {
    let s = Series { c };
    // Good gRPC calls are half OK, half NOT_FOUND: a client fault is not an error.
    let split = |kind: Traffic, good: f64, bad: f64| match kind {
        Traffic::Http => s.requests(good, bad, n),
        Traffic::Rpc => s.calls(good / 2.0, good / 2.0, bad, n),
    };
    let mut cases = rpc_cases("failing", fire, under, per_step, &split);
    let samples = super::slo::smallest_error_ratio_record(c)
        .map(|record| {
            let svc = format!("{}={}", c.service_label, promql_str(&c.service));
            (record.clone(), format!("{record}{{{svc}}}"), 0.0)
        })
        .into_iter()
        .collect();
    cases.push(Case {
        what: "gRPC only, many NOT_FOUND (client faults, not errors): does not fire, error \
               ratio 0"
            .into(),
        series: s.calls(per_step / 2.0, per_step / 2.0, 0.0, n),
        fires: None,
        samples,
    });
    cases
}

/// `HighErrorRate`: the error ratio of the calls served ([`error_ratio_expr`]) over the rate
/// window above `error_ratio`.
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
        summary: tpl!["High error rate on ", label(svc)],
        description: tpl![
            Fmt::Percent,
            " of the requests and gRPC calls served by ",
            label(svc),
            format!(
                " failed (HTTP 5xx, gRPC server errors) over the last {rw} (threshold {}).",
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
            more: error_cases(c, fire, under, 100.0, n),
        },
    }]
}

/// `HighLatency`: the p99 duration of the calls served (HTTP requests and gRPC calls, one
/// distribution: both histograms have the same buckets) over the rate window above
/// `latency_p99_seconds`.
pub(super) fn latency(c: &MonitoringConfig) -> Vec<Alert> {
    let s = Series { c };
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
    let in_bucket = |i: usize, count: f64| {
        let mut per = vec![0.0; nb];
        per[i] = count;
        per
    };
    let fire = in_bucket(hi_idx, 100.0);
    let fire_value = b[lo] + (b[hi_idx] - b[lo]) * 0.99;
    // Quiet: every request in the last bucket whose bound is at or under `t`.
    let under_idx = b.iter().rposition(|x| *x <= t).unwrap_or(0);
    let quiet = in_bucket(under_idx, 100.0);
    // With gRPC calls. Half fast HTTP requests, half slow gRPC calls: the 99th of 100 is the
    // 49th of the 50 slow ones.
    let mut mixed_fire = s.histogram(&in_bucket(under_idx, 50.0), "200", n);
    mixed_fire.extend(s.histogram_of(Traffic::Rpc, &in_bucket(hi_idx, 50.0), "OK", n));
    // 1 slow HTTP request in 200 calls: over the threshold alone, under the p99 with the rest.
    let mut mixed_quiet = s.histogram(&in_bucket(hi_idx, 1.0), "200", n);
    mixed_quiet.extend(s.histogram_of(Traffic::Rpc, &in_bucket(under_idx, 199.0), "OK", n));
    let more = vec![
        Case {
            what: "gRPC only, slow: fires".into(),
            series: s.histogram_of(Traffic::Rpc, &fire, "OK", n),
            fires: Some(fire_value),
            samples: vec![],
        },
        Case {
            what: "fast HTTP requests, slow gRPC calls bringing the p99 over the threshold: fires"
                .into(),
            series: mixed_fire,
            fires: Some(b[lo] + (b[hi_idx] - b[lo]) * 0.98),
            samples: vec![],
        },
        Case {
            what: "HTTP slow alone, fast gRPC calls bringing the p99 under the threshold: does \
                   not fire"
                .into(),
            series: mixed_quiet,
            fires: None,
            samples: vec![],
        },
    ];
    vec![Alert {
        name: "HighLatency".into(),
        severity: Severity::Page,
        expr: format!(
            "histogram_quantile(0.99,\n  sum by ({svc}, le) (\n{}\n  )\n)\n> {}",
            indent(&served(c, "_bucket", "", "", &rw), 4),
            num(t)
        ),
        hold: c.latency_for,
        labels: vec![],
        summary: tpl!["High p99 latency on ", label(svc)],
        description: tpl![
            "The p99 duration of the requests and gRPC calls served by ",
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
            more,
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
            more: vec![],
        },
    }]
}
