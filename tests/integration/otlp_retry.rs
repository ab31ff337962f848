//! OTLP/HTTP retries against a receiver that throttles or refuses: `opentelemetry-otlp`'s
//! retry policy (on by default since 0.33, around our own `HttpClient`) retries 429/502/503/504
//! with backoff, honouring `Retry-After`, within the export timeout; anything else is tried once.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{client, samples};
use mercenary_obs::{Obs, OtlpProtocol};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// What the receiver saw: every attempt, and the (trace id, span id) of each span it accepted.
#[derive(Default)]
struct Seen {
    attempts: AtomicUsize,
    accepted: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// How the receiver answers attempt `n`.
type Answer = fn(usize) -> Option<(StatusCode, Option<&'static str>)>;

/// A `POST /v1/traces` receiver answering attempt `n` (from 0) with `answer(n)`: `None` accepts
/// the batch, `Some((status, retry_after))` refuses it.
async fn receiver(answer: Answer) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let sink = seen.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let n = sink.attempts.fetch_add(1, Ordering::SeqCst);
                if let Some((status, retry_after)) = answer(n) {
                    let mut headers = HeaderMap::new();
                    if let Some(after) = retry_after {
                        headers.insert("retry-after", after.parse().unwrap());
                    }
                    return (status, headers, Vec::new()).into_response();
                }
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let mut accepted = sink.accepted.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            accepted.push((s.trace_id, s.span_id));
                        }
                    }
                }
                let headers = [("content-type", "application/x-protobuf")];
                (StatusCode::OK, headers, Vec::new()).into_response()
            }
        }),
    );
    (format!("http://{}", common::serve(app).await), seen)
}

/// Sends `n` requests through an instance exporting to `endpoint` (only on flush), flushes,
/// and returns the instance's exposition and how long the flush took.
async fn export_through(endpoint: &str, n: usize) -> (Obs, String, Duration) {
    export_with(OtlpProtocol::HttpProtobuf, endpoint, n).await
}

/// [`export_through`] with the protocol chosen.
pub(crate) async fn export_with(
    protocol: OtlpProtocol,
    endpoint: &str,
    n: usize,
) -> (Obs, String, Duration) {
    let obs = Obs::builder()
        .otlp_protocol(protocol)
        .service_name("otlp-retry")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(endpoint)
        .success_ratio(1.0)
        .otlp_timeout(Duration::from_secs(8))
        .shutdown_timeout(Duration::from_secs(15))
        .export_schedule_delay(Duration::from_secs(600))
        .build()
        .unwrap();
    let addr = common::serve(common::traced_routes().layer(obs.layer())).await;
    let c = client();
    for _ in 0..n {
        let (status, _) = common::send(&c, "GET", &format!("http://{addr}/ok"), "").await;
        assert_eq!(status, 200);
    }
    let started = Instant::now();
    let flushed = obs.flush();
    let took = started.elapsed();
    assert!(
        flushed,
        "flush returns once the batch is accepted or failed"
    );
    let exposition = obs.render_metrics();
    (obs, exposition, took)
}

/// A receiver that accepts every batch but answers with an OTLP partial success rejecting
/// `rejected` spans of each.
async fn partial_receiver(rejected: i64) -> (String, Arc<Seen>) {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    let seen = Arc::new(Seen::default());
    let sink = seen.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.attempts.fetch_add(1, Ordering::SeqCst);
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let mut accepted = sink.accepted.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            accepted.push((s.trace_id, s.span_id));
                        }
                    }
                }
                let answer = ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans: rejected,
                        error_message: "span too old".into(),
                    }),
                };
                let headers = [("content-type", "application/x-protobuf")];
                (StatusCode::OK, headers, answer.encode_to_vec()).into_response()
            }
        }),
    );
    (format!("http://{}", common::serve(app).await), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_success_counts_the_rejected_spans() {
    let (endpoint, seen) = partial_receiver(3).await;
    let (_obs, exposition, _) = export_through(&endpoint, 10).await;
    let accepted = seen.accepted.lock().unwrap().len() as f64;
    let batches = seen.attempts.load(Ordering::SeqCst) as f64;
    assert!(batches >= 1.0);
    let rejected = counter(
        &exposition,
        "mercenary_obs_spans_dropped_total",
        "{reason=\"rejected\"}",
    );
    assert_eq!(rejected, 3.0 * batches, "each answer rejected 3 spans");
    let exported = counter(&exposition, "mercenary_obs_spans_exported_total", "");
    assert_eq!(
        exported,
        accepted - rejected,
        "rejected spans are not counted as exported"
    );
}

pub(crate) fn counter(exposition: &str, name: &str, labels: &str) -> f64 {
    let found: HashMap<String, f64> = samples(exposition, name).into_iter().collect();
    found.get(labels).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_twice_then_accepted_delivers_the_batch_once() {
    let (endpoint, seen) =
        receiver(|n| (n < 2).then_some((StatusCode::SERVICE_UNAVAILABLE, Some("1")))).await;
    let (_obs, exposition, took) = export_through(&endpoint, 20).await;
    let attempts = seen.attempts.load(Ordering::SeqCst);
    let accepted = seen.accepted.lock().unwrap().clone();
    assert_eq!(attempts, 3, "two refusals, then one accepted attempt");
    assert!(
        took >= Duration::from_millis(1900),
        "Retry-After: 1 is honoured twice: flush took {took:?}"
    );
    let traces: HashSet<&Vec<u8>> = accepted.iter().map(|(t, _)| t).collect();
    assert_eq!(traces.len(), 20, "every trace arrives");
    let spans: HashSet<&(Vec<u8>, Vec<u8>)> = accepted.iter().collect();
    assert_eq!(spans.len(), accepted.len(), "no span arrives twice");
    let exported = counter(&exposition, "mercenary_obs_spans_exported_total", "");
    assert_eq!(exported, accepted.len() as f64, "exported counted once");
    let failed = counter(
        &exposition,
        "mercenary_obs_spans_dropped_total",
        "{reason=\"export_failed\"}",
    );
    assert_eq!(failed, 0.0);
    let requests = |outcome: &str| {
        let labels = format!("{{outcome=\"{outcome}\"}}");
        counter(&exposition, "mercenary_obs_export_requests_total", &labels)
    };
    assert_eq!(
        requests("success"),
        1.0,
        "one export call, retries inside it"
    );
    assert_eq!(requests("failed"), 0.0);
    assert_eq!(requests("timed_out"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_tried_once_and_counted_failed() {
    let (endpoint, seen) = receiver(|_| Some((StatusCode::BAD_REQUEST, None))).await;
    let (_obs, exposition, _) = export_through(&endpoint, 5).await;
    assert_eq!(
        seen.attempts.load(Ordering::SeqCst),
        1,
        "400 is not retried"
    );
    let failed = counter(
        &exposition,
        "mercenary_obs_spans_dropped_total",
        "{reason=\"export_failed\"}",
    );
    assert!(
        failed >= 5.0,
        "the batch's spans are counted lost: {failed}"
    );
    let exported = counter(&exposition, "mercenary_obs_spans_exported_total", "");
    assert_eq!(exported, 0.0);
    let requests = |outcome: &str| {
        let labels = format!("{{outcome=\"{outcome}\"}}");
        counter(&exposition, "mercenary_obs_export_requests_total", &labels)
    };
    assert_eq!(requests("failed"), 1.0);
    assert_eq!(requests("success"), 0.0);
    assert_eq!(requests("timed_out"), 0.0);
    common::promtool_check(&exposition);
}
