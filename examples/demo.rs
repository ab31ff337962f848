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
//! - redaction: `POST /signup` logs the password on purpose, and it comes out as `"[REDACTED]"`,
//!   as does the `authorization` header on the access line;
//! - RED metrics and business metrics (`counter!`, `gauge!`, `histogram!`) on `GET /metrics`;
//! - audit lines (`audit!`: sign-ups, logins, payments) and security events
//!   (`security_event!`: failed logins; every 401/403 as `unauthorized`);
//! - the correlation ID from the [`CorrelationId`] extractor and from
//!   [`mercenary_obs::correlation_id()`], returned in JSON bodies;
//! - 4xx, 5xx and panics recorded as such (WARNING and ERROR access lines, `error_type` label);
//! - graceful shutdown on Ctrl-C or SIGTERM, then `ObsGuard::shutdown()` so every buffered log
//!   line is written before the process exits.
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
//! curl -s http://127.0.0.1:3000/metrics | grep -E '^(http_server|user_signups|payment)'
//! ```
//!
//! Exit status: 0 after a clean shutdown, 1 when observability cannot start (try
//! `MERCENARY_OBS_LOG_FORMAT=bogus`) or the server fails, 2 for a bad `PORT`.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mercenary_obs::db::{DbPool, DbQuery, PoolStats};
use mercenary_obs::{CorrelationId, Obs, counter, gauge, histogram};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument;

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

/// Plans and currencies are metric label values, so they come from fixed lists: a label fed
/// straight from client input would create one time series per distinct value sent.
const PLANS: &[&str] = &["free", "pro", "team"];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP"];

#[tokio::main]
async fn main() -> ExitCode {
    let port = match port_from_env() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("mercenary demo: {message}");
            return ExitCode::from(2);
        }
    };

    // Before anything else logs: installs the global subscriber (JSON lines on stdout) and the
    // global instance that `mercenary_obs::layer()`, `metrics_router()` and the macros use.
    let guard = match Obs::builder()
        .service_name("mercenary-api")
        .service_version(env!("CARGO_PKG_VERSION"))
        .log_headers(["user-agent", "authorization"])
        .from_env()
        .init()
    {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("mercenary demo: cannot start observability: {err}");
            return ExitCode::FAILURE;
        }
    };

    let served = serve(port).await;
    match &served {
        Ok(()) => tracing::info!("stopped"),
        Err(message) => tracing::error!(error = %message, "server failed"),
    }

    // Flush every buffered log line before the process exits (dropping the guard would do the
    // same; calling `shutdown` lets us report a flush that timed out).
    let flushed = guard.shutdown();
    if let Err(message) = &served {
        eprintln!("mercenary demo: {message}");
    }
    if let Err(err) = &flushed {
        eprintln!("mercenary demo: {err}");
    }
    if served.is_ok() && flushed.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads `PORT`, defaulting to 3000.
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

/// Binds, serves until a shutdown signal, and drains in-flight requests (bounded).
async fn serve(port: u16) -> Result<(), String> {
    let requested = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(requested)
        .await
        .map_err(|e| format!("cannot listen on {requested}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;

    tracing::info!(address = %addr, url = %format_args!("http://{addr}"), "listening");
    eprintln!("mercenary demo listening on http://{addr}");

    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app()).with_graceful_shutdown(async move {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down");
        eprintln!("mercenary demo: {signal} received, shutting down");
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

/// In-memory stand-ins for a database.
#[derive(Default)]
struct AppState {
    sessions: AtomicU64,
    next_project_id: AtomicU64,
    next_proposal_id: AtomicU64,
}

/// The router. Called after `init()`: `layer()` and `metrics_router()` bind to the instance that
/// is global when they are called.
fn app() -> Router {
    // Exported from the start (at 0) rather than appearing with the first signup.
    gauge!("active_sessions", help: "Signed-in sessions.").set(0.0);
    // The pool gauges too: an idle pool, before the first query.
    db().report();

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
        .merge(mercenary_obs::axum::metrics_router())
        .fallback(not_found)
        .with_state(Arc::new(AppState::default()))
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

    let user = load_user(id).await;
    tracing::info!(user_id = id, plan = user.plan, "user loaded");
    Json(user).into_response()
}

/// A simulated `SELECT ... FROM users WHERE id = $1`.
async fn load_user(id: u64) -> User {
    db_query("SELECT", "users").await;
    tracing::debug!(rows = 1, "query done");
    User {
        id,
        name: format!("user-{id}"),
        email: format!("user-{id}@example.com"),
        plan: PLANS[(id % PLANS.len() as u64) as usize],
    }
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

    db_query("INSERT", "users").await;

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

async fn create_project(
    State(state): State<Arc<AppState>>,
    Json(body): Json<NewProject>,
) -> Response {
    if body.name.trim().is_empty() {
        return json_error(StatusCode::UNPROCESSABLE_ENTITY, "name must not be empty");
    }
    let id = state.next_project_id.fetch_add(1, Ordering::Relaxed) + 1;
    db_query("INSERT", "projects").await;
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

async fn submit_proposal(
    State(state): State<Arc<AppState>>,
    Json(body): Json<NewProposal>,
) -> Response {
    let id = state.next_proposal_id.fetch_add(1, Ordering::Relaxed) + 1;
    db_query("INSERT", "proposals").await;
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
        record_payment(currency, amount, "declined");
        return json_error(
            StatusCode::PAYMENT_REQUIRED,
            "payment declined: amount over the limit",
        );
    }

    tracing::info!(amount, currency, "payment accepted");
    record_payment(currency, amount, "ok");
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

/// Counts a payment attempt and writes its audit line; `outcome` is `ok` or `declined`.
fn record_payment(currency: &'static str, amount: f64, outcome: &'static str) {
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
    db_query("SELECT", "users").await;
    if body.email != DEMO_EMAIL || body.password != DEMO_PASSWORD {
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
// The simulated database: a connection pool whose gauges feed `mercenary_obs::db::DbPool`, and
// queries timed and traced by `mercenary_obs::db::DbQuery` (`db_client_*` metrics, `db.query`
// spans with the OpenTelemetry database attributes).
// ---------------------------------------------------------------------------------------------

/// Connections of the simulated pool.
const DB_POOL_SIZE: u64 = 10;
/// How long a simulated query holds its connection.
const DB_QUERY_TIME: Duration = Duration::from_millis(1);

/// A stand-in for a real pool (sqlx, deadpool, bb8): a semaphore of connections.
struct DemoDb {
    connections: tokio::sync::Semaphore,
    waiting: AtomicU64,
    gauges: DbPool,
}

/// The pool, made on first use (after `init()`, so its gauges are on the global instance).
fn db() -> &'static DemoDb {
    static DB: std::sync::OnceLock<DemoDb> = std::sync::OnceLock::new();
    DB.get_or_init(|| DemoDb {
        connections: tokio::sync::Semaphore::new(DB_POOL_SIZE as usize),
        waiting: AtomicU64::new(0),
        gauges: DbPool::new("main"),
    })
}

impl DemoDb {
    /// Feeds the pool's state to its gauges, as an application does from its pool's stats.
    fn report(&self) {
        self.gauges.record(PoolStats {
            size: DB_POOL_SIZE,
            idle: self.connections.available_permits() as u64,
            max: DB_POOL_SIZE,
            waiting: self.waiting.load(Ordering::Relaxed),
        });
    }
}

/// A simulated query on `table`: waits for a connection, holds it briefly, in a `db.query` span
/// recorded in `db_client_operation_duration_seconds`.
async fn db_query(operation: &str, table: &str) {
    let db = db();
    DbQuery::new("postgresql", operation)
        .collection(table)
        .namespace("mercenary")
        .time(async {
            db.waiting.fetch_add(1, Ordering::Relaxed);
            db.report();
            let connection = db.connections.acquire().await;
            db.waiting.fetch_sub(1, Ordering::Relaxed);
            db.report();
            tokio::time::sleep(DB_QUERY_TIME).await;
            drop(connection);
            db.report();
        })
        .await;
}
