//! # Mercenary API: a small axum service wired with `mercenary_obs`
//!
//! What it shows:
//!
//! - two-line setup: `Obs::builder()...from_env().init()` at the top of `main`, then
//!   `.layer(mercenary_obs::layer())` as the outermost layer of the router (it also covers the
//!   fallback, so unknown paths are counted with an empty route label);
//! - one JSON log line per event on stdout, each request line carrying `correlation_id`;
//!   handler logs, child spans (`db.query`, `payment.authorize`, ...) and the access line
//!   (`"message":"request completed"`) of the same request share it;
//! - a real database with no per-query instrumentation code: users, sign-ups, projects,
//!   proposals, payments and prices live in an embedded SQLite database (in memory) reached
//!   through sqlx (`demo/db.rs`); `mercenary_obs::db::sqlx::watch_pool` once, and every query
//!   is a `db.query` span of its request (its text without literal values) and an observation
//!   of `db_client_operation_duration_seconds` by operation and table, and the pool's gauges
//!   feed the database dashboard;
//! - redaction: `POST /signup` logs the password on purpose, and it comes out as `"[REDACTED]"`,
//!   as does the `authorization` header on the access line;
//! - RED metrics and business metrics (`counter!`, `gauge!`, `histogram!`) on `GET /metrics`;
//! - audit lines (`audit!`: sign-ups, logins, payments) and security events
//!   (`security_event!`: failed logins; every 401/403 as `unauthorized`);
//! - the correlation ID from the [`CorrelationId`] extractor and from
//!   [`mercenary_obs::correlation_id()`], returned in JSON bodies;
//! - 4xx, 5xx and panics recorded as such (WARNING and ERROR access lines, `error_type` label);
//! - an outgoing call: `GET /quote/{id}` asks a pricing service (`GET /pricing/{id}`, served by
//!   this same process unless `DOWNSTREAM_URL` points elsewhere) through hyper-util's client
//!   wrapped in [`mercenary_obs::client_layer()`]: a CLIENT span, `traceparent` and
//!   `x-request-id` sent downstream, `http_client_request_duration_seconds` on `/metrics`. The
//!   pricing service fails on purpose for every id that is a multiple of 10 (ERROR line, 500);
//!   the quote then falls back to a list price with `"degraded": true` and a WARNING line, as
//!   it does when pricing is unreachable or slower than `DOWNSTREAM_TIMEOUT_MS` (2 s by default);
//! - graceful shutdown on Ctrl-C or SIGTERM, then `ObsGuard::shutdown()` so every buffered log
//!   line is written before the process exits;
//! - every line the process writes is one JSON object: the start (`"listening"`, with
//!   `server.address` and `server.port`) and the stop, a bad setting, and a panic (the panic hook
//!   `init()` installs writes one CRITICAL line, with the request's `correlation_id`, instead of
//!   Rust's text on stderr).
//!
//! ## Running it
//!
//! ```text
//! cargo run --example demo                      # listens on http://127.0.0.1:3000
//! PORT=8080 cargo run --example demo            # another port (PORT=0 picks a free one)
//! MERCENARY_OBS_LOG_FORMAT=pretty cargo run --example demo   # human-readable logs
//! RUST_LOG=debug cargo run --example demo       # more detail
//! ```
//!
//! Two demos as two services, the second calling the first for prices, both exporting traces
//! to an OTLP/HTTP collector (Jaeger, Tempo, the OpenTelemetry Collector) on port 4318:
//!
//! ```text
//! OTEL_SERVICE_NAME=pricing PORT=3001 OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
//!     cargo run --example demo
//! OTEL_SERVICE_NAME=quotes DOWNSTREAM_URL=http://127.0.0.1:3001 \
//!     OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 cargo run --example demo
//! curl -i http://127.0.0.1:3000/quote/20     # one trace across both services, kept (error)
//! ```
//!
//! Environment:
//!
//! - `PORT`: the port to listen on (default 3000; 0 picks a free one);
//! - `DEMO_RUNTIME`: `current_thread` for tokio's current-thread runtime (default: multi-thread);
//! - `HOST`: the address to listen on (default `127.0.0.1`; `0.0.0.0` in a container);
//! - `MERCENARY_OBS_ADMIN_ADDR`: serve `/metrics`, `/debug/traces` and `/healthz` on this
//!   address instead of the public port (for example `127.0.0.1:9464`);
//! - `DOWNSTREAM_URL`: the base URL of the pricing service `GET /quote/{id}` calls, `http://`
//!   only (default: this demo itself, `http://127.0.0.1:{the port it listens on}`);
//! - `DOWNSTREAM_TIMEOUT_MS`: how long a quote waits for the pricing service before it falls
//!   back (default 2000);
//! - `OTEL_SERVICE_NAME`: the service name (default `mercenary-api`; `service.name` in
//!   `OTEL_RESOURCE_ATTRIBUTES` works too);
//! - everything else `mercenary_obs` reads (`MERCENARY_OBS_LOG_FORMAT`, `RUST_LOG`,
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_BSP_SCHEDULE_DELAY`, `MERCENARY_OBS_SUCCESS_RATIO`,
//!   ...; see `mercenary_obs::env`).
//!
//! Then, from another terminal:
//!
//! ```text
//! curl -i http://127.0.0.1:3000/healthz
//! curl -i http://127.0.0.1:3000/users/42
//! curl -i http://127.0.0.1:3000/users/4242                     # 404: no such user
//! curl -i -H 'x-request-id: my-trace-123' http://127.0.0.1:3000/users/7
//! curl -i -X POST http://127.0.0.1:3000/login -H 'content-type: application/json' \
//!      -d '{"email":"ada@example.com","password":"guess"}'    # 401: failed_login + audit
//! curl -i -X POST http://127.0.0.1:3000/login -H 'content-type: application/json' \
//!      -d '{"email":"ada@example.com","password":"correct horse battery staple"}'
//! curl -i -X POST http://127.0.0.1:3000/signup \
//!      -H 'content-type: application/json' -H 'authorization: Bearer s3cr3t' \
//!      -d '{"plan":"pro","email":"ada@example.com","password":"hunter2"}'
//! curl -i -X POST http://127.0.0.1:3000/projects \
//!      -H 'content-type: application/json' -d '{"name":"Website redesign"}'
//! curl -i -X POST http://127.0.0.1:3000/proposals \
//!      -H 'content-type: application/json' -d '{"project_id":1}'
//! curl -i -X POST http://127.0.0.1:3000/payments \
//!      -H 'content-type: application/json' -d '{"amount":49.5,"currency":"USD"}'
//! curl -i -X POST http://127.0.0.1:3000/payments \
//!      -H 'content-type: application/json' -d '{"amount":25000,"currency":"EUR"}'   # 402
//! curl -i http://127.0.0.1:3000/fail                           # 500, ERROR lines
//! curl -i 'http://127.0.0.1:3000/slow?ms=750'                  # default 100 ms, max 30000
//! curl -i http://127.0.0.1:3000/panic                          # 500, panic recorded
//! curl -i http://127.0.0.1:3000/quote/7                        # priced by GET /pricing/7
//! curl -i http://127.0.0.1:3000/quote/30                       # pricing fails: degraded
//! curl -i http://127.0.0.1:3000/pricing/7                      # the pricing service itself
//! curl -i http://127.0.0.1:3000/pricing/abc                    # 404: ids are numbers
//! curl -s http://127.0.0.1:3000/metrics | grep -E '^(http_server|http_client|user_signups|payment)'
//! ```
//!
//! Routes: `GET /healthz`, `GET /users/{id}`, `POST /signup`, `POST /login`, `POST /projects`,
//! `POST /proposals`, `POST /payments`, `GET /fail`, `GET /slow?ms=`, `GET /panic`,
//! `GET /quote/{id}` (always 200 for a numeric id: `{"id", "price", "degraded"}`),
//! `GET /pricing/{id}` (`{"id", "price"}`; 500 when `id` is a multiple of 10), `GET /metrics`
//! and, without an OTLP endpoint, `GET /debug/traces`. A non-numeric `{id}` is a 404 on every
//! route that takes one.
//!
//! Exit status: 0 after a clean shutdown, 1 when observability cannot start (try
//! `MERCENARY_OBS_LOG_FORMAT=bogus`: one JSON line on stderr, the log pipeline being the thing
//! that failed) or the server fails, 2 for a bad `PORT`, `DOWNSTREAM_URL` or
//! `DOWNSTREAM_TIMEOUT_MS` (an ERROR line naming the variable).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mercenary_obs::{ClientService, CorrelationId, Obs, counter, gauge, histogram};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;

/// The database (SQLite through sqlx, instrumented by `mercenary_obs::db::sqlx`).
#[path = "demo/db.rs"]
mod db;

/// The port used when `PORT` is not set.
const DEFAULT_PORT: u16 = 3000;
/// Users `1..=MAX_USER_ID` exist; any other id is a 404.
const MAX_USER_ID: u64 = 1000;
/// Payments above this amount are declined with 402.
const PAYMENT_LIMIT: f64 = 10_000.0;
/// The longest `GET /slow` sleep, in milliseconds.
const MAX_SLOW_MS: u64 = 30_000;
/// How long in-flight requests may run on after a shutdown signal before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
const DEFAULT_SERVICE_NAME: &str = "mercenary-api";
/// How long a quote waits for the pricing service (connection, response and body) before it
/// answers with the fallback price, when `DOWNSTREAM_TIMEOUT_MS` is not set.
const DEFAULT_PRICING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the pricing client waits for a TCP connection.
const PRICING_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The price quoted when the pricing service cannot give one.
const FALLBACK_PRICE: f64 = 99.0;

/// Plans and currencies are metric label values, so they come from fixed lists: a label fed
/// straight from client input would create one time series per distinct value sent.
const PLANS: &[&str] = &["free", "pro", "team"];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP"];

fn main() -> ExitCode {
    // `DEMO_RUNTIME=current_thread` runs the demo on tokio's current-thread runtime (the tests
    // check shutdown on both flavours); the default is the multi-thread runtime.
    let runtime = match std::env::var("DEMO_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            let message = format!("cannot start the tokio runtime: {e}");
            eprintln!("{}", json!({ "level": "ERROR", "message": message }));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    // A name set in code wins over the environment, so the default is set only when the
    // environment names no service: two demos can run as two services.
    let mut builder = Obs::builder();
    if !service_name_in_env() {
        builder = builder.service_name(DEFAULT_SERVICE_NAME);
    }
    // Before anything else logs: installs the global subscriber (JSON lines on stdout), the
    // panic hook (a panic is one CRITICAL JSON line too) and the global instance that
    // `mercenary_obs::layer()`, `client_layer()`, `metrics_router()` and the macros use.
    let guard = match builder
        .service_version(env!("CARGO_PKG_VERSION"))
        .log_headers(["user-agent", "authorization"])
        .from_env()
        .init()
    {
        Ok(guard) => guard,
        Err(err) => {
            report_without_logs(&err);
            return ExitCode::FAILURE;
        }
    };

    // The demo's own settings, read once logs are up so a bad one is a log line as well.
    let settings = (
        host_from_env().and_then(|host| port_from_env().map(|port| SocketAddr::new(host, port))),
        downstream_from_env(),
        downstream_timeout_from_env(),
    );
    let (addr, downstream) = match settings {
        (Ok(addr), Ok(url), Ok(timeout)) => (addr, Downstream { url, timeout }),
        (Err(message), _, _) | (_, Err(message), _) | (_, _, Err(message)) => {
            tracing::error!(error = %message, "invalid configuration");
            let _ = guard.shutdown();
            return ExitCode::from(2);
        }
    };

    let served = serve(addr, downstream).await;
    match &served {
        Ok(()) => tracing::info!("stopped"),
        Err(message) => tracing::error!(error = %message, "server failed"),
    }

    // Flush every buffered log line before the process exits (dropping the guard would do the
    // same; calling `shutdown` lets us report a flush that timed out: lines logged after it
    // are written at once).
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

/// Reports why observability could not start (a bad `MERCENARY_OBS_*` or `OTEL_*` variable,
/// say) when there is no log pipeline to say it: one JSON line on stderr, in the same schema,
/// from a fallback instance with the default settings, which reads no environment and so
/// cannot fail the same way.
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
            json!({
                "level": "ERROR",
                "message": "cannot start observability",
                "service": service,
                "error": err.to_string(),
            })
        ),
    }
}

/// Reads `PORT`, defaulting to 3000.
/// Reads `HOST`, the address to listen on: `127.0.0.1` unless set (`0.0.0.0` in a container).
fn host_from_env() -> Result<std::net::IpAddr, String> {
    match std::env::var("HOST") {
        Err(std::env::VarError::NotPresent) => Ok(Ipv4Addr::LOCALHOST.into()),
        Err(std::env::VarError::NotUnicode(raw)) => Err(format!(
            "invalid HOST {raw:?}: expected an IP address such as 127.0.0.1 or 0.0.0.0"
        )),
        Ok(text) if text.trim().is_empty() => Ok(Ipv4Addr::LOCALHOST.into()),
        Ok(text) => text.trim().parse().map_err(|_| {
            format!("invalid HOST {text:?}: expected an IP address such as 127.0.0.1 or 0.0.0.0")
        }),
    }
}

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

/// Reads `DOWNSTREAM_URL`, the pricing service's base URL: `None` when unset or blank (the
/// demo then calls itself), else `http://host[:port][/base/path]` without a trailing slash.
fn downstream_from_env() -> Result<Option<String>, String> {
    const EXPECTED: &str = "expected an http:// URL such as http://127.0.0.1:3001";
    let text = match std::env::var("DOWNSTREAM_URL") {
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(raw)) => {
            return Err(format!("invalid DOWNSTREAM_URL {raw:?}: {EXPECTED}"));
        }
        Ok(text) if text.trim().is_empty() => return Ok(None),
        Ok(text) => text,
    };
    let invalid = |why: &str| format!("invalid DOWNSTREAM_URL {text:?}: {why}; {EXPECTED}");
    let uri: Uri = text.trim().parse().map_err(|_| invalid("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        // The demo's client speaks plain HTTP only (no TLS connector).
        return Err(invalid("the scheme must be http"));
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| invalid("no host"))?;
    if authority.as_str().contains('@') {
        // Not echoed: the value holds credentials.
        return Err(format!(
            "invalid DOWNSTREAM_URL: credentials in the URL are not supported; {EXPECTED}"
        ));
    }
    if uri.query().is_some() {
        return Err(invalid("a query string is not supported"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(Some(format!("http://{authority}{path}")))
}

/// Reads `DOWNSTREAM_TIMEOUT_MS`, how long a quote waits for the pricing service (default
/// 2000).
fn downstream_timeout_from_env() -> Result<Duration, String> {
    let invalid = |raw: &dyn std::fmt::Debug| {
        format!("invalid DOWNSTREAM_TIMEOUT_MS {raw:?}: expected a number of milliseconds above 0")
    };
    match std::env::var("DOWNSTREAM_TIMEOUT_MS") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_PRICING_TIMEOUT),
        Err(std::env::VarError::NotUnicode(raw)) => Err(invalid(&raw)),
        Ok(text) if text.trim().is_empty() => Ok(DEFAULT_PRICING_TIMEOUT),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(invalid(&text)),
        },
    }
}

/// Where quotes get their prices: `DOWNSTREAM_URL` (`None`: this demo) and how long they wait.
struct Downstream {
    url: Option<String>,
    timeout: Duration,
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

/// Binds, serves until a shutdown signal, and drains in-flight requests (bounded).
async fn serve(requested: SocketAddr, downstream: Downstream) -> Result<(), String> {
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

    // With MERCENARY_OBS_ADMIN_ADDR, /metrics and /debug/traces move to the admin listener
    // (with /healthz): the public port no longer serves them.
    let admin = mercenary_obs::axum::serve_admin()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(admin) = admin {
        tracing::info!(
            server.address = %admin.ip(),
            server.port = admin.port(),
            "admin listening (/metrics, /debug/traces, /healthz)"
        );
    }

    // Without DOWNSTREAM_URL the demo is its own pricing service, at the address it got.
    let pricing_url = downstream.url.unwrap_or_else(|| format!("http://{addr}"));
    tracing::info!(
        url = %pricing_url,
        timeout_ms = downstream.timeout.as_millis() as u64,
        "pricing service"
    );
    let pricing = Pricing::new(pricing_url, downstream.timeout);

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        axum::serve(listener, app(pricing, admin.is_none())).with_graceful_shutdown(async move {
            let signal = shutdown_signal().await;
            tracing::info!(signal, "shutting down");
            let _ = signalled_tx.send(());
        });

    // Graceful shutdown waits for every open request; `GET /slow?ms=30000` should not hold the
    // process that long, so the drain gets a deadline.
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
                "requests still running after the shutdown grace period; dropping them"
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

/// Signed-in sessions, and the pricing service's client.
struct AppState {
    sessions: AtomicU64,
    pricing: Pricing,
}

/// The router. Called after `init()`: `layer()` and `metrics_router()` bind to the instance that
/// is global when they are called.
fn app(pricing: Pricing, serve_metrics: bool) -> Router {
    // Exported from the start (at 0) rather than appearing with the first signup.
    gauge!("active_sessions", help: "Signed-in sessions.").set(0.0);
    // The database pool, watched from the start (its gauges before the first query).
    db::open();

    let metrics = if serve_metrics {
        mercenary_obs::axum::metrics_router()
    } else {
        Router::new()
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/users/{id}", get(get_user))
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/projects", post(create_project))
        .route("/proposals", post(submit_proposal))
        .route("/payments", post(create_payment))
        .route("/fail", get(fail))
        .route("/slow", get(slow))
        .route("/panic", get(panic_handler))
        .route("/quote/{id}", get(get_quote))
        .route("/pricing/{id}", get(get_price))
        .merge(metrics)
        .fallback(not_found)
        .with_state(Arc::new(AppState {
            sessions: AtomicU64::new(0),
            pricing,
        }))
        // Outermost, so it sees every request: the routes above, the fallback, and rejections.
        .layer(mercenary_obs::layer())
}

/// A JSON error body carrying the request's correlation ID, so a client can quote it.
fn json_error(status: StatusCode, message: &str) -> Response {
    let correlation_id = mercenary_obs::correlation_id().map(|id| id.to_string());
    (
        status,
        Json(json!({ "error": message, "correlation_id": correlation_id })),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such route")
}

#[derive(Serialize)]
struct User {
    id: u64,
    name: String,
    email: String,
    plan: &'static str,
}

async fn get_user(Path(id): Path<String>) -> Response {
    // `{id}` is matched as text so a non-numeric id is a 404 like any unknown user.
    let Some(id) = id.parse::<u64>().ok().filter(|id| *id <= MAX_USER_ID) else {
        tracing::info!("user not found");
        return json_error(StatusCode::NOT_FOUND, "user not found");
    };

    let user = match db::user(id).await {
        Ok(Some((name, email, plan))) => User {
            id,
            name,
            email,
            plan: PLANS.iter().copied().find(|p| *p == plan).unwrap_or("free"),
        },
        Ok(None) => return json_error(StatusCode::NOT_FOUND, "user not found"),
        Err(e) => return db_error(e),
    };
    tracing::info!(user_id = id, plan = user.plan, "user loaded");
    Json(user).into_response()
}

/// A 500 for a database error (logged as an ERROR with the error, which names no value).
fn db_error(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "database error");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

#[derive(Deserialize)]
struct Signup {
    plan: String,
    email: String,
    password: String,
}

async fn signup(
    request_id: CorrelationId,
    State(state): State<Arc<AppState>>,
    Json(body): Json<Signup>,
) -> Response {
    let Some(plan) = PLANS.iter().copied().find(|p| *p == body.plan) else {
        tracing::info!("unknown plan");
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "plan must be one of: free, pro, team",
        );
    };
    let Some((_, email_domain)) = body.email.split_once('@') else {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email is not an email address",
        );
    };

    if let Err(e) = db::sign_up(&body.email, &body.password, plan).await {
        return db_error(e);
    }

    // The password is logged on purpose: the field name is sensitive, so the line says
    // "password":"[REDACTED]". Only the domain of the email goes to the logs.
    tracing::info!(plan, email_domain, password = %body.password, "user signed up");
    counter!("user_signups_total", "plan" => plan, help: "Sign-ups by plan.").inc();
    counter!("feature_usage_total", "feature" => "signup", help: FEATURE_HELP).inc();
    mercenary_obs::audit!(
        actor = email_hash(&body.email),
        action = "user.signup",
        resource = "user",
        outcome = "success",
        plan,
    );

    // A signup logs the user in: one more session.
    let sessions = state.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    gauge!("active_sessions", help: "Signed-in sessions.").set(sessions as f64);

    let body = json!({ "status": "created", "plan": plan, "request_id": request_id.as_str() });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct NewProject {
    name: String,
}

async fn create_project(Json(body): Json<NewProject>) -> Response {
    if body.name.trim().is_empty() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "name must not be empty");
    }
    let id = match db::create_project(&body.name).await {
        Ok(id) => id,
        Err(e) => return db_error(e),
    };
    tracing::info!(
        project_id = id,
        name_len = body.name.len(),
        "project created"
    );
    counter!("projects_created_total", help: "Projects created.").inc();
    counter!("feature_usage_total", "feature" => "projects", help: FEATURE_HELP).inc();
    (
        StatusCode::CREATED,
        Json(json!({ "id": id, "name": body.name })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct NewProposal {
    project_id: u64,
}

async fn submit_proposal(Json(body): Json<NewProposal>) -> Response {
    let id = match db::submit_proposal(body.project_id).await {
        Ok(id) => id,
        Err(e) => return db_error(e),
    };
    tracing::info!(
        proposal_id = id,
        project_id = body.project_id,
        "proposal submitted"
    );
    counter!("proposals_submitted_total", help: "Proposals submitted.").inc();
    counter!("feature_usage_total", "feature" => "proposals", help: FEATURE_HELP).inc();
    let body = json!({ "id": id, "project_id": body.project_id });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct Payment {
    amount: f64,
    currency: String,
}

async fn create_payment(Json(body): Json<Payment>) -> Response {
    let currency = body.currency.to_ascii_uppercase();
    let Some(currency) = CURRENCIES.iter().copied().find(|c| *c == currency) else {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency must be one of: USD, EUR, GBP",
        );
    };
    if !(body.amount.is_finite() && body.amount > 0.0) {
        return json_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount must be a positive number",
        );
    }
    let amount = body.amount;

    let approved = authorize(amount)
        .instrument(tracing::info_span!(
            "payment.authorize",
            payment.provider = "sandbox",
            currency
        ))
        .await;
    if !approved {
        tracing::warn!(amount, currency, limit = PAYMENT_LIMIT, "payment declined");
        record_payment(currency, amount, "declined").await;
        return json_error(
            StatusCode::PAYMENT_REQUIRED,
            "payment declined: amount over the limit",
        );
    }

    tracing::info!(amount, currency, "payment accepted");
    record_payment(currency, amount, "ok").await;
    histogram!(
        "payment_amount_dollars",
        "currency" => currency,
        help: "Accepted payment amounts.",
        buckets: [1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0],
    )
    .observe(amount);
    counter!("feature_usage_total", "feature" => "payments", help: FEATURE_HELP).inc();
    Json(json!({ "status": "ok", "amount": amount, "currency": currency })).into_response()
}

/// Stores and counts a payment attempt and writes its audit line; `outcome` is `ok` or
/// `declined`.
async fn record_payment(currency: &'static str, amount: f64, outcome: &'static str) {
    if let Err(e) = db::record_payment(currency, amount, outcome).await {
        tracing::error!(error = %e, "payment not stored");
    }
    counter!("payments_total", "currency" => currency, "outcome" => outcome, help: PAYMENTS_HELP)
        .inc();
    mercenary_obs::audit!(
        actor = "customer",
        action = "payment.create",
        resource = format!("payment:{currency}"),
        outcome = if outcome == "ok" { "success" } else { outcome },
        amount,
    );
}

const PAYMENTS_HELP: &str = "Payments by currency and outcome.";
const FEATURE_HELP: &str = "Feature usage by feature.";

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

/// The demo's one account.
const DEMO_EMAIL: &str = "ada@example.com";
const DEMO_PASSWORD: &str = "correct horse battery staple";

/// `POST /login`: an audit event either way; a failed login is also a security event (and,
/// answered 401, the layer records an `unauthorized` one).
async fn login(State(state): State<Arc<AppState>>, Json(body): Json<Login>) -> Response {
    let actor = email_hash(&body.email);
    let valid = match db::login(&body.email, &body.password).await {
        Ok(valid) => valid,
        Err(e) => return db_error(e),
    };
    if !valid {
        // `password` is a sensitive field name: written as "[REDACTED]".
        mercenary_obs::security_event!(kind = "failed_login", actor = actor.as_str(), password = %body.password);
        mercenary_obs::audit!(
            actor = actor,
            action = "auth.login",
            resource = "session",
            outcome = "failure",
        );
        return json_error(StatusCode::UNAUTHORIZED, "wrong email or password");
    }
    mercenary_obs::audit!(
        actor = actor,
        action = "auth.login",
        resource = "session",
        outcome = "success",
    );
    counter!("feature_usage_total", "feature" => "login", help: FEATURE_HELP).inc();
    let sessions = state.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    gauge!("active_sessions", help: "Signed-in sessions.").set(sessions as f64);
    Json(json!({ "status": "ok" })).into_response()
}

/// A stable pseudonym for an email address (FNV-1a), so logs and audit lines identify the
/// actor without holding the address.
fn email_hash(email: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in email.trim().to_ascii_lowercase().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("user:{h:016x}")
}

/// A simulated call to a payment provider.
async fn authorize(amount: f64) -> bool {
    // Logged inside the `payment.authorize` span: the line carries the span's fields
    // (`payment.provider`, `currency`) as well as the request's `correlation_id`.
    tracing::info!(amount, "authorizing payment");
    tokio::time::sleep(Duration::from_millis(2)).await;
    amount <= PAYMENT_LIMIT
}

async fn fail() -> Response {
    tracing::error!(
        error.kind = "upstream_unavailable",
        "simulated failure: inventory service unavailable"
    );
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

#[derive(Deserialize)]
struct SlowParams {
    ms: Option<u64>,
}

async fn slow(Query(params): Query<SlowParams>) -> Response {
    let requested_ms = params.ms.unwrap_or(100);
    let slept_ms = requested_ms.min(MAX_SLOW_MS);
    tokio::time::sleep(Duration::from_millis(slept_ms))
        .instrument(tracing::info_span!("work", work.kind = "simulated"))
        .await;
    tracing::info!(requested_ms, slept_ms, "slow request done");
    Json(json!({ "slept_ms": slept_ms })).into_response()
}

async fn panic_handler() -> &'static str {
    panic!("demo panic")
}

// ---------------------------------------------------------------------------------------------
// An outgoing call: quotes ask the pricing service through an instrumented HTTP client.
// ---------------------------------------------------------------------------------------------

/// hyper-util's client wrapped in `mercenary_obs::client_layer()`: every call gets a CLIENT span
/// (a child of the request span), `traceparent` and `x-request-id` headers, and an observation
/// of `http_client_request_duration_seconds`.
type PricingClient = ClientService<Client<HttpConnector, Empty<Bytes>>>;

/// The pricing service: where it is, and the client that calls it.
struct Pricing {
    /// The base URL, without a trailing slash.
    base: String,
    /// The bound on a whole call (connection, response and body).
    timeout: Duration,
    client: PricingClient,
}

impl Pricing {
    /// Made after `init()`: `client_layer()` binds to the instance that is global when called.
    fn new(base: String, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(PRICING_CONNECT_TIMEOUT.min(timeout)));
        let client = ServiceBuilder::new()
            .layer(mercenary_obs::client_layer())
            .service(Client::builder(TokioExecutor::new()).build(connector));
        Pricing {
            base,
            timeout,
            client,
        }
    }

    /// `GET {base}/pricing/{id}`: the price, or why there is none (a non-2xx answer, a
    /// transport error, a body that is not a price, or no answer within `self.timeout`).
    async fn price(&self, id: u64) -> Result<f64, String> {
        let request = axum::http::Request::get(format!("{}/pricing/{id}", self.base))
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let call = async {
            let response = self
                .client
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| format!("pricing unreachable: {}", error_chain(&e)))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("pricing body failed: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("pricing answered {status}"));
            }
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["price"].as_f64())
                .ok_or_else(|| "pricing answered without a price".to_string())
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "pricing did not answer within {} ms",
                    self.timeout.as_millis()
                ))
            })
    }
}

/// An error and its sources, `: `-separated (hyper-util's own message is only "client error
/// (Connect)"; the reason is in the chain).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `GET /quote/{id}`: the price from the pricing service; when it fails, the fallback price
/// with `"degraded": true` and a WARNING line (the quote recovered, so not an ERROR). Always
/// 200 for a numeric id.
async fn get_quote(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_error(StatusCode::NOT_FOUND, "no such item");
    };
    let (price, degraded) = match state.pricing.price(id).await {
        Ok(price) => {
            tracing::info!(item_id = id, price, "quote priced");
            (price, false)
        }
        Err(reason) => {
            tracing::warn!(
                item_id = id,
                reason = %reason,
                fallback_price = FALLBACK_PRICE,
                "pricing unavailable, quoting the fallback price"
            );
            (FALLBACK_PRICE, true)
        }
    };
    let outcome = if degraded { "degraded" } else { "priced" };
    counter!("quotes_total", "outcome" => outcome, help: "Quotes by outcome.").inc();
    Json(json!({ "id": id, "price": price, "degraded": degraded })).into_response()
}

/// `GET /pricing/{id}`: the list price; 500 (and an ERROR line) when `id` is a multiple of 10.
async fn get_price(Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return json_error(StatusCode::NOT_FOUND, "no such item");
    };
    let price = match db::price(id).await {
        Ok(price) => price,
        Err(e) => return db_error(e),
    };
    if id % 10 == 0 {
        tracing::error!(
            item_id = id,
            error.kind = "pricing_engine",
            "simulated failure: no price for this item"
        );
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "pricing failed");
    }
    Json(json!({ "id": id, "price": price })).into_response()
}
