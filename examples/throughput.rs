//! The server of the DESIGN §13 throughput check, driven by `scripts/throughput.sh` with `wrk`.
//!
//! One axum route, `GET /users/{id}`, whose handler logs one `tracing::info!` and answers 500
//! for one request in twenty, served by a tokio runtime with **one worker thread** (`WORKERS`
//! overrides), logging to standard output (the script sends it to a file). The first argument
//! picks the stack:
//!
//! - `bare`: axum alone, no subscriber (the handler's `info!` is disabled and costs nothing);
//! - `mercenary`: `Obs::builder().init()` and `mercenary_obs::layer()`: correlation IDs, RED
//!   metrics, JSON access and handler lines, every span recorded for tail sampling;
//! - `mercenary-no-traces`: the same with `.traces(false)` (for finding where the time goes);
//! - `off-the-shelf`: tower-http `SetRequestId`/`PropagateRequestId` (UUID v4), `TraceLayer` at
//!   INFO, axum-prometheus, tracing-subscriber's JSON formatter and tracing-opentelemetry with
//!   the `AlwaysOn` sampler (what tail sampling has to record), spans handed to an exporter that
//!   discards them;
//! - `receiver`: not a stack, a minimal OTLP/HTTP receiver (`POST /v1/traces` answers 200) for
//!   `mercenary`'s kept traces (`OTEL_EXPORTER_OTLP_ENDPOINT`), run as a process of its own.
//!
//! ```text
//! cargo run --release --example throughput -- mercenary 127.0.0.1:3999 > /dev/null
//! ```

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use axum_prometheus::PrometheusMetricLayer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, SimpleSpanProcessor, SpanData, SpanExporter,
};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

/// One request in twenty fails (a 500, whose trace every tail-sampling stack keeps).
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn user(Path(id): Path<u64>) -> (axum::http::StatusCode, &'static str) {
    tracing::info!(user_id = id, "user fetched");
    if REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 20 == 19 {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "failed");
    }
    (axum::http::StatusCode::OK, "user 42")
}

fn routes() -> Router {
    Router::new().route("/users/{id}", get(user))
}

/// Drops every span: the cheapest end of an SDK pipeline.
#[derive(Debug)]
struct DiscardExporter;

impl SpanExporter for DiscardExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        drop(batch);
        std::future::ready(Ok(()))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:3999".into())
        .parse()?;
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    if mode == "receiver" {
        let app = Router::new().route(
            "/v1/traces",
            axum::routing::post(|_body: axum::body::Bytes| async {
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }),
        );
        return rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("receiver listening on {}", listener.local_addr()?);
            axum::serve(listener, app).await?;
            Ok(())
        });
    }

    // Kept alive until the server ends.
    let mut _guard = None;
    let mut _provider = None;
    let app = match mode.as_str() {
        "bare" => routes(),
        "mercenary" | "mercenary-no-traces" => {
            _guard = Some(
                mercenary_obs::Obs::builder()
                    .service_name("throughput")
                    .process_metrics(false)
                    .traces(mode == "mercenary")
                    .from_env()
                    .init()?,
            );
            routes().layer(mercenary_obs::layer())
        }
        "off-the-shelf" => {
            let provider = SdkTracerProvider::builder()
                .with_sampler(Sampler::AlwaysOn)
                .with_span_processor(SimpleSpanProcessor::new(DiscardExporter))
                .build();
            let subscriber = tracing_subscriber::registry()
                .with(LevelFilter::INFO)
                .with(tracing_subscriber::fmt::layer().json())
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("throughput")));
            tracing::subscriber::set_global_default(subscriber)?;
            _provider = Some(provider);
            let (prometheus, _handle) = {
                let _runtime = rt.enter();
                PrometheusMetricLayer::pair()
            };
            routes()
                .layer(prometheus)
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                        .on_response(DefaultOnResponse::new().level(Level::INFO)),
                )
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        }
        other => {
            return Err(format!(
                "unknown stack {other:?}: expected `bare`, `mercenary`, `mercenary-no-traces`, `off-the-shelf` or `receiver`"
            )
            .into());
        }
    };
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("{mode} listening on {}", listener.local_addr()?);
        // Ctrl-C ends the server cleanly, so that profilers (valgrind's dhat) write their report.
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
    })?;
    Ok(())
}
