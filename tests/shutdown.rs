//! Shutdown decides and exports buffered traces, bounded by the timeout, on both tokio runtime
//! flavours, whatever the collector does. `init()` is once per process, so the guard is tested
//! on the current-thread runtime and a built instance (same shutdown path) on the multi-thread
//! one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use mercenary_obs::Obs;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// An OTLP/HTTP receiver counting spans.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<usize>>) {
    let count = Arc::new(Mutex::new(0usize));
    let c = count.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let c = c.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).unwrap();
                let n: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                *c.lock().unwrap() += n;
                ""
            }
        }),
    );
    (common::serve(app).await, count)
}

/// Opens 20 job roots that never end, each with an ended child: 20 buffered traces.
fn buffer_twenty() -> Vec<tracing::Span> {
    (0..20)
        .map(|i| {
            let root = tracing::info_span!("job", job = i);
            root.in_scope(|| drop(tracing::info_span!("step")));
            root
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn guard_exports_buffered_traces_on_a_current_thread_runtime() {
    let (addr, count) = receiver().await;
    let guard = Obs::builder()
        .log_writer(std::io::sink())
        .otlp_endpoint(format!("http://{addr}"))
        .success_ratio(1.0)
        .export_schedule_delay(Duration::from_secs(60))
        .shutdown_timeout(Duration::from_secs(5))
        .init()
        .unwrap();
    let roots = buffer_twenty();
    // The receiver runs on this very runtime: shut down from a blocking thread so it can answer.
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        *count.lock().unwrap(),
        20,
        "the buffered children were decided and exported"
    );
    drop(roots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn shutdown_is_bounded_with_a_hanging_collector_on_a_multi_thread_runtime() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().take(100).flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(format!("http://{addr}"))
        .success_ratio(1.0)
        .otlp_timeout(Duration::from_secs(30))
        .shutdown_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let roots = tracing::dispatcher::with_default(obs.dispatch().unwrap(), buffer_twenty);
    let started = Instant::now();
    drop(obs);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    drop(roots);
    drop(held);
}
