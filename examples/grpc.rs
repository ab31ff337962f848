//! # Mercenary Pricing: a tonic gRPC service wired with `mercenary_obs`
//!
//! What it shows:
//!
//! - the same two-line setup as the HTTP demo: `Obs::builder()...from_env().init()` at the top
//!   of `main`, then `.layer(mercenary_obs::layer())` as the outermost layer of one axum router
//!   that holds the tonic service, `/metrics`, `/debug/traces` and `/healthz`;
//! - gRPC on its own terms: a failed call answers HTTP 200 with `grpc-status` in the trailers
//!   (or, for an error before any message, in the headers of a trailers-only response); the
//!   layer reads that status and records each call once, at the end of its response stream, in
//!   `rpc_server_call_duration_seconds{rpc_system_name, rpc_method, rpc_response_status_code,
//!   error_type}` (and not in `http_server_request_duration_seconds`);
//! - server faults (`INTERNAL`, `UNAVAILABLE`, `UNKNOWN`, ...) as errors: `error_type` set, an
//!   ERROR access line, the trace kept (reason `error`); client faults (`NOT_FOUND`,
//!   `INVALID_ARGUMENT`, ...) as expected answers: a WARNING access line, sampled like
//!   successes; a stream the client drops before its trailers recorded once as `cancelled`;
//! - one JSON access line per call (`"message":"request completed"`) carrying `rpc.system.name`,
//!   `rpc.method`, `rpc.response.status_code` and the `correlation_id` (from `x-request-id`
//!   metadata when the client sends one; echoed in the response metadata);
//! - one port for everything: gRPC over h2c (HTTP/2 with prior knowledge, as gRPC clients
//!   speak it) and plain HTTP/1.1 for `curl` and Prometheus, both through the same layer;
//! - graceful shutdown on Ctrl-C or SIGTERM, then `ObsGuard::shutdown()` so every buffered log
//!   line is written before the process exits;
//! - every line the process writes is one JSON object: the start (`"listening"`, with
//!   `server.address` and `server.port`) and the stop, a bad setting, and a panic (one CRITICAL
//!   line from the panic hook `init()` installs).
//!
//! The service, `mercenary.v1.Pricing`, is the protocol in `examples/grpc/pricing.rs`, its code
//! written by hand in the shape `tonic-build` generates: nothing to install but Rust (no
//! `protoc`, no build script).
//!
//! - `Quote(QuoteRequest{item})` answers a price in cents, the same for the same item;
//!   `item = "missing"` answers `NOT_FOUND`; `item = "fail"` logs an ERROR and answers
//!   `INTERNAL`; `item = "busy"` sheds the call with `UNAVAILABLE` and logs nothing (an error
//!   all the same: the status alone makes it one);
//! - `Watch(QuoteRequest{item})` streams the price 3 times, 50 ms apart, then ends `OK`;
//!   `"fail"` streams once, then ends with `INTERNAL` in the trailers; `"missing"` answers
//!   `NOT_FOUND` before any message; `"slow"` streams a price every 100 ms until the client
//!   cancels.
//!
//! ## Running it
//!
//! ```text
//! cargo run --example grpc                   # listens on 127.0.0.1:50051 (h2c and HTTP/1.1)
//! PORT=50052 cargo run --example grpc        # another port (PORT=0 picks a free one)
//! MERCENARY_OBS_LOG_FORMAT=pretty cargo run --example grpc   # human-readable logs
//! MERCENARY_OBS_SUCCESS_RATIO=1 cargo run --example grpc     # keep every trace
//! ```
//!
//! Environment: `PORT` (default 50051; 0 picks a free one), `OTEL_SERVICE_NAME` (default
//! `mercenary-pricing`), and everything else `mercenary_obs` reads (`RUST_LOG`,
//! `MERCENARY_OBS_LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `MERCENARY_OBS_SUCCESS_RATIO`,
//! ...; see `mercenary_obs::env`).
//!
//! ## Trying it without grpcurl
//!
//! The integration test `tests/integration/grpc.rs` is a tonic client of this service (it
//! starts the example itself, calls every method, and reads `/metrics`, `/debug/traces` and the
//! log lines):
//!
//! ```text
//! cargo nextest run --test integration grpc    # or: cargo test --test integration grpc
//! ```
//!
//! Against a running example, the HTTP/1.1 side answers `curl`:
//!
//! ```text
//! curl -i http://127.0.0.1:50051/healthz
//! curl -s http://127.0.0.1:50051/metrics | grep '^rpc_server'
//! curl -s http://127.0.0.1:50051/debug/traces        # kept traces, without an OTLP endpoint
//! ```
//!
//! and `curl` can make a gRPC call too, over h2c, with a hand-encoded message (the 5-byte gRPC
//! frame header, then the protobuf `QuoteRequest{item: "fail"}`: field 1, length 4, `fail`):
//!
//! ```text
//! printf '\0\0\0\0\6\n\4fail' | curl -s --http2-prior-knowledge \
//!     -H 'content-type: application/grpc' -H 'te: trailers' -H 'x-request-id: try-1' \
//!     --data-binary @- -o /dev/null -D - http://127.0.0.1:50051/mercenary.v1.Pricing/Quote
//! ```
//!
//! (HTTP 200 with `grpc-status: 13`; then `curl -s http://127.0.0.1:50051/metrics | grep
//! INTERNAL`.) With grpcurl, pass the protocol above as a `.proto` file: the service does not
//! offer reflection.
//!
//! Exit status: 0 after a clean shutdown, 1 when observability cannot start (try
//! `MERCENARY_OBS_LOG_FORMAT=bogus`: one JSON line on stderr) or the server fails, 2 for a bad
//! `PORT` (an ERROR line naming it).

#[path = "grpc/pricing.rs"]
mod pricing;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mercenary_obs::Obs;
use tonic::codegen::BoxStream;
use tonic::{Request, Status};
use tracing::Instrument;

use pricing::pricing_server::{Pricing, PricingServer};
use pricing::{QuoteReply, QuoteRequest};

/// The port used when `PORT` is not set: gRPC's customary one.
const DEFAULT_PORT: u16 = 50051;
/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
const DEFAULT_SERVICE_NAME: &str = "mercenary-pricing";
/// How many prices a `Watch` streams before it ends `OK`.
const WATCH_REPLIES: u64 = 3;
/// The pause between two prices of a `Watch`.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// The pause between two prices of a `Watch` for `"slow"`, which never ends by itself.
const SLOW_INTERVAL: Duration = Duration::from_millis(100);
/// How long in-flight calls (a `"slow"` watch never ends) may run on after a shutdown signal
/// before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    // A name set in code wins over the environment, so the default is set only when the
    // environment names no service.
    let mut builder = Obs::builder();
    if !service_name_in_env() {
        builder = builder.service_name(DEFAULT_SERVICE_NAME);
    }
    // Before anything else logs: installs the global subscriber (JSON lines on stdout), the
    // panic hook and the global instance that `mercenary_obs::layer()` and `metrics_router()`
    // use.
    let guard = match builder
        .service_version(env!("CARGO_PKG_VERSION"))
        .log_headers(["user-agent"])
        .from_env()
        .init()
    {
        Ok(guard) => guard,
        Err(err) => {
            report_without_logs(&err);
            return ExitCode::FAILURE;
        }
    };

    // Read once logs are up, so a bad value is a log line as well.
    let port = match port_from_env() {
        Ok(port) => port,
        Err(message) => {
            tracing::error!(error = %message, "invalid configuration");
            let _ = guard.shutdown();
            return ExitCode::from(2);
        }
    };

    let served = serve(port).await;
    match &served {
        Ok(()) => tracing::info!("stopped"),
        Err(message) => tracing::error!(error = %message, "server failed"),
    }

    // Flush every buffered log line before the process exits (lines logged after it are
    // written at once).
    let flushed = guard.shutdown();
    if let Err(err) = &flushed {
        tracing::error!(error = %err, "log lines not all written in time");
    }
    if served.is_ok() && flushed.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reports why observability could not start when there is no log pipeline to say it: one
/// JSON line on stderr, in the same schema, from a fallback instance with the default settings
/// (it reads no environment, so it cannot fail the same way).
fn report_without_logs(err: &mercenary_obs::Error) {
    let service = std::env::var(mercenary_obs::env::OTEL_SERVICE_NAME)
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
    let fallback = Obs::builder()
        .service_name(service.clone())
        .log_writer(std::io::stderr())
        .traces(false)
        .process_metrics(false)
        .build();
    match fallback {
        Ok(obs) => {
            obs.in_scope(|| tracing::error!(error = %err, "cannot start observability"));
            obs.flush();
        }
        // Not even a writer thread: the message alone, still one JSON object.
        Err(_) => eprintln!(
            "{}",
            serde_json::json!({
                "level": "ERROR",
                "message": "cannot start observability",
                "service": service,
                "error": err.to_string(),
            })
        ),
    }
}

/// Reads `PORT`, defaulting to 50051.
fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_PORT),
        Err(std::env::VarError::NotUnicode(raw)) => Err(format!(
            "invalid PORT {raw:?}: expected a port number from 0 to 65535"
        )),
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("invalid PORT {text:?}: expected a port number from 0 to 65535")),
    }
}

/// Whether the environment names the service (`OTEL_SERVICE_NAME`, or `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES`); blank values count as unset, as `from_env` reads them.
fn service_name_in_env() -> bool {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    set(mercenary_obs::env::OTEL_SERVICE_NAME).is_some()
        || set(mercenary_obs::env::OTEL_RESOURCE_ATTRIBUTES).is_some_and(|attrs| {
            attrs.split(',').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "service.name")
            })
        })
}

/// Binds, serves until a shutdown signal, and drains in-flight calls (bounded).
async fn serve(port: u16) -> Result<(), String> {
    let requested = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(requested)
        .await
        .map_err(|e| format!("cannot listen on {requested}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;

    tracing::info!(
        server.address = %addr.ip(),
        server.port = addr.port(),
        url = %format_args!("http://{addr}"),
        "listening"
    );

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    // axum's server (hyper-util's auto builder) speaks HTTP/1.1 and HTTP/2 with prior knowledge
    // on the same port: gRPC clients and curl alike.
    let server = axum::serve(listener, app()).with_graceful_shutdown(async move {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down");
        let _ = signalled_tx.send(());
    });

    // Graceful shutdown waits for every open call, and a `"slow"` watch never ends: the drain
    // gets a deadline.
    let deadline = async move {
        if signalled_rx.await.is_err() {
            // The server ended without a signal: its own branch of the select wins.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| format!("server error: {e}")),
        () = deadline => {
            tracing::warn!(
                grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                "calls still running after the shutdown grace period; dropping them"
            );
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, with the signal's name.
async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for Ctrl-C");
                std::future::pending().await
            }
        }
    };

    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
                "SIGTERM"
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&'static str>();

    tokio::select! {
        name = ctrl_c => name,
        name = terminate => name,
    }
}

// ---------------------------------------------------------------------------------------------
// The application
// ---------------------------------------------------------------------------------------------

/// The router: the tonic service (routed by its `/mercenary.v1.Pricing/*` paths), `/metrics`,
/// `/debug/traces` and `/healthz`. Called after `init()`: `layer()` and `metrics_router()` bind
/// to the instance that is global when they are called.
fn app() -> Router {
    let grpc = tonic::service::Routes::new(PricingServer::new(PricingService)).into_axum_router();
    Router::new()
        .route("/healthz", get(healthz))
        .merge(mercenary_obs::axum::metrics_router())
        .merge(grpc)
        // Replaces tonic's fallback, which answers every unknown path as an unknown gRPC
        // service, HTTP/1.1 `GET`s included.
        .fallback(not_found)
        // Outermost, so it sees every call and request: the service, the fallback, /metrics.
        .layer(mercenary_obs::layer())
}

async fn healthz() -> &'static str {
    "ok"
}

/// An unknown path: `UNIMPLEMENTED` (trailers-only) for a gRPC call, as gRPC clients expect for
/// an unknown service, 404 for anything else.
async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    if grpc {
        Status::unimplemented(format!("no such service: {}", uri.path()))
            .into_http::<axum::body::Body>()
    } else {
        (StatusCode::NOT_FOUND, "no such route\n").into_response()
    }
}

/// The price of an item, in cents: from 1.00 to 999.99, the same for the same item (FNV-1a).
fn price_cents(item: &str) -> u64 {
    let hash = item.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    100 + hash % 99_900
}

/// A message quoting the request's correlation ID, so a client can quote it back.
fn with_correlation_id(message: &str) -> String {
    match mercenary_obs::correlation_id() {
        Some(id) => format!("{message} (correlation ID {id})"),
        None => message.to_string(),
    }
}

/// The `mercenary.v1.Pricing` implementation.
struct PricingService;

#[tonic::async_trait]
impl Pricing for PricingService {
    async fn quote(
        &self,
        request: Request<QuoteRequest>,
    ) -> Result<tonic::Response<QuoteReply>, Status> {
        let item = request.into_inner().item;
        match item.as_str() {
            "fail" => {
                tracing::error!(item = %item, "pricing backend failed");
                Err(Status::internal(with_correlation_id(
                    "pricing backend failed",
                )))
            }
            "busy" => {
                // Load shedding, not logged call by call: the layer's access line and metric
                // record it, from the status alone.
                Err(Status::unavailable("overloaded, retry later"))
            }
            "missing" => {
                tracing::info!(item = %item, "no price for this item");
                Err(Status::not_found(with_correlation_id(
                    "no price for this item",
                )))
            }
            _ => {
                let cents = price_cents(&item);
                tracing::info!(item = %item, cents, "quoted");
                Ok(tonic::Response::new(QuoteReply { cents }))
            }
        }
    }

    type WatchStream = BoxStream<QuoteReply>;

    async fn watch(
        &self,
        request: Request<QuoteRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let item = request.into_inner().item;
        let plan = match item.as_str() {
            "missing" => {
                // An error before any message: tonic answers it trailers-only.
                return Err(Status::not_found(with_correlation_id(
                    "no price for this item",
                )));
            }
            "fail" => Plan::FailAfter(1),
            "slow" => Plan::Forever,
            _ => Plan::Replies(WATCH_REPLIES),
        };
        tracing::info!(item = %item, "watch started");
        Ok(tonic::Response::new(watch_stream(plan, price_cents(&item))))
    }
}

/// How a `Watch` stream goes.
#[derive(Clone, Copy)]
enum Plan {
    /// This many prices, [`WATCH_INTERVAL`] apart, then `OK`.
    Replies(u64),
    /// This many prices, then `INTERNAL` (in the trailers, after the messages).
    FailAfter(u64),
    /// A price every [`SLOW_INTERVAL`] until the client goes away.
    Forever,
}

/// The prices of one `Watch`: `cents`, then a cent more at each update. The stream is polled by
/// the response body, so each step runs in the call's span, and what it logs carries the call's
/// correlation ID.
fn watch_stream(plan: Plan, cents: u64) -> BoxStream<QuoteReply> {
    let span = tracing::Span::current();
    Box::pin(futures_util::stream::unfold(0_u64, move |sent| {
        let step = async move {
            let pause = match plan {
                Plan::Forever => SLOW_INTERVAL,
                Plan::Replies(_) | Plan::FailAfter(_) => WATCH_INTERVAL,
            };
            let reply = match plan {
                Plan::Replies(n) if sent >= n => return None,
                Plan::FailAfter(n) if sent > n => return None,
                Plan::FailAfter(n) if sent == n => {
                    tokio::time::sleep(pause).await;
                    tracing::error!(sent, "price feed failed mid-stream");
                    Err(Status::internal(with_correlation_id("price feed failed")))
                }
                _ => {
                    if sent > 0 {
                        tokio::time::sleep(pause).await;
                    }
                    Ok(QuoteReply {
                        cents: cents + sent,
                    })
                }
            };
            Some((reply, sent + 1))
        };
        step.instrument(span.clone())
    }))
}
