//! Fault modes end to end: a collector that is down when the service starts and comes up later.
//! Every span is accounted for: exported, or counted as lost with its reason; none silently.

use crate::common;
use crate::otlp::Got;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use common::samples;
use mercenary_obs::Obs;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

/// An OTLP/HTTP receiver on `addr` (a port chosen earlier), counting the spans it accepts.
async fn receiver_on(addr: SocketAddr) -> Arc<Mutex<Vec<Got>>> {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP body");
                let mut out = sink.lock().unwrap();
                for s in req
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    out.push(Got {
                        trace_id: s.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                        name: s.name,
                        ..Got::default()
                    });
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

fn counters(obs: &Obs) -> HashMap<String, f64> {
    let text = obs.render_metrics();
    let mut out: HashMap<String, f64> = samples(&text, "mercenary_obs_spans_dropped_total")
        .into_iter()
        .collect();
    out.insert(
        "exported".into(),
        samples(&text, "mercenary_obs_spans_exported_total")[0].1,
    );
    out
}

/// Sends `n` requests to `/ok` (three spans each); returns their trace IDs.
async fn requests(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = common::get(addr, "/ok", &["trace: true"]).await;
        assert_eq!(r.status, 200);
        let tr = r.header("traceresponse").expect("traceresponse");
        ids.push(tr.split('-').nth(1).unwrap().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_at_start_then_up_loses_nothing_silently() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let obs = Obs::builder()
        .service_name("faults")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(format!("http://{addr}"))
        .success_ratio(1.0)
        .otlp_timeout(Duration::from_millis(500))
        .export_schedule_delay(Duration::from_millis(50))
        .export_queue_size(100_000)
        .build()
        .unwrap();
    let app = common::serve(common::traced_routes().layer(obs.layer())).await;

    // The collector is down: every export fails, counted.
    let during = requests(app, 100).await;
    assert!(
        obs.flush(),
        "a refusing collector is handled, not waited for"
    );
    let c = counters(&obs);
    assert_eq!(c["exported"], 0.0);
    assert_eq!(c["{reason=\"export_failed\"}"], 300.0, "{c:?}");

    // It comes up: what is kept from now on arrives, every span once.
    let got = receiver_on(addr).await;
    let after = requests(app, 100).await;
    assert!(obs.flush());
    let received = got.lock().unwrap().clone();
    let traces: std::collections::HashSet<&str> =
        received.iter().map(|g| g.trace_id.as_str()).collect();
    for id in &after {
        assert!(
            traces.contains(id.as_str()),
            "trace {id} kept after recovery arrives"
        );
    }
    assert!(
        during.iter().all(|id| !traces.contains(id.as_str())),
        "the outage's spans were counted lost, not sent twice"
    );
    let c = counters(&obs);
    assert_eq!(c["exported"], received.len() as f64);
    assert_eq!(c["exported"], 300.0);
    let lost: f64 = c
        .iter()
        .filter(|(k, _)| k.starts_with("{reason"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        c["exported"] + lost,
        600.0,
        "every span exported or counted: {c:?}"
    );
}
