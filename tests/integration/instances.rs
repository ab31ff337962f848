//! Two instances built in one process keep separate metrics and logs.

use crate::common;

use axum::Router;
use axum::routing::get;
use common::{Capture, get as http_get, samples, serve};
use mercenary_obs::Obs;

fn count(obs: &Obs) -> f64 {
    samples(
        &obs.render_metrics(),
        "http_server_request_duration_seconds_count",
    )
    .iter()
    .map(|(_, v)| v)
    .sum()
}

#[tokio::test]
async fn two_built_instances_do_not_interfere() {
    let (la, lb) = (Capture::default(), Capture::default());
    let a = Obs::builder()
        .service_name("a")
        .log_writer(la.clone())
        .build()
        .unwrap();
    let b = Obs::builder()
        .service_name("b")
        .log_writer(lb.clone())
        .build()
        .unwrap();
    let app = |obs: &Obs| {
        Router::new()
            .route(
                "/",
                get(|| async {
                    tracing::info!("hello");
                    "hi"
                }),
            )
            .layer(obs.layer())
    };
    let (addr_a, addr_b) = (serve(app(&a)).await, serve(app(&b)).await);
    for _ in 0..3 {
        http_get(addr_a, "/", &[]).await;
    }
    for _ in 0..5 {
        http_get(addr_b, "/", &[]).await;
    }
    assert_eq!(count(&a), 3.0);
    assert_eq!(count(&b), 5.0);
    a.counter("jobs_total", &[]).inc_by(2);
    assert!(!b.render_metrics().contains("jobs_total"));
    assert!(a.flush() && b.flush());
    let (ja, jb) = (la.json_lines(), lb.json_lines());
    assert_eq!(ja.iter().filter(|l| l["message"] == "hello").count(), 3);
    assert_eq!(jb.iter().filter(|l| l["message"] == "hello").count(), 5);
    assert!(ja.iter().all(|l| l["service"] == "a"));
    assert!(jb.iter().all(|l| l["service"] == "b"));
}

#[test]
fn a_user_registry_is_used_and_a_clash_is_an_error() {
    let registry = prometheus::Registry::new();
    let obs = Obs::builder()
        .registry(registry.clone())
        .log_writer(std::io::sink())
        .build()
        .unwrap();
    assert!(
        registry
            .gather()
            .iter()
            .any(|f| f.name() == "http_server_active_requests")
    );
    drop(obs);
    let err = Obs::builder()
        .registry(registry)
        .log_writer(std::io::sink())
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("http_server_request_duration_seconds"),
        "{err}"
    );
}
