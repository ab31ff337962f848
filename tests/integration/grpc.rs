//! The gRPC example (`examples/grpc.rs`) as a user runs it: spawned as a child process, called
//! by a real tonic client over h2c, its `/metrics` and `/debug/traces` read over HTTP/1.1 on the
//! same port, its stdout read as a log shipper would.
//!
//! A failed gRPC call answers HTTP 200 with `grpc-status` in the trailers, or in the headers of
//! a trailers-only response; these tests check that the layer classifies calls by that status:
//! `rpc_server_call_duration_seconds` by status name, server faults as errors (kept traces,
//! ERROR access lines), client faults as expected answers, streams at their end, a dropped
//! stream once as `cancelled`; and, on the calling side, that the client layer wrapped around a
//! tonic `Channel` records `rpc_client_call_duration_seconds` and propagates the trace.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mercenary_obs::{Obs, names};
use serde_json::Value;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use common::processes::Demo;

#[path = "../../examples/grpc/pricing.rs"]
mod pricing;

use pricing::pricing_client::PricingClient;
use pricing::{QuoteReply, QuoteRequest};

const QUOTE: &str = "mercenary.v1.Pricing/Quote";
const WATCH: &str = "mercenary.v1.Pricing/Watch";
/// The `rpc_method` of a method the server does not implement.
const OTHER_METHOD: &str = "_OTHER";
/// How long the example's `Watch` pauses between two prices (`WATCH_INTERVAL` there), and how
/// many it sends.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
const WATCH_REPLIES: u64 = 3;
/// A bound on every call and every wait, so a regression fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Builds and starts the example with `envs`.
async fn start(envs: &[(&str, &str)]) -> Demo {
    Demo::start_example("grpc", envs).await
}

/// An h2c channel to the example.
async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(PATIENCE)
        .timeout(PATIENCE)
        .connect()
        .await
        .expect("the example accepts an h2c connection")
}

/// `f`, bounded by [`PATIENCE`].
async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?}"))
}

/// A request for `item`, with `x-request-id` metadata when `request_id` is given.
fn request(item: &str, request_id: Option<&str>) -> tonic::Request<QuoteRequest> {
    let mut req = tonic::Request::new(QuoteRequest { item: item.into() });
    if let Some(id) = request_id {
        req.metadata_mut()
            .insert("x-request-id", id.parse().unwrap());
    }
    req
}

/// `Quote(item)` through any client (the plain channel, or one wrapped in layers).
async fn quote<T>(
    client: &mut PricingClient<T>,
    item: &str,
    request_id: Option<&str>,
) -> Result<tonic::Response<QuoteReply>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    within(
        &format!("Quote({item})"),
        client.quote(request(item, request_id)),
    )
    .await
}

/// `Watch(item)` read to its end: the prices, then the final status.
async fn watch_all<T>(
    client: &mut PricingClient<T>,
    item: &str,
    request_id: Option<&str>,
) -> (Vec<u64>, Result<(), tonic::Status>)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    within(&format!("Watch({item})"), async {
        let mut stream = match client.watch(request(item, request_id)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), Err(status)),
        };
        let mut prices = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(reply)) => prices.push(reply.cents),
                Ok(None) => return (prices, Ok(())),
                Err(status) => return (prices, Err(status)),
            }
        }
    })
    .await
}

/// A call to `path`, a method the example does not implement (its service, or another).
async fn call_unimplemented(channel: Channel, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    within(path, async {
        grpc.ready().await.unwrap();
        grpc.unary(
            request("lamp", None),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<QuoteRequest, QuoteReply>::default(),
        )
        .await
        .expect_err("an unimplemented method fails")
    })
    .await
}

/// `GET /metrics` over HTTP/1.1, on the port that serves gRPC.
async fn metrics(addr: SocketAddr) -> String {
    let r = common::get(addr, "/metrics", &[]).await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// `GET /debug/traces`: the kept traces, most recent first.
async fn kept_traces(addr: SocketAddr) -> Vec<Value> {
    let r = common::get(addr, "/debug/traces", &[]).await;
    assert_eq!(r.status, 200, "the ring is served without an OTLP endpoint");
    let json: Value = serde_json::from_slice(&r.body).unwrap();
    json["traces"].as_array().unwrap().clone()
}

/// The RPC and HTTP request samples of an exposition (no buckets), for failure messages.
fn calls_only(exposition: &str) -> String {
    exposition
        .lines()
        .filter(|l| l.starts_with("rpc_") || l.starts_with("http_server"))
        .filter(|l| !l.contains("_bucket{"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The labels of a sample (`{a="x",b="y"}`), unescaped.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim_start_matches('{').trim_end_matches('}');
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &rest[end..];
    }
    out
}

/// One series of a duration histogram: its labels, observation count and sum.
#[derive(Debug)]
struct Series {
    labels: BTreeMap<String, String>,
    count: f64,
    sum: f64,
}

impl Series {
    fn label(&self, name: &str) -> &str {
        self.labels
            .get(name)
            .unwrap_or_else(|| panic!("label {name} missing on {self:?}"))
    }
}

/// Every series of the histogram `metric` in an exposition.
fn series(exposition: &str, metric: &str) -> Vec<Series> {
    let sums: HashMap<String, f64> = common::samples(exposition, &format!("{metric}_sum"))
        .into_iter()
        .collect();
    common::samples(exposition, &format!("{metric}_count"))
        .into_iter()
        .map(|(text, count)| Series {
            labels: labels(&text),
            count,
            sum: sums[&text],
        })
        .collect()
}

/// The series of `rpc_server_call_duration_seconds` for `method`.
fn server_calls(exposition: &str, method: &str) -> Vec<Series> {
    series(exposition, names::RPC_SERVER_DURATION)
        .into_iter()
        .filter(|s| s.labels.get(names::RPC_METHOD_LABEL).map(String::as_str) == Some(method))
        .collect()
}

/// Observations by status name, with the series' `error_type`: `{status: (count, error_type)}`.
fn by_status(series: &[Series]) -> BTreeMap<String, (f64, String)> {
    let mut out = BTreeMap::new();
    for s in series {
        let previous = out.insert(
            s.label(names::RPC_STATUS_LABEL).to_string(),
            (s.count, s.label(names::ERROR_TYPE_LABEL).to_string()),
        );
        assert!(previous.is_none(), "one series per status: {series:?}");
    }
    out
}

/// The expected [`by_status`]: `(status, count, error_type)`.
fn expected(rows: &[(&str, f64, &str)]) -> BTreeMap<String, (f64, String)> {
    rows.iter()
        .map(|(status, count, error_type)| (status.to_string(), (*count, error_type.to_string())))
        .collect()
}

/// The total count of `rpc_server_call_duration_seconds` over every series.
fn total_server_calls(exposition: &str) -> f64 {
    series(exposition, names::RPC_SERVER_DURATION)
        .iter()
        .map(|s| s.count)
        .sum()
}

/// Requests in flight other than the `GET /metrics` reading them (gRPC calls are `POST`s).
fn calls_in_flight(exposition: &str) -> f64 {
    common::samples(exposition, names::ACTIVE_REQUESTS)
        .iter()
        .filter(|(l, _)| !l.contains(&format!("{}=\"GET\"", names::METHOD_LABEL)))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes `/metrics` until `done` holds (a call is recorded when its response stream ends,
/// which the client may see a moment before the server's layer does), bounded by
/// [`PATIENCE`]; returns the last exposition either way, for the caller's exact assertions.
async fn metrics_when(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exposition = metrics(addr).await;
        if done(&exposition) || Instant::now() > deadline {
            return exposition;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the example (SIGTERM: a clean exit flushes every log line) and returns its log lines.
fn stop(server: &mut Demo) -> Vec<Value> {
    let status = server.stop();
    assert!(
        status.success(),
        "the example exits cleanly on SIGTERM: {status}"
    );
    server
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The access lines (`"message":"request completed"`) of gRPC calls: every one but those of
/// the test's own `GET /metrics` and `GET /debug/traces`.
fn call_lines(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| l["message"] == "request completed")
        .filter(|l| !matches!(l["url.path"].as_str(), Some("/metrics" | "/debug/traces")))
        .collect()
}

/// The one access line whose correlation ID is `id`.
fn line_of<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request completed" && l["correlation_id"] == id)
        .collect();
    assert_eq!(found.len(), 1, "one access line for {id}: {found:#?}");
    found[0]
}

/// Asserts an access line's level and RPC attributes.
fn assert_call_line(line: &Value, method: &str, status: &str, level: &str) {
    assert_eq!(line["rpc.system.name"], "grpc", "{line}");
    assert_eq!(line["rpc.method"], method, "{line}");
    assert_eq!(line["rpc.response.status_code"], status, "{line}");
    assert_eq!(
        line["level"], level,
        "{status} is logged at {level}: {line}"
    );
    common::assert_schema(line);
}

/// The SERVER span of a kept trace (its local root).
fn server_span(trace: &Value) -> &Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Server")
        .unwrap_or_else(|| panic!("a SERVER span in {trace:#}"))
}

fn trace_of<'a>(kept: &'a [Value], trace_id: &str) -> Option<&'a Value> {
    kept.iter().find(|t| t["trace_id"] == trace_id)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_counted_by_status_name_and_only_server_faults_carry_error_type() {
    let mut server = start(&[]).await;
    let ch = channel(server.addr).await;
    let mut client = PricingClient::new(ch.clone());

    let mut quoted = Vec::new();
    for item in ["lamp", "desk", "chair"] {
        quoted.push(
            quote(&mut client, item, None)
                .await
                .unwrap()
                .into_inner()
                .cents,
        );
    }
    assert_eq!(
        quote(&mut client, "lamp", None)
            .await
            .unwrap()
            .into_inner()
            .cents,
        quoted[0],
        "prices are deterministic"
    );
    for _ in 0..2 {
        let status = quote(&mut client, "missing", None).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    for _ in 0..3 {
        let status = quote(&mut client, "fail", None).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
    }
    let status = quote(&mut client, "busy", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    // A method the service lacks, and a service the server lacks (the example's fallback).
    for path in ["/mercenary.v1.Pricing/Nope", "/mercenary.v1.Nope/Quote"] {
        assert_eq!(
            call_unimplemented(ch.clone(), path).await.code(),
            Code::Unimplemented
        );
    }

    let exposition = metrics_when(server.addr, |e| total_server_calls(e) >= 12.0).await;
    assert_eq!(
        by_status(&server_calls(&exposition, QUOTE)),
        expected(&[
            ("OK", 4.0, ""),
            ("NOT_FOUND", 2.0, ""),
            ("INTERNAL", 3.0, "INTERNAL"),
            ("UNAVAILABLE", 1.0, "UNAVAILABLE"),
        ]),
        "{}",
        calls_only(&exposition)
    );
    // Unknown methods share one series: a client cannot grow the label set at will.
    assert_eq!(
        by_status(&server_calls(&exposition, OTHER_METHOD)),
        expected(&[("UNIMPLEMENTED", 2.0, "UNIMPLEMENTED")]),
        "{}",
        calls_only(&exposition)
    );
    let all = series(&exposition, names::RPC_SERVER_DURATION);
    assert_eq!(all.len(), 5, "no other series: {all:#?}");
    for s in &all {
        assert_eq!(s.label(names::RPC_SYSTEM_LABEL), "grpc");
    }
    // gRPC calls are not HTTP requests too: the only ones are this test's scrapes.
    for s in series(&exposition, names::REQUEST_DURATION) {
        assert_eq!(s.label(names::ROUTE_LABEL), "/metrics", "{s:?}");
    }
    common::promtool_check(&exposition);

    let lines = stop(&mut server);
    let calls = call_lines(&lines);
    assert_eq!(calls.len(), 12, "one access line per call: {calls:#?}");
    let mut levels: BTreeMap<(String, String), usize> = BTreeMap::new();
    for line in &calls {
        let status = line["rpc.response.status_code"].as_str().unwrap_or("");
        let method = line["rpc.method"].as_str().unwrap_or("");
        let level = match status {
            "OK" => "INFO",
            "NOT_FOUND" => "WARNING",
            _ => "ERROR",
        };
        assert_call_line(line, method, status, level);
        *levels
            .entry((method.to_string(), status.to_string()))
            .or_default() += 1;
    }
    let count = |method: &str, status: &str| {
        levels
            .get(&(method.to_string(), status.to_string()))
            .copied()
    };
    assert_eq!(count(QUOTE, "OK"), Some(4));
    assert_eq!(count(QUOTE, "NOT_FOUND"), Some(2));
    assert_eq!(count(QUOTE, "INTERNAL"), Some(3));
    assert_eq!(count(QUOTE, "UNAVAILABLE"), Some(1));
    assert_eq!(count(OTHER_METHOD, "UNIMPLEMENTED"), Some(2));
    // The handler's own ERROR line, once per failed quote, in the call's context.
    let handler_errors: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "pricing backend failed")
        .collect();
    assert_eq!(handler_errors.len(), 3);
    for l in handler_errors {
        assert_eq!(l["level"], "ERROR");
        assert!(l["correlation_id"].is_string(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_faults_keep_their_trace_and_client_faults_are_sampled_like_successes() {
    // No success is kept: whatever is kept, is kept for a reason other than chance.
    let mut server = start(&[("MERCENARY_OBS_SUCCESS_RATIO", "0")]).await;
    let mut client = PricingClient::new(channel(server.addr).await);

    let mut calls: Vec<(String, &str, &str)> = Vec::new(); // (request ID, method, status)
    for i in 0..3 {
        let id = format!("ok-{i}");
        quote(&mut client, "lamp", Some(&id)).await.unwrap();
        calls.push((id, QUOTE, "OK"));
        let id = format!("not-found-{i}");
        quote(&mut client, "missing", Some(&id)).await.unwrap_err();
        calls.push((id, QUOTE, "NOT_FOUND"));
    }
    for i in 0..2 {
        // Logs an ERROR line of its own, as well.
        let id = format!("internal-{i}");
        quote(&mut client, "fail", Some(&id)).await.unwrap_err();
        calls.push((id, QUOTE, "INTERNAL"));
        // Logs nothing: only the status says it failed.
        let id = format!("unavailable-{i}");
        quote(&mut client, "busy", Some(&id)).await.unwrap_err();
        calls.push((id, QUOTE, "UNAVAILABLE"));
    }
    let (prices, end) = watch_all(&mut client, "fail", Some("watch-internal")).await;
    assert_eq!((prices.len(), end.unwrap_err().code()), (1, Code::Internal));
    calls.push(("watch-internal".into(), WATCH, "INTERNAL"));
    let (_, end) = watch_all(&mut client, "lamp", Some("watch-ok")).await;
    end.unwrap();
    calls.push(("watch-ok".into(), WATCH, "OK"));

    let n = calls.len() as f64;
    metrics_when(server.addr, |e| total_server_calls(e) >= n).await;
    let kept = kept_traces(server.addr).await;
    let lines = stop(&mut server);

    for (id, method, status) in &calls {
        let line = line_of(&lines, id);
        let trace_id = line["trace_id"].as_str().unwrap();
        let trace = trace_of(&kept, trace_id);
        match *status {
            "OK" | "NOT_FOUND" => assert!(
                trace.is_none(),
                "{id} ({status}) is sampled like a success, at ratio 0: {trace:#?}"
            ),
            _ => {
                let trace = trace.unwrap_or_else(|| {
                    panic!("{id} ({status}) is a server fault: its trace is kept")
                });
                assert_eq!(trace["reason"], "error", "{trace:#}");
                let span = server_span(trace);
                assert_eq!(span["name"], *method, "{span:#}");
                assert_eq!(span["parent_span_id"], "0000000000000000");
                let attributes = &span["attributes"];
                assert_eq!(attributes["rpc.system.name"], "grpc", "{span:#}");
                assert_eq!(attributes["rpc.method"], *method, "{span:#}");
                assert_eq!(attributes["rpc.response.status_code"], *status, "{span:#}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_only_and_trailers_at_end_are_both_classified() {
    let mut server = start(&[]).await;
    // Records, for each response, whether `grpc-status` came in its headers (trailers-only):
    // proof that both shapes are on the wire, whatever tonic does next.
    let shapes: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = shapes.clone();
    let recording = tower::ServiceBuilder::new()
        .map_response(move |resp: http::Response<tonic::body::Body>| {
            seen.lock()
                .unwrap()
                .push(resp.headers().contains_key("grpc-status"));
            resp
        })
        .service(channel(server.addr).await);
    let mut client = PricingClient::new(recording);
    let shape = || shapes.lock().unwrap().pop().expect("a response");

    let status = quote(&mut client, "missing", Some("only-not-found"))
        .await
        .unwrap_err();
    assert_eq!((status.code(), shape()), (Code::NotFound, true));
    let status = quote(&mut client, "fail", Some("only-internal"))
        .await
        .unwrap_err();
    assert_eq!((status.code(), shape()), (Code::Internal, true));
    let (prices, end) = watch_all(&mut client, "missing", Some("only-watch-not-found")).await;
    assert_eq!(
        (prices.len(), end.unwrap_err().code(), shape()),
        (0, Code::NotFound, true)
    );
    // Headers, a message, then `grpc-status: 0` in the trailers.
    quote(&mut client, "lamp", Some("end-ok")).await.unwrap();
    assert!(
        !shape(),
        "an OK unary call carries its status in the trailers"
    );
    // Headers, a message, then `grpc-status: 13` in the trailers.
    let (prices, end) = watch_all(&mut client, "fail", Some("end-internal")).await;
    assert_eq!(
        (prices.len(), end.unwrap_err().code(), shape()),
        (1, Code::Internal, false)
    );

    let exposition = metrics_when(server.addr, |e| total_server_calls(e) >= 5.0).await;
    assert_eq!(
        by_status(&server_calls(&exposition, QUOTE)),
        expected(&[
            ("OK", 1.0, ""),
            ("NOT_FOUND", 1.0, ""),
            ("INTERNAL", 1.0, "INTERNAL"),
        ]),
        "{}",
        calls_only(&exposition)
    );
    assert_eq!(
        by_status(&server_calls(&exposition, WATCH)),
        expected(&[("NOT_FOUND", 1.0, ""), ("INTERNAL", 1.0, "INTERNAL")]),
        "{}",
        calls_only(&exposition)
    );

    let lines = stop(&mut server);
    assert_call_line(
        line_of(&lines, "only-not-found"),
        QUOTE,
        "NOT_FOUND",
        "WARNING",
    );
    assert_call_line(line_of(&lines, "only-internal"), QUOTE, "INTERNAL", "ERROR");
    assert_call_line(
        line_of(&lines, "only-watch-not-found"),
        WATCH,
        "NOT_FOUND",
        "WARNING",
    );
    assert_call_line(line_of(&lines, "end-ok"), QUOTE, "OK", "INFO");
    assert_call_line(line_of(&lines, "end-internal"), WATCH, "INTERNAL", "ERROR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_classified_when_it_ends() {
    let mut server = start(&[]).await;
    let mut client = PricingClient::new(channel(server.addr).await);

    let started = Instant::now();
    let (prices, end) = watch_all(&mut client, "lamp", Some("watch-ok")).await;
    let took = started.elapsed();
    end.expect("the stream ends OK");
    assert_eq!(prices.len() as u64, WATCH_REPLIES);
    assert!(prices.windows(2).all(|w| w[1] == w[0] + 1), "{prices:?}");
    let streaming = WATCH_INTERVAL * (WATCH_REPLIES as u32 - 1);
    assert!(took >= streaming, "the example streams for {streaming:?}");

    let exposition = metrics_when(server.addr, |e| total_server_calls(e) >= 1.0).await;
    let watch = server_calls(&exposition, WATCH);
    assert_eq!(
        by_status(&watch),
        expected(&[("OK", 1.0, "")]),
        "one observation, at the end of the stream: {}",
        calls_only(&exposition)
    );
    // Measured to the end of the stream, not to the response head (sent before the first
    // price).
    assert!(
        watch[0].sum >= streaming.as_secs_f64(),
        "the call's duration {} s covers the streaming time {streaming:?}",
        watch[0].sum
    );

    let lines = stop(&mut server);
    let line = line_of(&lines, "watch-ok");
    assert_call_line(line, WATCH, "OK", "INFO");
    let duration_ms = line["duration_ms"].as_f64().unwrap();
    assert!(
        duration_ms >= streaming.as_secs_f64() * 1000.0,
        "the access line is written at the end of the stream: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_mid_way_is_recorded_once_as_cancelled() {
    let mut server = start(&[]).await;
    let mut client = PricingClient::new(channel(server.addr).await);

    let mut stream = within(
        "Watch(slow)",
        client.watch(request("slow", Some("dropped"))),
    )
    .await
    .expect("the slow watch starts")
    .into_inner();
    for _ in 0..2 {
        let reply = within("a price", stream.message()).await.unwrap();
        assert!(reply.is_some(), "the slow watch streams on");
    }
    // Mid-stream: in flight, not recorded yet.
    let exposition = metrics(server.addr).await;
    assert!(
        server_calls(&exposition, WATCH).is_empty(),
        "a stream still running is not recorded: {}",
        calls_only(&exposition)
    );
    assert_eq!(
        calls_in_flight(&exposition),
        1.0,
        "{}",
        calls_only(&exposition)
    );

    drop(stream);
    let recorded = |e: &str| server_calls(e, WATCH).iter().map(|s| s.count).sum::<f64>();
    let exposition = metrics_when(server.addr, |e| recorded(e) >= 1.0).await;
    let watch = server_calls(&exposition, WATCH);
    assert_eq!(watch.len(), 1, "{}", calls_only(&exposition));
    assert_eq!(watch[0].count, 1.0, "{}", calls_only(&exposition));
    assert_eq!(watch[0].label(names::ERROR_TYPE_LABEL), "cancelled");
    assert_eq!(watch[0].label(names::RPC_STATUS_LABEL), "CANCELLED");

    // Long enough for the slow stream to have produced more prices, had it been kept alive:
    // recorded once, and nothing left in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exposition = metrics(server.addr).await;
    assert_eq!(
        recorded(&exposition),
        1.0,
        "recorded once: {}",
        calls_only(&exposition)
    );
    assert_eq!(
        calls_in_flight(&exposition),
        0.0,
        "{}",
        calls_only(&exposition)
    );

    let lines = stop(&mut server);
    assert_call_line(line_of(&lines, "dropped"), WATCH, "CANCELLED", "WARNING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_metadata_is_the_correlation_id_and_is_echoed() {
    let mut server = start(&[]).await;
    let mut client = PricingClient::new(channel(server.addr).await);
    let echoed = |m: &tonic::metadata::MetadataMap| {
        m.get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };

    let ok = quote(&mut client, "lamp", Some("grpc-req-42"))
        .await
        .unwrap();
    assert_eq!(echoed(ok.metadata()).as_deref(), Some("grpc-req-42"));
    // A trailers-only error: the status carries the response headers as its metadata.
    let failed = quote(&mut client, "fail", Some("grpc-req-43"))
        .await
        .unwrap_err();
    assert_eq!(echoed(failed.metadata()).as_deref(), Some("grpc-req-43"));
    assert!(
        failed.message().contains("grpc-req-43"),
        "the example quotes the correlation ID in its error message: {failed:?}"
    );
    let watch = within("Watch", client.watch(request("lamp", Some("grpc-req-44"))))
        .await
        .unwrap();
    assert_eq!(echoed(watch.metadata()).as_deref(), Some("grpc-req-44"));
    let mut stream = watch.into_inner();
    while within("a price", stream.message()).await.unwrap().is_some() {}
    // Without one, the layer makes one up and echoes that.
    let generated = quote(&mut client, "desk", None).await.unwrap();
    let generated = echoed(generated.metadata()).expect("a correlation ID of the layer's own");

    let exposition = metrics_when(server.addr, |e| total_server_calls(e) >= 4.0).await;
    assert_eq!(
        total_server_calls(&exposition),
        4.0,
        "{}",
        calls_only(&exposition)
    );
    let lines = stop(&mut server);
    assert_call_line(line_of(&lines, "grpc-req-42"), QUOTE, "OK", "INFO");
    assert_call_line(line_of(&lines, "grpc-req-43"), QUOTE, "INTERNAL", "ERROR");
    assert_call_line(line_of(&lines, "grpc-req-44"), WATCH, "OK", "INFO");
    assert_call_line(line_of(&lines, &generated), QUOTE, "OK", "INFO");
    // The handlers' own lines share the call's correlation ID.
    let handler = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("a {message:?} line"))
    };
    assert_eq!(
        handler("pricing backend failed")["correlation_id"],
        "grpc-req-43"
    );
    assert_eq!(handler("watch started")["correlation_id"], "grpc-req-44");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_layer_records_grpc_calls_and_the_server_continues_the_trace() {
    let mut server = start(&[]).await;
    let port = server.addr.port().to_string();
    let obs = Obs::builder()
        .service_name("grpc-caller")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .success_ratio(1.0)
        .trace_ring_size(1000)
        .build()
        .unwrap();
    // What the client layer sent, as the transport saw it: `x-request-id` → `traceparent`.
    let sent: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let record = sent.clone();
    let svc = tower::ServiceBuilder::new()
        .layer(obs.client_layer())
        .map_request(move |req: http::Request<tonic::body::Body>| {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            record
                .lock()
                .unwrap()
                .insert(header("x-request-id"), header("traceparent"));
            req
        })
        .service(channel(server.addr).await);
    // With its origin: a generated client made with `new` sends a URI of a path only, which
    // the Channel completes inside, where the client layer does not see it (see
    // `a_client_without_an_origin_never_reports_a_wrong_server`).
    let origin: http::Uri = format!("http://{}", server.addr).parse().unwrap();
    let mut client = PricingClient::with_origin(svc, origin);

    let mut calls = Vec::new(); // (request ID, method, status)
    for id in ["c-ok-1", "c-ok-2"] {
        quote(&mut client, "lamp", Some(id)).await.unwrap();
        calls.push((id, QUOTE, "OK"));
    }
    quote(&mut client, "missing", Some("c-not-found"))
        .await
        .unwrap_err();
    calls.push(("c-not-found", QUOTE, "NOT_FOUND"));
    quote(&mut client, "fail", Some("c-internal"))
        .await
        .unwrap_err();
    calls.push(("c-internal", QUOTE, "INTERNAL"));
    let (_, end) = watch_all(&mut client, "lamp", Some("c-watch")).await;
    end.unwrap();
    calls.push(("c-watch", WATCH, "OK"));
    // A failure in the trailers, after a message: classified when they arrive.
    let (prices, end) = watch_all(&mut client, "fail", Some("c-watch-internal")).await;
    assert_eq!((prices.len(), end.unwrap_err().code()), (1, Code::Internal));
    calls.push(("c-watch-internal", WATCH, "INTERNAL"));
    // A stream the caller drops before its trailers.
    let mut slow = within(
        "Watch(slow)",
        client.watch(request("slow", Some("c-watch-dropped"))),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(within("a price", slow.message()).await.unwrap().is_some());
    drop(slow);

    // The caller's metrics.
    let client_total = |e: &str| -> f64 {
        series(e, names::RPC_CLIENT_DURATION)
            .iter()
            .map(|s| s.count)
            .sum()
    };
    let deadline = Instant::now() + PATIENCE;
    while client_total(&obs.render_metrics()) < 7.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exposition = obs.render_metrics();
    let made = series(&exposition, names::RPC_CLIENT_DURATION);
    for s in &made {
        assert_eq!(s.label(names::RPC_SYSTEM_LABEL), "grpc", "{s:?}");
        assert_eq!(s.label(names::SERVER_ADDRESS_LABEL), "127.0.0.1", "{s:?}");
        assert_eq!(s.label(names::SERVER_PORT_LABEL), port, "{s:?}");
    }
    let of = |method: &str| -> Vec<Series> {
        series(&exposition, names::RPC_CLIENT_DURATION)
            .into_iter()
            .filter(|s| s.labels.get(names::RPC_METHOD_LABEL).map(String::as_str) == Some(method))
            .collect()
    };
    assert_eq!(
        by_status(&of(QUOTE)),
        expected(&[
            ("OK", 2.0, ""),
            ("NOT_FOUND", 1.0, ""),
            ("INTERNAL", 1.0, "INTERNAL"),
        ]),
        "{}",
        calls_only(&exposition)
    );
    assert_eq!(
        by_status(&of(WATCH)),
        expected(&[
            ("OK", 1.0, ""),
            ("INTERNAL", 1.0, "INTERNAL"),
            ("CANCELLED", 1.0, "cancelled"),
        ]),
        "{}",
        calls_only(&exposition)
    );
    assert_eq!(made.len(), 6, "no other series: {made:#?}");

    // The caller's CLIENT spans, and the server's side of each call.
    let client_traces: Value =
        serde_json::from_str(&obs.recent_traces_json().expect("a ring")).unwrap();
    let client_traces = client_traces["traces"].as_array().unwrap().clone();
    metrics_when(server.addr, |e| total_server_calls(e) >= 7.0).await;
    let server_kept = kept_traces(server.addr).await;
    let lines = stop(&mut server);
    let sent = sent.lock().unwrap().clone();
    for (id, method, status) in calls {
        let traceparent = &sent[id];
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(
            parts.len(),
            4,
            "{id}: a traceparent was sent: {traceparent:?}"
        );
        let (trace_id, client_span_id) = (parts[1], parts[2]);
        let trace = trace_of(&client_traces, trace_id)
            .unwrap_or_else(|| panic!("{id}: the caller keeps its trace at ratio 1"));
        let span = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["span_id"] == client_span_id)
            .unwrap_or_else(|| panic!("{id}: the CLIENT span is the parent sent: {trace:#}"));
        assert_eq!(span["kind"], "Client", "{span:#}");
        assert_eq!(span["name"], method, "{span:#}");

        let line = line_of(&lines, id);
        assert_eq!(
            line["trace_id"], trace_id,
            "{id}: the server continues the caller's trace: {line}"
        );
        assert_call_line(
            line,
            method,
            status,
            match status {
                "OK" => "INFO",
                "NOT_FOUND" => "WARNING",
                _ => "ERROR",
            },
        );
        if status == "INTERNAL" {
            let kept = trace_of(&server_kept, trace_id).expect("the failed call's trace is kept");
            assert_eq!(
                server_span(kept)["parent_span_id"],
                client_span_id,
                "the SERVER span's parent is the caller's CLIENT span"
            );
        }
    }
    // The dropped stream: cancelled on both sides, in the caller's trace.
    let dropped = line_of(&lines, "c-watch-dropped");
    assert_call_line(dropped, WATCH, "CANCELLED", "WARNING");
    assert_eq!(
        dropped["trace_id"].as_str(),
        sent["c-watch-dropped"].split('-').nth(1),
        "{dropped}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_an_origin_never_reports_a_wrong_server() {
    let mut server = start(&[]).await;
    let obs = Obs::builder()
        .service_name("grpc-caller")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .success_ratio(1.0)
        .build()
        .unwrap();
    // As most code builds a tonic client: `new`, around a Channel wrapped in the client layer.
    // The request's URI is then `/mercenary.v1.Pricing/Quote`, without scheme or authority.
    let svc = tower::ServiceBuilder::new()
        .layer(obs.client_layer())
        .service(channel(server.addr).await);
    let mut client = PricingClient::new(svc);
    quote(&mut client, "lamp", None).await.unwrap();

    let deadline = Instant::now() + PATIENCE;
    let made = loop {
        let made = series(&obs.render_metrics(), names::RPC_CLIENT_DURATION);
        if !made.is_empty() || Instant::now() > deadline {
            break made;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(made.len(), 1, "{made:#?}");
    let (address, port) = (
        made[0].label(names::SERVER_ADDRESS_LABEL),
        made[0].label(names::SERVER_PORT_LABEL),
    );
    let right = (address == "127.0.0.1" && port == server.addr.port().to_string())
        || (address.is_empty() && port.is_empty());
    let kept: Value = serde_json::from_str(&obs.recent_traces_json().unwrap()).unwrap();
    assert!(
        right,
        "server_address={address:?} server_port={port:?}: the call went to {}; the client \
         span: {kept:#}",
        server.addr
    );
    stop(&mut server);
}
