//! The layer around a plain tower service (no axum): a `RouteExtractor`, inner errors, panics
//! re-raised on request, and the `/metrics` service.

use crate::common;

use std::convert::Infallible;

use bytes::Bytes;
use common::{Capture, samples};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mercenary_obs::{Obs, Route};
use tower::{Layer, ServiceExt, service_fn};

fn instance(catch_panics: bool) -> (Obs, Capture) {
    let capture = Capture::default();
    let obs = Obs::builder()
        .log_writer(capture.clone())
        .process_metrics(false)
        .catch_panics(catch_panics)
        .build()
        .unwrap();
    (obs, capture)
}

fn routes(parts: &http::request::Parts) -> Option<Route> {
    let path = parts.uri.path();
    if path.starts_with("/orders/") {
        Some(Route::from("/orders/{id}"))
    } else {
        None
    }
}

#[derive(Debug, PartialEq)]
struct StorageError {
    shard: u32,
}
impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage unavailable on shard {}", self.shard)
    }
}
impl std::error::Error for StorageError {}

#[tokio::test]
async fn any_http_service_with_a_route_extractor() {
    let (obs, logs) = instance(true);
    let inner = service_fn(|req: Request<Full<Bytes>>| async move {
        match req.uri().path() {
            "/orders/7" => Ok(Response::new(Full::new(Bytes::from_static(b"order")))),
            "/orders/err" => Err(StorageError { shard: 7 }),
            _ => {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::NOT_FOUND;
                Ok(r)
            }
        }
    });
    let svc = obs.layer().route_extractor(routes).layer(inner);

    let resp = svc
        .clone()
        .oneshot(Request::get("/orders/7").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"order"
    );

    let err = svc
        .clone()
        .oneshot(Request::get("/orders/err").body(Full::default()).unwrap())
        .await;
    let err = err.expect_err("the inner service's error");
    assert_eq!(
        err,
        StorageError { shard: 7 },
        "the inner error comes back unchanged"
    );
    assert_eq!(err.to_string(), "storage unavailable on shard 7");

    let resp = svc
        .clone()
        .oneshot(Request::get("/random/path").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let exposition = obs.render_metrics();
    let counts = samples(&exposition, "http_server_request_duration_seconds_count");
    assert_eq!(counts.len(), 3, "{counts:?}");
    let find = |needle: &str| {
        counts
            .iter()
            .find(|(l, _)| l.contains(needle))
            .map(|(_, v)| *v)
    };
    assert_eq!(
        find("http_response_status_code=\"200\",http_route=\"/orders/{id}\""),
        Some(1.0)
    );
    assert_eq!(
        find("error_type=\"integration::tower_service::StorageError\""),
        Some(1.0),
        "{counts:?}"
    );
    assert_eq!(
        find("http_response_status_code=\"404\",http_route=\"\""),
        Some(1.0)
    );
    assert!(!exposition.contains("/random/path"));

    assert!(obs.flush());
    let lines = logs.json_lines();
    let err_line = lines
        .iter()
        .find(|l| l["url.path"] == "/orders/err")
        .unwrap();
    assert_eq!(err_line["level"], "ERROR");
    assert_eq!(
        err_line["error.type"],
        "integration::tower_service::StorageError"
    );
    assert!(err_line.get("http.response.status_code").is_none());
}

#[tokio::test]
async fn panics_are_recorded_then_re_raised_when_asked() {
    let (obs, logs) = instance(false);
    let inner = service_fn(|_req: Request<Full<Bytes>>| async move {
        if std::hint::black_box(true) {
            panic!("re-raise me");
        }
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    });
    let svc = obs.layer().layer(inner);
    let handle = tokio::spawn(svc.oneshot(Request::get("/x").body(Full::default()).unwrap()));
    let joined = handle.await;
    assert!(joined.unwrap_err().is_panic(), "the panic propagates");
    let exposition = obs.render_metrics();
    assert!(exposition.contains("error_type=\"panic\""), "{exposition}");
    assert_eq!(
        samples(&exposition, "http_server_active_requests")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>(),
        0.0
    );
    assert!(obs.flush());
    assert!(
        logs.json_lines()
            .iter()
            .any(|l| l["exception.message"] == "re-raise me")
    );
}

#[tokio::test]
async fn a_panic_while_creating_the_future_is_a_500() {
    let (obs, _logs) = instance(true);
    #[derive(Clone)]
    struct PanicsInCall;
    impl tower::Service<Request<Full<Bytes>>> for PanicsInCall {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
            panic!("panicked in call")
        }
    }
    let resp = obs
        .layer()
        .layer(PanicsInCall)
        .oneshot(Request::get("/y").body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().contains_key("x-request-id"));
    assert!(obs.render_metrics().contains("error_type=\"panic\""));
}

#[tokio::test]
async fn metrics_service_answers_get_metrics_only() {
    let (obs, _logs) = instance(true);
    let svc = obs.metrics_service();
    let resp = svc
        .clone()
        .oneshot(Request::get("/metrics").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        mercenary_obs::names::CONTENT_TYPE
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("# TYPE http_server_active_requests gauge"));
    let resp = svc
        .clone()
        .oneshot(Request::post("/metrics").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let resp = svc
        .oneshot(Request::get("/other").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
