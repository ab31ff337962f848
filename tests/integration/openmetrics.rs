//! `/metrics` over real HTTP with Prometheus's `Accept` (OpenMetrics 1.0) and without one (the
//! classic text format): both answers are read by the official Python client's parsers (and
//! the classic one by `promtool`), and must carry the same samples, user metrics of every type
//! and hostile label values and HELP texts included.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::processes::Prometheus;
use common::{RawResponse, client, promtool_check_allowing, python_parse, send, serve};
use mercenary_obs::Obs;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary, Untyped};
use prometheus::{CounterVec, GaugeVec, HistogramOpts, HistogramVec, IntCounter, Opts, Registry};
use serde_json::Value;

/// What Prometheus 2.42 sends (`scrape.go`, default scrape protocols).
const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// What Prometheus 3 sends by default.
const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label values and a HELP text no exposition may write raw.
const HOSTILE: [&str; 3] = ["say \"hi\"", "C:\\dir\\", "line1\nline2"];
const HOSTILE_HELP: &str = "Jobs \"done\" by C:\\workers\nsince the start.";

/// A summary from a hand-made collector (the `prometheus` crate has no summary type).
struct RpcSummary(Desc);

/// An untyped family from a hand-made collector.
struct LegacyValue(Desc);

fn pair(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_owned());
    l.set_value(value.to_owned());
    l
}

fn family(desc: &Desc, ty: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(ty);
    f.set_metric(metrics);
    f
}

impl Collector for RpcSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut s = Summary::default();
        s.set_sample_count(42);
        s.set_sample_sum(17.5);
        s.set_quantile(
            [(0.5, 0.25), (0.9, 0.8), (0.99, 1.5)]
                .into_iter()
                .map(|(q, v)| {
                    let mut x = Quantile::default();
                    x.set_quantile(q);
                    x.set_value(v);
                    x
                })
                .collect(),
        );
        let mut m = Metric::from_label(vec![pair("method", HOSTILE[0])]);
        m.set_summary(s);
        vec![family(&self.0, MetricType::SUMMARY, vec![m])]
    }
}

impl Collector for LegacyValue {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0]
    }

    #[allow(deprecated)] // The proto's untyped setters.
    fn collect(&self) -> Vec<MetricFamily> {
        let mut u = Untyped::default();
        u.set_value(2.5);
        let mut m = Metric::from_label(vec![pair("k", HOSTILE[2])]);
        m.set_untyped(u);
        vec![family(&self.0, MetricType::UNTYPED, vec![m])]
    }
}

/// A user registry with a metric of every type.
fn user_registry() -> Registry {
    let registry = Registry::new();
    let jobs = IntCounter::with_opts(Opts::new("user_jobs_done", HOSTILE_HELP)).unwrap();
    jobs.inc_by(3);
    let requests =
        CounterVec::new(Opts::new("user_requests_total", "Requests."), &["path"]).unwrap();
    for (i, v) in HOSTILE.iter().enumerate() {
        requests.with_label_values(&[*v]).inc_by(i as f64 + 1.5);
    }
    let temperature = GaugeVec::new(
        Opts::new("user_temperature_celsius", "Temperature \"here\"."),
        &["room"],
    )
    .unwrap();
    temperature.with_label_values(&["cellar"]).set(-3.5);
    temperature.with_label_values(&["sun"]).set(f64::INFINITY);
    temperature.with_label_values(&["broken"]).set(f64::NAN);
    let latency = HistogramVec::new(
        HistogramOpts::new("user_latency_seconds", "Latency.")
            .buckets(vec![0.005, 0.1, 1.0, 2.5, 10.0, 100000.0, 1e6]),
        &["path"],
    )
    .unwrap();
    for v in [0.001, 0.05, 1.0, 3.0, 50.0] {
        latency.with_label_values(&[HOSTILE[1]]).observe(v);
    }
    let summary = RpcSummary(
        Desc::new(
            "user_rpc_seconds".into(),
            "RPC.".into(),
            vec!["method".into()],
            HashMap::new(),
        )
        .unwrap(),
    );
    let legacy = LegacyValue(
        Desc::new(
            "user_legacy_value".into(),
            "Legacy \\ value.".into(),
            vec!["k".into()],
            HashMap::new(),
        )
        .unwrap(),
    );
    registry.register(Box::new(jobs)).unwrap();
    registry.register(Box::new(requests)).unwrap();
    registry.register(Box::new(temperature)).unwrap();
    registry.register(Box::new(latency)).unwrap();
    registry.register(Box::new(summary)).unwrap();
    registry.register(Box::new(legacy)).unwrap();
    registry
}

async fn scrape(addr: std::net::SocketAddr, accept: Option<&str>) -> (RawResponse, String) {
    let header = accept.map(|a| format!("accept: {a}"));
    let headers: Vec<&str> = header.iter().map(String::as_str).collect();
    let r = common::get(addr, "/metrics", &headers).await;
    assert_eq!(r.status, 200);
    let body = String::from_utf8(r.body.clone()).unwrap();
    (r, body)
}

/// A sample as both parsers must agree on it: name, labels (`le` and `quantile` read as
/// numbers: the classic format writes `le="1"`, OpenMetrics `le="1.0"`), value.
type Key = (String, BTreeMap<String, String>);

fn samples(families: &Value, written: Option<&BTreeSet<String>>) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for f in families.as_array().unwrap() {
        for s in f["samples"].as_array().unwrap() {
            let mut name = s["name"].as_str().unwrap().to_owned();
            // The classic parser appends `_total` to a counter that lacks it (its model is
            // OpenMetrics'); Prometheus stores the name as written, so undo that here.
            if let Some(written) = written
                && f["type"] == "counter"
                && !written.contains(&name)
                && let Some(base) = name.strip_suffix("_total")
                && written.contains(base)
            {
                name = base.to_owned();
            }
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    let v = v.as_str().unwrap();
                    let v = if k == "le" || k == "quantile" {
                        format!("{:?}", v.parse::<f64>().unwrap())
                    } else {
                        v.to_owned()
                    };
                    (k.clone(), v)
                })
                .collect();
            let value: f64 = s["value"].as_str().unwrap().parse().unwrap();
            assert!(
                out.insert((name.clone(), labels), value).is_none(),
                "a series twice: {name}"
            );
        }
    }
    out
}

fn family_named<'a>(families: &'a Value, name: &str) -> &'a Value {
    families
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

/// Families whose values move on their own between two scrapes.
fn volatile(name: &str) -> bool {
    name.starts_with("process_") || name.starts_with("tokio_")
}

#[tokio::test]
async fn both_formats_carry_the_same_samples_by_the_official_parsers() {
    let obs = Obs::builder()
        .service_name("openmetrics-test")
        .log_writer(std::io::sink())
        .process_metrics(true)
        .registry(user_registry())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/users/{id}", get(|| async { "user" }))
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .layer(obs.layer())
        .route_service("/metrics", obs.metrics_service());
    let addr = serve(app).await;
    let http = client();
    for path in ["/ok", "/ok", "/users/7", "/boom"] {
        send(&http, "GET", &format!("http://{addr}{path}"), "").await;
    }
    // The duration is recorded when the response body ends, just after the client has it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::samples(
        &obs.render_metrics(),
        "http_server_request_duration_seconds_count",
    )
    .iter()
    .map(|(_, v)| v)
    .sum::<f64>()
        < 4.0
    {
        assert!(Instant::now() < deadline, "four requests recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (r, classic) = scrape(addr, None).await;
    assert_eq!(
        r.header("content-type").unwrap(),
        mercenary_obs::names::CONTENT_TYPE
    );
    assert_eq!(r.header("vary").unwrap(), "Accept");
    let (r, open) = scrape(addr, Some(PROMETHEUS_2)).await;
    assert_eq!(r.header("content-type").unwrap(), OPENMETRICS);
    assert_eq!(r.header("vary").unwrap(), "Accept");
    assert!(open.ends_with("\n# EOF\n"));
    let (r, _) = scrape(addr, Some(PROMETHEUS_3)).await;
    assert_eq!(r.header("content-type").unwrap(), OPENMETRICS);
    let head = common::raw(
        addr,
        format!("HEAD /metrics HTTP/1.1\r\naccept: {PROMETHEUS_2}").as_bytes(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type").unwrap(), OPENMETRICS);
    assert!(head.body.is_empty());

    promtool_check_allowing(
        &classic,
        &["user_jobs_done counter metrics should have \"_total\" suffix"],
    );
    let classic_families = python_parse("classic", &classic);
    let open_families = python_parse("openmetrics", &open);

    // The same series, and the same values but for the process's own moving gauges.
    let written: BTreeSet<String> = classic
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let from_classic = samples(&classic_families, Some(&written));
    let from_open = samples(&open_families, None);
    assert_eq!(
        from_classic.keys().collect::<Vec<_>>(),
        from_open.keys().collect::<Vec<_>>(),
        "the same series in both formats"
    );
    assert!(from_open.len() > 60, "{} samples", from_open.len());
    for (key, classic_value) in &from_classic {
        let open_value = from_open[key];
        let same = (classic_value.is_nan() && open_value.is_nan()) || *classic_value == open_value;
        assert!(
            same || volatile(&key.0),
            "{key:?}: {classic_value} (classic) vs {open_value} (OpenMetrics)"
        );
    }

    // The same families and HELP texts; the types OpenMetrics gives them.
    let helps = |families: &Value| -> BTreeMap<String, String> {
        families
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_owned(),
                    f["help"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(helps(&classic_families), helps(&open_families));
    for (name, ty) in [
        ("user_jobs_done", "unknown"),
        ("user_requests", "counter"),
        ("user_temperature_celsius", "gauge"),
        ("user_latency_seconds", "histogram"),
        ("user_rpc_seconds", "summary"),
        ("user_legacy_value", "unknown"),
        ("http_server_request_duration_seconds", "histogram"),
        ("http_server_active_requests", "gauge"),
        ("process_cpu_seconds", "counter"),
    ] {
        assert_eq!(family_named(&open_families, name)["type"], ty, "{name}");
    }
    assert_eq!(
        family_named(&open_families, "user_jobs_done")["help"],
        HOSTILE_HELP
    );
    let jobs = &family_named(&open_families, "user_jobs_done")["samples"][0];
    assert_eq!(
        (jobs["name"].as_str(), jobs["value"].as_str()),
        (Some("user_jobs_done"), Some("3.0"))
    );
    let paths: BTreeSet<&str> = family_named(&open_families, "user_requests")["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["name"], "user_requests_total");
            s["labels"]["path"].as_str().unwrap()
        })
        .collect();
    assert_eq!(paths, HOSTILE.into_iter().collect());
    assert_eq!(
        family_named(&open_families, "user_rpc_seconds")["samples"][0]["labels"]["method"],
        HOSTILE[0]
    );

    // `le` and `quantile` as the specification's canonical numbers.
    for le in ["0.005", "1.0", "10.0", "100000.0", "1e+06", "+Inf"] {
        assert!(
            open.contains(&format!(
                "user_latency_seconds_bucket{{path=\"C:\\\\dir\\\\\",le=\"{le}\"}}"
            )),
            "le=\"{le}\":\n{open}"
        );
    }
    assert!(open.contains("quantile=\"0.99\"}"), "{open}");
    assert!(!open.contains("_created"));
}

#[tokio::test]
async fn the_classic_answer_is_unchanged_for_scrapers_that_do_not_ask() {
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .process_metrics(false) // No moving values: the two renders must be equal.
        .registry(user_registry())
        .build()
        .unwrap();
    let addr = serve(Router::new().route_service("/metrics", obs.metrics_service())).await;
    for accept in [
        None,
        Some("*/*"),
        Some("text/plain;version=0.0.4"),
        Some("garbage;;"),
    ] {
        let (r, body) = scrape(addr, accept).await;
        assert_eq!(
            r.header("content-type").unwrap(),
            mercenary_obs::names::CONTENT_TYPE
        );
        assert_eq!(body, obs.render_metrics(), "Accept: {accept:?}");
    }
}

/// What one `/metrics` answer was: the request's `Accept`, the response's content type.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

#[tokio::test]
async fn prometheus_negotiates_openmetrics_and_stores_every_series() {
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .registry(user_registry())
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = Router::new()
        .route_service("/metrics", obs.metrics_service())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let record = record.clone();
                async move {
                    let accept = req
                        .headers()
                        .get("accept")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let response = next.run(req).await;
                    let content_type = response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    record.lock().unwrap().push((accept, content_type));
                    response
                }
            },
        ));
    let addr = serve(app).await;
    let prom = Prometheus::start("openmetrics", addr, &[]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let paths: BTreeSet<String> = prom
            .query("user_requests_total")
            .await
            .and_then(|v| {
                v["data"]["result"].as_array().map(|r| {
                    r.iter()
                        .filter_map(|s| s["metric"]["path"].as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default();
        if paths.len() == HOSTILE.len() {
            break paths;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus stored {paths:?}; scrapes: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // Label values with quotes, backslashes and newlines come back as they were.
    assert_eq!(stored, HOSTILE.into_iter().map(str::to_owned).collect());

    // Prometheus 2.42 asked for OpenMetrics first, and got it.
    let scrapes = seen.lock().unwrap().clone();
    assert!(!scrapes.is_empty());
    for (accept, content_type) in &scrapes {
        assert!(
            accept.starts_with("application/openmetrics-text"),
            "{accept}"
        );
        assert_eq!(content_type, OPENMETRICS);
    }
    let targets = prom.get("/api/v1/targets").await.unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");

    // Every type made it, under the names the classic format gives them too, and the
    // histogram's `le` is the canonical `1.0`.
    for (query, want) in [
        ("user_jobs_done", 3.0),
        ("user_temperature_celsius{room=\"cellar\"}", -3.5),
        ("user_latency_seconds_bucket{le=\"1.0\"}", 3.0),
        ("user_latency_seconds_count", 5.0),
        ("user_rpc_seconds{quantile=\"0.99\"}", 1.5),
        ("user_rpc_seconds_count", 42.0),
        ("user_legacy_value", 2.5),
    ] {
        let v = prom.query(query).await.unwrap();
        let result = &v["data"]["result"];
        assert_eq!(result.as_array().map(Vec::len), Some(1), "{query}: {v}");
        let value: f64 = result[0]["value"][1].as_str().unwrap().parse().unwrap();
        assert_eq!(value, want, "{query}");
    }
}
