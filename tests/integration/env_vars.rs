//! The README's environment variables, read through `Obs::builder().from_vars(...)` as
//! `from_env()` reads them, each observed where it has its effect: the path and headers a real
//! OTLP receiver is posted to, when batches arrive and what is dropped, which traces the
//! sampler keeps (against OpenTelemetry's own `TraceIdRatioBased`), and the forced budget.
//! (`SENTRY_*` are in `sentry.rs`, `OTEL_EXPORTER_OTLP_CERTIFICATE` and the headers in
//! `otlp_tls.rs`.)

use crate::common;

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::{client, samples, send};
use mercenary_obs::{Obs, ObsBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Post {
    path: String,
    content_type: String,
    content_encoding: String,
    spans: usize,
}

type Posts = Arc<Mutex<Vec<Post>>>;

/// An OTLP/HTTP receiver that accepts a protobuf batch on any path, after `delay`, and records
/// each POST.
async fn receiver(delay: Duration) -> (SocketAddr, Posts) {
    let posts: Posts = Arc::default();
    let sink = posts.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let sink = sink.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let mut bytes = body.to_vec();
            if header("content-encoding") == "gzip" {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_end(&mut plain)
                    .expect("a gzip body");
                bytes = plain;
            }
            let req = ExportTraceServiceRequest::decode(&bytes[..]).expect("an OTLP protobuf body");
            let spans = req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum();
            tokio::time::sleep(delay).await;
            sink.lock().unwrap().push(Post {
                path: uri.path().to_string(),
                content_type: header("content-type"),
                content_encoding: header("content-encoding"),
                spans,
            });
            (
                StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }
    });
    (common::serve(app).await, posts)
}

fn builder() -> ObsBuilder {
    Obs::builder()
        .service_name("env-test")
        .log_writer(std::io::sink())
        .process_metrics(false)
}

/// Serves the usual routes (`/ok`, `/fail`: a root and two children each) on `obs`.
async fn serve(obs: &Obs) -> SocketAddr {
    common::serve(common::traced_routes().layer(obs.layer())).await
}

/// `n` requests to `path` with extra header lines; returns the trace ID of each (from
/// `traceresponse`).
async fn requests(addr: SocketAddr, path: &str, headers: &[&str], n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let resp = common::get(addr, path, headers).await;
        assert!(resp.status == 200 || resp.status == 500, "{}", resp.status);
        let tr = resp.header("traceresponse").expect("traceresponse");
        ids.push(tr.split('-').nth(1).unwrap().to_string());
    }
    ids
}

fn posts(p: &Posts) -> Vec<Post> {
    p.lock().unwrap().clone()
}

fn counter(obs: &Obs, name: &str, labels: &str) -> f64 {
    samples(&obs.render_metrics(), name)
        .into_iter()
        .find(|(l, _)| l == labels)
        .map_or(0.0, |(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exporter_otlp_endpoint_is_a_base_url_that_gets_v1_traces() {
    for base in ["http://{addr}", "http://{addr}/"] {
        let (addr, got) = receiver(Duration::ZERO).await;
        let endpoint = base.replace("{addr}", &addr.to_string());
        let obs = builder()
            .success_ratio(1.0)
            .from_vars([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ])
            .build()
            .unwrap();
        requests(serve(&obs).await, "/ok", &[], 2).await;
        assert!(obs.flush());
        let got = posts(&got);
        assert!(!got.is_empty(), "{endpoint}: nothing arrived");
        for p in &got {
            assert_eq!(p.path, "/v1/traces", "{endpoint}: {p:?}");
            assert_eq!(p.content_type, "application/x-protobuf", "{p:?}");
        }
        assert_eq!(got.iter().map(|p| p.spans).sum::<usize>(), 6);
    }
}

/// The OpenTelemetry specification: `/v1/traces` is appended to the base endpoint's path,
/// whatever it is (`http://collector:4318/mycollector` →
/// `http://collector:4318/mycollector/v1/traces`), which is how gateways under a path prefix
/// are reached (Grafana Cloud's `…/otlp`, a collector behind a reverse proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exporter_otlp_endpoint_with_a_path_gets_v1_traces_appended_to_it() {
    let (addr, got) = receiver(Duration::ZERO).await;
    let endpoint = format!("http://{addr}/otlp");
    let obs = builder()
        .success_ratio(1.0)
        .from_vars([("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())])
        .build()
        .unwrap();
    requests(serve(&obs).await, "/ok", &[], 1).await;
    assert!(obs.flush());
    let got = posts(&got);
    assert!(!got.is_empty());
    for p in &got {
        assert_eq!(p.path, "/otlp/v1/traces", "{p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exporter_otlp_traces_endpoint_is_used_as_is_and_wins() {
    let (generic, generic_got) = receiver(Duration::ZERO).await;
    for (path, expected) in [("/custom/traces", "/custom/traces"), ("", "/")] {
        let (addr, got) = receiver(Duration::ZERO).await;
        let traces_endpoint = format!("http://{addr}{path}");
        let obs = builder()
            .success_ratio(1.0)
            .from_vars([
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{generic}")),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    traces_endpoint.clone(),
                ),
                // Each `_TRACES_` form wins over its generic one.
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none".to_string()),
                ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip".to_string()),
            ])
            .build()
            .unwrap();
        requests(serve(&obs).await, "/ok", &[], 2).await;
        assert!(obs.flush());
        let got = posts(&got);
        assert!(!got.is_empty(), "{traces_endpoint}: nothing arrived");
        for p in &got {
            assert_eq!(p.path, expected, "{traces_endpoint} is used as is: {p:?}");
            assert_eq!(p.content_encoding, "gzip", "{p:?}");
        }
        assert_eq!(got.iter().map(|p| p.spans).sum::<usize>(), 6);
    }
    assert!(
        posts(&generic_got).is_empty(),
        "the generic endpoint got nothing"
    );
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exporter_otlp_protocol_grpc_with_a_bare_insecure_endpoint() {
    let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start()
        .await
        .unwrap();
    // `http://127.0.0.1:port` → `127.0.0.1:port`: plaintext only because of `_INSECURE`.
    let bare = collector.endpoint().replace("http://", "");
    let obs = builder()
        .success_ratio(1.0)
        .from_vars([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", bare.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ])
        .build()
        .unwrap();
    let sent = requests(serve(&obs).await, "/ok", &[], 2).await;
    assert!(obs.flush());
    let spans = collector.exported_spans(6, Duration::from_secs(10)).await;
    let traces: std::collections::HashSet<String> =
        spans.iter().map(|s| s.trace_id.clone()).collect();
    assert_eq!(traces, sent.into_iter().collect(), "{spans:#?}");
    assert_eq!(spans.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_exporter_otlp_timeout_cuts_an_export_to_a_hanging_collector() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100).flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let obs = builder()
        .shutdown_timeout(Duration::from_secs(1))
        .from_vars([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{hanging}")),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "300".to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50".to_string()),
        ])
        .build()
        .unwrap();
    let started = Instant::now();
    requests(serve(&obs).await, "/fail", &[], 1).await;
    // With the default 10 s timeout, no export call could have ended within 4 s.
    let ended = |obs: &Obs| {
        counter(
            obs,
            "mercenary_obs_export_requests_total",
            "{outcome=\"timed_out\"}",
        ) + counter(
            obs,
            "mercenary_obs_export_requests_total",
            "{outcome=\"failed\"}",
        )
    };
    let lost = |obs: &Obs| {
        counter(
            obs,
            "mercenary_obs_spans_dropped_total",
            "{reason=\"export_failed\"}",
        )
    };
    while (ended(&obs) < 1.0 || lost(&obs) < 3.0) && started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        ended(&obs) >= 1.0,
        "no export call was cut within {:?}: {}",
        started.elapsed(),
        obs.render_metrics()
    );
    assert_eq!(lost(&obs), 3.0, "the trace's three spans are counted lost");
    drop(obs);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_bsp_schedule_delay_sets_when_batches_leave() {
    let (addr, got) = receiver(Duration::ZERO).await;
    let obs = builder()
        .from_vars([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ])
        .build()
        .unwrap();
    let started = Instant::now();
    requests(serve(&obs).await, "/fail", &[], 1).await;
    // No flush: the export thread sends the batch on its own, every 100 ms (by default, every
    // 5 s).
    while posts(&got).is_empty() && started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = posts(&got);
    assert_eq!(
        got.iter().map(|p| p.spans).sum::<usize>(),
        3,
        "the error trace arrived within {:?} without a flush: {got:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_bsp_max_queue_size_bounds_the_spans_waiting_for_export() {
    // Each export takes a second: meanwhile the queue fills.
    let (addr, got) = receiver(Duration::from_secs(1)).await;
    let obs = builder()
        .success_ratio(1.0)
        .from_vars([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "6".to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000".to_string()),
        ])
        .build()
        .unwrap();
    requests(serve(&obs).await, "/ok", &[], 20).await;
    assert!(obs.flush());
    let arrived: usize = posts(&got).iter().map(|p| p.spans).sum();
    let dropped = counter(
        &obs,
        "mercenary_obs_spans_dropped_total",
        "{reason=\"queue_full\"}",
    );
    assert!(
        dropped > 0.0,
        "a queue of 6 spans overflows (the default, 2048, would not)"
    );
    assert_eq!(
        arrived as f64 + dropped,
        60.0,
        "every span arrived or is counted"
    );
    assert!(
        posts(&got).iter().all(|p| p.spans <= 6),
        "batches are at most the queue: {:?}",
        posts(&got)
    );
}

/// The kept traces of the ring, by trace ID: their reason.
fn ring(obs: &Obs) -> HashMap<String, String> {
    let json: Value = serde_json::from_str(&obs.recent_traces_json().expect("a ring")).unwrap();
    json["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["trace_id"].as_str().unwrap().to_string(),
                t["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What OpenTelemetry's own `TraceIdRatioBased(ratio)` decides for a root span of `trace_id`.
fn otel_samples(ratio: f64, trace_id: &str) -> bool {
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
    let id = TraceId::from_hex(trace_id).unwrap();
    Sampler::TraceIdRatioBased(ratio)
        .should_sample(None, id, "GET /ok", &SpanKind::Server, &[], &[])
        .decision
        == SamplingDecision::RecordAndSample
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mercenary_obs_success_ratio_sets_the_share_of_successes_kept() {
    let obs = builder()
        .trace_ring_size(10_000)
        .from_vars([("MERCENARY_OBS_SUCCESS_RATIO", "0.5")])
        .build()
        .unwrap();
    let sent = requests(serve(&obs).await, "/ok", &[], 200).await;
    let kept = ring(&obs);
    let expected: Vec<&String> = sent.iter().filter(|id| otel_samples(0.5, id)).collect();
    // Some of the traces sent tell 0.5 from the default 0.1, and some are dropped.
    assert!(
        sent.iter()
            .any(|id| otel_samples(0.5, id) && !otel_samples(0.1, id)),
        "{sent:?}"
    );
    assert!(expected.len() < sent.len());
    for id in &sent {
        assert_eq!(
            kept.get(id).map(String::as_str),
            otel_samples(0.5, id).then_some("ratio"),
            "trace {id}"
        );
    }
    assert_eq!(kept.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mercenary_obs_forced_per_second_sets_the_forced_budget() {
    let obs = builder()
        .success_ratio(0.0)
        .trace_ring_size(10_000)
        .from_vars([("MERCENARY_OBS_FORCED_PER_SECOND", "2")])
        .build()
        .unwrap();
    let addr = serve(&obs).await;
    let c = client();
    let started = Instant::now();
    let mut n = 0;
    while n < 30 && started.elapsed() < Duration::from_millis(900) {
        let req = http::Request::get(format!("http://{addr}/ok"))
            .header("trace", "true")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        assert_eq!(c.request(req).await.unwrap().status(), 200);
        n += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let kept = ring(&obs);
    // The bucket starts with 2 and refills at 2/s (the default would keep 10 at once).
    let allowed = 2 + (elapsed * 2.0).ceil() as usize;
    assert!(
        n > allowed + 2,
        "only {n} requests in {elapsed:.2}s: too few to see the budget"
    );
    assert!(
        (2..=allowed).contains(&kept.len()),
        "kept {} of {n} forced requests in {elapsed:.2}s",
        kept.len()
    );
    assert!(kept.values().all(|r| r == "forced"), "{kept:?}");
    // Unforced requests are not kept (ratio 0).
    assert_eq!(
        send(&c, "GET", &format!("http://{addr}/ok"), "").await.0,
        200
    );
    assert_eq!(ring(&obs).len(), kept.len());
}
