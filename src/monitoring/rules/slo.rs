//! The SLO burn-rate rules: one recording rule per objective and burn-rate window (the error
//! and slow-call ratios of the HTTP requests and gRPC calls served), and the multi-window
//! multi-burn-rate alerts on them, one per objective and severity.

use std::time::Duration;

use crate::monitoring::text::{humanize_duration, num, prom_duration, promql_str, secs};
use crate::monitoring::{BurnRateWindow, MonitoringConfig, Severity};

use super::cases::rpc_cases;
use super::http::{error_cases, error_ratio_expr, indent, served};
use super::series::{Series, Traffic, timing};
use super::template::{Fmt, label, percent, tpl};
use super::{Alert, AlertTest, Recording};

/// The `le` matcher selecting the bucket bound `le`.
fn le_matcher(le: f64) -> String {
    let v = num(le);
    if v.contains('.') || v.contains('e') {
        format!("le={}", promql_str(&v))
    } else {
        // Prometheus 3 normalises `le="1"` to `le="1.0"`; match both.
        format!("le=~\"{v}|{v}\\\\.0\"")
    }
}

/// The windows of the burn-rate rows, shortest first, without repeats.
fn burn_windows(c: &MonitoringConfig) -> Vec<Duration> {
    let mut w: Vec<Duration> = c
        .burn_rate_windows
        .iter()
        .flat_map(|r| [r.long, r.short])
        .map(|d| Duration::from_secs(secs(d)))
        .collect();
    w.sort();
    w.dedup();
    w
}

/// The recorded error ratio over `w` (`job:http_server_request_errors:ratio_rate1h`; the name
/// predates gRPC, whose failed calls it counts too).
fn error_ratio_record(c: &MonitoringConfig, w: Duration) -> String {
    format!(
        "{}:http_server_request_errors:ratio_rate{}",
        c.service_label,
        prom_duration(w)
    )
}

/// The recorded slow-call ratio over `w` (`job:http_server_request_slow:ratio_rate1h`; gRPC
/// calls included).
fn slow_ratio_record(c: &MonitoringConfig, w: Duration) -> String {
    format!(
        "{}:http_server_request_slow:ratio_rate{}",
        c.service_label,
        prom_duration(w)
    )
}

/// The recorded error ratio over the smallest burn-rate window, if there is one.
pub(super) fn smallest_error_ratio_record(c: &MonitoringConfig) -> Option<String> {
    burn_windows(c).first().map(|w| error_ratio_record(c, *w))
}

/// The share of the calls served (HTTP requests and gRPC calls) slower than the latency
/// objective's threshold over `w`.
fn slow_ratio_expr(c: &MonitoringConfig, w: &str) -> String {
    let by = &c.service_label;
    let le = format!(", {}", le_matcher(c.latency_objective_seconds));
    format!(
        "1 - (\n  sum by ({by}) (\n{}\n  )\n  /\n  sum by ({by}) (\n{}\n  )\n)",
        indent(&served(c, "_bucket", &le, &le, w), 4),
        indent(&served(c, "_count", "", "", w), 4),
    )
}

/// The recording rules: for every burn-rate window, shortest first, the error ratio and the
/// slow-request ratio.
pub(super) fn recordings(c: &MonitoringConfig) -> Vec<Recording> {
    let mut recordings = Vec::new();
    for w in &burn_windows(c) {
        let wd = prom_duration(*w);
        recordings.push(Recording {
            record: error_ratio_record(c, *w),
            expr: error_ratio_expr(c, &wd),
        });
        recordings.push(Recording {
            record: slow_ratio_record(c, *w),
            expr: slow_ratio_expr(c, &wd),
        });
    }
    recordings
}

/// Burn-rate alerts, one per objective (availability, then latency) and severity (page,
/// ticket, info) that has burn-rate rows.
pub(super) fn burn_rate_alerts(c: &MonitoringConfig) -> Vec<Alert> {
    let smallest = burn_windows(c).first().map_or(300, |w| secs(*w));
    let mut alerts = Vec::new();
    for slo in ["availability", "latency"] {
        for severity in [Severity::Page, Severity::Ticket, Severity::Info] {
            let rows: Vec<_> = c
                .burn_rate_windows
                .iter()
                .filter(|r| r.severity == severity)
                .collect();
            if rows.is_empty() {
                continue;
            }
            alerts.push(burn_rate_alert(c, slo, severity, &rows, smallest));
        }
    }
    alerts
}

/// The burn-rate alert of objective `slo` at `severity`: any of its `rows` burning over both
/// windows. Its unit test steps a tenth of the `smallest` window, in seconds.
fn burn_rate_alert(
    c: &MonitoringConfig,
    slo: &str,
    severity: Severity,
    rows: &[&BurnRateWindow],
    smallest: u64,
) -> Alert {
    let s = Series { c };
    let svc = c.service_label.as_str();
    let (objective, record, title): (f64, fn(&MonitoringConfig, Duration) -> String, &str) =
        match slo {
            "availability" => (c.availability_objective, error_ratio_record, "Availability"),
            _ => (c.latency_objective, slow_ratio_record, "Latency"),
        };
    let budget = 1.0 - objective;
    let bound = |f: f64| format!("({} * (1 - {}))", num(f), num(objective));
    // Recorded series keep only the service label: select on it alone.
    let rec_sel = format!("{svc}={}", promql_str(&c.service));
    let expr = rows
        .iter()
        .map(|r| {
            format!(
                "(\n  {}{{{rec_sel}}} > {}\n  and\n  {}{{{rec_sel}}} > {}\n)",
                record(c, r.long),
                bound(r.factor),
                record(c, r.short),
                bound(r.factor)
            )
        })
        .collect::<Vec<_>>()
        .join("\nor\n");
    let max_f = rows.iter().map(|r| r.factor).fold(0.0, f64::max);
    let min_f = rows.iter().map(|r| r.factor).fold(f64::INFINITY, f64::min);
    let fire = (1.5 * max_f * budget).min((1.0 + max_f * budget) / 2.0);
    let under = 0.9 * min_f * budget;
    let rows_text = rows
        .iter()
        .map(|r| {
            format!(
                "{}× over {} and {}",
                num(r.factor),
                prom_duration(r.long),
                prom_duration(r.short)
            )
        })
        .collect::<Vec<_>>()
        .join(", or ");
    let (step, eval) = timing(smallest, c.burn_rate_for);
    let n = eval / step + 2;
    let (fire_series, quiet_series, more, what, runbook) = if slo == "availability" {
        (
            s.requests(1000.0 * (1.0 - fire), 1000.0 * fire, n),
            s.requests(1000.0 * (1.0 - under), 1000.0 * under, n),
            error_cases(c, fire, under, 1000.0, n),
            "error ratio (HTTP 5xx, gRPC server errors)",
            "high-error-rate",
        )
    } else {
        let split = |kind, good, bad| slow_split(&s, kind, good, bad, n);
        (
            slow_split(&s, Traffic::Http, 1000.0 * (1.0 - fire), 1000.0 * fire, n),
            slow_split(&s, Traffic::Http, 1000.0 * (1.0 - under), 1000.0 * under, n),
            rpc_cases("slow", fire, under, 1000.0, &split),
            "share of requests and gRPC calls slower than the objective",
            "high-latency",
        )
    };
    let objective_text = if slo == "availability" {
        format!("{} availability objective", percent(objective))
    } else {
        format!(
            "{} of requests under {} objective",
            percent(objective),
            humanize_duration(c.latency_objective_seconds)
        )
    };
    let sev = match severity {
        Severity::Page => "Page",
        Severity::Ticket => "Ticket",
        Severity::Info => "Info",
    };
    Alert {
        name: format!("{title}BudgetBurn{sev}"),
        severity,
        expr,
        hold: c.burn_rate_for,
        labels: vec![("slo".into(), slo.into())],
        summary: tpl![
            label(svc),
            format!(" is burning its {slo} error budget too fast"),
        ],
        description: tpl![
            format!("The {what} of "),
            label(svc),
            " is ",
            Fmt::Percent,
            format!(
                " over the alert's long window, against a budget of {} for the {objective_text} (fires at {rows_text}).",
                percent(budget)
            ),
        ],
        runbook,
        test: AlertTest {
            interval: step,
            eval,
            fire: fire_series,
            quiet: quiet_series,
            labels: s.out(&[]),
            value: fire,
            more,
        },
    }
}

/// A latency-objective test histogram of `kind`: per step, `fast` calls in the threshold's
/// bucket and `slow` ones in the bucket just over it.
fn slow_split(
    s: &Series<'_>,
    kind: Traffic,
    fast: f64,
    slow: f64,
    n: u64,
) -> Vec<(String, String)> {
    let b = &s.c.duration_buckets;
    let at = b
        .iter()
        .position(|x| *x == s.c.latency_objective_seconds)
        .unwrap_or(0);
    let mut per = vec![0.0; b.len() + 1];
    per[at] = fast;
    per[at + 1] = slow;
    let status = if kind == Traffic::Http { "200" } else { "OK" };
    s.histogram_of(kind, &per, status, n)
}
