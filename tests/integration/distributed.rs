//! Distributed traces across two demo processes, as a user runs them: a "pricing" demo and a
//! "caller" demo whose `GET /quote/{id}` calls the pricing one's `GET /pricing/{id}` through
//! `client_layer()`, both exporting to an OTLP/HTTP (protobuf) receiver run by the test.
//!
//! What a user would check in their tracing backend and logs: a failed downstream call the
//! caller recovered from is one trace holding both services' spans, linked parent to child; a
//! successful call is kept or dropped alike on both sides (the caller's decision travels in
//! `traceparent`), at OpenTelemetry's own `TraceIdRatioBased(0.1)` rate; the downstream's log
//! lines carry the caller's correlation ID and trace ID; a downstream that is not there still
//! gets a degraded answer, a kept trace and a metric naming why.

use crate::common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use common::processes::{Demo, free_port};
use common::{Client, client, samples};
use opentelemetry::trace::{SpanKind as OtelKind, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use prost::Message;
use serde_json::Value;

/// The success ratio both demos run with (the crate's default, pinned so an ambient
/// `MERCENARY_OBS_SUCCESS_RATIO` cannot change what the oracle is compared with).
const RATIO: f64 = 0.1;
/// Quote requests in flight at once.
const CONCURRENCY: usize = 8;

/// One exported span, as the receiver decoded it.
#[derive(Clone, Debug)]
struct Got {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: i32,
    service: String,
    attributes: HashMap<String, String>,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    fn reason(&self) -> &str {
        self.attr("mercenary.sampling.reason").unwrap_or("")
    }

    fn is(&self, service: &str, kind: SpanKind) -> bool {
        self.service == service && self.kind == kind as i32
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body; every span it decodes.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Got>>>) {
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
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                        .map(text)
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let attributes = s
                                .attributes
                                .iter()
                                .filter_map(|kv| {
                                    Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)))
                                })
                                .collect();
                            out.push(Got {
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent_span_id: hex(&s.parent_span_id),
                                name: s.name,
                                kind: s.kind,
                                service: service.clone(),
                                attributes,
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

/// An attribute value as text (integers in decimal).
fn text(v: &AnyValue) -> String {
    match v {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What OpenTelemetry's own `TraceIdRatioBased` decides for a trace ID with no parent.
fn otel_samples(trace_id: &str) -> bool {
    let id = TraceId::from_hex(trace_id).unwrap();
    let result = Sampler::TraceIdRatioBased(RATIO).should_sample(
        None,
        id,
        "quote",
        &OtelKind::Server,
        &[],
        &[],
    );
    result.decision == SamplingDecision::RecordAndSample
}

/// The environment of a demo named `service` exporting to `receiver`.
fn otlp_env(service: &'static str, receiver: SocketAddr) -> Vec<(&'static str, String)> {
    otlp_env_at(service, receiver, RATIO)
}

/// [`otlp_env`] with another success ratio.
fn otlp_env_at(
    service: &'static str,
    receiver: SocketAddr,
    ratio: f64,
) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_SERVICE_NAME", service.to_string()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
        // Export every 100 ms rather than every 5 s; shutdown flushes the rest.
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100000".to_string()),
        ("MERCENARY_OBS_SUCCESS_RATIO", ratio.to_string()),
    ]
}

async fn start(envs: &[(&'static str, String)]) -> Demo {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Demo::start(&envs).await
}

/// The pricing demo and a caller demo calling it, both exporting to `receiver`.
async fn two_services(receiver: SocketAddr) -> (Demo, Demo) {
    two_services_at(receiver, RATIO, RATIO).await
}

/// [`two_services`] with a success ratio each.
async fn two_services_at(
    receiver: SocketAddr,
    caller_ratio: f64,
    pricing_ratio: f64,
) -> (Demo, Demo) {
    let pricing = start(&otlp_env_at("pricing", receiver, pricing_ratio)).await;
    let mut caller_env = otlp_env_at("caller", receiver, caller_ratio);
    caller_env.push(("DOWNSTREAM_URL", format!("http://{}", pricing.addr)));
    // A quote falls back after 2 s by default; on a loaded machine a priced call must not turn
    // into a degraded one because it was slow.
    caller_env.push(("DOWNSTREAM_TIMEOUT_MS", "30000".to_string()));
    let caller = start(&caller_env).await;
    (pricing, caller)
}

/// One quote as the test's client saw it.
#[derive(Debug)]
struct Quote {
    id: u64,
    request_id: String,
    status: u16,
    body: Value,
    /// From the caller's `traceresponse`.
    trace_id: String,
    span_id: String,
    sampled: bool,
    echoed_request_id: Option<String>,
}

/// `GET /quote/{id}` on the caller with `x-request-id: request_id` (no `traceparent`: the
/// caller starts the trace). Bounded by 60 s.
async fn quote(c: &Client, caller: SocketAddr, id: u64, request_id: &str) -> Quote {
    use http_body_util::BodyExt;
    let req = http::Request::get(format!("http://{caller}/quote/{id}"))
        .header("x-request-id", request_id)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), c.request(req))
        .await
        .unwrap_or_else(|_| panic!("quote {id}: no answer within 60 s"))
        .unwrap_or_else(|e| panic!("quote {id}: {e}"));
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let traceresponse = header("traceresponse")
        .unwrap_or_else(|| panic!("quote {id}: the caller answers with a traceresponse"));
    let parts: Vec<&str> = traceresponse.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceresponse}");
    let (trace_id, span_id, sampled) =
        (parts[1].to_string(), parts[2].to_string(), parts[3] == "01");
    let echoed_request_id = header("x-request-id");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("quote {id}: not JSON ({e}): {body:?}"));
    Quote {
        id,
        request_id: request_id.to_string(),
        status,
        body,
        trace_id,
        span_id,
        sampled,
        echoed_request_id,
    }
}

/// Sends `GET /quote/{id}` for every id, `CONCURRENCY` at a time; each request carries
/// `x-request-id: {prefix}-{id}`. Returns the quotes in id order.
async fn quotes(caller: SocketAddr, ids: &[u64], prefix: &str) -> Vec<Quote> {
    let ids: Arc<Vec<u64>> = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (ids, next, prefix) = (ids.clone(), next.clone(), prefix.to_string());
        workers.spawn(async move {
            let c = client();
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&id) = ids.get(i) else { break };
                out.push(quote(&c, caller, id, &format!("{prefix}-{id}")).await);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.unwrap());
    }
    all.sort_by_key(|q| q.id);
    all
}

/// `GET /metrics` of a demo.
async fn metrics(addr: SocketAddr) -> String {
    let r = common::get(addr, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// The count of `http_client_request_duration_seconds` per label set.
fn client_counts(exposition: &str) -> HashMap<String, f64> {
    samples(exposition, "http_client_request_duration_seconds_count")
        .into_iter()
        .collect()
}

/// Asserts that the demo lost no span to a bound or an export failure so far.
fn assert_no_span_dropped(exposition: &str, who: &str) {
    let dropped: Vec<_> = samples(exposition, "mercenary_obs_spans_dropped_total")
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    assert!(dropped.is_empty(), "{who} dropped spans: {dropped:?}");
}

/// Stops both demos (SIGTERM: the caller first, so no call is in flight when pricing stops) and
/// checks they exited cleanly; shutdown flushes what is still queued for export.
fn stop(caller: &mut Demo, pricing: Option<&mut Demo>) {
    let status = caller.stop();
    assert!(status.success(), "the caller exits cleanly: {status}");
    if let Some(pricing) = pricing {
        let status = pricing.stop();
        assert!(status.success(), "pricing exits cleanly: {status}");
    }
}

/// The spans received, grouped by trace ID, once every trace in `complete` has `spans_each`
/// spans (waits up to 20 s for late batches; the demos flushed at shutdown, so this is a bound
/// on the receiver's own processing, not on the demos' speed).
async fn spans_by_trace(
    got: &Mutex<Vec<Got>>,
    complete: &BTreeSet<String>,
    spans_each: usize,
) -> HashMap<String, Vec<Got>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut by_trace: HashMap<String, Vec<Got>> = HashMap::new();
        for g in got.lock().unwrap().iter() {
            by_trace
                .entry(g.trace_id.clone())
                .or_default()
                .push(g.clone());
        }
        let done = complete
            .iter()
            .all(|t| by_trace.get(t).is_some_and(|s| s.len() >= spans_each));
        if done || Instant::now() > deadline {
            return by_trace;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The four spans of a trace that crossed both services, checked for shape and links:
/// caller SERVER (local root) → caller CLIENT → pricing SERVER → pricing `db.query`.
/// Returns them in that order.
fn linked_spans<'a>(trace_id: &str, spans: &'a [Got], pricing: SocketAddr) -> [&'a Got; 4] {
    let one = |what: &str, pick: &dyn Fn(&Got) -> bool| -> &'a Got {
        let found: Vec<&Got> = spans.iter().filter(|s| pick(s)).collect();
        assert_eq!(
            found.len(),
            1,
            "one {what} span in trace {trace_id}: {spans:#?}"
        );
        found[0]
    };
    assert_eq!(spans.len(), 4, "four spans in trace {trace_id}: {spans:#?}");
    let server = one("caller SERVER", &|s| s.is("caller", SpanKind::Server));
    let client = one("caller CLIENT", &|s| s.is("caller", SpanKind::Client));
    let downstream = one("pricing SERVER", &|s| s.is("pricing", SpanKind::Server));
    let db = one("pricing db.query", &|s| {
        s.service == "pricing" && s.name.contains("SELECT")
    });

    assert_eq!(server.parent_span_id, "", "the caller started the trace");
    assert_eq!(server.attr("http.route"), Some("/quote/{id}"));
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the CLIENT span is a child of the caller's request span"
    );
    assert_eq!(client.name, "HTTP GET");
    assert_eq!(client.attr("http.request.method"), Some("GET"));
    assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
    let port = pricing.port().to_string();
    assert_eq!(client.attr("server.port"), Some(port.as_str()));
    let path = downstream.attr("url.path").unwrap();
    assert_eq!(
        client.attr("url.full"),
        Some(format!("http://{pricing}{path}").as_str())
    );
    assert_eq!(
        downstream.parent_span_id, client.span_id,
        "pricing's request span is a child of the caller's CLIENT span"
    );
    assert_eq!(downstream.attr("http.route"), Some("/pricing/{id}"));
    assert_eq!(db.parent_span_id, downstream.span_id);
    assert_eq!(
        client.attr("http.response.status_code"),
        downstream.attr("http.response.status_code"),
        "the caller saw the status pricing answered"
    );
    [server, client, downstream, db]
}

/// The JSON log lines of a demo.
fn json_lines(demo: &Demo) -> Vec<Value> {
    demo.lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absorbed_pricing_failure_is_one_trace_across_both_services() {
    let (receiver, got) = receiver().await;
    let (mut pricing, mut caller) = two_services(receiver).await;

    // Pricing fails for multiples of 10; the caller recovers with a fallback price.
    let ids: Vec<u64> = (1..=20).map(|i| i * 10).collect();
    let sent = quotes(caller.addr, &ids, "absorbed").await;
    for q in &sent {
        assert_eq!(q.status, 200, "the quote recovers: {q:?}");
        assert_eq!(q.body["degraded"], true, "{q:?}");
        assert_eq!(q.body["id"], q.id, "{q:?}");
        assert!(q.body["price"].is_number(), "{q:?}");
        assert_eq!(q.echoed_request_id.as_deref(), Some(q.request_id.as_str()));
    }
    let caller_metrics = metrics(caller.addr).await;
    let pricing_metrics = metrics(pricing.addr).await;
    stop(&mut caller, Some(&mut pricing));

    // Metrics: one client observation per call, all 500.
    let port = pricing.addr.port();
    assert_eq!(
        client_counts(&caller_metrics),
        HashMap::from([(
            format!(
                "{{error_type=\"500\",http_request_method=\"GET\",http_response_status_code=\"500\",\
                 server_address=\"127.0.0.1\",server_port=\"{port}\"}}"
            ),
            ids.len() as f64
        )]),
        "http_client_request_duration_seconds_count by label set"
    );
    assert_no_span_dropped(&caller_metrics, "the caller");
    assert_no_span_dropped(&pricing_metrics, "pricing");

    // Traces: each failure is one trace holding both services' spans, kept for its error.
    let trace_ids: BTreeSet<String> = sent.iter().map(|q| q.trace_id.clone()).collect();
    assert_eq!(trace_ids.len(), sent.len(), "one trace per quote");
    let by_trace = spans_by_trace(&got, &trace_ids, 4).await;
    for q in &sent {
        let spans = by_trace
            .get(&q.trace_id)
            .unwrap_or_else(|| panic!("the trace of quote {} arrived", q.id));
        let [server, client, downstream, _db] = linked_spans(&q.trace_id, spans, pricing.addr);
        assert_eq!(
            server.span_id, q.span_id,
            "traceresponse names the request span"
        );
        assert_eq!(client.attr("http.response.status_code"), Some("500"));
        assert_eq!(client.attr("error.type"), Some("500"));
        assert_eq!(
            downstream.attr("url.path"),
            Some(format!("/pricing/{}", q.id).as_str())
        );
        for s in spans {
            assert_eq!(s.reason(), "error", "kept for the error: {s:#?}");
        }
        assert!(
            q.sampled,
            "the caller's traceresponse says it keeps the trace: {q:?}"
        );
    }

    // Logs: pricing's lines of each call carry the caller's correlation ID and the trace ID; its
    // ERROR line is there, and the caller, which recovered, logged a WARNING and no ERROR.
    let pricing_lines = json_lines(&pricing);
    let caller_lines = json_lines(&caller);
    for q in &sent {
        let of = |lines: &[Value]| -> Vec<Value> {
            lines
                .iter()
                .filter(|l| l["correlation_id"] == q.request_id.as_str())
                .cloned()
                .collect()
        };
        let downstream = of(&pricing_lines);
        assert!(
            downstream.iter().any(|l| l["level"] == "ERROR"
                && l["message"] == "simulated failure: no price for this item"),
            "pricing logged its failure with the caller's correlation ID {}: {downstream:#?}",
            q.request_id
        );
        assert!(
            downstream
                .iter()
                .any(|l| l["message"] == "request completed"
                    && l["url.path"] == format!("/pricing/{}", q.id)),
            "{downstream:#?}"
        );
        for l in &downstream {
            assert_eq!(l["trace_id"], q.trace_id.as_str(), "{l}");
            assert_eq!(l["service"], "pricing", "{l}");
        }
        let upstream = of(&caller_lines);
        assert!(
            upstream
                .iter()
                .any(|l| l["level"] == "WARNING" && l["item_id"] == q.id),
            "the caller logged a WARNING for quote {}: {upstream:#?}",
            q.id
        );
        assert!(
            upstream.iter().all(|l| l["level"] != "ERROR"),
            "the caller recovered, so no ERROR: {upstream:#?}"
        );
        for l in &upstream {
            assert_eq!(l["trace_id"], q.trace_id.as_str(), "{l}");
            assert_eq!(l["service"], "caller", "{l}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_keep_or_drop_each_call_alike_at_the_otel_ratio() {
    let (receiver, got) = receiver().await;
    let (mut pricing, mut caller) = two_services(receiver).await;

    // 1,111 quotes: 1,000 priced, and the 111 multiples of 10 that pricing fails.
    let ids: Vec<u64> = (1..=1111).collect();
    let sent = quotes(caller.addr, &ids, "mixed").await;
    let (failed, priced): (Vec<&Quote>, Vec<&Quote>) = sent.iter().partition(|q| q.id % 10 == 0);
    assert_eq!((priced.len(), failed.len()), (1000, 111));
    for q in &sent {
        assert_eq!(q.status, 200, "{q:?}");
        assert_eq!(q.body["degraded"], q.id % 10 == 0, "{q:?}");
    }
    let caller_metrics = metrics(caller.addr).await;
    let pricing_metrics = metrics(pricing.addr).await;
    stop(&mut caller, Some(&mut pricing));

    // The client histogram counts every call made, by status: 1,000 × 200 and 111 × 500.
    let port = pricing.addr.port();
    let series = |status: u16, error_type: &str| {
        format!(
            "{{error_type=\"{error_type}\",http_request_method=\"GET\",\
             http_response_status_code=\"{status}\",server_address=\"127.0.0.1\",\
             server_port=\"{port}\"}}"
        )
    };
    assert_eq!(
        client_counts(&caller_metrics),
        HashMap::from([(series(200, ""), 1000.0), (series(500, "500"), 111.0)]),
        "http_client_request_duration_seconds_count by label set"
    );
    assert_no_span_dropped(&caller_metrics, "the caller");
    assert_no_span_dropped(&pricing_metrics, "pricing");

    // Which traces OpenTelemetry's TraceIdRatioBased(0.1) samples, by the caller's trace IDs.
    let sent_ids: HashSet<&str> = sent.iter().map(|q| q.trace_id.as_str()).collect();
    assert_eq!(sent_ids.len(), sent.len(), "one trace per quote");
    let oracle: BTreeSet<String> = priced
        .iter()
        .filter(|q| otel_samples(&q.trace_id))
        .map(|q| q.trace_id.clone())
        .collect();
    for q in &priced {
        assert_eq!(
            q.sampled,
            oracle.contains(&q.trace_id),
            "the caller's traceresponse flag is the OTel decision: {q:?}"
        );
    }
    let mut complete = oracle.clone();
    complete.extend(failed.iter().map(|q| q.trace_id.clone()));
    let by_trace = spans_by_trace(&got, &complete, 4).await;

    let all: Vec<Got> = got.lock().unwrap().clone();
    let unique: HashSet<&str> = all.iter().map(|g| g.span_id.as_str()).collect();
    assert_eq!(unique.len(), all.len(), "no span arrives twice");

    // Successful calls: the traces with caller spans are exactly those with pricing spans, and
    // exactly those the OTel sampler samples.
    let with = |service: &str| -> BTreeSet<String> {
        priced
            .iter()
            .filter(|q| {
                by_trace
                    .get(&q.trace_id)
                    .is_some_and(|s| s.iter().any(|g| g.service == service))
            })
            .map(|q| q.trace_id.clone())
            .collect()
    };
    let (kept_by_caller, kept_by_pricing) = (with("caller"), with("pricing"));
    assert_eq!(
        kept_by_caller, kept_by_pricing,
        "both services keep the same successful traces"
    );
    assert_eq!(
        kept_by_caller, oracle,
        "the kept traces are those OpenTelemetry's TraceIdRatioBased(0.1) samples"
    );
    // The oracle's own count is a sanity check of the test: about 10% of 1,000 (within 4.5
    // standard deviations, 58..142: a false failure about once in 150,000 runs).
    assert!(
        (58..=142).contains(&oracle.len()),
        "{} of 1000 successful traces sampled",
        oracle.len()
    );
    for trace_id in &oracle {
        let spans = &by_trace[trace_id];
        let [server, client, downstream, db] = linked_spans(trace_id, spans, pricing.addr);
        assert_eq!(client.attr("http.response.status_code"), Some("200"));
        assert_eq!(client.attr("error.type"), None);
        // The caller kept it by the ratio; pricing by the sampled flag it received.
        assert_eq!((server.reason(), client.reason()), ("ratio", "ratio"));
        assert_eq!(
            (downstream.reason(), db.reason()),
            ("parent", "parent"),
            "pricing keeps the trace because the caller's traceparent says sampled"
        );
    }

    // Failed calls: every one kept on both sides, for the error.
    for q in &failed {
        let spans = by_trace
            .get(&q.trace_id)
            .unwrap_or_else(|| panic!("the trace of failed quote {} arrived", q.id));
        linked_spans(&q.trace_id, spans, pricing.addr);
        assert!(spans.iter().all(|s| s.reason() == "error"), "{spans:#?}");
    }

    // Nothing else arrived, but for the test's own `/metrics` scrapes that the ratio kept.
    for (trace_id, spans) in &by_trace {
        if !sent_ids.contains(trace_id.as_str()) {
            assert!(
                spans
                    .iter()
                    .all(|s| s.attr("http.route") == Some("/metrics")),
                "an unexpected trace arrived: {spans:#?}"
            );
        } else if !complete.contains(trace_id) {
            panic!("a trace outside the ratio arrived: {spans:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_pricing_service_degrades_the_quote_and_keeps_the_trace() {
    let (receiver, got) = receiver().await;
    // Nothing listens on this port.
    let nowhere = free_port();
    let mut env = otlp_env("caller", receiver);
    env.push(("DOWNSTREAM_URL", format!("http://127.0.0.1:{nowhere}")));
    let mut caller = start(&env).await;

    let ids: Vec<u64> = (1..=5).collect();
    let sent = quotes(caller.addr, &ids, "unreachable").await;
    for q in &sent {
        assert_eq!(q.status, 200, "{q:?}");
        assert_eq!(q.body["degraded"], true, "{q:?}");
        assert!(q.body["price"].is_number(), "{q:?}");
    }
    let exposition = metrics(caller.addr).await;
    stop(&mut caller, None);

    assert_eq!(
        client_counts(&exposition),
        HashMap::from([(
            format!(
                "{{error_type=\"connection_refused\",http_request_method=\"GET\",\
                 http_response_status_code=\"\",server_address=\"127.0.0.1\",\
                 server_port=\"{nowhere}\"}}"
            ),
            5.0
        )]),
        "http_client_request_duration_seconds_count by label set"
    );

    let trace_ids: BTreeSet<String> = sent.iter().map(|q| q.trace_id.clone()).collect();
    let by_trace = spans_by_trace(&got, &trace_ids, 2).await;
    for q in &sent {
        let spans = by_trace
            .get(&q.trace_id)
            .unwrap_or_else(|| panic!("the trace of quote {} is kept and arrived", q.id));
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let server = spans
            .iter()
            .find(|s| s.is("caller", SpanKind::Server))
            .expect("the request span");
        let client = spans
            .iter()
            .find(|s| s.is("caller", SpanKind::Client))
            .expect("the CLIENT span");
        assert_eq!(server.span_id, q.span_id);
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(client.attr("error.type"), Some("connection_refused"));
        assert_eq!(client.attr("http.response.status_code"), None);
        assert_eq!(
            client.attr("url.full"),
            Some(format!("http://127.0.0.1:{nowhere}/pricing/{}", q.id).as_str())
        );
        assert!(spans.iter().all(|s| s.reason() == "error"), "{spans:#?}");
    }

    let lines = json_lines(&caller);
    for q in &sent {
        let mine: Vec<&Value> = lines
            .iter()
            .filter(|l| l["correlation_id"] == q.request_id.as_str())
            .collect();
        let warning = mine
            .iter()
            .find(|l| l["level"] == "WARNING" && l["item_id"] == q.id)
            .unwrap_or_else(|| panic!("a WARNING for quote {}: {mine:#?}", q.id));
        assert!(
            warning["reason"]
                .as_str()
                .is_some_and(|r| r.contains("refused")),
            "the WARNING says why: {warning}"
        );
        assert!(mine.iter().all(|l| l["level"] != "ERROR"), "{mine:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_that_keeps_its_part_makes_the_caller_keep_its_own() {
    let (receiver, got) = receiver().await;
    // The caller keeps no successful trace by itself; pricing keeps every trace it serves, and
    // says so in `traceresponse`.
    let (mut pricing, mut caller) = two_services_at(receiver, 0.0, 1.0).await;

    let ids: Vec<u64> = (1..=60).filter(|id| id % 10 != 0).collect();
    let sent = quotes(caller.addr, &ids, "downstream").await;
    for q in &sent {
        assert_eq!(q.status, 200, "{q:?}");
        assert_eq!(q.body["degraded"], false, "{q:?}");
    }
    stop(&mut caller, Some(&mut pricing));

    let trace_ids: BTreeSet<String> = sent.iter().map(|q| q.trace_id.clone()).collect();
    let by_trace = spans_by_trace(&got, &trace_ids, 4).await;
    for q in &sent {
        let spans = by_trace
            .get(&q.trace_id)
            .unwrap_or_else(|| panic!("the trace of quote {} arrived whole", q.id));
        let [server, client, downstream, db] = linked_spans(&q.trace_id, spans, pricing.addr);
        assert_eq!(
            (server.reason(), client.reason()),
            ("downstream", "downstream"),
            "the caller kept its part because pricing kept its own"
        );
        assert_eq!((downstream.reason(), db.reason()), ("ratio", "ratio"));
        assert!(
            q.sampled,
            "the caller's traceresponse passes on that the trace is kept: {q:?}"
        );
    }
}
