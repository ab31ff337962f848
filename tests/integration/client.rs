//! Outgoing-call instrumentation, through both adapters (the tower client layer over
//! hyper-util's client, and the reqwest middleware), over real HTTP on loopback: the headers a
//! downstream receives, the CLIENT spans in the ring, the client metric, and downstream-aware
//! keeping between two instances.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use common::processes::{free_port, url_encode};
use common::{get as http_get, samples, serve};
use mercenary_obs::Obs;
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
use serde_json::Value;

/// The two ways a service calls out.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Adapter {
    Tower,
    #[cfg(feature = "reqwest")]
    Reqwest,
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// An instrumented HTTP client of either kind.
#[derive(Clone)]
enum Caller {
    Tower(Box<mercenary_obs::ClientService<HyperClient>>),
    #[cfg(feature = "reqwest")]
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

impl Caller {
    fn new(adapter: Adapter, obs: &Obs) -> Caller {
        match adapter {
            Adapter::Tower => {
                let client: HyperClient = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http();
                Caller::Tower(Box::new(tower::Layer::layer(&obs.client_layer(), client)))
            }
            #[cfg(feature = "reqwest")]
            Adapter::Reqwest => Caller::Reqwest(
                reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                    .with(obs.reqwest_middleware())
                    .build(),
            ),
        }
    }

    /// `GET url`: the status, or the error's text.
    async fn get(&self, url: &str) -> Result<u16, String> {
        match self {
            Caller::Tower(service) => {
                let req = http::Request::get(url)
                    .body(http_body_util::Empty::new())
                    .map_err(|e| e.to_string())?;
                tower::ServiceExt::oneshot((**service).clone(), req)
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())
            }
            #[cfg(feature = "reqwest")]
            Caller::Reqwest(client) => client
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string()),
        }
    }
}

/// Runs the same check through every adapter this build has.
const ADAPTERS: &[Adapter] = &[
    Adapter::Tower,
    #[cfg(feature = "reqwest")]
    Adapter::Reqwest,
];

fn instance(name: &str, ratio: f64) -> Obs {
    Obs::builder()
        .service_name(name)
        .log_writer(std::io::sink())
        .process_metrics(false)
        .success_ratio(ratio)
        .trace_ring_size(100_000)
        .build()
        .unwrap()
}

/// The headers each request to the recorder carried.
type Seen = Arc<Mutex<Vec<HeaderMap>>>;

/// A plain downstream (no instrumentation of ours) that records the headers it receives and
/// answers `?status=N` (200 by default).
async fn recorder() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let app = Router::new().route(
        "/echo",
        get(
            move |Query(q): Query<HashMap<String, String>>, headers: HeaderMap| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(headers);
                    let status = q.get("status").and_then(|s| s.parse().ok()).unwrap_or(200);
                    StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    (serve(app).await, seen)
}

/// The calling service: `GET /call?to=URL` calls `URL` and answers 200 whatever happened
/// (a caller that absorbs downstream failures).
pub(crate) async fn caller(obs: &Obs, adapter: Adapter) -> SocketAddr {
    let client = Caller::new(adapter, obs);
    let app = Router::new()
        .route(
            "/call",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let client = client.clone();
                async move {
                    match client.get(&q["to"]).await {
                        Ok(status) => format!("downstream answered {status}"),
                        Err(e) => format!("downstream failed: {e}"),
                    }
                }
            }),
        )
        .layer(obs.layer());
    serve(app).await
}

pub(crate) async fn call(addr: SocketAddr, to: &str, headers: &[&str]) -> common::RawResponse {
    let resp = http_get(addr, &format!("/call?to={}", url_encode(to)), headers).await;
    assert_eq!(resp.status, 200);
    resp
}

fn traces(obs: &Obs) -> Vec<Value> {
    let json: Value = serde_json::from_str(&obs.recent_traces_json().expect("a ring")).unwrap();
    json["traces"].as_array().unwrap().clone()
}

fn trace_of<'a>(kept: &'a [Value], trace_id: &str) -> Option<&'a Value> {
    kept.iter().find(|t| t["trace_id"] == trace_id)
}

fn span_of_kind<'a>(trace: &'a Value, kind: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} span in {trace:#}"))
}

/// `(trace id, parent span id, sampled)` of a `traceparent`, checked against the W3C format.
fn traceparent(value: &str) -> (String, String, bool) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    assert!(
        hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2),
        "{value}"
    );
    assert_ne!(parts[1], "0".repeat(32));
    (parts[1].into(), parts[2].into(), parts[3] == "01")
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| v.to_str().unwrap().to_string())
}

/// What OpenTelemetry's own `TraceIdRatioBased` decides for `trace_id` (the oracle).
fn otel_samples(ratio: f64, trace_id: &str) -> bool {
    let id = TraceId::from_hex(trace_id).unwrap();
    let result =
        Sampler::TraceIdRatioBased(ratio).should_sample(None, id, "x", &SpanKind::Server, &[], &[]);
    result.decision == SamplingDecision::RecordAndSample
}

async fn propagation(adapter: Adapter) {
    let (down, seen) = recorder().await;
    let obs = instance("caller", 0.0);
    let addr = caller(&obs, adapter).await;
    let upstream = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    // Userinfo and query string must not reach `url.full`.
    let to = format!("http://user:pw@{down}/echo?status=500&token=s3cret");
    let resp = call(
        addr,
        &to,
        &[
            &format!("traceparent: 00-{upstream}-00f067aa0ba902b7-00"),
            &format!("tracestate: {tracestate}"),
            "x-request-id: corr-abc-123",
        ],
    )
    .await;
    let got = seen
        .lock()
        .unwrap()
        .pop()
        .expect("the downstream was called");
    let (trace_id, parent, sampled) = traceparent(&header(&got, "traceparent").unwrap());
    assert_eq!(
        trace_id, upstream,
        "{adapter:?}: the upstream's trace goes on"
    );
    assert!(
        !sampled,
        "{adapter:?}: not forced, not sampled upstream, ratio 0"
    );
    assert_eq!(header(&got, "tracestate").as_deref(), Some(tracestate));
    assert_eq!(
        header(&got, "x-request-id").as_deref(),
        Some("corr-abc-123")
    );
    assert_eq!(resp.header("x-request-id").as_deref(), Some("corr-abc-123"));

    // The 500 marks the CLIENT span as an error: the caller keeps its trace.
    let kept = traces(&obs);
    let trace = trace_of(&kept, upstream).expect("the trace is kept");
    assert_eq!(trace["reason"], "error");
    let server = span_of_kind(trace, "Server");
    let client = span_of_kind(trace, "Client");
    assert_eq!(
        client["span_id"],
        parent.as_str(),
        "the CLIENT span is the parent"
    );
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(client["name"], "HTTP GET");
    assert_eq!(client["status"], "error");
    let attrs = &client["attributes"];
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["server.address"], "127.0.0.1");
    assert_eq!(attrs["server.port"], down.port());
    assert_eq!(attrs["url.full"], format!("http://{down}/echo"));
    assert_eq!(attrs["http.response.status_code"], 500);
    assert_eq!(attrs["error.type"], "500");

    // A trusted upstream that sampled: the flag says so.
    call(
        addr,
        &format!("http://{down}/echo"),
        &[&format!("traceparent: 00-{upstream}-00f067aa0ba902b7-01")],
    )
    .await;
    let got = seen.lock().unwrap().pop().unwrap();
    assert!(traceparent(&header(&got, "traceparent").unwrap()).2);
    // Forced (`trace: true`): sampled.
    call(addr, &format!("http://{down}/echo"), &["trace: true"]).await;
    let got = seen.lock().unwrap().pop().unwrap();
    assert!(traceparent(&header(&got, "traceparent").unwrap()).2);

    // No incoming context: the caller's own trace and correlation ID.
    let resp = call(addr, &format!("http://{down}/echo"), &[]).await;
    let got = seen.lock().unwrap().pop().unwrap();
    let own = resp.header("traceresponse").unwrap();
    assert_eq!(
        traceparent(&header(&got, "traceparent").unwrap()).0,
        traceparent(&own).0
    );
    assert_eq!(header(&got, "x-request-id"), resp.header("x-request-id"));
    assert!(header(&got, "tracestate").is_none());
}

#[tokio::test]
async fn the_tower_client_layer_propagates_the_trace() {
    propagation(Adapter::Tower).await;
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn the_reqwest_middleware_propagates_the_trace() {
    propagation(Adapter::Reqwest).await;
}

#[tokio::test]
async fn hostile_trace_context_is_never_forwarded() {
    for &adapter in ADAPTERS {
        let (down, seen) = recorder().await;
        let obs = instance("caller", 0.0);
        let addr = caller(&obs, adapter).await;
        let to = format!("http://{down}/echo");
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cases: Vec<(String, String)> = vec![
            // Malformed, upper-case, oversized, all-zero traceparents, with a valid tracestate.
            ("00-zzzz-yy-01".into(), "rojo=1".into()),
            (good.to_uppercase(), "rojo=1".into()),
            (format!("{good}{}", "0".repeat(1000)), "rojo=1".into()),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
                "rojo=1".into(),
            ),
            // A valid traceparent with a malformed, oversized or duplicate-key tracestate.
            (good.into(), "rojo=1,,=x".into()),
            (good.into(), format!("rojo={}", "a".repeat(600))),
            (good.into(), "rojo=1,rojo=2".into()),
            (good.into(), "Rojo=1".into()),
        ];
        for (tp, ts) in &cases {
            call(
                addr,
                &to,
                &[&format!("traceparent: {tp}"), &format!("tracestate: {ts}")],
            )
            .await;
            let got = seen.lock().unwrap().pop().unwrap();
            let sent = header(&got, "traceparent").expect("a traceparent of ours");
            let (trace_id, _, _) = traceparent(&sent);
            if tp != good {
                assert!(
                    !tp.contains(&trace_id),
                    "{adapter:?}: a fresh trace, not {tp:?}: {sent}"
                );
            } else {
                assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            }
            assert!(
                header(&got, "tracestate").is_none(),
                "{adapter:?}: {tp:?} / {ts:?} forwarded {:?}",
                header(&got, "tracestate")
            );
        }
    }
}

#[tokio::test]
async fn the_sampled_flag_sent_is_opentelemetrys_ratio_decision() {
    for &adapter in ADAPTERS {
        let (down, seen) = recorder().await;
        let obs = instance("caller", 0.5);
        let addr = caller(&obs, adapter).await;
        let to = format!("http://{down}/echo");
        let mut flags = HashSet::new();
        for _ in 0..200 {
            call(addr, &to, &[]).await;
            let got = seen.lock().unwrap().pop().unwrap();
            let (trace_id, _, sampled) = traceparent(&header(&got, "traceparent").unwrap());
            assert_eq!(
                sampled,
                otel_samples(0.5, &trace_id),
                "{adapter:?}: trace {trace_id}"
            );
            flags.insert(sampled);
        }
        assert_eq!(flags.len(), 2, "both decisions seen over 200 traces");
    }
}

#[tokio::test]
async fn a_call_outside_any_request_is_a_root_of_its_own() {
    for &adapter in ADAPTERS {
        let (down, seen) = recorder().await;
        let obs = instance("worker", 0.0);
        let client = Caller::new(adapter, &obs);
        assert_eq!(
            client.get(&format!("http://{down}/echo?status=503")).await,
            Ok(503)
        );
        let got = seen.lock().unwrap().pop().unwrap();
        let (trace_id, parent, _) = traceparent(&header(&got, "traceparent").unwrap());
        assert!(header(&got, "x-request-id").is_none(), "no request, no ID");
        let kept = traces(&obs);
        let trace = trace_of(&kept, &trace_id).expect("the failed call's trace is kept");
        assert_eq!(trace["spans"].as_array().unwrap().len(), 1);
        let client_span = span_of_kind(trace, "Client");
        assert_eq!(client_span["span_id"], parent.as_str());
        assert_eq!(client_span["parent_span_id"], "0000000000000000");
    }
}

#[tokio::test]
async fn a_failed_connection_records_error_type_and_keeps_the_trace() {
    for &adapter in ADAPTERS {
        let obs = instance("caller", 0.0);
        let addr = caller(&obs, adapter).await;
        let port = free_port();
        let resp = call(addr, &format!("http://127.0.0.1:{port}/pricing/1"), &[]).await;
        assert!(
            String::from_utf8_lossy(&resp.body).contains("downstream failed"),
            "{adapter:?}"
        );
        let trace_id = traceparent(&resp.header("traceresponse").unwrap()).0;
        assert!(
            traceparent(&resp.header("traceresponse").unwrap()).2,
            "{adapter:?}: the caller tells its own caller it keeps the trace"
        );
        let kept = traces(&obs);
        let trace = trace_of(&kept, &trace_id).expect("kept as an error");
        assert_eq!(trace["reason"], "error", "{adapter:?}");
        let client_span = span_of_kind(trace, "Client");
        assert_eq!(client_span["status"], "error");
        assert_eq!(
            client_span["attributes"]["error.type"], "connection_refused",
            "{adapter:?}"
        );
        assert!(client_span["attributes"]["http.response.status_code"].is_null());
        let exposition = obs.render_metrics();
        let failed = samples(&exposition, "http_client_request_duration_seconds_count");
        assert_eq!(
            failed,
            vec![(
                format!(
                    "{{error_type=\"connection_refused\",http_request_method=\"GET\",http_response_status_code=\"\",server_address=\"127.0.0.1\",server_port=\"{port}\"}}"
                ),
                1.0
            )],
            "{adapter:?}"
        );
    }
}

#[tokio::test]
async fn client_metric_counts_equal_calls_made_by_status() {
    for &adapter in ADAPTERS {
        let (down, _seen) = recorder().await;
        let obs = instance("caller", 0.0);
        let client = Caller::new(adapter, &obs);
        let plan = [(200u16, 7usize), (404, 3), (500, 2)];
        for (status, n) in plan {
            for _ in 0..n {
                let url = format!("http://{down}/echo?status={status}");
                assert_eq!(client.get(&url).await, Ok(status));
            }
        }
        let exposition = obs.render_metrics();
        common::promtool_check(&exposition);
        let mut counts: Vec<(String, f64)> =
            samples(&exposition, "http_client_request_duration_seconds_count");
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        let port = down.port();
        let labels = |error: &str, status: u16| {
            format!(
                "{{error_type=\"{error}\",http_request_method=\"GET\",http_response_status_code=\"{status}\",server_address=\"127.0.0.1\",server_port=\"{port}\"}}"
            )
        };
        let mut want = vec![
            (labels("", 200), 7.0),
            (labels("404", 404), 3.0),
            (labels("500", 500), 2.0),
        ];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(counts, want, "{adapter:?}");
    }
}

/// Two instances: `front` calls `back` and absorbs its failures.
async fn downstream_keeping(adapter: Adapter) {
    let back = instance("back", 0.0);
    let back_app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/logs-error",
            get(|| async {
                tracing::error!("pricing source unreachable, served from cache");
                "ok anyway"
            }),
        )
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(back.layer());
    let back_addr = serve(back_app).await;
    let front = instance("front", 0.0);
    let front_addr = caller(&front, adapter).await;

    // The downstream kept its part (an ERROR, answered 200): the caller keeps its part too.
    let resp = call(front_addr, &format!("http://{back_addr}/logs-error"), &[]).await;
    let (trace_id, _, sampled) = traceparent(&resp.header("traceresponse").unwrap());
    assert!(sampled, "{adapter:?}: the front says it keeps the trace");
    let front_trace = trace_of(&traces(&front), &trace_id)
        .cloned()
        .expect("front kept its part");
    assert_eq!(front_trace["reason"], "downstream", "{adapter:?}");
    let back_trace = trace_of(&traces(&back), &trace_id)
        .cloned()
        .expect("back kept its part");
    assert_eq!(back_trace["reason"], "error");
    assert_eq!(
        span_of_kind(&back_trace, "Server")["parent_span_id"],
        span_of_kind(&front_trace, "Client")["span_id"],
        "{adapter:?}: one trace, the downstream server span under the CLIENT span"
    );
    assert!(
        front
            .render_metrics()
            .contains("mercenary_obs_traces_total{decision=\"kept\",reason=\"downstream\"} 1")
    );

    // A 500 absorbed by the caller: kept on both sides (the CLIENT span is an error).
    let resp = call(front_addr, &format!("http://{back_addr}/boom"), &[]).await;
    let trace_id = traceparent(&resp.header("traceresponse").unwrap()).0;
    assert!(
        trace_of(&traces(&front), &trace_id).is_some(),
        "{adapter:?}"
    );
    assert!(trace_of(&traces(&back), &trace_id).is_some(), "{adapter:?}");

    // Success at ratio 0: dropped on both sides, and the front says so.
    let resp = call(front_addr, &format!("http://{back_addr}/ok"), &[]).await;
    let (trace_id, _, sampled) = traceparent(&resp.header("traceresponse").unwrap());
    assert!(!sampled, "{adapter:?}");
    assert!(
        trace_of(&traces(&front), &trace_id).is_none(),
        "{adapter:?}"
    );
    assert!(trace_of(&traces(&back), &trace_id).is_none(), "{adapter:?}");
}

#[tokio::test]
async fn a_downstream_that_kept_the_trace_keeps_it_here_tower() {
    downstream_keeping(Adapter::Tower).await;
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn a_downstream_that_kept_the_trace_keeps_it_here_reqwest() {
    downstream_keeping(Adapter::Reqwest).await;
}

/// A proxy that copies its caller's headers onto the outgoing request: what it copies is
/// checked, not trusted.
#[tokio::test]
async fn headers_a_caller_copied_onto_the_request_are_checked() {
    let obs = instance("proxy", 0.0);
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let transport = tower::service_fn(move |req: http::Request<String>| {
        sink.lock().unwrap().push(req.headers().clone());
        async { Ok::<_, std::io::Error>(http::Response::new(String::new())) }
    });
    let mut client = tower::Layer::layer(&obs.client_layer(), transport);
    let send = |traceparent: &str, tracestate: &str| {
        http::Request::get("http://pricing.internal/quote")
            .header("traceparent", traceparent)
            .header("tracestate", tracestate)
            .body(String::new())
            .unwrap()
    };
    let bad = "00-zzzz-yy-01";
    tower::ServiceExt::oneshot(&mut client, send(bad, "a=1,a=2"))
        .await
        .unwrap();
    let got = seen.lock().unwrap().pop().unwrap();
    let sent = header(&got, "traceparent").expect("the CLIENT span's context");
    assert_ne!(sent, bad);
    traceparent(&sent);
    assert!(header(&got, "tracestate").is_none(), "duplicate keys");
    // A valid `tracestate` the caller set, with no upstream one to pass on, is kept.
    tower::ServiceExt::oneshot(&mut client, send(bad, "vendor=abc"))
        .await
        .unwrap();
    let got = seen.lock().unwrap().pop().unwrap();
    assert_eq!(header(&got, "tracestate").as_deref(), Some("vendor=abc"));
}

/// A service that calls itself holds two local roots of one trace: each is decided on its own,
/// so the caller's error is kept even though the callee's success was dropped first.
#[tokio::test]
async fn a_service_calling_itself_decides_each_local_root_on_its_own() {
    let obs = instance("self-caller", 0.0);
    let client = Caller::new(Adapter::Tower, &obs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/down", get(|| async { "fine" }))
        .route(
            "/up",
            get(move || {
                let client = client.clone();
                async move {
                    let status = client.get(&format!("http://{addr}/down")).await;
                    tracing::error!(?status, "the caller fails after its call");
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }),
        )
        .layer(obs.layer());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let resp = http_get(addr, "/up", &[]).await;
    assert_eq!(resp.status, 500);
    let trace_id = traceparent(&resp.header("traceresponse").unwrap()).0;
    let kept = traces(&obs);
    let trace = trace_of(&kept, &trace_id).expect("the caller's part is kept");
    assert_eq!(trace["reason"], "error");
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(
        spans.len(),
        2,
        "the caller's SERVER and CLIENT spans: {trace:#}"
    );
    assert!(spans.iter().any(|s| s["attributes"]["http.route"] == "/up"));
    let exposition = obs.render_metrics();
    let decisions = samples(&exposition, "mercenary_obs_traces_total");
    let count = |labels: &str| {
        decisions
            .iter()
            .find(|(l, _)| l == labels)
            .map_or(0.0, |(_, v)| *v)
    };
    assert_eq!(count("{decision=\"kept\",reason=\"error\"}"), 1.0);
    assert_eq!(
        count("{decision=\"dropped\",reason=\"none\"}"),
        1.0,
        "/down"
    );
}

/// The flags a service sends downstream and answers with never claim a trace it drops: an
/// upstream's sampled flag it does not trust, or `trace: true` past the forced budget.
#[tokio::test]
async fn sent_flags_never_claim_a_trace_that_is_dropped() {
    let (down, seen) = recorder().await;
    let obs = Obs::builder()
        .service_name("strict")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .success_ratio(0.0)
        .trust_upstream_sampled(false)
        .forced_per_second(0.0)
        .trace_ring_size(1000)
        .build()
        .unwrap();
    let addr = caller(&obs, Adapter::Tower).await;
    let to = format!("http://{down}/echo");
    for sent in [
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "trace: true",
    ] {
        let resp = call(addr, &to, &[sent]).await;
        let got = seen.lock().unwrap().pop().unwrap();
        assert!(
            !traceparent(&header(&got, "traceparent").expect("a traceparent")).2,
            "{sent}: sent downstream as sampled"
        );
        let (trace_id, _, sampled) = traceparent(&resp.header("traceresponse").unwrap());
        assert!(!sampled, "{sent}: answered as sampled");
        assert!(trace_of(&traces(&obs), &trace_id).is_none(), "{sent}");
    }
}

/// `server_address` comes from URLs a service may build from user input: its series are
/// capped like any business metric's, the rest folded into `_other` and counted.
#[tokio::test]
async fn server_address_is_bounded_by_the_series_cap() {
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .process_metrics(false)
        .series_cap_for("http_client_request_duration_seconds", 3)
        .build()
        .unwrap();
    let transport = tower::service_fn(|_req: http::Request<String>| async {
        Ok::<_, std::io::Error>(http::Response::new(String::new()))
    });
    let mut client = tower::Layer::layer(&obs.client_layer(), transport);
    for host in 0..50 {
        let req = http::Request::get(format!("http://tenant-{host}.example.com/x"))
            .body(String::new())
            .unwrap();
        tower::ServiceExt::oneshot(&mut client, req).await.unwrap();
    }
    let exposition = obs.render_metrics();
    common::promtool_check(&exposition);
    let counts = samples(&exposition, "http_client_request_duration_seconds_count");
    assert_eq!(counts.len(), 4, "3 series and `_other`: {counts:?}");
    assert_eq!(
        counts.iter().map(|(_, v)| v).sum::<f64>(),
        50.0,
        "sums stay exact"
    );
    let other = counts
        .iter()
        .find(|(l, _)| l.contains("server_address=\"_other\""))
        .expect("an `_other` series");
    assert_eq!(other.1, 47.0);
    assert!(
        exposition.contains(
            "mercenary_obs_metric_overflow_total{metric=\"http_client_request_duration_seconds\"} 47"
        ),
        "{exposition}"
    );
}
