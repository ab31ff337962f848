//! gRPC through the layer, in process: a tower service answering as a gRPC server does
//! (trailers-only errors, messages then trailers, an endless stream), its body read frame by
//! frame as a client's connection would, and what the user checks: the RPC histogram by status
//! code, the access lines, the kept traces, the in-flight gauge.

use crate::common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{Capture, samples};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use mercenary_obs::Obs;
use serde_json::Value;
use tower::{Layer, ServiceExt, service_fn};

/// A response body: some frames, then the end or (`endless`) nothing more, ever.
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    endless: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None if self.endless => Poll::Pending,
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.endless
    }
}

fn trailers(code: u8) -> Frame<Bytes> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.to_string().parse().unwrap());
    Frame::trailers(t)
}

fn message() -> Frame<Bytes> {
    // A length-prefixed message: not compressed, 2 bytes.
    Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]))
}

/// The server: `/mercenary.v1.Pricing/{Method}` where the method says how to answer.
fn server(
    obs: &Obs,
) -> impl tower::Service<
    Request<Empty<Bytes>>,
    Response = Response<mercenary_obs::ResponseBody<Frames>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let inner = service_fn(|req: Request<Empty<Bytes>>| async move {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let (frames, endless, trailers_only): (Vec<Frame<Bytes>>, bool, Option<u8>) = match method {
            "Quote" => (vec![message(), trailers(0)], false, None),
            "Missing" => (vec![], false, Some(5)),
            "Broken" => (vec![], false, Some(13)),
            "Watch" => (
                vec![message(), message(), message(), trailers(0)],
                false,
                None,
            ),
            "WatchFail" => (vec![message(), trailers(13)], false, None),
            "WatchForever" => (vec![message()], true, None),
            _ => (vec![], false, Some(12)),
        };
        let mut resp = Response::new(Frames {
            frames: frames.into(),
            endless,
        });
        resp.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        if let Some(code) = trailers_only {
            resp.headers_mut()
                .insert("grpc-status", code.to_string().parse().unwrap());
        }
        Ok::<_, Infallible>(resp)
    });
    obs.layer().layer(inner)
}

fn call(method: &str) -> Request<Empty<Bytes>> {
    Request::post(format!(
        "http://pricing.internal/mercenary.v1.Pricing/{method}"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("x-request-id", format!("rpc-{method}"))
    .body(Empty::new())
    .unwrap()
}

fn instance() -> (Obs, Capture) {
    let capture = Capture::default();
    let obs = Obs::builder()
        .service_name("rpc-test")
        .log_writer(capture.clone())
        .process_metrics(false)
        .success_ratio(0.0)
        .trace_ring_size(1000)
        .build()
        .unwrap();
    (obs, capture)
}

/// `rpc_server_call_duration_seconds_count` by (method, status code, error type).
fn rpc_counts(obs: &Obs) -> Vec<(String, f64)> {
    let mut counts = samples(
        &obs.render_metrics(),
        "rpc_server_call_duration_seconds_count",
    );
    counts.sort_by(|a, b| a.0.cmp(&b.0));
    counts
}

fn series(error: &str, method: &str, code: &str) -> String {
    format!(
        "{{error_type=\"{error}\",rpc_method=\"{method}\",rpc_response_status_code=\"{code}\",rpc_system_name=\"grpc\"}}"
    )
}

fn access_line(logs: &Capture, correlation_id: &str) -> Value {
    logs.json_lines()
        .into_iter()
        .find(|l| l["message"] == "request completed" && l["correlation_id"] == correlation_id)
        .unwrap_or_else(|| panic!("an access line for {correlation_id}: {}", logs.text()))
}

fn kept(obs: &Obs) -> Vec<Value> {
    let json: Value = serde_json::from_str(&obs.recent_traces_json().unwrap()).unwrap();
    json["traces"].as_array().unwrap().clone()
}

#[tokio::test]
async fn grpc_calls_are_classified_by_their_status_code() {
    let (obs, logs) = instance();
    let svc = server(&obs);
    for (method, n) in [("Quote", 3), ("Missing", 2), ("Broken", 2), ("Nope", 1)] {
        for _ in 0..n {
            let resp = svc.clone().oneshot(call(method)).await.unwrap();
            assert_eq!(
                resp.headers()["x-request-id"],
                format!("rpc-{method}").as_str()
            );
            resp.into_body().collect().await.unwrap();
        }
    }
    let p = "mercenary.v1.Pricing";
    let mut want = vec![
        (series("", &format!("{p}/Quote"), "OK"), 3.0),
        (series("", &format!("{p}/Missing"), "NOT_FOUND"), 2.0),
        (series("INTERNAL", &format!("{p}/Broken"), "INTERNAL"), 2.0),
        // A method the server does not implement: `_OTHER`, so made-up paths add no series.
        (series("UNIMPLEMENTED", "_OTHER", "UNIMPLEMENTED"), 1.0),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rpc_counts(&obs), want);
    assert!(
        samples(
            &obs.render_metrics(),
            "http_server_request_duration_seconds_count"
        )
        .is_empty(),
        "gRPC calls are not also HTTP requests"
    );
    common::promtool_check(&obs.render_metrics());

    assert!(obs.flush());
    let ok = access_line(&logs, "rpc-Quote");
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["rpc.system.name"], "grpc");
    assert_eq!(ok["rpc.method"], format!("{p}/Quote"));
    assert_eq!(ok["rpc.response.status_code"], "OK");
    let missing = access_line(&logs, "rpc-Missing");
    assert_eq!(
        missing["level"], "WARNING",
        "a client fault is not an error"
    );
    assert!(missing.get("error.type").is_none());
    let broken = access_line(&logs, "rpc-Broken");
    assert_eq!(broken["level"], "ERROR");
    assert_eq!(broken["error.type"], "INTERNAL");
    assert_eq!(broken["rpc.response.status_code"], "INTERNAL");

    // Every INTERNAL trace kept, NOT_FOUND and OK sampled like successes (ratio 0 here).
    let traces = kept(&obs);
    let names: Vec<&str> = traces
        .iter()
        .map(|t| t["spans"][0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "mercenary.v1.Pricing/Broken")
            .count(),
        2,
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("/Quote") || n.ends_with("/Missing"))
    );
    let span = &traces[0]["spans"][0];
    assert_eq!(span["attributes"]["rpc.system.name"], "grpc");
    assert!(span["attributes"]["rpc.response.status_code"].is_string());
}

#[tokio::test]
async fn streams_are_classified_at_their_end_and_a_dropped_stream_once() {
    let (obs, logs) = instance();
    let svc = server(&obs);
    let p = "mercenary.v1.Pricing";

    // Messages, then OK in the trailers: recorded when the trailers pass, not at the head.
    let resp = svc.clone().oneshot(call("Watch")).await.unwrap();
    let mut body = resp.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    assert!(
        rpc_counts(&obs).is_empty(),
        "not recorded at the response head"
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    assert_eq!(
        rpc_counts(&obs),
        vec![(series("", &format!("{p}/Watch"), "OK"), 1.0)]
    );
    let sum = samples(
        &obs.render_metrics(),
        "rpc_server_call_duration_seconds_sum",
    );
    assert!(
        sum[0].1 >= 0.06,
        "the duration is the whole stream's: {sum:?}"
    );

    // A message, then INTERNAL in the trailers: an error, kept.
    let resp = svc.clone().oneshot(call("WatchFail")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    assert!(rpc_counts(&obs).contains(&(
        series("INTERNAL", &format!("{p}/WatchFail"), "INTERNAL"),
        1.0
    )));
    assert!(
        kept(&obs)
            .iter()
            .any(|t| t["spans"][0]["name"] == format!("{p}/WatchFail"))
    );

    // The client goes away mid-stream: recorded once, as cancelled; nothing left in flight.
    let resp = svc.clone().oneshot(call("WatchForever")).await.unwrap();
    let mut body = resp.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    let active = |obs: &Obs| {
        samples(&obs.render_metrics(), "http_server_active_requests")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    assert_eq!(active(&obs), 1.0, "in flight while streaming");
    drop(body);
    assert_eq!(active(&obs), 0.0);
    let cancelled: Vec<_> = rpc_counts(&obs)
        .into_iter()
        .filter(|(l, _)| l.contains("WatchForever"))
        .collect();
    assert_eq!(
        cancelled,
        vec![(
            series("cancelled", &format!("{p}/WatchForever"), "CANCELLED"),
            1.0
        )]
    );
    assert!(obs.flush());
    assert_eq!(access_line(&logs, "rpc-WatchForever")["level"], "WARNING");
}

/// The client layer on a gRPC transport (here the server above, in process): calls recorded in
/// `rpc_client_call_duration_seconds` by status code (at the trailers when the status comes
/// there), CLIENT spans named by the method, the trace continued by the server.
#[tokio::test]
async fn the_client_layer_classifies_grpc_calls() {
    let (server_obs, server_logs) = instance();
    let (client_obs, _) = instance();
    let client = client_obs.client_layer().layer(server(&server_obs));
    let p = "mercenary.v1.Pricing";
    for method in ["Quote", "Quote", "Missing", "Broken", "WatchFail"] {
        let resp = client.clone().oneshot(call(method)).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    // A stream the caller drops half-way: recorded once, as cancelled.
    let resp = client.clone().oneshot(call("WatchForever")).await.unwrap();
    let mut body = resp.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    drop(body);

    let mut counts = samples(
        &client_obs.render_metrics(),
        "rpc_client_call_duration_seconds_count",
    );
    counts.sort_by(|a, b| a.0.cmp(&b.0));
    let series = |error: &str, method: &str, code: &str| {
        format!(
            "{{error_type=\"{error}\",rpc_method=\"{p}/{method}\",rpc_response_status_code=\"{code}\",rpc_system_name=\"grpc\",server_address=\"pricing.internal\",server_port=\"80\"}}"
        )
    };
    let mut want = vec![
        (series("", "Quote", "OK"), 2.0),
        (series("", "Missing", "NOT_FOUND"), 1.0),
        (series("INTERNAL", "Broken", "INTERNAL"), 1.0),
        // Messages, then INTERNAL in the trailers: classified when they pass.
        (series("INTERNAL", "WatchFail", "INTERNAL"), 1.0),
        (series("cancelled", "WatchForever", "CANCELLED"), 1.0),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(counts, want);
    assert!(
        samples(
            &client_obs.render_metrics(),
            "http_client_request_duration_seconds_count"
        )
        .is_empty()
    );

    // The failed call's CLIENT span is kept, named by the method; the server continued its
    // trace (its access line carries the client's trace ID).
    let traces = kept(&client_obs);
    let broken = traces
        .iter()
        .find(|t| t["spans"][0]["name"] == format!("{p}/Broken"))
        .expect("the INTERNAL call's trace is kept");
    let span = &broken["spans"][0];
    assert_eq!(span["kind"], "Client");
    assert_eq!(span["status"], "error");
    assert_eq!(span["attributes"]["rpc.method"], format!("{p}/Broken"));
    assert_eq!(span["attributes"]["rpc.response.status_code"], "INTERNAL");
    assert!(server_obs.flush());
    let line = access_line(&server_logs, "rpc-Broken");
    assert_eq!(line["trace_id"], broken["trace_id"]);
}

/// One Sentry event per server fault (at the trailers too), tagged with the gRPC status;
/// none for client faults.
#[cfg(feature = "sentry")]
#[tokio::test]
async fn server_faults_reach_sentry_once_and_client_faults_not() {
    let transport = sentry::test::TestTransport::new();
    let obs = Obs::builder()
        .service_name("rpc-sentry")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .sentry_dsn("https://public@sentry.invalid/42")
        .sentry_transport(std::sync::Arc::new(transport.clone()))
        .build()
        .unwrap();
    let svc = server(&obs);
    for method in ["Quote", "Missing", "Broken", "WatchFail"] {
        let resp = svc.clone().oneshot(call(method)).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    assert!(obs.flush());
    let events: Vec<Value> = transport
        .fetch_and_clear_events()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["tags"]["rpc.response.status_code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    got.sort();
    let p = "mercenary.v1.Pricing";
    assert_eq!(
        got,
        vec![
            (
                "INTERNAL".to_string(),
                format!("gRPC {p}/Broken answered INTERNAL")
            ),
            (
                "INTERNAL".to_string(),
                format!("gRPC {p}/WatchFail answered INTERNAL")
            ),
        ],
        "{events:#?}"
    );
}
