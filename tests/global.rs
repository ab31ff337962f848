//! The global instance: `init()`, `layer()`, the macros, `metrics_router()` and the guard.
//! One test per binary, because `init()` is once per process.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{Capture, client, send, serve};
use mercenary_obs::{Error, Obs};

#[tokio::test]
async fn init_installs_once_and_the_guard_flushes_on_drop() {
    let capture = Capture::default();
    let guard = Obs::builder()
        .service_name("global-test")
        .log_writer(capture.clone())
        .shutdown_timeout(Duration::from_secs(2))
        .init()
        .unwrap();

    let again = Obs::builder().log_writer(std::io::sink()).init();
    assert!(matches!(again, Err(Error::AlreadyInitialized)), "{again:?}");

    let app = Router::new()
        .route(
            "/signup",
            get(|| async {
                mercenary_obs::counter!("user_signups_total", "plan" => "pro").inc();
                mercenary_obs::gauge!("active_sessions").set(3.0);
                mercenary_obs::histogram!("payment_amount_dollars", "currency" => "EUR")
                    .observe(49.0);
                // Same name, other labels: ignored (logged once), never a panic.
                mercenary_obs::counter!("user_signups_total").inc();
                tracing::info!("signed up");
                "ok"
            }),
        )
        .merge(mercenary_obs::axum::metrics_router())
        .layer(mercenary_obs::layer());
    let addr = serve(app).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            send(&c, "GET", &format!("http://{addr}/signup"), "")
                .await
                .0,
            200
        );
    }
    let (status, body) = send(&c, "GET", &format!("http://{addr}/metrics"), "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("user_signups_total{plan=\"pro\"} 3"),
        "{body}"
    );
    assert!(body.contains("active_sessions 3"), "{body}");
    assert!(
        body.contains("payment_amount_dollars_count{currency=\"EUR\"} 3"),
        "{body}"
    );
    assert!(body.contains(
        "http_server_request_duration_seconds_count{error_type=\"\",http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/signup\"} 3"
    ), "{body}");
    common::promtool_check(&body);

    // A subscriber of the application's own made current around a request (not the global
    // one this crate installed) sees the request span with its fields: the layer hands them to
    // its own subscriber only.
    let foreign = Capture::default();
    let writer = foreign.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    {
        use tower::ServiceExt;
        use tracing::instrument::WithSubscriber;
        let app = Router::new()
            .route(
                "/foreign/{id}",
                get(|| async {
                    tracing::info!("inside");
                    "ok"
                }),
            )
            .layer(mercenary_obs::layer());
        let request = axum::http::Request::get("/foreign/7")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app
            .oneshot(request)
            .with_subscriber(tracing::Dispatch::new(subscriber))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let inside = foreign
        .json_lines()
        .into_iter()
        .find(|l| l["fields"]["message"] == "inside")
        .unwrap_or_else(|| panic!("the handler's line: {}", foreign.text()));
    assert_eq!(inside["span"]["http.route"], "/foreign/{id}", "{inside}");
    assert_eq!(inside["span"]["url.path"], "/foreign/7", "{inside}");
    assert_eq!(inside["span"]["http.request.method"], "GET", "{inside}");
    assert!(inside["span"]["correlation_id"].is_string(), "{inside}");

    // Lines logged right before the guard drops are written, on this current-thread runtime.
    for i in 0..500 {
        tracing::info!(i, "last words");
    }
    drop(guard);
    let lines = capture.json_lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["message"] == "last words")
            .count(),
        500
    );
    assert_eq!(
        lines.iter().filter(|l| l["message"] == "signed up").count(),
        3
    );
    let misuse: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] == "mercenary_obs::metrics")
        .collect();
    assert_eq!(misuse.len(), 1, "a misuse is logged once: {misuse:?}");
    // After shutdown, lines are still written (synchronously).
    tracing::info!("after shutdown");
    assert!(capture.text().contains("after shutdown"));
}
