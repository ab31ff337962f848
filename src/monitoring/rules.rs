//! The Prometheus rule file (recording and alerting rules) and its `promtool` unit tests.

use std::fmt::Write as _;
use std::time::Duration;

use super::names::{self, *};
use super::text::{
    humanize_1024, humanize_duration, humanize_percentage, num, prom_duration, quote, secs,
};
use super::{MonitoringConfig, Severity};

/// How an annotation shows `$value`.
#[derive(Clone, Copy)]
enum Fmt {
    Percent,
    Duration,
    Bytes,
    Fixed2,
    Int,
}

/// A piece of an annotation template.
enum Piece {
    Text(String),
    Label(String),
    Value(Fmt),
}

/// An annotation: rendered as a Go template for the rule, and as text for the unit test.
struct Tpl(Vec<Piece>);

impl Tpl {
    fn go(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Label(l) => format!("{{{{ $labels.{l} }}}}"),
                Piece::Value(Fmt::Percent) => "{{ $value | humanizePercentage }}".into(),
                Piece::Value(Fmt::Duration) => "{{ $value | humanizeDuration }}".into(),
                Piece::Value(Fmt::Bytes) => "{{ $value | humanize1024 }}B".into(),
                Piece::Value(Fmt::Fixed2) => "{{ printf \"%.2f\" $value }}".into(),
                Piece::Value(Fmt::Int) => "{{ printf \"%.0f\" $value }}".into(),
            })
            .collect()
    }

    fn render(&self, labels: &[(String, String)], value: f64) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Label(l) => labels
                    .iter()
                    .find(|(k, _)| k == l)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                Piece::Value(Fmt::Percent) => humanize_percentage(value),
                Piece::Value(Fmt::Duration) => humanize_duration(value),
                Piece::Value(Fmt::Bytes) => format!("{}B", humanize_1024(value)),
                Piece::Value(Fmt::Fixed2) => format!("{value:.2}"),
                Piece::Value(Fmt::Int) => format!("{value:.0}"),
            })
            .collect()
    }
}

/// `tpl!["text", label("job"), value(Fmt::Percent), ...]`
macro_rules! tpl {
    ($($p:expr),* $(,)?) => { Tpl(vec![$(Piece::from($p)),*]) };
}

impl From<&str> for Piece {
    fn from(s: &str) -> Piece {
        Piece::Text(s.to_string())
    }
}
impl From<String> for Piece {
    fn from(s: String) -> Piece {
        Piece::Text(s)
    }
}
impl From<Fmt> for Piece {
    fn from(f: Fmt) -> Piece {
        Piece::Value(f)
    }
}
fn label(l: &str) -> Piece {
    Piece::Label(l.to_string())
}

/// A recording rule.
struct Recording {
    record: String,
    expr: String,
}

/// An alerting rule and the data of its two unit tests.
struct Alert {
    name: String,
    severity: Severity,
    expr: String,
    hold: Duration,
    labels: Vec<(String, String)>,
    summary: Tpl,
    description: Tpl,
    runbook: &'static str,
    test: AlertTest,
}

/// One unit-test pair: the series that make the alert fire (with the firing alert's labels and
/// value), and the series just under the threshold.
struct AlertTest {
    interval: u64,
    eval: u64,
    fire: Vec<(String, String)>,
    quiet: Vec<(String, String)>,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Everything the rule file and its tests are built from.
struct Catalogue {
    recordings: Vec<Recording>,
    alerts: Vec<Alert>,
}

const INSTANCE: &str = "10.0.0.1:3000";
const POOL: &str = "main";

/// Series-building helpers bound to a configuration.
struct Series<'a> {
    c: &'a MonitoringConfig,
}

impl Series<'_> {
    /// The labels every test series carries: the service, an instance, the extra matchers.
    fn base(&self) -> Vec<(String, String)> {
        let mut l = vec![
            (self.c.service_label.clone(), self.c.service.clone()),
            ("instance".to_string(), INSTANCE.to_string()),
        ];
        l.extend(extra_matcher_labels(&self.c.extra_matchers));
        l
    }

    fn name(&self, metric: &str, extra: &[(&str, &str)]) -> String {
        let mut labels = self.base();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let inner: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", super::text::promql_str(v)))
            .collect();
        format!("{metric}{{{}}}", inner.join(", "))
    }

    /// A counter growing by `per_step` each step.
    fn counter(
        &self,
        metric: &str,
        extra: &[(&str, &str)],
        per_step: f64,
        steps: u64,
    ) -> (String, String) {
        (
            self.name(metric, extra),
            format!("0+{}x{steps}", num(per_step)),
        )
    }

    /// A gauge holding `v`.
    fn gauge(&self, metric: &str, extra: &[(&str, &str)], v: f64, steps: u64) -> (String, String) {
        (self.name(metric, extra), format!("{}+0x{steps}", num(v)))
    }

    /// Output labels of an alert aggregated `by (<service label>, more...)`.
    fn out(&self, more: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut l = vec![(self.c.service_label.clone(), self.c.service.clone())];
        l.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    }

    /// A request-duration histogram: `per_step[i]` observations per step in bucket `i`
    /// (`buckets.len()` is the +Inf bucket), for one route returning `status`.
    fn histogram(&self, per_step: &[f64], status: &str, steps: u64) -> Vec<(String, String)> {
        let route = [
            ("http_request_method", "GET"),
            ("http_route", "/items/{id}"),
            ("http_response_status_code", status),
        ];
        let mut out = Vec::new();
        let mut cumulative = 0.0;
        let buckets = &self.c.duration_buckets;
        for (i, per) in per_step.iter().enumerate() {
            cumulative += per;
            let le = buckets.get(i).map_or("+Inf".to_string(), |b| num(*b));
            let mut labels: Vec<(&str, &str)> = route.to_vec();
            labels.push(("le", &le));
            out.push(self.counter(&names::bucket(), &labels, cumulative, steps));
        }
        out.push(self.counter(&names::count(), &route, cumulative, steps));
        out
    }

    /// Request counts: `ok` 200s and `errors` 500s per step.
    fn requests(&self, ok: f64, errors: f64, steps: u64) -> Vec<(String, String)> {
        let labels = |status| {
            [
                ("http_request_method", "GET"),
                ("http_route", "/items/{id}"),
                ("http_response_status_code", status),
            ]
        };
        vec![
            self.counter(&names::count(), &labels("200"), ok, steps),
            self.counter(&names::count(), &labels("500"), errors, steps),
        ]
    }
}

/// `name="value"` pairs of the extra matchers (equality matchers only; see validation).
pub(crate) fn extra_matcher_labels(extra: &str) -> Vec<(String, String)> {
    extra
        .split(',')
        .filter_map(|m| {
            let (k, v) = m.split_once('=')?;
            let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// The step and evaluation time of a unit test: a step of a tenth of the window (at least
/// 1 s), and an evaluation after the window, the `for` duration and three more steps.
fn timing(window: u64, hold: Duration) -> (u64, u64) {
    let base = if window > 0 {
        window
    } else {
        secs(hold).max(150)
    };
    let step = (base / 10).max(1);
    let eval = window + secs(hold) + 3 * step;
    let eval = eval.div_ceil(step) * step;
    (step, eval)
}

fn le_matcher(le: f64) -> String {
    let v = num(le);
    if v.contains('.') || v.contains('e') {
        format!("le={}", super::text::promql_str(&v))
    } else {
        // Prometheus 3 normalises `le="1"` to `le="1.0"`; match both.
        format!("le=~\"{v}|{v}\\\\.0\"")
    }
}

fn percent(v: f64) -> String {
    humanize_percentage(v)
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

fn error_ratio_record(c: &MonitoringConfig, w: Duration) -> String {
    format!(
        "{}:http_server_request_errors:ratio_rate{}",
        c.service_label,
        prom_duration(w)
    )
}

fn slow_ratio_record(c: &MonitoringConfig, w: Duration) -> String {
    format!(
        "{}:http_server_request_slow:ratio_rate{}",
        c.service_label,
        prom_duration(w)
    )
}

/// The 5xx share of requests over `w`, 0 (not absent) when there are requests and no errors.
fn error_ratio_expr(c: &MonitoringConfig, w: &str) -> String {
    let (sel, by, count) = (c.selector(), &c.service_label, names::count());
    format!(
        "(\n  sum by ({by}) (rate({count}{{{sel}, http_response_status_code=~\"5..\"}}[{w}]))\n  or\n  0 * sum by ({by}) (rate({count}{{{sel}}}[{w}]))\n)\n/\nsum by ({by}) (rate({count}{{{sel}}}[{w}]))"
    )
}

/// The share of requests slower than the latency objective's threshold over `w`.
fn slow_ratio_expr(c: &MonitoringConfig, w: &str) -> String {
    let (sel, by) = (c.selector(), &c.service_label);
    let le = le_matcher(c.latency_objective_seconds);
    format!(
        "1 - (\n  sum by ({by}) (rate({bucket}{{{sel}, {le}}}[{w}]))\n  /\n  sum by ({by}) (rate({count}{{{sel}}}[{w}]))\n)",
        bucket = names::bucket(),
        count = names::count(),
    )
}

fn catalogue(c: &MonitoringConfig) -> Catalogue {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let rw_secs = secs(c.rate_window);
    let mut alerts = Vec::new();

    // HighErrorRate
    {
        let (step, eval) = timing(rw_secs, c.error_for);
        let n = eval / step + 2;
        let t = c.error_ratio;
        let fire = (2.0 * t).min((1.0 + t) / 2.0);
        let under = 0.95 * t;
        alerts.push(Alert {
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
        });
    }

    // HighLatency
    {
        let (step, eval) = timing(rw_secs, c.latency_for);
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
        alerts.push(Alert {
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
        });
    }

    // ServiceDown
    {
        let (step, eval) = timing(0, c.down_for);
        let n = eval / step + 2;
        let mut labels = s.base();
        labels.sort();
        alerts.push(Alert {
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
        });
    }

    // DatabasePoolNearExhaustion
    {
        let (step, eval) = timing(0, c.pool_usage_for);
        let n = eval / step + 2;
        let t = c.pool_usage_ratio;
        let max = 1000.0;
        let fire = (t * max).floor() + 1.0;
        let under = (t * max).ceil() - 1.0;
        let pool = |used: f64| {
            vec![
                s.gauge(
                    CONNECTION_COUNT,
                    &[(POOL_LABEL, POOL), (STATE_LABEL, "used")],
                    used,
                    n,
                ),
                s.gauge(
                    CONNECTION_COUNT,
                    &[(POOL_LABEL, POOL), (STATE_LABEL, "idle")],
                    max - used,
                    n,
                ),
                s.gauge(CONNECTION_MAX, &[(POOL_LABEL, POOL)], max, n),
            ]
        };
        let by = format!("{svc}, instance, {POOL_LABEL}");
        alerts.push(Alert {
            name: "DatabasePoolNearExhaustion".into(),
            severity: Severity::Ticket,
            expr: format!(
                "sum by ({by}) ({CONNECTION_COUNT}{{{sel}, {STATE_LABEL}=\"used\"}})\n/\nsum by ({by}) ({CONNECTION_MAX}{{{sel}}} > 0)\n> {}",
                num(t)
            ),
            hold: c.pool_usage_for,
            labels: vec![],
            summary: tpl!["Database pool ", label(POOL_LABEL), " of ", label(svc), " nearly exhausted"],
            description: tpl![
                "Pool ",
                label(POOL_LABEL),
                " on ",
                label("instance"),
                " has ",
                Fmt::Percent,
                format!(" of its connections in use (threshold {}).", percent(t)),
            ],
            runbook: "database-connections",
            test: AlertTest {
                interval: step,
                eval,
                fire: pool(fire),
                quiet: pool(under),
                labels: s.out(&[("instance", INSTANCE), (POOL_LABEL, POOL)]),
                value: fire / max,
            },
        });
    }

    // DatabasePoolRequestsWaiting
    {
        let (step, eval) = timing(0, c.pool_waiting_for);
        let n = eval / step + 2;
        let by = format!("{svc}, instance, {POOL_LABEL}");
        alerts.push(Alert {
            name: "DatabasePoolRequestsWaiting".into(),
            severity: Severity::Page,
            expr: format!("max by ({by}) ({PENDING_REQUESTS}{{{sel}}}) > 0"),
            hold: c.pool_waiting_for,
            labels: vec![],
            summary: tpl!["Requests wait for database connections on ", label(svc)],
            description: tpl![
                Fmt::Int,
                " requests on ",
                label("instance"),
                " are waiting for a connection from pool ",
                label(POOL_LABEL),
                format!(
                    " (for more than {}): the pool is exhausted.",
                    prom_duration(c.pool_waiting_for)
                ),
            ],
            runbook: "database-connections",
            test: AlertTest {
                interval: step,
                eval,
                fire: vec![s.gauge(PENDING_REQUESTS, &[(POOL_LABEL, POOL)], 3.0, n)],
                quiet: vec![s.gauge(PENDING_REQUESTS, &[(POOL_LABEL, POOL)], 0.0, n)],
                labels: s.out(&[("instance", INSTANCE), (POOL_LABEL, POOL)]),
                value: 3.0,
            },
        });
    }

    // HighCpuUsage
    {
        let (step, eval) = timing(rw_secs, c.resource_for);
        let n = eval / step + 2;
        let t = c.cpu_cores;
        let cpu = |cores: f64| vec![s.counter(PROCESS_CPU_SECONDS, &[], cores * step as f64, n)];
        alerts.push(Alert {
            name: "HighCpuUsage".into(),
            severity: Severity::Ticket,
            expr: format!(
                "sum by ({svc}, instance) (rate({PROCESS_CPU_SECONDS}{{{sel}}}[{rw}])) > {}",
                num(t)
            ),
            hold: c.resource_for,
            labels: vec![],
            summary: tpl!["High CPU usage on ", label(svc)],
            description: tpl![
                label("instance"),
                " of ",
                label(svc),
                " uses ",
                Fmt::Fixed2,
                format!(" CPU cores over the last {rw} (threshold {}).", num(t)),
            ],
            runbook: "resource-usage",
            test: AlertTest {
                interval: step,
                eval,
                fire: cpu(1.5 * t),
                quiet: cpu(0.95 * t),
                labels: s.out(&[("instance", INSTANCE)]),
                value: 1.5 * t,
            },
        });
    }

    // HighMemoryUsage
    {
        let (step, eval) = timing(0, c.resource_for);
        let n = eval / step + 2;
        let t = c.memory_bytes;
        alerts.push(Alert {
            name: "HighMemoryUsage".into(),
            severity: Severity::Ticket,
            expr: format!(
                "max by ({svc}, instance) ({PROCESS_RESIDENT_MEMORY}{{{sel}}}) > {}",
                num(t)
            ),
            hold: c.resource_for,
            labels: vec![],
            summary: tpl!["High memory usage on ", label(svc)],
            description: tpl![
                label("instance"),
                " of ",
                label(svc),
                " has ",
                Fmt::Bytes,
                format!(" resident (threshold {}B).", humanize_1024(t)),
            ],
            runbook: "resource-usage",
            test: AlertTest {
                interval: step,
                eval,
                fire: vec![s.gauge(PROCESS_RESIDENT_MEMORY, &[], (1.5 * t).round(), n)],
                quiet: vec![s.gauge(PROCESS_RESIDENT_MEMORY, &[], (0.95 * t).round(), n)],
                labels: s.out(&[("instance", INSTANCE)]),
                value: (1.5 * t).round(),
            },
        });
    }

    // FileDescriptorsNearLimit
    {
        let (step, eval) = timing(0, c.resource_for);
        let n = eval / step + 2;
        let t = c.fds_ratio;
        let max = 1000.0;
        let fds = |open: f64| {
            vec![
                s.gauge(PROCESS_OPEN_FDS, &[], open, n),
                s.gauge(PROCESS_MAX_FDS, &[], max, n),
            ]
        };
        let fire = (t * max).floor() + 1.0;
        let under = (t * max).ceil() - 1.0;
        alerts.push(Alert {
            name: "FileDescriptorsNearLimit".into(),
            severity: Severity::Ticket,
            expr: format!(
                "max by ({svc}, instance) ({PROCESS_OPEN_FDS}{{{sel}}})\n/\nmax by ({svc}, instance) ({PROCESS_MAX_FDS}{{{sel}}} > 0)\n> {}",
                num(t)
            ),
            hold: c.resource_for,
            labels: vec![],
            summary: tpl!["File descriptors near the limit on ", label(svc)],
            description: tpl![
                label("instance"),
                " of ",
                label(svc),
                " has ",
                Fmt::Percent,
                format!(" of its file descriptor limit open (threshold {}).", percent(t)),
            ],
            runbook: "resource-usage",
            test: AlertTest {
                interval: step,
                eval,
                fire: fds(fire),
                quiet: fds(under),
                labels: s.out(&[("instance", INSTANCE)]),
                value: fire / max,
            },
        });
    }

    // TraceExportFailing
    {
        let (step, eval) = timing(rw_secs, c.export_failing_for);
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
        alerts.push(Alert {
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
            },
        });
    }

    // SentryEventsDropped
    {
        let (step, eval) = timing(rw_secs, c.sentry_dropped_for);
        let n = eval / step + 2;
        let dropped =
            |per_s: f64| vec![s.counter(SENTRY_EVENTS_DROPPED, &[], per_s * step as f64, n)];
        alerts.push(Alert {
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
            },
        });
    }

    // FailedLoginSurge
    {
        let (step, eval) = timing(rw_secs, c.failed_logins_for);
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
        alerts.push(Alert {
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
                format!(" failed logins/s over the last {rw} (threshold {}/s).", num(t)),
            ],
            runbook: "security-incidents",
            test: AlertTest {
                interval: step,
                eval,
                fire: logins(2.0 * t),
                quiet: logins(0.95 * t),
                labels: s.out(&[]),
                value: 2.0 * t,
            },
        });
    }

    // Burn-rate alerts, one per objective and severity.
    let windows = burn_windows(c);
    let mut recordings = Vec::new();
    for w in &windows {
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
    let smallest = windows.first().map_or(300, |w| secs(*w));
    for slo in ["availability", "latency"] {
        let (objective, record, title): (f64, fn(&MonitoringConfig, Duration) -> String, &str) =
            match slo {
                "availability" => (c.availability_objective, error_ratio_record, "Availability"),
                _ => (c.latency_objective, slow_ratio_record, "Latency"),
            };
        let budget = 1.0 - objective;
        for severity in [Severity::Page, Severity::Ticket, Severity::Info] {
            let rows: Vec<_> = c
                .burn_rate_windows
                .iter()
                .filter(|r| r.severity == severity)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let bound = |f: f64| format!("({} * (1 - {}))", num(f), num(objective));
            // Recorded series keep only the service label: select on it alone.
            let rec_sel = format!("{svc}={}", super::text::promql_str(&c.service));
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
            let (fire_series, quiet_series, what, runbook) = if slo == "availability" {
                (
                    s.requests(1000.0 * (1.0 - fire), 1000.0 * fire, n),
                    s.requests(1000.0 * (1.0 - under), 1000.0 * under, n),
                    "5xx ratio",
                    "high-error-rate",
                )
            } else {
                let b = &c.duration_buckets;
                let at = b
                    .iter()
                    .position(|x| *x == c.latency_objective_seconds)
                    .unwrap_or(0);
                let split = |slow: f64| {
                    let mut per = vec![0.0; b.len() + 1];
                    per[at] = 1000.0 * (1.0 - slow);
                    per[at + 1] = 1000.0 * slow;
                    s.histogram(&per, "200", n)
                };
                (
                    split(fire),
                    split(under),
                    "share of requests slower than the objective",
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
            alerts.push(Alert {
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
                },
            });
        }
    }

    Catalogue { recordings, alerts }
}

fn header(c: &MonitoringConfig, what: &str) -> String {
    format!(
        "# {what} for {}, generated by mercenary_obs::monitoring.\n# Do not edit: change the MonitoringConfig and run\n#   cargo run --example monitoring -- --out monitoring\n",
        c.selector()
    )
}

/// Writes `expr` as a YAML block scalar at `indent`.
fn block(out: &mut String, key: &str, expr: &str, indent: usize) {
    let pad = " ".repeat(indent);
    let _ = writeln!(out, "{pad}{key}: |-");
    for line in expr.lines() {
        let _ = writeln!(out, "{pad}  {line}");
    }
}

fn runbook_url(c: &MonitoringConfig, runbook: &str) -> String {
    format!("{}/{runbook}.md", c.runbook_base_url.trim_end_matches('/'))
}

/// `alert.rules.yml`
pub(crate) fn rules_yaml(c: &MonitoringConfig) -> String {
    let cat = catalogue(c);
    let mut out = header(c, "Prometheus recording and alerting rules");
    out.push_str("groups:\n");
    let _ = writeln!(
        out,
        "  - name: {}",
        quote(&format!("{}-slo-recording", c.service))
    );
    out.push_str("    rules:\n");
    for r in &cat.recordings {
        let _ = writeln!(out, "      - record: {}", quote(&r.record));
        block(&mut out, "expr", &r.expr, 8);
    }
    let _ = writeln!(out, "  - name: {}", quote(&format!("{}-alerts", c.service)));
    out.push_str("    rules:\n");
    for a in &cat.alerts {
        let _ = writeln!(out, "      - alert: {}", quote(&a.name));
        block(&mut out, "expr", &a.expr, 8);
        if !a.hold.is_zero() {
            let _ = writeln!(out, "        for: {}", prom_duration(a.hold));
        }
        out.push_str("        labels:\n");
        let _ = writeln!(out, "          severity: {}", quote(a.severity.as_str()));
        for (k, v) in &a.labels {
            let _ = writeln!(out, "          {k}: {}", quote(v));
        }
        out.push_str("        annotations:\n");
        let _ = writeln!(out, "          summary: {}", quote(&a.summary.go()));
        let _ = writeln!(out, "          description: {}", quote(&a.description.go()));
        let _ = writeln!(
            out,
            "          runbook_url: {}",
            quote(&runbook_url(c, a.runbook))
        );
    }
    out
}

/// `alert.rules.test.yml`
pub(crate) fn tests_yaml(c: &MonitoringConfig) -> String {
    let cat = catalogue(c);
    let eval_interval = cat
        .alerts
        .iter()
        .map(|a| a.test.interval)
        .min()
        .unwrap_or(60);
    let mut out = header(c, "promtool unit tests of the rules");
    out.push_str("# Run: promtool test rules alert.rules.test.yml\n");
    out.push_str("rule_files:\n  - \"alert.rules.yml\"\n");
    let _ = writeln!(
        out,
        "evaluation_interval: {}",
        prom_duration(Duration::from_secs(eval_interval))
    );
    out.push_str("tests:\n");
    for a in &cat.alerts {
        let t = &a.test;
        for fires in [true, false] {
            let _ = writeln!(
                out,
                "  # {}: {}",
                a.name,
                if fires {
                    "fires"
                } else {
                    "just under the threshold: does not fire"
                }
            );
            let _ = writeln!(
                out,
                "  - interval: {}",
                prom_duration(Duration::from_secs(t.interval))
            );
            out.push_str("    input_series:\n");
            for (series, values) in if fires { &t.fire } else { &t.quiet } {
                let _ = writeln!(out, "      - series: {}", quote(series));
                let _ = writeln!(out, "        values: {}", quote(values));
            }
            out.push_str("    alert_rule_test:\n");
            let _ = writeln!(
                out,
                "      - eval_time: {}",
                prom_duration(Duration::from_secs(t.eval))
            );
            let _ = writeln!(out, "        alertname: {}", quote(&a.name));
            if !fires {
                out.push_str("        exp_alerts: []\n");
                continue;
            }
            out.push_str("        exp_alerts:\n");
            out.push_str("          - exp_labels:\n");
            let _ = writeln!(
                out,
                "              severity: {}",
                quote(a.severity.as_str())
            );
            for (k, v) in a.labels.iter().chain(&t.labels) {
                let _ = writeln!(out, "              {k}: {}", quote(v));
            }
            out.push_str("            exp_annotations:\n");
            let _ = writeln!(
                out,
                "              summary: {}",
                quote(&a.summary.render(&t.labels, t.value))
            );
            let _ = writeln!(
                out,
                "              description: {}",
                quote(&a.description.render(&t.labels, t.value))
            );
            let _ = writeln!(
                out,
                "              runbook_url: {}",
                quote(&runbook_url(c, a.runbook))
            );
        }
    }
    out
}

/// The names of the alerts generated for `c`, in rule-file order.
pub(crate) fn alert_names(c: &MonitoringConfig) -> Vec<String> {
    catalogue(c).alerts.into_iter().map(|a| a.name).collect()
}
