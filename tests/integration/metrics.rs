//! RED metrics over real HTTP, checked the way Prometheus and an operator would check them.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Capture, client, promtool_check, samples, send, serve};
use mercenary_obs::Obs;
use tokio::io::AsyncWriteExt;

fn instance() -> (Obs, Capture) {
    let capture = Capture::default();
    let obs = Obs::builder()
        .service_name("metrics-test")
        .service_version("1.2.3")
        .environment("test")
        .log_writer(capture.clone())
        .build()
        .unwrap();
    (obs, capture)
}

fn app(obs: &Obs) -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/users/{id}", get(|| async { "user" }))
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route(
            "/boom",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/panic",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler exploded");
                }
                "unreachable"
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .layer(obs.layer())
}

/// The `_count` of every label set, keyed by `method route status error_type`.
fn counts(exposition: &str) -> HashMap<String, f64> {
    samples(exposition, "http_server_request_duration_seconds_count")
        .into_iter()
        .map(|(labels, v)| {
            let get = |k: &str| {
                let pat = format!("{k}=\"");
                labels
                    .find(&pat)
                    .map(|i| {
                        let rest = &labels[i + pat.len()..];
                        rest[..rest.find('"').unwrap()].to_string()
                    })
                    .unwrap_or_default()
            };
            (
                format!(
                    "{} {} {} {}",
                    get("http_request_method"),
                    get("http_route"),
                    get("http_response_status_code"),
                    get("error_type")
                ),
                v,
            )
        })
        .collect()
}

fn active(exposition: &str) -> f64 {
    samples(exposition, "http_server_active_requests")
        .iter()
        .map(|(_, v)| v)
        .sum()
}

async fn wait_for_idle(obs: &Obs) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while active(&obs.render_metrics()) != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_mix_is_counted_exactly_with_bounded_series() {
    let (obs, logs) = instance();
    let addr = serve(app(&obs)).await;
    let c = client();
    let base = format!("http://{addr}");

    for _ in 0..20 {
        assert_eq!(send(&c, "GET", &format!("{base}/ok"), "").await.0, 200);
    }
    for i in 0..30 {
        assert_eq!(
            send(&c, "GET", &format!("{base}/users/{i}"), "").await.0,
            200
        );
    }
    for _ in 0..5 {
        assert_eq!(send(&c, "GET", &format!("{base}/teapot"), "").await.0, 418);
    }
    for _ in 0..7 {
        assert_eq!(send(&c, "GET", &format!("{base}/boom"), "").await.0, 500);
    }
    for _ in 0..3 {
        assert_eq!(send(&c, "GET", &format!("{base}/panic"), "").await.0, 500);
    }
    for _ in 0..4 {
        let status = send(&c, "FOO", &format!("{base}/ok"), "").await.0;
        assert_eq!(status, 405);
    }
    // Cancelled: the client sends a request to a slow route and goes away.
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    // A scanner: 100 distinct unmatched paths, then 9,900 more.
    for i in 0..100 {
        assert_eq!(
            send(&c, "GET", &format!("{base}/scan/{i}/admin.php"), "")
                .await
                .0,
            404
        );
    }
    wait_for_idle(&obs).await;
    let series_after_100 = samples(
        &obs.render_metrics(),
        "http_server_request_duration_seconds_count",
    )
    .len();
    for i in 100..10_000 {
        assert_eq!(
            send(&c, "GET", &format!("{base}/scan/{i}/admin.php"), "")
                .await
                .0,
            404
        );
    }
    wait_for_idle(&obs).await;

    let exposition = obs.render_metrics();
    let counts = counts(&exposition);
    let expect = [
        ("GET /ok 200 ", 20.0),
        ("GET /users/{id} 200 ", 30.0),
        ("GET /teapot 418 ", 5.0),
        ("GET /boom 500 500", 7.0),
        ("GET /panic 500 panic", 3.0),
        ("_OTHER /ok 405 ", 4.0),
        ("GET /slow  cancelled", 2.0),
        ("GET  404 ", 10_000.0),
    ];
    for (key, n) in expect {
        assert_eq!(counts.get(key), Some(&n), "count of `{key}` in {counts:#?}");
    }
    assert_eq!(
        counts.len(),
        expect.len(),
        "unexpected label sets: {counts:#?}"
    );
    let series = samples(&exposition, "http_server_request_duration_seconds_count").len();
    assert_eq!(series, series_after_100, "series grew with distinct paths");
    assert!(!exposition.contains("/scan/"), "a raw path became a label");
    assert_eq!(active(&exposition), 0.0, "active requests back to 0");

    // The names and labels of DESIGN §4.
    for needle in [
        "# TYPE http_server_request_duration_seconds histogram",
        "# TYPE http_server_active_requests gauge",
        "http_server_request_duration_seconds_bucket{error_type=\"\",http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/ok\",le=\"0.005\"}",
        "le=\"7.5\"",
        "target_info{deployment_environment=\"test\",service_name=\"metrics-test\",service_version=\"1.2.3\"} 1",
        "# TYPE mercenary_obs_log_lines_dropped_total counter",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exposition.contains(needle),
            "missing `{needle}` in\n{exposition}"
        );
    }
    promtool_check(&exposition);

    // Each request wrote exactly one access line.
    assert!(obs.flush());
    let access = logs
        .json_lines()
        .into_iter()
        .filter(|l| l["message"] == "request completed")
        .count();
    assert_eq!(access, 20 + 30 + 5 + 7 + 3 + 4 + 2 + 10_000);
}

/// The gauge counts a request until its body is finished or dropped.
#[tokio::test]
async fn active_gauge_follows_the_body() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let (obs, _logs) = instance();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
    let stream_app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.lock().unwrap().take().unwrap();
                async move { axum::body::Body::new(ChannelBody(rx)) }
            }),
        )
        .layer(obs.layer());

    let resp = stream_app
        .clone()
        .oneshot(
            http::Request::get("/stream")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        active(&obs.render_metrics()),
        1.0,
        "counted while the body streams"
    );
    // Duration is recorded at the response head already.
    assert_eq!(
        counts(&obs.render_metrics()).get("GET /stream 200 "),
        Some(&1.0)
    );
    tx.send(Ok("chunk".into())).await.unwrap();
    drop(tx);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"chunk");
    assert_eq!(
        active(&obs.render_metrics()),
        0.0,
        "released at the end of the body"
    );

    // A body dropped half-way releases it too.
    let app2 = Router::new()
        .route("/big", get(|| async { "x".repeat(1 << 16) }))
        .layer(obs.layer());
    let resp = app2
        .oneshot(
            http::Request::get("/big")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(active(&obs.render_metrics()), 1.0);
    drop(resp);
    assert_eq!(
        active(&obs.render_metrics()),
        0.0,
        "released when the body is dropped"
    );
}

/// A body fed by a channel, to hold a response open.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|r| r.map(http_body::Frame::data)))
    }
}

/// A future dropped before completion is recorded once as cancelled, and the gauge returns to 0.
#[tokio::test]
async fn dropped_future_is_recorded_once_as_cancelled() {
    use tower::{Service, ServiceExt};

    let (obs, logs) = instance();
    let mut svc = app(&obs).into_service::<axum::body::Body>();
    let fut = svc.ready().await.unwrap().call(
        http::Request::get("/slow")
            .body(axum::body::Body::empty())
            .unwrap(),
    );
    let timed_out = tokio::time::timeout(Duration::from_millis(50), fut).await;
    assert!(timed_out.is_err());
    let exposition = obs.render_metrics();
    assert_eq!(counts(&exposition).get("GET /slow  cancelled"), Some(&1.0));
    assert_eq!(active(&exposition), 0.0);
    assert!(obs.flush());
    let lines = logs.json_lines();
    let cancelled: Vec<_> = lines
        .iter()
        .filter(|l| l["error.type"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["level"], "WARNING");
    assert!(cancelled[0].get("http.response.status_code").is_none());
}
