//! Exemplars end to end: requests through the layer, kept traces exported to a real OTLP/HTTP
//! receiver (or held in the `/debug/traces` ring), and `/metrics` asked for OpenMetrics the way
//! Prometheus asks. Every exemplar must name a trace the receiver got (or the ring holds),
//! through a span of that trace, with a value inside its bucket.

use crate::common;
use crate::otlp::{Got, http_receiver};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use mercenary_obs::Obs;

/// What Prometheus 2.42 sends.
pub(crate) const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One exemplar of an OpenMetrics exposition.
#[derive(Clone, Debug)]
pub(crate) struct Ex {
    pub(crate) sample: String,
    pub(crate) labels: String,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) value: f64,
}

/// The exemplars of an OpenMetrics text: `name{labels} value # {trace_id="..",span_id=".."}
/// value timestamp`.
pub(crate) fn exemplars(om: &str) -> Vec<Ex> {
    let mut out = Vec::new();
    for line in om.lines().filter(|l| !l.starts_with('#')) {
        let Some((sample, exemplar)) = line.split_once(" # ") else {
            continue;
        };
        let (name, labels) = match sample.split_once('{') {
            Some((n, rest)) => (n.to_string(), rest.rsplit_once('}').unwrap().0.to_string()),
            None => (sample.split(' ').next().unwrap().to_string(), String::new()),
        };
        let (ex_labels, rest) = exemplar
            .strip_prefix('{')
            .and_then(|e| e.split_once('}'))
            .unwrap_or_else(|| panic!("malformed exemplar: {line}"));
        let get = |key: &str| {
            ex_labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_else(|| panic!("no {key} in {line}"))
        };
        let value: f64 = rest.split_whitespace().next().unwrap().parse().unwrap();
        out.push(Ex {
            sample: name,
            labels,
            trace_id: get("trace_id"),
            span_id: get("span_id"),
            value,
        });
    }
    out
}

/// The `le` bound of a bucket sample's labels.
fn le(labels: &str) -> f64 {
    let v = labels
        .split(',')
        .find_map(|kv| kv.strip_prefix("le=\""))
        .unwrap()
        .trim_end_matches('"');
    if v == "+Inf" {
        f64::INFINITY
    } else {
        v.parse().unwrap()
    }
}

/// `GET /metrics` as Prometheus asks; returns (content type, body).
pub(crate) async fn scrape(addr: SocketAddr, accept: &str) -> (String, String) {
    let accept = format!("accept: {accept}");
    let r = common::get(addr, "/metrics", &[accept.as_str()]).await;
    assert_eq!(r.status, 200);
    (
        r.header("content-type").unwrap_or_default(),
        String::from_utf8(r.body).unwrap(),
    )
}

/// Serves the test routes and `/metrics` of `obs`.
async fn serve(obs: &Obs) -> SocketAddr {
    let app = common::traced_routes()
        .layer(obs.layer())
        .route_service("/metrics", obs.metrics_service());
    common::serve(app).await
}

/// Sends `n` requests, one in twenty to `/fail`; returns the trace ID of each.
async fn mix(addr: SocketAddr, n: usize) {
    let c = common::client();
    for i in 0..n {
        let path = if i % 20 == 0 { "/fail" } else { "/ok" };
        common::send(&c, "GET", &format!("http://{addr}{path}"), "").await;
    }
}

/// Checks every exemplar against the spans that exist: its trace and span among them, its
/// value inside its bucket; returns how many there were per histogram.
fn check(found: &[Ex], exist: &[Got]) -> HashMap<String, usize> {
    let spans: HashSet<(&str, &str)> = exist
        .iter()
        .map(|g| (g.trace_id.as_str(), g.span_id.as_str()))
        .collect();
    let mut per = HashMap::new();
    for e in found {
        assert!(
            spans.contains(&(e.trace_id.as_str(), e.span_id.as_str())),
            "exemplar {e:?} names a span that was never exported"
        );
        if let Some(base) = e.sample.strip_suffix("_bucket") {
            let bound = le(&e.labels);
            assert!(e.value <= bound, "{e:?} above its bucket");
            *per.entry(base.to_string()).or_default() += 1;
        }
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_exemplar_ever_names_a_dropped_trace() {
    let (receiver, got) = http_receiver().await;
    let obs = Obs::builder()
        .service_name("exemplars")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(format!("http://{receiver}"))
        // Nothing is exported before the flush below.
        .export_schedule_delay(Duration::from_secs(600))
        .export_queue_size(100_000)
        .build()
        .unwrap();
    let addr = serve(&obs).await;
    // Fewer kept spans than one batch (512): nothing is exported until the flush, so nothing
    // may show as an exemplar, although every request has been observed.
    mix(addr, 200).await;
    let (_, before) = scrape(addr, PROMETHEUS_ACCEPT).await;
    assert!(got.lock().unwrap().is_empty(), "exported before the flush");
    assert!(
        exemplars(&before).is_empty(),
        "no exemplar before its trace is exported:\n{before}"
    );
    assert!(obs.flush());
    mix(addr, 3000).await;
    assert!(obs.flush());
    let (content_type, om) = scrape(addr, PROMETHEUS_ACCEPT).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let found = exemplars(&om);
    let exported = got.lock().unwrap().clone();
    let per = check(&found, &exported);
    let requests = per
        .get("http_server_request_duration_seconds")
        .copied()
        .unwrap_or(0);
    assert!(requests > 0, "no request exemplar at all:\n{om}");
    for route in ["/ok", "/fail"] {
        assert!(
            found
                .iter()
                .any(|e| e.labels.contains(&format!("http_route=\"{route}\""))),
            "no exemplar for {route}"
        );
    }
    // The mix dropped about nine in ten successful traces: exemplars came from the rest only.
    let traces: HashSet<&str> = exported.iter().map(|g| g.trace_id.as_str()).collect();
    assert!(traces.len() < 1000, "{} traces exported", traces.len());
    // The classic format has no exemplar, and still passes promtool.
    let (content_type, classic) = scrape(addr, "text/plain;version=0.0.4").await;
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(!classic.contains(" # {"), "exemplars in the classic format");
    common::promtool_check(&classic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_kept_request_of_a_bucket_wins() {
    let (receiver, got) = http_receiver().await;
    let obs = Obs::builder()
        .service_name("exemplars")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(format!("http://{receiver}"))
        .export_schedule_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let addr = serve(&obs).await;
    let c = common::client();
    for _ in 0..5 {
        // `/fail` is always kept: each one becomes the exemplar of its bucket.
        common::send(&c, "GET", &format!("http://{addr}/fail"), "").await;
        assert!(obs.flush());
        let (_, om) = scrape(addr, PROMETHEUS_ACCEPT).await;
        let found = exemplars(&om);
        let exported = got.lock().unwrap().clone();
        check(&found, &exported);
        let newest = exported
            .iter()
            .rev()
            .find(|g| g.name.starts_with("GET /fail"))
            .expect("the request's span was exported");
        assert!(
            found.iter().any(|e| e.trace_id == newest.trace_id
                && e.span_id == newest.span_id
                && e.sample == "http_server_request_duration_seconds_bucket"),
            "the newest kept request {} is an exemplar: {found:?}",
            newest.trace_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_collector_exemplars_name_traces_in_the_ring() {
    let obs = Obs::builder()
        .service_name("exemplars")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .trace_ring_size(10_000)
        .build()
        .unwrap();
    let addr = serve(&obs).await;
    mix(addr, 500).await;
    let (_, om) = scrape(addr, PROMETHEUS_ACCEPT).await;
    let ring: serde_json::Value = serde_json::from_str(&obs.recent_traces_json().unwrap()).unwrap();
    let mut spans = Vec::new();
    for t in ring["traces"].as_array().unwrap() {
        for s in t["spans"].as_array().unwrap() {
            spans.push(Got {
                trace_id: t["trace_id"].as_str().unwrap().to_string(),
                span_id: s["span_id"].as_str().unwrap().to_string(),
                ..Got::default()
            });
        }
    }
    let found = exemplars(&om);
    assert!(!found.is_empty());
    check(&found, &spans);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_histograms_and_counters_take_exemplars_at_the_call_sites_that_ask() {
    use axum::routing::get;
    let (receiver, got) = http_receiver().await;
    let obs = Obs::builder()
        .service_name("exemplars")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(format!("http://{receiver}"))
        .export_schedule_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let o = obs.clone();
    let app = axum::Router::new()
        .route(
            "/checkout",
            get(move || {
                let o = o.clone();
                async move {
                    o.histogram("checkout_amount", &[("currency", &"EUR")])
                        .observe_with_exemplar(0.042);
                    o.histogram("checkout_plain", &[]).observe(1.0);
                    o.counter("orders_total", &[]).inc_with_exemplar();
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "kept")
                }
            }),
        )
        .layer(obs.layer())
        .route_service("/metrics", obs.metrics_service());
    let addr = common::serve(app).await;
    common::send(
        &common::client(),
        "GET",
        &format!("http://{addr}/checkout"),
        "",
    )
    .await;
    assert!(obs.flush());
    let (_, om) = scrape(addr, PROMETHEUS_ACCEPT).await;
    let found = exemplars(&om);
    check(&found, &got.lock().unwrap());
    let by_sample = |s: &str| found.iter().filter(|e| e.sample == s).count();
    assert_eq!(by_sample("checkout_amount_bucket"), 1, "{om}");
    assert_eq!(by_sample("orders_total"), 1, "{om}");
    assert_eq!(
        by_sample("checkout_plain_bucket"),
        0,
        "observe() takes none"
    );
    let amount = found
        .iter()
        .find(|e| e.sample == "checkout_amount_bucket")
        .unwrap();
    assert_eq!(amount.value, 0.042);
    assert_eq!(le(&amount.labels), 0.05, "{amount:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_stores_exemplars_that_all_resolve() {
    use crate::common::processes::{Demo, Prometheus, url_encode};
    use std::time::Instant;

    let (receiver, got) = http_receiver().await;
    let endpoint = format!("http://{receiver}");
    let demo = Demo::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let prom = Prometheus::start_with(
        "demo",
        demo.addr,
        &[],
        &["--enable-feature=exemplar-storage"],
    );
    let c = common::client();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    loop {
        for i in 0..40 {
            let path = match i % 10 {
                0 => "/fail".to_string(),
                _ => format!("/users/{i}"),
            };
            common::send(&c, "GET", &format!("http://{}{path}", demo.addr), "").await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let query = format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            url_encode("http_server_request_duration_seconds_bucket"),
            now - 600,
            now + 60
        );
        if let Some(v) = prom.get(&query).await {
            let stored: Vec<(String, String)> = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|series| series["exemplars"].as_array().into_iter().flatten())
                .map(|e| {
                    let label = |k: &str| e["labels"][k].as_str().unwrap_or_default().to_string();
                    (label("trace_id"), label("span_id"))
                })
                .collect();
            if stored.len() >= 5 {
                // The demo exports every 100 ms: give the last batch time to arrive.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let exported: HashSet<(String, String)> = got
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|g| (g.trace_id.clone(), g.span_id.clone()))
                    .collect();
                for (trace_id, span_id) in &stored {
                    assert_eq!(trace_id.len(), 32, "{v}");
                    assert!(
                        exported.contains(&(trace_id.clone(), span_id.clone())),
                        "Prometheus holds exemplar trace {trace_id} span {span_id}, which the receiver never got"
                    );
                }
                let up = prom.query("up").await.unwrap();
                assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
                return;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus stored no exemplars within 90 s; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_gives_its_client_histogram_an_exemplar_of_its_client_span() {
    use crate::client::{Adapter, call, caller};
    let obs = Obs::builder()
        .service_name("exemplars")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .unwrap();
    let downstream = common::serve(common::traced_routes()).await;
    let addr = caller(&obs, Adapter::Tower).await;
    // The downstream answers 500: the CLIENT span is an error, so the trace is kept.
    call(addr, &format!("http://{downstream}/fail"), &[]).await;
    let om = obs.render_openmetrics();
    let found: Vec<Ex> = exemplars(&om)
        .into_iter()
        .filter(|e| e.sample == "http_client_request_duration_seconds_bucket")
        .collect();
    assert_eq!(found.len(), 1, "{om}");
    let ring: serde_json::Value = serde_json::from_str(&obs.recent_traces_json().unwrap()).unwrap();
    let trace = ring["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == found[0].trace_id.as_str())
        .expect("the exemplar's trace is in the ring");
    let client_span = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Client")
        .expect("a CLIENT span");
    assert_eq!(client_span["span_id"], found[0].span_id.as_str());
    assert!(
        found[0]
            .labels
            .contains("http_response_status_code=\"500\"")
    );
}
