//! The monitoring kit: Prometheus alert and recording rules, their `promtool` unit tests,
//! Grafana dashboards and an Alertmanager routing example, generated from the same metric
//! names the crate emits, so they cannot drift.
//!
//! ```
//! use mercenary_obs::monitoring::{MonitoringConfig, generate};
//!
//! let mut config = MonitoringConfig::default();
//! config.service = "billing-api".into();
//! config.error_ratio = 0.02;
//! let files = generate(&config).unwrap();
//! let rules = files.iter().find(|f| f.path == "alert.rules.yml").unwrap();
//! assert!(rules.contents.contains("alert: \"HighErrorRate\""));
//! ```
//!
//! `cargo run --example monitoring -- --out DIR` writes the files; the output for
//! [`MonitoringConfig::default`] is checked in under `monitoring/` and a test fails when it
//! differs from what this module generates.
//!
//! | file | what |
//! |---|---|
//! | `alert.rules.yml` | recording rules (SLO error and slow-call ratios per burn-rate window) and alerts |
//! | `alert.rules.test.yml` | `promtool test rules` cases: for every alert, one that fires and one just under the threshold that does not; for the error and latency alerts, gRPC-only and mixed HTTP + gRPC services too |
//! | `alertmanager.yml` | `page` → PagerDuty, `ticket` → email, `info` → Slack; grouping; inhibition |
//! | `dashboards/*.json` | Grafana: application overview, business, database, process and runtime |
//! | `grafana/datasources.yml`, `grafana/dashboards.yml` | Grafana provisioning: Prometheus, Tempo and Loki linked both ways; the dashboards provider |
//! | `prometheus.yml` | the local stack's Prometheus: the service's scrape, the rule file, Alertmanager |
//! | `loki.yml` | Loki with per-stream retention ([`RetentionSettings`]) |
//! | `alloy/config.alloy` | Grafana Alloy: the containers' JSON log lines to Loki, with four low-cardinality stream labels |
//! | `tempo.yml`, `otel-collector.yml` | Tempo (block retention) and an OpenTelemetry Collector (OTLP in, Tempo out) |
//! | `compose.yaml`, `demo.Dockerfile` | the local stack, every image pinned, around the demo built from this repository |
//!
//! ## Alerts
//!
//! | alert | severity | fires when (defaults) |
//! |---|---|---|
//! | `HighErrorRate` | page | HTTP 5xx and failed gRPC calls over 5% of the requests and calls served (rate over 5m), for 5m |
//! | `HighLatency` | page | p99 of the calls served (`http_server_request_duration_seconds` and `rpc_server_call_duration_seconds`) over 1 s, for 5m |
//! | `ServiceDown` | page | `up == 0` for 2m |
//! | `DatabasePoolNearExhaustion` | ticket | used / max connections over 90%, for 5m |
//! | `DatabasePoolRequestsWaiting` | page | requests waiting for a connection, for 2m |
//! | `HighCpuUsage` | ticket | over 0.9 CPU cores, for 15m |
//! | `HighMemoryUsage` | ticket | resident memory over 1 GiB, for 15m |
//! | `FileDescriptorsNearLimit` | ticket | open fds over 80% of the limit, for 15m |
//! | `TraceExportFailing` | ticket | spans dropped by the export queue or the exporter, for 10m |
//! | `TraceExportMostlyFailing` | ticket | over 50% of the OTLP export calls fail or time out (`mercenary_obs_export_requests_total`), for 10m |
//! | `SentryEventsDropped` | info | Sentry events dropped, for 15m |
//! | `FailedLoginSurge` | ticket | `security_events_total{kind="failed_login"}` over 1/s, for 5m |
//! | `AvailabilityBudgetBurnPage` / `…Ticket` | page / ticket | multi-window multi-burn-rate on the availability objective (99.9%) |
//! | `LatencyBudgetBurnPage` / `…Ticket` | page / ticket | the same on the latency objective (99% under 0.5 s) |
//!
//! Every alert has `severity`, a `summary`, a `description` with the current value and a
//! `runbook_url` into `docs/runbooks/`.
//!
//! ## Decisions
//!
//! - **The service** is the Prometheus `job` (the label is configurable): OpenTelemetry maps
//!   `service.name` to `job`, and `target_info{service_name}` carries the same name. Rules select
//!   it with `job="<service>"` plus [`MonitoringConfig::extra_matchers`]; dashboards have
//!   `$datasource` and `$service` template variables (`label_values(target_info, job)`).
//! - **Errors** are 5xx responses (panics are answered 500); 4xx are the client's and a
//!   cancelled request (no status) is neither error nor success for the error ratio's numerator.
//! - **gRPC** calls are served traffic like HTTP requests (they are not in the HTTP histogram):
//!   a call is an error when `rpc_server_call_duration_seconds` gives it an `error_type` (server
//!   faults such as `INTERNAL`, `UNAVAILABLE`, and `cancelled`; client faults such as
//!   `NOT_FOUND` or `INVALID_ARGUMENT` have none). The error ratio is per service (HTTP 5xx +
//!   failed gRPC calls) / (HTTP requests + gRPC calls), each sum taken over the union (`or`) of
//!   the two metrics' series, whose label sets never meet, so that the ratio exists (with its
//!   service label) when a service serves only one of the two; `HighLatency` and the latency
//!   objective read both histograms as one distribution (same buckets). A gRPC call's duration
//!   runs to the end of its response stream: long-lived streaming methods count as slow calls.
//! - **Burn-rate alerts** follow the Google SRE workbook (chapter 5, "multiwindow, multi-burn-rate"):
//!   page on 14.4× over 1h and 5m or 6× over 6h and 30m; ticket on 3× over 1d and 2h or 1× over
//!   3d and 6h. Each window's ratio is a recording rule (`job:http_server_request_errors:ratio_rate1h`,
//!   `job:http_server_request_slow:ratio_rate1h`, gRPC calls included despite the names, kept
//!   for the queries that read them); the latency objective's threshold must be a
//!   bucket boundary of the duration histogram, and the rules match the `le` label both as this
//!   crate writes it (`1`) and as Prometheus 3 normalises it (`1.0`). The page and ticket alerts
//!   carry `slo="availability"` or `slo="latency"`, so Alertmanager's page-inhibits-ticket rule
//!   applies per objective only.
//! - **Pool alerts** are per instance and pool (each replica has its own pool); a pool whose
//!   `max` is 0 or unset is ignored rather than divided by.
//! - **Trace export failing** counts `mercenary_obs_spans_dropped_total` with reason
//!   `export_failed` or `queue_full` (the collector refuses or cannot keep up); the in-process
//!   bounds (`buffer_full`, `too_many_spans`) are capacity settings, shown on the runtime
//!   dashboard instead.
//! - **Runbook links** are `<runbook_base_url>/<name>.md`; the default base is the relative
//!   `docs/runbooks` of this repository. Set it to where your runbooks are published.
//! - **Dashboards**: the overview has the HTTP panels, gRPC panels (calls by method and status
//!   code, error ratio, latency by method) and outgoing calls (HTTP and gRPC clients by server
//!   address: rate, error ratio, latency).
//! - **Trace links**: latency panels ask for exemplars, which the crate publishes (OpenMetrics
//!   `/metrics`) only for traces it exported, and `grafana/datasources.yml` links the Prometheus
//!   datasource's exemplars to Tempo (`exemplarTraceIdDestinations`), so a slow bucket opens a
//!   trace that exists. Dashboards also reach traces through the `$tempo` datasource: the
//!   overview has a TraceQL table of the service's error traces (trace ids open the trace), and
//!   the per-route panels carry a data link to a TraceQL search of the route's error traces.
//! - **The local stack** (`docker compose up --build` in the kit's directory) runs the kit:
//!   Prometheus (metrics kept [`RetentionSettings::metrics`], a command-line flag in
//!   `compose.yaml`; exemplar storage on), Alertmanager, Grafana with the dashboards and
//!   datasources provisioned, Loki (application logs 7 days, 30 in production, audit lines a
//!   year, by stream selector), Alloy shipping the demo's stdout and stderr, an OpenTelemetry
//!   Collector and Tempo (traces 7 days). Service names and ports are shared constants, so the
//!   files agree with each other; the repository's `docs/local-stack.md` walks through it.
//! - **Unit tests**: the `promtool` cases are generated from the same configuration as the
//!   rules (series shaped to put each alert just over and just under its threshold), with the
//!   rendered annotations predicted the way Prometheus's template functions format numbers.

mod alertmanager;
mod alloy;
mod dashboards;
mod grafana;
mod loki;
mod names;
mod prometheus;
mod rules;
mod stack;
mod tempo;
pub(crate) mod text;

pub use stack::RetentionSettings;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::core::error::Error;

/// The names of the alerts [`generate`] writes for `config`, in rule-file order.
pub fn alert_names(config: &MonitoringConfig) -> Vec<String> {
    rules::alert_names(config)
}

/// How urgent an alert is: the `severity` label, which Alertmanager routes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Wake someone up (PagerDuty).
    Page,
    /// Needs action, not now (email).
    Ticket,
    /// For information (Slack).
    Info,
}

impl Severity {
    /// The label value: `page`, `ticket` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
            Severity::Info => "info",
        }
    }
}

/// One row of a multi-window multi-burn-rate alert: fire when the error budget burns `factor`
/// times faster than sustainable over both the `long` and the `short` window.
#[derive(Clone, Debug, PartialEq)]
pub struct BurnRateWindow {
    /// The long window (e.g. 1h): how much budget must have burnt.
    pub long: Duration,
    /// The short window (e.g. 5m): that it is still burning, so the alert resets quickly.
    pub short: Duration,
    /// The burn rate: 1 spends exactly the budget over the SLO period.
    pub factor: f64,
    /// The alert this row belongs to.
    pub severity: Severity,
}

/// The SRE workbook's four rows for a 30-day objective.
pub fn default_burn_rate_windows() -> Vec<BurnRateWindow> {
    let row = |long: u64, short: u64, factor: f64, severity| BurnRateWindow {
        long: Duration::from_secs(long),
        short: Duration::from_secs(short),
        factor,
        severity,
    };
    vec![
        row(3600, 300, 14.4, Severity::Page),
        row(6 * 3600, 1800, 6.0, Severity::Page),
        row(86_400, 2 * 3600, 3.0, Severity::Ticket),
        row(3 * 86_400, 6 * 3600, 1.0, Severity::Ticket),
    ]
}

/// Where Alertmanager sends each severity. The defaults are placeholders to replace.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AlertmanagerSettings {
    /// PagerDuty Events API v2 routing key for `page`. Default: a placeholder.
    pub pagerduty_routing_key: String,
    /// Address tickets are mailed to. Default: `team@example.com`.
    pub email_to: String,
    /// Sender address. Default: `alertmanager@example.com`.
    pub email_from: String,
    /// SMTP server, `host:port`. Default: `smtp.example.com:587`.
    pub smtp_smarthost: String,
    /// Slack incoming-webhook URL for `info`. Default: a placeholder.
    pub slack_api_url: String,
    /// Slack channel. Default: `#monitoring-alerts`.
    pub slack_channel: String,
    /// Wait before the first notification of a group. Default: 30 s.
    pub group_wait: Duration,
    /// Wait before notifying about new alerts of a group. Default: 5 min.
    pub group_interval: Duration,
    /// Wait before repeating a notification. Default: 4 h (1 h for pages).
    pub repeat_interval: Duration,
}

impl Default for AlertmanagerSettings {
    fn default() -> Self {
        Self {
            pagerduty_routing_key: "REPLACE-WITH-PAGERDUTY-ROUTING-KEY".into(),
            email_to: "team@example.com".into(),
            email_from: "alertmanager@example.com".into(),
            smtp_smarthost: "smtp.example.com:587".into(),
            slack_api_url: "https://hooks.slack.com/services/REPLACE/WITH/WEBHOOK".into(),
            slack_channel: "#monitoring-alerts".into(),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
        }
    }
}

/// The application's business metrics shown on the business dashboard (names as the
/// `counter!`/`gauge!`/`histogram!` macros register them). Defaults: the demo's.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BusinessMetricNames {
    /// Counter of signups. Default: `user_signups_total`.
    pub signups: String,
    /// Counter of created projects. Default: `projects_created_total`.
    pub projects: String,
    /// Counter of submitted proposals. Default: `proposals_submitted_total`.
    pub proposals: String,
    /// Counter of payments with `currency` and `outcome` labels. Default: `payments_total`.
    pub payments: String,
    /// Histogram of payment amounts with a `currency` label. Default: `payment_amount_dollars`.
    pub payment_amount: String,
    /// Counter of feature usage with a `feature` label. Default: `feature_usage_total`.
    pub feature_usage: String,
    /// Gauge of active sessions. Default: `active_sessions`.
    pub active_sessions: String,
}

impl Default for BusinessMetricNames {
    fn default() -> Self {
        Self {
            signups: "user_signups_total".into(),
            projects: "projects_created_total".into(),
            proposals: "proposals_submitted_total".into(),
            payments: "payments_total".into(),
            payment_amount: "payment_amount_dollars".into(),
            feature_usage: "feature_usage_total".into(),
            active_sessions: "active_sessions".into(),
        }
    }
}

/// What to generate: the service, thresholds, `for` durations, rate windows and objectives.
/// Every field has a documented default ([`MonitoringConfig::default`]); change fields in place.
///
/// A duration of zero for a `*_for` field means the alert fires on the first evaluation that
/// matches (no `for`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MonitoringConfig {
    /// The service: the value of [`MonitoringConfig::service_label`]. Default: `mercenary-api`.
    pub service: String,
    /// The label naming the service. Default: `job`.
    pub service_label: String,
    /// More matchers for every selector, e.g. `namespace="prod"`. Default: none.
    pub extra_matchers: String,
    /// The `rate()` window of the threshold alerts. Default: 5 min.
    pub rate_window: Duration,
    /// `HighErrorRate`: share of the requests and gRPC calls served that failed (HTTP 5xx, gRPC
    /// calls with an `error_type`). Default: 0.05.
    pub error_ratio: f64,
    /// `HighErrorRate` `for`. Default: 5 min.
    pub error_for: Duration,
    /// `HighLatency`: p99 of the requests and gRPC calls served, in seconds. Default: 1.
    pub latency_p99_seconds: f64,
    /// `HighLatency` `for`. Default: 5 min.
    pub latency_for: Duration,
    /// `ServiceDown` `for`. Default: 2 min.
    pub down_for: Duration,
    /// `DatabasePoolNearExhaustion`: used / max connections. Default: 0.9.
    pub pool_usage_ratio: f64,
    /// `DatabasePoolNearExhaustion` `for`. Default: 5 min.
    pub pool_usage_for: Duration,
    /// `DatabasePoolRequestsWaiting` `for`. Default: 2 min.
    pub pool_waiting_for: Duration,
    /// `HighCpuUsage`: CPU seconds per second (cores). Default: 0.9.
    pub cpu_cores: f64,
    /// `HighMemoryUsage`: resident memory in bytes. Default: 1 GiB.
    pub memory_bytes: f64,
    /// `FileDescriptorsNearLimit`: open / max fds. Default: 0.8.
    pub fds_ratio: f64,
    /// `for` of the three resource alerts. Default: 15 min.
    pub resource_for: Duration,
    /// `TraceExportFailing` `for`. Default: 10 min.
    pub export_failing_for: Duration,
    /// `SentryEventsDropped` `for`. Default: 15 min.
    pub sentry_dropped_for: Duration,
    /// `FailedLoginSurge`: failed logins per second. Default: 1.
    pub failed_logins_per_second: f64,
    /// `FailedLoginSurge` `for`. Default: 5 min.
    pub failed_logins_for: Duration,
    /// Availability objective: share of the requests and gRPC calls served that did not fail.
    /// Default: 0.999.
    pub availability_objective: f64,
    /// Latency objective: share of the requests and gRPC calls served faster than
    /// [`MonitoringConfig::latency_objective_seconds`]. Default: 0.99.
    pub latency_objective: f64,
    /// The latency objective's threshold; must be a bucket boundary of
    /// [`MonitoringConfig::duration_buckets`]. Default: 0.5.
    pub latency_objective_seconds: f64,
    /// The duration buckets the service uses (for HTTP requests and gRPC calls alike). Default:
    /// [`crate::DEFAULT_DURATION_BUCKETS`].
    pub duration_buckets: Vec<f64>,
    /// The burn-rate rows. Default: [`default_burn_rate_windows`].
    pub burn_rate_windows: Vec<BurnRateWindow>,
    /// `for` of the burn-rate alerts. Default: 0 (the short window already debounces).
    pub burn_rate_for: Duration,
    /// Base of the `runbook_url` annotations. Default: `docs/runbooks`.
    pub runbook_base_url: String,
    /// Prefix of the dashboards' uids. Default: `mercenary-obs`.
    pub dashboard_uid_prefix: String,
    /// The business metrics on the business dashboard.
    pub business: BusinessMetricNames,
    /// Alertmanager receivers and timings.
    pub alertmanager: AlertmanagerSettings,
    /// How long the local stack's Loki, Prometheus and Tempo keep logs, metrics and traces.
    pub retention: RetentionSettings,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Self {
            service: "mercenary-api".into(),
            service_label: "job".into(),
            extra_matchers: String::new(),
            rate_window: min(5),
            error_ratio: 0.05,
            error_for: min(5),
            latency_p99_seconds: 1.0,
            latency_for: min(5),
            down_for: min(2),
            pool_usage_ratio: 0.9,
            pool_usage_for: min(5),
            pool_waiting_for: min(2),
            cpu_cores: 0.9,
            memory_bytes: 1024.0 * 1024.0 * 1024.0,
            fds_ratio: 0.8,
            resource_for: min(15),
            export_failing_for: min(10),
            sentry_dropped_for: min(15),
            failed_logins_per_second: 1.0,
            failed_logins_for: min(5),
            availability_objective: 0.999,
            latency_objective: 0.99,
            latency_objective_seconds: 0.5,
            duration_buckets: crate::DEFAULT_DURATION_BUCKETS.to_vec(),
            burn_rate_windows: default_burn_rate_windows(),
            burn_rate_for: Duration::ZERO,
            runbook_base_url: "docs/runbooks".into(),
            dashboard_uid_prefix: "mercenary-obs".into(),
            business: BusinessMetricNames::default(),
            alertmanager: AlertmanagerSettings::default(),
            retention: RetentionSettings::default(),
        }
    }
}

impl MonitoringConfig {
    /// The PromQL matchers selecting the service, without braces: `job="mercenary-api"`.
    pub fn selector(&self) -> String {
        let mut s = format!("{}={}", self.service_label, text::promql_str(&self.service));
        if !self.extra_matchers.trim().is_empty() {
            s.push_str(", ");
            s.push_str(self.extra_matchers.trim());
        }
        s
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |setting: &'static str, value: String, expected: &str| {
            Err(Error::InvalidSetting {
                setting,
                value,
                expected: expected.into(),
            })
        };
        let label_ok = |l: &str| {
            let mut b = l.bytes();
            matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        };
        if self.service.is_empty() {
            return bad(
                "MonitoringConfig::service",
                String::new(),
                "a non-empty service name",
            );
        }
        if !label_ok(&self.service_label) {
            return bad(
                "MonitoringConfig::service_label",
                self.service_label.clone(),
                "a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            );
        }
        if !self.extra_matchers.trim().is_empty() {
            let parsed = rules::extra_matcher_labels(&self.extra_matchers);
            let given = self.extra_matchers.split(',').count();
            if parsed.len() != given
                || parsed
                    .iter()
                    .any(|(k, v)| !label_ok(k) || v.contains(['"', '\\']))
            {
                return bad(
                    "MonitoringConfig::extra_matchers",
                    self.extra_matchers.clone(),
                    "comma-separated equality matchers, `label=\"value\"` (no quotes or \
                     backslashes or commas in values)",
                );
            }
        }
        for (setting, v) in [
            ("MonitoringConfig::error_ratio", self.error_ratio),
            ("MonitoringConfig::pool_usage_ratio", self.pool_usage_ratio),
            ("MonitoringConfig::fds_ratio", self.fds_ratio),
            (
                "MonitoringConfig::availability_objective",
                self.availability_objective,
            ),
            (
                "MonitoringConfig::latency_objective",
                self.latency_objective,
            ),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return bad(setting, v.to_string(), "a ratio between 0 and 1, exclusive");
            }
        }
        for (setting, v) in [
            (
                "MonitoringConfig::latency_p99_seconds",
                self.latency_p99_seconds,
            ),
            ("MonitoringConfig::cpu_cores", self.cpu_cores),
            ("MonitoringConfig::memory_bytes", self.memory_bytes),
            (
                "MonitoringConfig::failed_logins_per_second",
                self.failed_logins_per_second,
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(setting, v.to_string(), "a positive number");
            }
        }
        if self.rate_window.is_zero() {
            return bad(
                "MonitoringConfig::rate_window",
                "0s".into(),
                "a window of at least 1s (at least 2 scrape intervals to have a rate)",
            );
        }
        let b = &self.duration_buckets;
        if b.is_empty()
            || b.windows(2)
                .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
        {
            return bad(
                "MonitoringConfig::duration_buckets",
                format!("{b:?}"),
                "increasing bucket boundaries",
            );
        }
        if !b.contains(&self.latency_objective_seconds)
            || self.latency_objective_seconds >= b[b.len() - 1]
        {
            return bad(
                "MonitoringConfig::latency_objective_seconds",
                self.latency_objective_seconds.to_string(),
                &format!("a bucket boundary below the last one, one of {b:?}"),
            );
        }
        let p99 = self.latency_p99_seconds;
        if b.len() < 2 || p99 < b[0] || p99 > b[b.len() - 2] {
            return bad(
                "MonitoringConfig::latency_p99_seconds",
                p99.to_string(),
                "a threshold between the first and the second-to-last bucket boundary (a p99 \
                 outside the buckets cannot be measured)",
            );
        }
        if let Some((setting, value, expected)) = self.retention.problem() {
            return bad(setting, value, &expected);
        }
        for w in &self.burn_rate_windows {
            let budget = 1.0 - self.availability_objective.max(self.latency_objective);
            if w.long.is_zero()
                || w.short.is_zero()
                || w.factor.is_nan()
                || w.factor <= 0.0
                || w.factor * budget >= 1.0
            {
                return bad(
                    "MonitoringConfig::burn_rate_windows",
                    format!("{w:?}"),
                    "non-zero windows and a factor above 0 whose error ratio (factor × budget) \
                     stays below 1",
                );
            }
        }
        Ok(())
    }
}

/// One generated file: its path relative to the output directory, and its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative path, `/`-separated (`alert.rules.yml`, `dashboards/overview.json`).
    pub path: String,
    /// The file's text.
    pub contents: String,
}

/// Generates every file of the kit for `config`.
///
/// # Errors
///
/// [`Error::InvalidSetting`] naming the field of `config` that is out of range.
pub fn generate(config: &MonitoringConfig) -> Result<Vec<GeneratedFile>, Error> {
    config.validate()?;
    let file = |path: &str, contents: String| GeneratedFile {
        path: path.into(),
        contents,
    };
    let mut files = vec![
        file(stack::RULES_FILE, rules::rules_yaml(config)),
        file("alert.rules.test.yml", rules::tests_yaml(config)),
        file(
            stack::ALERTMANAGER_FILE,
            alertmanager::alertmanager_yaml(config),
        ),
        file(stack::DATASOURCES_FILE, grafana::datasources_yaml(config)),
        file(
            stack::DASHBOARD_PROVIDER_FILE,
            grafana::dashboard_provider_yaml(),
        ),
        file(stack::PROMETHEUS_FILE, prometheus::prometheus_yaml(config)),
        file(stack::LOKI_FILE, loki::loki_yaml(config)),
        file(stack::ALLOY_FILE, alloy::alloy_config()),
        file(stack::TEMPO_FILE, tempo::tempo_yaml(config)),
        file(stack::COLLECTOR_FILE, tempo::collector_yaml()),
        file(stack::COMPOSE_FILE, stack::compose_yaml(config)),
        file(stack::DOCKERFILE, stack::dockerfile()),
        file(stack::DOCKERIGNORE, stack::dockerignore()),
    ];
    for (name, json) in dashboards::dashboards(config) {
        files.push(file(
            &format!("{}/{name}.json", stack::DASHBOARDS_DIR),
            json,
        ));
    }
    Ok(files)
}

/// Generates the kit for `config` into `dir` (created when missing), returning the paths
/// written.
///
/// # Errors
///
/// [`WriteError::Config`] for a bad configuration, [`WriteError::Io`] when a file cannot be
/// written.
pub fn write_to(config: &MonitoringConfig, dir: &Path) -> Result<Vec<PathBuf>, WriteError> {
    let files = generate(config).map_err(WriteError::Config)?;
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| WriteError::Io(parent.to_path_buf(), e))?;
        }
        std::fs::write(&path, f.contents).map_err(|e| WriteError::Io(path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}

/// Why [`write_to`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriteError {
    /// The configuration is invalid.
    Config(Error),
    /// A file or directory could not be written.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Config(e) => write!(f, "invalid monitoring configuration: {e}"),
            WriteError::Io(path, e) => write!(f, "cannot write {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::Config(e) => Some(e),
            WriteError::Io(_, e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_name_the_field() {
        let c = MonitoringConfig {
            latency_objective_seconds: 0.3,
            ..Default::default()
        };
        let err = generate(&c).unwrap_err().to_string();
        assert!(err.contains("latency_objective_seconds"), "{err}");
        let c = MonitoringConfig {
            error_ratio: 1.5,
            ..Default::default()
        };
        assert!(
            generate(&c)
                .unwrap_err()
                .to_string()
                .contains("error_ratio")
        );
    }

    #[test]
    fn selector_escapes_the_service() {
        let c = MonitoringConfig {
            service: "a\"b".into(),
            extra_matchers: "env=\"prod\"".into(),
            ..Default::default()
        };
        assert_eq!(c.selector(), "job=\"a\\\"b\", env=\"prod\"");
    }
}
