//! OTLP/gRPC retries and partial success against a tonic `TraceService` receiver (the
//! generated server of `opentelemetry-proto`): `UNAVAILABLE` is retried, `RESOURCE_EXHAUSTED`
//! only with a `RetryInfo` (whose delay is honoured), anything else is tried once, and the
//! spans a partial success rejects are counted.
#![cfg(feature = "grpc")]

use crate::common;
use crate::otlp_retry::{counter, export_with};

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mercenary_obs::OtlpProtocol;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// How the receiver answers attempt `n` (from 0): `None` accepts the batch.
type Answer = fn(usize) -> Option<Status>;

#[derive(Default)]
struct Seen {
    attempts: AtomicUsize,
    accepted: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

struct Receiver {
    seen: Arc<Seen>,
    answer: Answer,
    /// Spans each accepted batch reports rejected (OTLP partial success).
    rejected: i64,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        let n = self.seen.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(status) = (self.answer)(n) {
            return Err(status);
        }
        let mut accepted = self.seen.accepted.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    accepted.push((s.trace_id, s.span_id));
                }
            }
        }
        let partial_success = (self.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: self.rejected,
            error_message: "span too old".into(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

async fn receiver(answer: Answer, rejected: i64) -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let service = TraceServiceServer::new(Receiver {
        seen: seen.clone(),
        answer,
        rejected,
    });
    let app = tonic::service::Routes::new(service).into_axum_router();
    (format!("http://{}", common::serve(app).await), seen)
}

fn requests(exposition: &str, outcome: &str) -> f64 {
    let labels = format!("{{outcome=\"{outcome}\"}}");
    counter(exposition, "mercenary_obs_export_requests_total", &labels)
}

fn dropped(exposition: &str, reason: &str) -> f64 {
    let labels = format!("{{reason=\"{reason}\"}}");
    counter(exposition, "mercenary_obs_spans_dropped_total", &labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_twice_then_accepted_delivers_the_batch_once() {
    let (endpoint, seen) =
        receiver(|n| (n < 2).then(|| Status::unavailable("restarting")), 0).await;
    let (_obs, exposition, _) = export_with(OtlpProtocol::Grpc, &endpoint, 20).await;
    assert_eq!(seen.attempts.load(Ordering::SeqCst), 3);
    let accepted = seen.accepted.lock().unwrap().clone();
    let traces: HashSet<&Vec<u8>> = accepted.iter().map(|(t, _)| t).collect();
    assert_eq!(traces.len(), 20, "every trace arrives");
    let spans: HashSet<&(Vec<u8>, Vec<u8>)> = accepted.iter().collect();
    assert_eq!(spans.len(), accepted.len(), "no span arrives twice");
    let exported = counter(&exposition, "mercenary_obs_spans_exported_total", "");
    assert_eq!(exported, accepted.len() as f64);
    assert_eq!(dropped(&exposition, "export_failed"), 0.0);
    assert_eq!(requests(&exposition, "success"), 1.0);
    assert_eq!(requests(&exposition, "failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_with_retry_info_waits_as_told() {
    let (endpoint, seen) = receiver(
        |n| {
            (n == 0).then(|| {
                Status::with_error_details(
                    Code::ResourceExhausted,
                    "over quota",
                    ErrorDetails::with_retry_info(Some(Duration::from_millis(1200))),
                )
            })
        },
        0,
    )
    .await;
    let (_obs, exposition, took) = export_with(OtlpProtocol::Grpc, &endpoint, 5).await;
    assert_eq!(seen.attempts.load(Ordering::SeqCst), 2);
    assert!(
        took >= Duration::from_millis(1150),
        "the RetryInfo delay is honoured: flush took {took:?}"
    );
    assert_eq!(seen.accepted.lock().unwrap().len() as f64, {
        counter(&exposition, "mercenary_obs_spans_exported_total", "")
    });
    assert_eq!(requests(&exposition, "success"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_exhausted_without_retry_info_and_invalid_argument_are_tried_once() {
    for answer in [
        (|_| Some(Status::resource_exhausted("over quota"))) as Answer,
        |_| Some(Status::invalid_argument("bad span")),
    ] {
        let (endpoint, seen) = receiver(answer, 0).await;
        let (_obs, exposition, _) = export_with(OtlpProtocol::Grpc, &endpoint, 5).await;
        assert_eq!(seen.attempts.load(Ordering::SeqCst), 1, "not retried");
        assert!(dropped(&exposition, "export_failed") >= 5.0);
        assert_eq!(requests(&exposition, "failed"), 1.0);
        assert_eq!(requests(&exposition, "success"), 0.0);
        common::promtool_check(&exposition);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_partial_success_counts_the_rejected_spans() {
    let (endpoint, seen) = receiver(|_| None, 2).await;
    let (_obs, exposition, _) = export_with(OtlpProtocol::Grpc, &endpoint, 10).await;
    let batches = seen.attempts.load(Ordering::SeqCst) as f64;
    assert!(batches >= 1.0);
    let accepted = seen.accepted.lock().unwrap().len() as f64;
    let rejected = dropped(&exposition, "rejected");
    assert_eq!(rejected, 2.0 * batches, "each answer rejected 2 spans");
    let exported = counter(&exposition, "mercenary_obs_spans_exported_total", "");
    assert_eq!(exported, accepted - rejected);
}
