//! Per-request overhead of the mercenary_obs layer against the off-the-shelf stack (DESIGN §13).
//!
//! Every benchmark sends `GET /users/42` through an axum `Router` with one route, on a tokio
//! current-thread runtime, and reads the response body to the end (as hyper would):
//!
//! - `bare`: no layers;
//! - `mercenary_obs`: `Obs::layer()` of an instance built with `build()`, logs to `io::sink()`;
//! - `off_the_shelf`: tower-http `SetRequestId` (UUID v4) + `PropagateRequestId` + `TraceLayer`
//!   at INFO (one line per request) with a tracing-subscriber JSON subscriber writing to
//!   `io::sink`, plus the axum-prometheus layer;
//! - `…+handler_info`: the handler also logs one `tracing::info!`.
//!
//! Run with `cargo bench --bench overhead -- --noplot`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, header};
use axum::routing::get;
use axum_prometheus::PrometheusMetricLayer;
use axum_prometheus::metrics_exporter_prometheus::PrometheusHandle;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use mercenary_obs::Obs;
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

async fn user(Path(id): Path<u64>) -> &'static str {
    black_box(id);
    "user 42"
}

async fn user_info(Path(id): Path<u64>) -> &'static str {
    tracing::info!(user_id = %id, "user fetched");
    "user 42"
}

fn router(handler_info: bool) -> Router {
    if handler_info {
        Router::new().route("/users/{id}", get(user_info))
    } else {
        Router::new().route("/users/{id}", get(user))
    }
}

/// `PrometheusMetricLayer::pair()` installs a global recorder (once per process) and spawns its
/// upkeep task on `rt` (as in a real server).
fn prometheus_layer(rt: &tokio::runtime::Runtime) -> PrometheusMetricLayer<'static> {
    static PAIR: OnceLock<(PrometheusMetricLayer<'static>, PrometheusHandle)> = OnceLock::new();
    let _runtime = rt.enter();
    PAIR.get_or_init(PrometheusMetricLayer::pair).0.clone()
}

fn off_the_shelf(rt: &tokio::runtime::Runtime, handler_info: bool) -> Router {
    router(handler_info)
        .layer(prometheus_layer(rt))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn obs_instance() -> Obs {
    Obs::builder()
        .service_name("bench")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .expect("building the Obs instance")
}

fn request() -> Request<Body> {
    Request::get("/users/42")
        .header(header::USER_AGENT, "bench/1.0")
        .body(Body::empty())
        .expect("a valid request")
}

/// Sends one request through a clone of `app` and reads the response to the end.
async fn one_request(app: &Router) {
    let response = app.clone().oneshot(request()).await.expect("infallible");
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.expect("body");
    black_box(body.to_bytes());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `iters` requests inside one `block_on`, timed.
fn run(rt: &tokio::runtime::Runtime, app: &Router, iters: u64) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            one_request(app).await;
        }
        start.elapsed()
    })
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("overhead");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);

    let bare = router(false);
    group.bench_function("bare", |b| b.iter_custom(|iters| run(&rt, &bare, iters)));

    let mut dropped = Vec::new();
    for (name, handler_info) in [
        ("mercenary_obs", false),
        ("mercenary_obs+handler_info", true),
    ] {
        let obs = obs_instance();
        let app = router(handler_info).layer(obs.layer());
        let dispatch = obs.dispatch().expect("a JSON log pipeline").clone();
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter_custom(|iters| run(&rt, &app, iters)));
        });
        obs.flush();
        dropped.push((name, obs.log_lines_dropped()));
    }

    for (name, handler_info) in [
        ("off_the_shelf", false),
        ("off_the_shelf+handler_info", true),
    ] {
        let app = off_the_shelf(&rt, handler_info);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(name, |b| b.iter_custom(|iters| run(&rt, &app, iters)));
        });
    }
    group.finish();

    for (name, n) in dropped {
        println!("{name}: log lines dropped = {n}");
    }
}

criterion_group!(benches, overhead);
criterion_main!(benches);
