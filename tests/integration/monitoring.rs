//! The monitoring kit proven with the real tools: the checked-in files are what the code
//! generates, `promtool` checks and unit-tests the rules, `amtool` checks the Alertmanager routing,
//! and a real Prometheus running the generated rules against the demo fires the alerts the
//! traffic calls for and answers every dashboard query.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use common::processes::{Demo, Prometheus, temp_dir};
use mercenary_obs::monitoring::{
    BurnRateWindow, GeneratedFile, MonitoringConfig, Severity, alert_names, generate,
};
use mercenary_obs::names::{CLIENT_REQUEST_DURATION, RPC_CLIENT_DURATION, RPC_SERVER_DURATION};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a tool; fails the test with a message saying how to get it when it is missing.
fn run(tool: &str, args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            let package = if tool == "amtool" {
                "prometheus-alertmanager"
            } else {
                "prometheus"
            };
            panic!(
                "`{tool}` is needed for this test ({e}); install it with `apt-get install -y \
                 {package}` or run `bash scripts/test.sh`, which does"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A configuration with windows and `for` durations short enough for a test against a live
/// Prometheus scraping every second.
fn fast_config() -> MonitoringConfig {
    let mut c = MonitoringConfig::default();
    let s = Duration::from_secs;
    c.rate_window = s(10);
    c.error_for = s(3);
    c.latency_for = s(3);
    c.down_for = s(3);
    c.pool_usage_for = s(3);
    c.pool_waiting_for = s(3);
    c.resource_for = s(3);
    c.export_failing_for = s(3);
    c.sentry_dropped_for = s(3);
    c.failed_logins_for = s(3);
    let row = |long, short, factor, severity| BurnRateWindow {
        long: s(long),
        short: s(short),
        factor,
        severity,
    };
    c.burn_rate_windows = vec![
        row(30, 10, 14.4, Severity::Page),
        row(60, 20, 6.0, Severity::Page),
        row(120, 40, 3.0, Severity::Ticket),
        row(180, 60, 1.0, Severity::Ticket),
    ];
    c
}

fn write_kit(files: &[GeneratedFile], dir: &Path) {
    for f in files {
        let path = dir.join(&f.path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &f.contents).unwrap();
    }
}

fn files_under(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, base, out);
        } else {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel);
        }
    }
}

#[test]
fn the_checked_in_kit_is_what_the_code_generates() {
    let dir = repo().join("monitoring");
    let files = generate(&MonitoringConfig::default()).unwrap();
    let fix = "regenerate it with `cargo run --example monitoring -- --out monitoring`";
    for f in &files {
        let path = dir.join(&f.path);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); {fix}", path.display()));
        assert!(
            on_disk == f.contents,
            "{} differs from what the code generates; {fix}",
            path.display()
        );
    }
    let mut present = BTreeSet::new();
    files_under(&dir, &dir, &mut present);
    let generated: BTreeSet<String> = files.iter().map(|f| f.path.clone()).collect();
    let stale: Vec<_> = present.difference(&generated).collect();
    assert!(
        stale.is_empty(),
        "files in monitoring/ the code does not generate: {stale:?}"
    );
}

/// `promtool check rules` and `promtool test rules` on a generated kit; every alert has a case
/// that fires and a case that does not.
fn promtool_proves(dir: &Path, config: &MonitoringConfig) {
    let (ok, out) = run("promtool", &["check", "rules", "alert.rules.yml"], dir);
    assert!(ok, "promtool check rules failed:\n{out}");
    let (ok, out) = run("promtool", &["test", "rules", "alert.rules.test.yml"], dir);
    assert!(ok, "promtool test rules failed:\n{out}");

    let tests = std::fs::read_to_string(dir.join("alert.rules.test.yml")).unwrap();
    let names = alert_names(config);
    assert!(names.len() >= 15, "{names:?}");
    for name in &names {
        let cases: Vec<&str> = tests
            .split("alert_rule_test:")
            .skip(1)
            .filter(|case| case.contains(&format!("alertname: \"{name}\"\n")))
            .collect();
        let quiet = cases
            .iter()
            .filter(|c| c.contains("exp_alerts: []"))
            .count();
        let fires = cases.iter().filter(|c| c.contains("exp_labels:")).count();
        assert!(
            quiet >= 1 && fires >= 1,
            "{name} needs a firing and a non-firing unit test ({fires} firing, {quiet} quiet)"
        );
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_checked_in_rules() {
    promtool_proves(&repo().join("monitoring"), &MonitoringConfig::default());
}

#[test]
fn promtool_unit_tests_the_rules_of_another_configuration() {
    let mut config = fast_config();
    config.service = "billing-api".into();
    config.extra_matchers = "namespace=\"prod\"".into();
    config.error_ratio = 0.02;
    config.latency_p99_seconds = 0.3;
    config.latency_objective_seconds = 0.25;
    config.memory_bytes = 512.0 * 1024.0 * 1024.0;
    let dir = temp_dir("kit");
    write_kit(&generate(&config).unwrap(), &dir);
    promtool_proves(&dir, &config);
    let rules = std::fs::read_to_string(dir.join("alert.rules.yml")).unwrap();
    assert!(rules.contains("job=\"billing-api\", namespace=\"prod\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The generated unit tests cut into their test groups: the head (up to `tests:`) and, per
/// group, the comment naming it (`HighErrorRate: fires`) and its YAML.
fn test_groups(tests: &str) -> (String, Vec<(String, String)>) {
    let at = tests.find("tests:\n").unwrap() + "tests:\n".len();
    let (head, body) = tests.split_at(at);
    let mut groups: Vec<(String, String)> = Vec::new();
    for line in body.split_inclusive('\n') {
        if let Some(title) = line.strip_prefix("  # ") {
            groups.push((title.trim_end().to_string(), String::new()));
        }
        groups
            .last_mut()
            .expect("a group starts with its comment")
            .1
            .push_str(line);
    }
    (head.to_string(), groups)
}

/// The gRPC cases of the error and latency alerts prove the rules count gRPC calls: each one
/// passes against the generated rules and fails against the same rules with the gRPC metric
/// renamed away (the RPC half of every expression selecting nothing); the `NOT_FOUND` cases
/// also fail when gRPC client faults are counted as errors.
#[test]
fn the_grpc_cases_fail_when_the_rules_lose_their_rpc_half() {
    let config = fast_config();
    let dir = temp_dir("no-rpc");
    write_kit(&generate(&config).unwrap(), &dir);
    let rules = std::fs::read_to_string(dir.join("alert.rules.yml")).unwrap();
    let errors = "error_type!=\"\"";
    assert!(rules.contains(RPC_SERVER_DURATION) && rules.contains(errors));
    let mutants = [
        (
            "no-rpc.rules.yml",
            rules.replace(RPC_SERVER_DURATION, "rpc_not_counted_duration_seconds"),
        ),
        (
            "not-found-counted.rules.yml",
            rules.replace(errors, "rpc_response_status_code!=\"OK\""),
        ),
    ];
    for (name, text) in &mutants {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let tests = std::fs::read_to_string(dir.join("alert.rules.test.yml")).unwrap();
    let (head, groups) = test_groups(&tests);
    let mut per_alert: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (title, group)) in groups.iter().enumerate() {
        if !group.contains(RPC_SERVER_DURATION) {
            continue;
        }
        *per_alert
            .entry(title.split(':').next().unwrap().to_string())
            .or_default() += 1;
        let mut runs = vec![("alert.rules.yml", true), ("no-rpc.rules.yml", false)];
        if title.contains("NOT_FOUND") {
            runs.push(("not-found-counted.rules.yml", false));
        }
        for (rules, passes) in runs {
            let file = format!("case-{i}.yml");
            let head = head.replace("\"alert.rules.yml\"", &format!("\"{rules}\""));
            std::fs::write(dir.join(&file), format!("{head}{group}")).unwrap();
            let (ok, out) = run("promtool", &["test", "rules", &file], &dir);
            assert_eq!(ok, passes, "{title}, against {rules}:\n{out}");
        }
    }
    let expected: BTreeMap<String, usize> = [
        ("HighErrorRate", 4),
        ("HighLatency", 3),
        ("AvailabilityBudgetBurnPage", 4),
        ("AvailabilityBudgetBurnTicket", 4),
        ("LatencyBudgetBurnPage", 3),
        ("LatencyBudgetBurnTicket", 3),
    ]
    .into_iter()
    .map(|(a, n)| (a.to_string(), n))
    .collect();
    assert_eq!(per_alert, expected, "gRPC cases per alert");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn amtool_accepts_the_alertmanager_config_and_routes_each_severity() {
    let dir = repo().join("monitoring");
    let (ok, out) = run("amtool", &["check-config", "alertmanager.yml"], &dir);
    assert!(ok, "amtool check-config failed:\n{out}");
    for (severity, receiver) in [
        ("page", "pagerduty-page"),
        ("ticket", "email-ticket"),
        ("info", "slack-info"),
    ] {
        let label = format!("severity={severity}");
        let (ok, out) = run(
            "amtool",
            &[
                "config",
                "routes",
                "test",
                "--config.file=alertmanager.yml",
                "alertname=Anything",
                "job=mercenary-api",
                &label,
            ],
            &dir,
        );
        assert!(ok, "amtool config routes test failed:\n{out}");
        let got: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with("Warning"))
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(got, [receiver], "{severity} goes to {receiver}: {out}");
    }
}

#[test]
fn every_alert_links_a_runbook_with_first_queries_and_post_mortem_steps() {
    let rules = std::fs::read_to_string(repo().join("monitoring/alert.rules.yml")).unwrap();
    let mut runbooks: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .map(|u| u.trim_matches('"').to_string())
        .collect();
    assert_eq!(
        rules.matches("runbook_url: ").count(),
        rules.matches("- alert: ").count(),
        "every alert has a runbook_url"
    );
    for required in [
        "high-error-rate",
        "high-latency",
        "service-down",
        "database-connections",
        "cache-failures",
        "trace-export-failing",
        "security-incidents",
    ] {
        runbooks.insert(format!("docs/runbooks/{required}.md"));
    }
    for url in runbooks {
        let path = repo().join(&url);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("runbook {url} is missing: {e}"));
        assert!(text.contains("```promql"), "{url} has PromQL to run first");
        assert!(
            text.contains("correlation_id") && text.contains("trace_id"),
            "{url} has log queries by correlation_id and trace_id"
        );
        assert!(
            text.to_lowercase().contains("post-mortem"),
            "{url} has post-mortem steps"
        );
    }
    let security =
        std::fs::read_to_string(repo().join("docs/runbooks/security-incidents.md")).unwrap();
    assert!(security.contains("security_events_total"));
}

fn dashboards(dir: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        out.push((
            path.file_stem().unwrap().to_string_lossy().into_owned(),
            json,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `(dashboard, panel title, [expr])` of every Prometheus panel.
fn prometheus_panels(dir: &Path) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for (name, d) in dashboards(dir) {
        for p in d["panels"].as_array().unwrap() {
            if p["datasource"]["type"] != "prometheus" {
                continue;
            }
            let exprs = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_string())
                .collect();
            out.push((
                name.clone(),
                p["title"].as_str().unwrap().to_string(),
                exprs,
            ));
        }
    }
    out
}

#[test]
fn dashboards_have_datasource_and_service_variables_and_trace_links() {
    let all = dashboards(&repo().join("monitoring"));
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["business", "database", "overview", "runtime"]);
    for (name, d) in &all {
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert!(
            vars.contains(&"datasource") && vars.contains(&"service"),
            "{name}: {vars:?}"
        );
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: duplicate panel id"
            );
        }
    }
    let panels = prometheus_panels(&repo().join("monitoring"));
    assert!(panels.len() >= 20, "{panels:#?}");
    for (_, _, exprs) in panels {
        assert!(!exprs.is_empty());
        for e in exprs {
            assert!(e.contains("job=\"$service\""), "{e} selects the service");
        }
    }
    // The overview covers the gRPC calls served and the calls made, HTTP and gRPC.
    let overview_panels: Vec<_> = prometheus_panels(&repo().join("monitoring"))
        .into_iter()
        .filter(|(d, _, _)| d == "overview")
        .collect();
    for metric in [
        RPC_SERVER_DURATION,
        RPC_CLIENT_DURATION,
        CLIENT_REQUEST_DURATION,
    ] {
        for w in ["_count", "_bucket", "error_type!=\"\""] {
            assert!(
                overview_panels
                    .iter()
                    .any(|(_, _, exprs)| exprs.iter().any(|e| e.contains(metric) && e.contains(w))),
                "the overview queries {metric} with {w}"
            );
        }
    }
    let error_ratio = overview_panels
        .iter()
        .find(|(_, title, _)| title.starts_with("Error ratio"))
        .expect("an error ratio panel");
    assert!(
        error_ratio.2[0].contains(RPC_SERVER_DURATION),
        "the error ratio panel shows what HighErrorRate alerts on: {error_ratio:?}"
    );
    let overview = &all.iter().find(|(n, _)| n == "overview").unwrap().1;
    let text = overview.to_string();
    assert!(
        text.contains("traceql") && text.contains("${tempo}"),
        "trace links"
    );
}

/// What the traffic tasks send: healthy requests only; healthy requests and trouble (failures,
/// slow requests, failed logins: see [`trouble`]); or nothing.
const HEALTHY: u8 = 0;
const TROUBLE: u8 = 1;
const STOP: u8 = 2;

/// The demo's one account, and a wrong password for it.
const LOGIN_OK: &str = r#"{"email":"ada@example.com","password":"correct horse battery staple"}"#;
const LOGIN_BAD: &str = r#"{"email":"ada@example.com","password":"guess"}"#;

/// Drives the demo until told to stop, about 20 requests a second when healthy. Once in 400
/// requests a login fails and once one succeeds (security events and sessions for the business
/// dashboard, far below `FailedLoginSurge`'s 1/s). Requests that fail at the transport are
/// ignored (the test stops the demo at the end).
async fn traffic(addr: SocketAddr, mode: Arc<AtomicU8>) -> u64 {
    let c = common::client();
    let base = format!("http://{addr}");
    let healthy: [(&str, String, &str); 9] = [
        ("GET", format!("{base}/healthz"), ""),
        ("GET", format!("{base}/quote/7"), ""), // an outgoing call to its own /pricing/7
        ("GET", format!("{base}/users/7"), ""),
        ("GET", format!("{base}/users/99999"), ""), // 404: a client error, not an error
        (
            "POST",
            format!("{base}/signup"),
            r#"{"plan":"pro","email":"a@example.com","password":"x"}"#,
        ),
        ("POST", format!("{base}/projects"), r#"{"name":"p"}"#),
        ("POST", format!("{base}/proposals"), r#"{"project_id":1}"#),
        (
            "POST",
            format!("{base}/payments"),
            r#"{"amount":49.0,"currency":"USD"}"#,
        ),
        (
            "POST",
            format!("{base}/payments"),
            r#"{"amount":20000.0,"currency":"EUR"}"#,
        ), // 402
    ];
    let mut sent = 0u64;
    let mut i = 0usize;
    loop {
        let m = mode.load(Ordering::Relaxed);
        if m == STOP {
            return sent;
        }
        let (method, url, body) = match i % 400 {
            0 => ("POST", format!("{base}/login"), LOGIN_BAD),
            200 => ("POST", format!("{base}/login"), LOGIN_OK),
            _ => {
                let (m, u, b) = &healthy[i % healthy.len()];
                (*m, u.clone(), *b)
            }
        };
        if common::try_send(&c, method, &url, body, Duration::from_secs(5))
            .await
            .is_ok()
        {
            sent += 1;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// What a [`trouble`] loop sends.
#[derive(Clone, Copy)]
enum Trouble {
    /// `/fail` (500) every 100 ms: about 10/s against the healthy 20/s.
    Failures,
    /// One `/slow` request of 1.2 s at a time (above the 500 ms latency objective and the 1 s
    /// p99 threshold); twelve loops make about 10/s.
    Slow,
    /// A failed login every 600 ms: over `FailedLoginSurge`'s 1/s.
    FailedLogins,
}

/// Sends `kind` while in trouble, until told to stop.
async fn trouble(addr: SocketAddr, mode: Arc<AtomicU8>, kind: Trouble) {
    let c = common::client();
    let (method, url, body, pause) = match kind {
        Trouble::Failures => ("GET", format!("http://{addr}/fail"), "", 100),
        Trouble::Slow => ("GET", format!("http://{addr}/slow?ms=1200"), "", 0),
        Trouble::FailedLogins => ("POST", format!("http://{addr}/login"), LOGIN_BAD, 600),
    };
    loop {
        match mode.load(Ordering::Relaxed) {
            STOP => return,
            TROUBLE => {
                let _ = common::try_send(&c, method, &url, body, Duration::from_secs(5)).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Active alerts named `name`, as `(state, labels, annotations)`.
async fn alerts(prom: &Prometheus, name: &str) -> Vec<serde_json::Value> {
    prom.get("/api/v1/alerts")
        .await
        .and_then(|v| v["data"]["alerts"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .collect()
}

/// Waits (bounded) until `name` is firing; returns the alert.
async fn until_firing(prom: &Prometheus, name: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let found = alerts(prom, name).await;
        if let Some(a) = found.iter().find(|a| a["state"] == "firing") {
            return a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not fire within {within:?}; active: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn result_len(v: &serde_json::Value) -> usize {
    v["data"]["result"].as_array().map_or(0, Vec::len)
}

/// The alerts the demo cannot fire with live traffic, and why:
/// - `DatabasePoolNearExhaustion`, `DatabasePoolRequestsWaiting`: its simulated queries hold a
///   connection of its pool of 10 for 1 ms and report the pool again once they release it, so
///   a scrape sees no connection in use and no request waiting unless it lands inside a query;
///   no route holds connections. (Their rules are proven by `promtool test rules`.)
/// - `SentryEventsDropped`: the tests build the demo without the `sentry` feature, so it has no
///   `mercenary_obs_sentry_events_dropped_total`. (The counter itself is tested in `sentry.rs`.)
const NOT_FIRED_LIVE: [&str; 3] = [
    "DatabasePoolNearExhaustion",
    "DatabasePoolRequestsWaiting",
    "SentryEventsDropped",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_the_generated_alerts_on_the_demo() {
    let mut config = fast_config();
    // A demo on a test machine uses no 0.9 core, 1 GiB or 80% of its file descriptors: the
    // resource alerts' thresholds are set below what it does use, so they fire on its live
    // `process_*` series (their names, labels and joins are what is tested).
    config.cpu_cores = 0.0001;
    config.memory_bytes = 1.0;
    config.fds_ratio = 1e-9;
    let kit_dir = temp_dir("fast-kit");
    let files = generate(&config).unwrap();
    write_kit(&files, &kit_dir);
    let rules = files.iter().find(|f| f.path == "alert.rules.yml").unwrap();

    // Traces exported to a collector that is not there: the export alerts fire.
    let no_collector = format!("http://127.0.0.1:{}", common::processes::free_port());
    let mut demo = Demo::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", no_collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
    ])
    .await;
    let prom = Prometheus::start(
        &config.service,
        demo.addr,
        &[("alert.rules.yml", &rules.contents)],
    );

    // Scraped.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prom.query("up{job=\"mercenary-api\"} == 1").await;
        if up.as_ref().is_some_and(|v| result_len(v) == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the demo within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Healthy traffic (4xx included) for longer than the rate window plus `for`: no alert on
    // errors or failed logins.
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let driver = tokio::spawn(traffic(demo.addr, mode.clone()));
    let mut troubles = vec![
        tokio::spawn(trouble(demo.addr, mode.clone(), Trouble::Failures)),
        tokio::spawn(trouble(demo.addr, mode.clone(), Trouble::FailedLogins)),
    ];
    for _ in 0..12 {
        troubles.push(tokio::spawn(trouble(
            demo.addr,
            mode.clone(),
            Trouble::Slow,
        )));
    }
    let healthy_until = Instant::now() + Duration::from_secs(16);
    let quiet = [
        "HighErrorRate",
        "FailedLoginSurge",
        "AvailabilityBudgetBurnPage",
        "AvailabilityBudgetBurnTicket",
    ];
    while Instant::now() < healthy_until {
        for name in quiet {
            let active = alerts(&prom, name).await;
            assert!(active.is_empty(), "{name} on healthy traffic: {active:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every rule evaluates without error.
    let groups = prom
        .get("/api/v1/rules")
        .await
        .expect("the rules API answers");
    let mut rule_count = 0;
    for g in groups["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            rule_count += 1;
            assert_eq!(
                r["health"], "ok",
                "rule {} failed: {}",
                r["name"], r["lastError"]
            );
        }
    }
    assert!(rule_count >= 25, "{groups}");

    // What the healthy demo fires all along: the resource alerts (thresholds lowered), and the
    // export alerts (no collector).
    for (name, severity) in [
        ("HighCpuUsage", "ticket"),
        ("HighMemoryUsage", "ticket"),
        ("FileDescriptorsNearLimit", "ticket"),
        ("TraceExportFailing", "ticket"),
        ("TraceExportMostlyFailing", "ticket"),
    ] {
        let fired = until_firing(&prom, name, Duration::from_secs(60)).await;
        assert_eq!(fired["labels"]["severity"], severity, "{fired}");
        assert_eq!(
            fired["labels"]["instance"],
            demo.addr.to_string(),
            "{fired}"
        );
    }

    // Trouble: about a fifth of the requests fail, a fifth are slow, failed logins over 1/s.
    mode.store(TROUBLE, Ordering::Relaxed);
    let fired = until_firing(&prom, "HighErrorRate", Duration::from_secs(60)).await;
    assert_eq!(fired["labels"]["severity"], "page");
    assert_eq!(fired["labels"]["job"], "mercenary-api");
    let description = fired["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains('%') && description.contains("mercenary-api"),
        "{description}"
    );
    assert!(
        fired["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("high-error-rate.md")
    );

    // The other alerts the trouble calls for, each with the severity the kit gives it.
    for (name, severity) in [
        ("HighLatency", "page"),
        ("FailedLoginSurge", "ticket"),
        ("AvailabilityBudgetBurnPage", "page"),
        ("AvailabilityBudgetBurnTicket", "ticket"),
        ("LatencyBudgetBurnPage", "page"),
        ("LatencyBudgetBurnTicket", "ticket"),
    ] {
        let fired = until_firing(&prom, name, Duration::from_secs(90)).await;
        assert_eq!(fired["labels"]["severity"], severity, "{fired}");
        assert_eq!(fired["labels"]["job"], "mercenary-api", "{fired}");
    }

    // Every dashboard query and recording rule runs; RED panels, pool and runtime panels have
    // data after the traffic, and every query of the business dashboard has.
    let substitute = |e: &str| {
        e.replace("$service", &config.service)
            .replace("$__rate_interval", "10s")
            .replace("$__range", "1m")
    };
    // Panels whose metrics the demo does not emit (no database errors, no Sentry, no OTLP).
    let may_be_empty = ["Query errors"];
    // The demo serves and makes no gRPC calls: queries of the RPC metrics alone have no data.
    let grpc_only = |e: &str| {
        (e.contains(RPC_SERVER_DURATION) || e.contains(RPC_CLIENT_DURATION)) && !e.contains("http_")
    };
    let must_have_data = ["overview", "database", "runtime", "business"];
    let panels = prometheus_panels(&kit_dir);
    for dashboard in must_have_data {
        assert!(
            panels.iter().any(|(d, _, _)| d == dashboard),
            "no {dashboard} panels"
        );
    }
    for (dashboard, title, exprs) in panels {
        let mut with_data = 0;
        for e in &exprs {
            let q = substitute(e);
            let v = prom
                .query(&q)
                .await
                .unwrap_or_else(|| panic!("no answer for {q}"));
            assert_eq!(v["status"], "success", "{dashboard}/{title}: {q}: {v}");
            let n = result_len(&v);
            if n > 0 {
                with_data += 1;
            } else if (dashboard == "overview" && !grpc_only(e)) || dashboard == "business" {
                panic!("{dashboard}/{title}: no data for {q}");
            }
        }
        if must_have_data.contains(&dashboard.as_str())
            && !may_be_empty.contains(&title.as_str())
            && !exprs.iter().all(|e| grpc_only(e))
        {
            assert!(with_data > 0, "{dashboard}/{title}: no data for {exprs:?}");
        }
    }
    for g in groups["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            let q = r["query"].as_str().unwrap();
            let v = prom.query(q).await.unwrap();
            assert_eq!(v["status"], "success", "{q}: {v}");
            if r["type"] == "recording" {
                assert!(
                    result_len(&v) > 0,
                    "recording rule {} has no data",
                    r["name"]
                );
            }
        }
    }

    // The service stops: ServiceDown fires.
    mode.store(STOP, Ordering::Relaxed);
    let sent = driver.await.unwrap();
    for t in troubles {
        t.await.unwrap();
    }
    assert!(sent > 100, "the traffic reached the demo ({sent} requests)");
    demo.stop();
    let down = until_firing(&prom, "ServiceDown", Duration::from_secs(60)).await;
    assert_eq!(down["labels"]["severity"], "page");
    assert_eq!(down["labels"]["instance"], demo.addr.to_string());

    // Every alert of the kit was fired above, but for those the demo cannot produce.
    let fired_live = [
        "HighErrorRate",
        "ServiceDown",
        "HighCpuUsage",
        "HighMemoryUsage",
        "FileDescriptorsNearLimit",
        "TraceExportFailing",
        "TraceExportMostlyFailing",
        "HighLatency",
        "FailedLoginSurge",
        "AvailabilityBudgetBurnPage",
        "AvailabilityBudgetBurnTicket",
        "LatencyBudgetBurnPage",
        "LatencyBudgetBurnTicket",
    ];
    let mut accounted: Vec<String> = fired_live
        .iter()
        .chain(&NOT_FIRED_LIVE)
        .map(|n| n.to_string())
        .collect();
    accounted.sort_unstable();
    let mut all = alert_names(&config);
    all.sort_unstable();
    assert_eq!(accounted, all, "an alert neither fired live nor explained");
    std::fs::remove_dir_all(&kit_dir).unwrap();
}
