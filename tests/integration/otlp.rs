//! OTLP export against real receivers: an OTLP/HTTP protobuf receiver on loopback (decoding
//! with `opentelemetry-proto`) and, with feature `grpc`, `fake-opentelemetry-collector`.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::{Capture, client, samples};
use mercenary_obs::{Obs, ObsBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;

/// One exported span, reduced to what the assertions need.
#[derive(Clone, Debug, Default)]
pub(crate) struct Got {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: String,
    pub(crate) name: String,
    pub(crate) reason: String,
    pub(crate) service: String,
    pub(crate) team: String,
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
pub(crate) async fn http_receiver() -> (SocketAddr, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req =
                    ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf body");
                let mut out = sink.lock().unwrap();
                for rs in req.resource_spans {
                    let resource = |key: &str| {
                        rs.resource
                            .as_ref()
                            .and_then(|r| r.attributes.iter().find(|kv| kv.key == key))
                            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => Some(s.clone()),
                                _ => None,
                            })
                            .unwrap_or_default()
                    };
                    let service = resource("service.name");
                    let team = resource("team");
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let reason = s
                                .attributes
                                .iter()
                                .find(|kv| kv.key == "mercenary.sampling.reason")
                                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                    AnyValue::StringValue(v) => Some(v.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            out.push(Got {
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent_span_id: hex(&s.parent_span_id),
                                name: s.name,
                                reason,
                                service: service.clone(),
                                team: team.clone(),
                            });
                        }
                    }
                }
                (
                    StatusCode::OK,
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    (common::serve(app).await, got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn app(obs: &Obs) -> Router {
    common::traced_routes().layer(obs.layer())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Fail,
    Panic,
    Forced,
    Plain,
}

/// Whether OpenTelemetry's own `TraceIdRatioBased(0.1)` samples this trace ID (no parent): the
/// oracle, rather than a copy of the crate's formula.
fn in_ratio(trace_id: &str) -> bool {
    use opentelemetry::trace::{SpanKind, TraceId};
    use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
    let id = TraceId::from_hex(trace_id).unwrap();
    let result = Sampler::TraceIdRatioBased(0.1).should_sample(
        None,
        id,
        "GET /ok",
        &SpanKind::Server,
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

/// Sends the 2,000-request mix and returns (kind, trace id) per request.
async fn drive_mix(addr: SocketAddr) -> Vec<(Kind, String)> {
    let c = client();
    let mut sent = Vec::new();
    for i in 0..2000 {
        let kind = match i % 100 {
            0..=4 => Kind::Fail,
            5 => Kind::Panic,
            6 | 7 => Kind::Forced,
            _ => Kind::Plain,
        };
        let path = match kind {
            Kind::Fail => "/fail",
            Kind::Panic => "/panic",
            _ => "/ok",
        };
        let mut req = http::Request::get(format!("http://{addr}{path}"));
        if kind == Kind::Forced {
            req = req.header("trace", "true");
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            c.request(
                req.body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        let tr = resp.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .to_string();
        sent.push((kind, tr[3..35].to_string()));
    }
    sent
}

/// The assertions of the 2,000-request mix, whatever the transport.
fn check_mix(obs: &Obs, sent: &[(Kind, String)], got: &[Got]) {
    let mut by_trace: HashMap<&str, Vec<&Got>> = HashMap::new();
    for g in got {
        by_trace.entry(&g.trace_id).or_default().push(g);
    }
    let span_ids: HashSet<&str> = got.iter().map(|g| g.span_id.as_str()).collect();
    assert_eq!(span_ids.len(), got.len(), "no span arrives twice");
    assert!(
        got.iter().all(|g| g.service == "otlp-test"),
        "resource service.name"
    );
    assert!(
        got.iter().all(|g| g.team == "payments"),
        "OTEL_RESOURCE_ATTRIBUTES on the resource"
    );

    let mut plain = 0;
    let mut plain_kept = 0;
    for (kind, trace_id) in sent {
        let spans = by_trace.get(trace_id.as_str());
        let expect_reason = match kind {
            Kind::Fail | Kind::Panic => Some("error"),
            Kind::Forced => Some("forced"),
            Kind::Plain => {
                plain += 1;
                in_ratio(trace_id).then_some("ratio")
            }
        };
        match (expect_reason, spans) {
            (None, None) => {}
            (None, Some(s)) => {
                panic!("{kind:?} trace {trace_id} arrived but is outside the ratio: {s:?}")
            }
            (Some(r), None) => panic!("{kind:?} trace {trace_id} ({r}) did not arrive"),
            (Some(reason), Some(spans)) => {
                if *kind == Kind::Plain {
                    plain_kept += 1;
                }
                assert_eq!(
                    spans.len(),
                    3,
                    "root + two children for {trace_id}: {spans:?}"
                );
                let root = spans
                    .iter()
                    .find(|s| s.parent_span_id.is_empty())
                    .expect("a root");
                assert!(root.name.starts_with("GET /"), "{}", root.name);
                for child in spans.iter().filter(|s| s.span_id != root.span_id) {
                    assert_eq!(
                        child.parent_span_id, root.span_id,
                        "parent link in {trace_id}"
                    );
                }
                assert!(
                    spans.iter().all(|s| s.reason == reason),
                    "reason {reason} on {spans:?}"
                );
            }
        }
    }
    // The ratio is exact per trace id (asserted above); the count is also within 4.5 standard
    // deviations of 10% (a false failure about once in 150,000 runs).
    let mean = plain as f64 * 0.1;
    let sd = (plain as f64 * 0.1 * 0.9).sqrt();
    assert!(
        (plain_kept as f64 - mean).abs() <= 4.5 * sd,
        "{plain_kept} of {plain} successes kept"
    );
    assert_eq!(
        by_trace.len(),
        100 + 20 + 40 + plain_kept,
        "no other trace arrives"
    );

    let exposition = obs.render_metrics();
    let counters: HashMap<String, f64> = samples(&exposition, "mercenary_obs_traces_total")
        .into_iter()
        .collect();
    assert_eq!(counters["{decision=\"kept\",reason=\"error\"}"], 120.0);
    assert_eq!(counters["{decision=\"kept\",reason=\"forced\"}"], 40.0);
    assert_eq!(
        counters["{decision=\"kept\",reason=\"ratio\"}"],
        plain_kept as f64
    );
    assert_eq!(
        counters["{decision=\"dropped\",reason=\"none\"}"],
        (plain - plain_kept) as f64
    );
    let exported: f64 = samples(&exposition, "mercenary_obs_spans_exported_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        exported,
        got.len() as f64,
        "exported counter equals what arrived"
    );
    common::promtool_check(&exposition);
}

fn builder(endpoint: &str) -> ObsBuilder {
    Obs::builder()
        .service_name("otlp-test")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(endpoint)
        .forced_per_second(1000.0)
        .export_schedule_delay(Duration::from_millis(200))
        .export_queue_size(100_000)
        .from_vars([("OTEL_RESOURCE_ATTRIBUTES", "team=payments")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_receives_errors_forced_and_ten_percent() {
    let (receiver, got) = http_receiver().await;
    let obs = builder(&format!("http://{receiver}")).build().unwrap();
    let addr = common::serve(app(&obs)).await;
    let sent = drive_mix(addr).await;
    assert!(obs.flush(), "flush exports everything in time");
    let got = got.lock().unwrap().clone();
    check_mix(&obs, &sent, &got);
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_receives_errors_forced_and_ten_percent() {
    let mut collector = fake_opentelemetry_collector::FakeCollectorServer::start()
        .await
        .unwrap();
    let endpoint = collector.endpoint();
    // The fake collector hands spans over through a small channel: drain it all along.
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let drain = tokio::spawn(async move {
        loop {
            let batch = collector
                .exported_spans(1, Duration::from_millis(100))
                .await;
            let empty = batch.is_empty();
            sink.lock().unwrap().extend(batch);
            if empty && stopping.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
        }
    });
    let obs = builder(&endpoint)
        .otlp_protocol(mercenary_obs::OtlpProtocol::Grpc)
        .build()
        .unwrap();
    let addr = common::serve(app(&obs)).await;
    let sent = drive_mix(addr).await;
    assert!(obs.flush(), "flush exports everything in time");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .unwrap()
        .unwrap();
    let spans = std::mem::take(&mut *received.lock().unwrap());
    let got: Vec<Got> = spans
        .into_iter()
        .map(|s| {
            let reason = s
                .attributes
                .get("mercenary.sampling.reason")
                .cloned()
                .unwrap_or_default();
            let reason = ["error", "forced", "parent", "slow", "ratio"]
                .into_iter()
                .find(|r| reason.contains(&format!("\"{r}\"")))
                .unwrap_or("")
                .to_string();
            Got {
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
                name: s.name,
                reason,
                service: "otlp-test".into(),
                team: "payments".into(),
            }
        })
        .collect();
    check_mix(&obs, &sent, &got);
}

/// 5,000 requests with the collector down or hanging: nothing blocks, memory stays bounded,
/// and every lost span is counted.
async fn collector_trouble(endpoint: String) {
    let capture = Capture::default();
    let obs = Obs::builder()
        .service_name("otlp-trouble")
        .log_writer(capture.clone())
        .process_metrics(false)
        .otlp_endpoint(endpoint)
        .success_ratio(1.0)
        .otlp_timeout(Duration::from_millis(300))
        .export_schedule_delay(Duration::from_millis(50))
        .export_queue_size(512)
        .max_buffered_traces(256)
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let addr = common::serve(app(&obs)).await;
    let c = client();
    let started = Instant::now();
    for _ in 0..5000 {
        let (status, _) = common::send(&c, "GET", &format!("http://{addr}/ok"), "").await;
        assert_eq!(status, 200);
    }
    let took = started.elapsed();
    let exposition = obs.render_metrics();
    let active: f64 = samples(&exposition, "http_server_active_requests")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(active, 0.0);
    let dropped: HashMap<String, f64> = samples(&exposition, "mercenary_obs_spans_dropped_total")
        .into_iter()
        .collect();
    let lost = dropped["{reason=\"queue_full\"}"] + dropped["{reason=\"export_failed\"}"];
    assert!(lost > 0.0, "losses are counted: {dropped:?}");
    let buffered = samples(&exposition, "mercenary_obs_trace_buffer_spans")[0].1;
    assert!(buffered <= 256.0 * 512.0, "buffer within its bound");
    let kept = samples(&exposition, "mercenary_obs_traces_total")
        .into_iter()
        .find(|(l, _)| l.contains("ratio"))
        .unwrap()
        .1;
    assert_eq!(kept, 5000.0);
    // Shutdown is bounded even with the collector in trouble.
    let t = Instant::now();
    drop(obs);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        t.elapsed()
    );
    // At most a couple of warnings, not one per failure.
    let warnings = capture
        .text()
        .lines()
        .filter(|l| l.contains("trace export failing"))
        .count();
    assert!(
        warnings <= 1 + (took.as_secs() / 10) as usize + 1,
        "{warnings} warnings in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_never_blocks_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    collector_trouble(format!("http://127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_hanging_never_blocks_requests() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts connections and never answers; the sockets stay open until the test ends.
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1000).flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    collector_trouble(format!("http://{addr}")).await;
    drop(held);
}
