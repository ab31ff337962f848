//! Sentry (feature `sentry`): what a user sees in Sentry, through `sentry`'s test transport, and
//! the real HTTP transport against loopback endpoints that are down, hang, or rate-limit.
#![cfg(feature = "sentry")]

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Capture, get as http_get, samples, serve};
use mercenary_obs::{Obs, ObsBuilder};
use sentry::test::TestTransport;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DSN: &str = "https://public@sentry.invalid/42";

fn instance(
    configure: impl FnOnce(ObsBuilder) -> ObsBuilder,
) -> (Obs, Arc<TestTransport>, Capture) {
    let transport = TestTransport::new();
    let capture = Capture::default();
    let obs = configure(
        Obs::builder()
            .service_name("sentry-test")
            .log_writer(capture.clone())
            .process_metrics(false)
            .trace_ring_size(10_000)
            .sentry_dsn(DSN)
            .sentry_transport(Arc::new(transport.clone())),
    )
    .build()
    .unwrap();
    (obs, transport, capture)
}

#[inline(never)]
fn explode() -> &'static str {
    if std::hint::black_box(true) {
        panic!("kaboom");
    }
    "unreachable"
}

async fn crumbs(Path(n): Path<u32>) -> StatusCode {
    for step in 0..3u32 {
        tracing::info!(n, step, "working");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    StatusCode::INTERNAL_SERVER_ERROR
}

fn app(obs: &Obs) -> Router {
    common::traced_routes()
        .route("/explode", get(|| async { explode() }))
        .route(
            "/logs-error",
            get(|| async {
                tracing::error!(order_id = 42, "payment provider refused");
                (StatusCode::BAD_GATEWAY, "upstream")
            }),
        )
        .route(
            "/logs-error-ok",
            get(|| async {
                tracing::warn!("retrying");
                tracing::error!(order_id = 7, "payment provider refused");
                "ok anyway"
            }),
        )
        .route(
            "/critical",
            get(|| async {
                mercenary_obs::critical!(db = "primary", "database unreachable");
                "degraded"
            }),
        )
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route(
            "/secret",
            get(|| async {
                tracing::info!(token = "tok-SECRET-3", "got a token");
                tracing::info!(
                    url = "https://api.example/x?token=tok-SECRET-4&page=2",
                    "called"
                );
                tracing::error!(password = "hunter2-SECRET-5", user = "ann", "login failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .route(
            "/secret-plain",
            get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route("/crumbs/{n}", get(crumbs))
        .layer(obs.layer())
}

/// Every captured event as JSON (what Sentry receives).
fn events(transport: &TestTransport) -> Vec<Value> {
    transport
        .fetch_and_clear_events()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

fn tag<'a>(event: &'a Value, name: &str) -> &'a str {
    event["tags"][name]
        .as_str()
        .unwrap_or_else(|| panic!("tag {name} missing in {event:#}"))
}

/// The trace ID of the `traceresponse` header.
fn trace_of(resp: &common::RawResponse) -> String {
    let tr = resp.header("traceresponse").expect("traceresponse");
    tr.split('-').nth(1).unwrap().to_string()
}

fn assert_request_tags(event: &Value, resp: &common::RawResponse, route: &str) {
    let trace_id = trace_of(resp);
    assert_eq!(
        tag(event, "correlation_id"),
        resp.header("x-request-id").unwrap()
    );
    assert_eq!(tag(event, "trace_id"), trace_id);
    assert_eq!(tag(event, "http.route"), route);
    assert_eq!(tag(event, "http.request.method"), "GET");
    assert_eq!(
        event["contexts"]["trace"]["trace_id"], trace_id,
        "Sentry's trace context is the request's trace: {event:#}"
    );
    assert_eq!(event["request"]["method"], "GET");
    let url = event["request"]["url"].as_str().unwrap();
    assert!(url.ends_with(route.split('{').next().unwrap()) || url.contains("/crumbs/"));
    assert!(!url.contains('?'), "{url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_give_one_event_each_with_tags_and_trace() {
    let (obs, transport, logs) = instance(|b| b);
    let addr = serve(app(&obs)).await;

    // A 500 response whose handler logged nothing.
    let resp = http_get(addr, "/fail?page=3", &["x-request-id: req-fail-1"]).await;
    assert_eq!(resp.status, 500);
    let got = events(&transport);
    assert_eq!(got.len(), 1, "{got:#?}");
    let event = &got[0];
    assert_request_tags(event, &resp, "/fail");
    assert_eq!(tag(event, "correlation_id"), "req-fail-1");
    assert_eq!(tag(event, "http.response.status_code"), "500");
    // (`error` is the default level, left out of the JSON.)
    assert_eq!(event["level"].as_str().unwrap_or("error"), "error");
    assert_eq!(event["transaction"], "GET /fail");
    let crumbs = event["breadcrumbs"]["values"].as_array().unwrap();
    assert!(
        crumbs.iter().any(|c| c["message"] == "querying"),
        "the handler's INFO event is a breadcrumb: {crumbs:#?}"
    );
    assert!(
        crumbs.iter().all(|c| c["message"] != "request completed"),
        "the access line is not a breadcrumb"
    );

    // The same trace ID in the log lines and in the exported trace.
    assert!(obs.flush());
    let trace_id = trace_of(&resp);
    let lines = logs.json_lines();
    let access = lines
        .iter()
        .find(|l| l["message"] == "request completed" && l["correlation_id"] == "req-fail-1")
        .expect("the access line");
    assert_eq!(access["trace_id"], trace_id.as_str());
    let traces: Value = serde_json::from_str(&obs.recent_traces_json().unwrap()).unwrap();
    let kept = traces["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == trace_id.as_str())
        .expect("the error trace is kept");
    let root = kept["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Server")
        .unwrap();
    assert_eq!(event["contexts"]["trace"]["span_id"], root["span_id"]);

    // A panic: the message, and the backtrace of the panicking thread.
    let resp = http_get(addr, "/explode", &[]).await;
    assert_eq!(resp.status, 500);
    let got = events(&transport);
    assert_eq!(got.len(), 1, "{got:#?}");
    let event = &got[0];
    assert_request_tags(event, &resp, "/explode");
    assert_eq!(tag(event, "http.response.status_code"), "500");
    assert_eq!(tag(event, "error.type"), "panic");
    let exception = &event["exception"]["values"][0];
    assert_eq!(exception["type"], "panic");
    assert_eq!(exception["value"], "kaboom");
    assert_eq!(exception["mechanism"]["handled"], false);
    let frames = exception["stacktrace"]["frames"]
        .as_array()
        .expect("a stacktrace");
    let functions: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["function"].as_str())
        .collect();
    let last = functions.last().unwrap();
    assert!(
        last.contains("explode"),
        "the innermost frame is the panicking function, not the panic machinery: {functions:#?}"
    );

    // The shared /panic route too (panics inside a child span's future chain).
    let resp = http_get(addr, "/panic", &[]).await;
    let got = events(&transport);
    assert_eq!(got.len(), 1);
    assert_request_tags(&got[0], &resp, "/panic");
    assert_eq!(got[0]["exception"]["values"][0]["value"], "boom");

    // A handler's ERROR event on a 5xx: one event (the handler's), with the request's tags.
    let resp = http_get(addr, "/logs-error", &[]).await;
    assert_eq!(resp.status, 502);
    let got = events(&transport);
    assert_eq!(got.len(), 1, "no duplicate: {got:#?}");
    let event = &got[0];
    assert_request_tags(event, &resp, "/logs-error");
    assert_eq!(event["message"], "payment provider refused");
    // Captured before the status was known, sent once it was: the one event carries it.
    assert_eq!(tag(event, "http.response.status_code"), "502", "{event:#}");
    assert_eq!(
        event["contexts"]["response"]["status_code"], 502,
        "{event:#}"
    );
    assert_eq!(tag(event, "error.type"), "502");
    assert_eq!(
        event["contexts"]["Rust Tracing Fields"]["order_id"], 42,
        "the event carries its fields: {event:#}"
    );

    // ERROR logged on a 200: one event; the WARNING before it is a breadcrumb.
    let resp = http_get(addr, "/logs-error-ok", &[]).await;
    assert_eq!(resp.status, 200);
    let got = events(&transport);
    assert_eq!(got.len(), 1);
    assert_request_tags(&got[0], &resp, "/logs-error-ok");
    assert_eq!(tag(&got[0], "http.response.status_code"), "200");
    assert!(
        got[0]["breadcrumbs"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["message"] == "retrying" && c["level"] == "warning")
    );

    // critical! is a fatal event.
    http_get(addr, "/critical", &[]).await;
    let got = events(&transport);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["level"], "fatal");

    // Successes and client errors: nothing.
    for path in ["/ok", "/teapot", "/nowhere"] {
        http_get(addr, path, &[]).await;
    }
    assert!(events(&transport).is_empty());
}

#[tokio::test]
async fn an_err_from_the_inner_service_is_reported() {
    use tower::{Layer, ServiceExt};
    let (obs, transport, _) = instance(|b| b);
    let svc = obs
        .layer()
        .layer(tower::service_fn(|_req: http::Request<String>| async {
            Err::<http::Response<String>, _>(std::io::Error::other("connection reset"))
        }));
    let req = http::Request::get("/jobs")
        .header("x-request-id", "req-err")
        .body(String::new())
        .unwrap();
    let err = svc.oneshot(req).await.expect_err("the inner error");
    // It comes back unchanged: the same kind and message.
    assert_eq!(err.kind(), std::io::ErrorKind::Other);
    assert_eq!(err.to_string(), "connection reset");
    let got = events(&transport);
    assert_eq!(got.len(), 1);
    assert_eq!(tag(&got[0], "correlation_id"), "req-err");
    assert_eq!(tag(&got[0], "error.type"), "std::io::error::Error");
    assert!(got[0]["tags"].get("http.response.status_code").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_keep_their_breadcrumbs_apart() {
    let (obs, transport, _) = instance(|b| b);
    let addr = serve(app(&obs)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50u32 {
        tasks.spawn(async move {
            http_get(
                addr,
                &format!("/crumbs/{n}"),
                &[&format!("x-request-id: req-{n}")],
            )
            .await
        });
    }
    while let Some(resp) = tasks.join_next().await {
        assert_eq!(resp.unwrap().status, 500);
    }
    let got = events(&transport);
    assert_eq!(got.len(), 50);
    let mut seen = std::collections::HashSet::new();
    for event in &got {
        let n: u64 = tag(event, "correlation_id")
            .strip_prefix("req-")
            .unwrap()
            .parse()
            .unwrap();
        assert!(seen.insert(n));
        let crumbs = event["breadcrumbs"]["values"].as_array().unwrap();
        assert_eq!(crumbs.len(), 3, "{crumbs:#?}");
        for (step, c) in crumbs.iter().enumerate() {
            assert_eq!(c["data"]["n"], n, "a breadcrumb of another request: {c}");
            assert_eq!(c["data"]["step"], step as u64);
        }
    }
}

#[tokio::test]
async fn secrets_never_reach_sentry() {
    let (obs, transport, _) = instance(|b| b);
    let addr = serve(app(&obs)).await;
    for path in ["/secret", "/secret-plain"] {
        let resp = http_get(
            addr,
            &format!("{path}?token=QUERY-SECRET-1&page=2"),
            &[
                "authorization: Bearer AUTH-SECRET-2",
                "cookie: session=COOKIE-SECRET-6",
                "x-api-key: KEY-SECRET-7",
            ],
        )
        .await;
        assert_eq!(resp.status, 500);
    }
    let got = events(&transport);
    assert_eq!(got.len(), 2, "{got:#?}");
    let text = serde_json::to_string(&got).unwrap();
    assert!(!text.contains("SECRET"), "a secret reached Sentry: {text}");
    let login = got.iter().find(|e| e["message"] == "login failed").unwrap();
    assert_eq!(
        login["contexts"]["Rust Tracing Fields"]["password"],
        "[REDACTED]"
    );
    assert_eq!(login["contexts"]["Rust Tracing Fields"]["user"], "ann");
    assert_eq!(login["request"]["headers"]["authorization"], "[REDACTED]");
    let crumbs = login["breadcrumbs"]["values"].as_array().unwrap();
    assert_eq!(crumbs[0]["data"]["token"], "[REDACTED]");
    assert_eq!(
        crumbs[1]["data"]["url"],
        "https://api.example/x?token=[REDACTED]&page=2"
    );
    for event in &got {
        assert!(event["request"].get("query_string").is_none());
        assert!(event["request"].get("cookies").is_none());
        assert!(event["user"].is_null(), "no PII is added: {event:#}");
    }
}

#[test]
fn invalid_settings_are_errors_naming_the_setting() {
    let err = Obs::builder()
        .log_writer(std::io::sink())
        .from_vars([("SENTRY_DSN", "not-a-dsn")])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("SENTRY_DSN"), "{err}");
    assert!(matches!(err, mercenary_obs::Error::InvalidEnv { .. }));

    let err = Obs::builder()
        .log_writer(std::io::sink())
        .sentry_dsn("https://no-project@sentry.invalid")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("ObsBuilder::sentry_dsn"), "{err}");

    for rate in [1.5, -0.1, f32::NAN] {
        let err = Obs::builder()
            .log_writer(std::io::sink())
            .from_vars([("SENTRY_DSN", DSN)])
            .sentry_sample_rate(rate)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("sentry_sample_rate"), "{err}");
    }

    // Empty means unset: Sentry off, no error.
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .from_vars([("SENTRY_DSN", "")])
        .build()
        .unwrap();
    assert!(!obs.render_metrics().contains("mercenary_obs_sentry"));
}

// ---------------------------------------------------------------------------------------------
// The real HTTP transport against loopback endpoints.

/// How a fake Sentry endpoint behaves.
#[derive(Clone, Copy)]
enum Endpoint {
    /// Answers 200 and keeps the bodies.
    Accepts,
    /// Reads the request and never answers.
    Hangs,
    /// Answers 429 with `Retry-After: 60`.
    RateLimits,
    /// Answers with this raw HTTP/1.1 response.
    Answers(&'static [u8]),
}

/// Posts the endpoint received: (X-Sentry-Auth header, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

async fn fake_sentry(mode: Endpoint) -> (SocketAddr, Received, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (rx, conns) = (received.clone(), connections.clone());
    tokio::spawn(async move {
        // Bounded: the test makes at most a few hundred connections.
        for _ in 0..2000 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            conns.fetch_add(1, Ordering::SeqCst);
            let rx = rx.clone();
            tokio::spawn(async move {
                loop {
                    let Some((auth, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    rx.lock().unwrap().push((auth, body));
                    let answer: &[u8] = match mode {
                        Endpoint::Accepts => {
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                        }
                        Endpoint::RateLimits => {
                            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 60\r\ncontent-length: 0\r\n\r\n"
                        }
                        Endpoint::Answers(answer) => answer,
                        Endpoint::Hangs => {
                            tokio::time::sleep(Duration::from_secs(120)).await;
                            return;
                        }
                    };
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received, connections)
}

/// Reads one HTTP/1.1 request with a content-length body.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    Some((header("x-sentry-auth"), body))
}

fn http_instance(addr: SocketAddr) -> Obs {
    Obs::builder()
        .service_name("sentry-http-test")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .traces(false)
        .sentry_dsn(format!("http://public@{addr}/7"))
        .sentry_timeout(Duration::from_millis(300))
        .sentry_queue_size(20)
        .shutdown_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

fn dropped(obs: &Obs) -> HashMap<String, f64> {
    samples(
        &obs.render_metrics(),
        mercenary_obs::names::SENTRY_EVENTS_DROPPED,
    )
    .into_iter()
    .collect()
}

fn total(counters: &HashMap<String, f64>) -> f64 {
    counters.values().sum()
}

/// Sends `n` failing requests over keep-alive connections; returns the slowest one.
async fn fail_many(obs: &Obs, n: usize) -> Duration {
    let addr = serve(common::traced_routes().layer(obs.layer())).await;
    let client = common::client();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = common::send(&client, "GET", &format!("http://{addr}/fail"), "").await;
        assert_eq!(status, 500);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{n} requests took {:?}",
        started.elapsed()
    );
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_transport_delivers_envelopes() {
    let (addr, received, _) = fake_sentry(Endpoint::Accepts).await;
    let obs = http_instance(addr);
    fail_many(&obs, 5).await;
    assert!(obs.flush(), "flushed within the timeout");
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 5);
    for (auth, body) in &got {
        assert!(auth.contains("sentry_key=public"), "{auth}");
        assert!(body.contains("\"http.route\":\"/fail\""), "{body}");
    }
    assert_eq!(total(&dropped(&obs)), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sentry_does_not_slow_requests() {
    // A port nothing listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let obs = http_instance(addr);
    let slowest = fail_many(&obs, 1000).await;
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    let started = Instant::now();
    obs.flush();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "flush is bounded"
    );
    // Each failed post is counted once the thread has tried it.
    let mut counters = dropped(&obs);
    while total(&counters) < 1000.0 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        counters = dropped(&obs);
    }
    assert_eq!(
        total(&counters),
        1000.0,
        "every event is counted: {counters:?}"
    );
    assert!(counters["{reason=\"send_failed\"}"] > 0.0, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sentry_does_not_slow_requests_or_grow() {
    let (addr, received, connections) = fake_sentry(Endpoint::Hangs).await;
    let obs = http_instance(addr);
    let started = Instant::now();
    let slowest = fail_many(&obs, 1000).await;
    let elapsed = started.elapsed();
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    // One post at a time, each bounded by the 300 ms timeout: the queue (20) overflows and
    // what does not fit is dropped at once.
    let counters = dropped(&obs);
    let attempted = received.lock().unwrap().len() as f64;
    assert!(
        attempted <= 21.0 + elapsed.as_secs_f64() / 0.3 + 1.0,
        "{attempted} posts in {elapsed:?}"
    );
    assert!(
        counters["{reason=\"queue_full\"}"] >= 1000.0 - 21.0 - attempted,
        "{counters:?}"
    );
    let t = Instant::now();
    assert!(!obs.flush(), "the queue cannot be emptied in 500 ms");
    assert!(t.elapsed() < Duration::from_secs(2), "flush is bounded");
    // One connection per timed-out post, never one per event.
    let opened = connections.load(Ordering::SeqCst) as f64;
    assert!(
        opened <= 2.0 + started.elapsed().as_secs_f64() / 0.3,
        "{opened} connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_sentry_gets_nothing_before_the_retry_time() {
    let (addr, received, _) = fake_sentry(Endpoint::RateLimits).await;
    let obs = http_instance(addr);
    let slowest = fail_many(&obs, 1000).await;
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    assert!(obs.flush());
    // More requests later, still within the 60 s.
    fail_many(&obs, 10).await;
    assert!(obs.flush());
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "after the 429 with Retry-After: 60, nothing more was posted"
    );
    let counters = dropped(&obs);
    assert_eq!(total(&counters), 1010.0, "{counters:?}");
    assert!(counters["{reason=\"rate_limited\"}"] >= 1.0);
}

/// `X-Sentry-Rate-Limits` on an accepted post: error events wait until the time it gives (3 s
/// here); a limit on another category (transactions) holds nothing back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_sentry_rate_limits_holds_back_the_limited_category_until_its_time() {
    let (addr, received, _) = fake_sentry(Endpoint::Answers(
        b"HTTP/1.1 200 OK\r\nx-sentry-rate-limits: 3:error:organization\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    ))
    .await;
    let obs = http_instance(addr);
    let started = Instant::now();
    fail_many(&obs, 10).await;
    assert!(obs.flush());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "too slow to stay within the limit"
    );
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "the first event was posted, the nine after it were held back"
    );
    let counters = dropped(&obs);
    assert_eq!(counters["{reason=\"rate_limited\"}"], 9.0, "{counters:?}");
    assert_eq!(total(&counters), 9.0, "{counters:?}");
    // Once the limit has passed, the next event is posted (and limited again).
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(started.elapsed()) + Duration::from_millis(500),
    )
    .await;
    fail_many(&obs, 2).await;
    assert!(obs.flush());
    assert_eq!(received.lock().unwrap().len(), 2);
    assert_eq!(dropped(&obs)["{reason=\"rate_limited\"}"], 10.0);

    // A limit on transactions only: every error event is posted.
    let (addr, received, _) = fake_sentry(Endpoint::Answers(
        b"HTTP/1.1 200 OK\r\nx-sentry-rate-limits: 60:transaction:organization\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    ))
    .await;
    let obs = http_instance(addr);
    fail_many(&obs, 5).await;
    assert!(obs.flush());
    assert_eq!(received.lock().unwrap().len(), 5);
    assert_eq!(total(&dropped(&obs)), 0.0);
}

/// On a 429, `X-Sentry-Rate-Limits` says what is limited, instead of everything for 60 s: with
/// only transactions limited, each error event is still posted (and counted when refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_follows_its_x_sentry_rate_limits() {
    let (addr, received, _) = fake_sentry(Endpoint::Answers(
        b"HTTP/1.1 429 Too Many Requests\r\nx-sentry-rate-limits: 60:transaction:organization\r\ncontent-length: 0\r\n\r\n",
    ))
    .await;
    let obs = http_instance(addr);
    fail_many(&obs, 20).await;
    assert!(obs.flush());
    assert_eq!(received.lock().unwrap().len(), 20);
    let counters = dropped(&obs);
    assert_eq!(counters["{reason=\"rate_limited\"}"], 20.0, "{counters:?}");
    assert_eq!(total(&counters), 20.0, "{counters:?}");
}

/// The event JSON of each envelope posted (the item line with an `event_id`).
fn posted_events(received: &Received) -> Vec<Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, body)| {
            let mut lines = body.lines();
            while let Some(line) = lines.next() {
                let item: Value = serde_json::from_str(line).ok()?;
                if item["type"] == "event" {
                    return serde_json::from_str(lines.next()?).ok();
                }
            }
            None
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentry_environment_and_release_come_from_the_environment() {
    let (addr, received, _) = fake_sentry(Endpoint::Accepts).await;
    let dsn = format!("http://public@{addr}/7");
    let vars = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("SENTRY_DSN", dsn.clone()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=production,service.version=1.2.3".to_string(),
            ),
        ];
        v.extend(extra.iter().map(|(k, x)| (*k, x.to_string())));
        v
    };
    let build = |vars: Vec<(&'static str, String)>| {
        Obs::builder()
            .service_name("sentry-env-test")
            .log_writer(std::io::sink())
            .process_metrics(false)
            .traces(false)
            .from_vars(vars)
            .build()
            .unwrap()
    };
    // The variables win over what the resource says.
    let obs = build(vars(&[
        ("SENTRY_ENVIRONMENT", "staging-eu"),
        ("SENTRY_RELEASE", "billing@2.0.1+abc"),
    ]));
    fail_many(&obs, 1).await;
    assert!(obs.flush());
    let events = posted_events(&received);
    assert_eq!(events.len(), 1, "{:?}", received.lock().unwrap());
    assert_eq!(events[0]["environment"], "staging-eu", "{:#}", events[0]);
    assert_eq!(events[0]["release"], "billing@2.0.1+abc", "{:#}", events[0]);
    drop(obs);

    // Without them: the deployment environment, and `service@version`.
    received.lock().unwrap().clear();
    let obs = build(vars(&[]));
    fail_many(&obs, 1).await;
    assert!(obs.flush());
    let events = posted_events(&received);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["environment"], "production", "{:#}", events[0]);
    assert_eq!(
        events[0]["release"], "sentry-env-test@1.2.3",
        "{:#}",
        events[0]
    );
}

/// `ObsBuilder::redact_fields` replaces the list of sensitive words, for the log lines and for
/// what reaches Sentry alike.
#[tokio::test]
async fn redact_fields_applies_to_log_lines_and_sentry() {
    let (obs, transport, logs) = instance(|b| {
        b.redact_fields(["ssn", "session"])
            .log_headers(["x-session-id", "authorization"])
    });
    let app = Router::new()
        .route(
            "/lookup",
            get(|| async {
                tracing::info!(ssn = "078-05-1120", "looking up");
                tracing::error!(
                    ssn = "078-05-1120",
                    password = "not-a-secret-now",
                    user = "ann",
                    "lookup failed"
                );
                StatusCode::INTERNAL_SERVER_ERROR
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    let resp = http_get(
        addr,
        "/lookup?session=S-123&page=2",
        &["x-session-id: S-456", "authorization: Bearer visible"],
    )
    .await;
    assert_eq!(resp.status, 500);

    assert!(obs.flush());
    let text = logs.text();
    assert!(
        !text.contains("078-05-1120") && !text.contains("S-456"),
        "{text}"
    );
    let lines = logs.json_lines();
    let failed = lines
        .iter()
        .find(|l| l["message"] == "lookup failed")
        .unwrap();
    assert_eq!(failed["ssn"], "[REDACTED]");
    assert_eq!(failed["user"], "ann");
    // The list is replaced, not extended: `password` is an ordinary word now.
    assert_eq!(failed["password"], "not-a-secret-now");
    let access = lines
        .iter()
        .find(|l| l["message"] == "request completed")
        .unwrap();
    assert_eq!(access["http.request.header.x-session-id"], "[REDACTED]");
    assert_eq!(
        access["http.request.header.authorization"],
        "Bearer visible"
    );

    let got = events(&transport);
    assert_eq!(got.len(), 1, "{got:#?}");
    let sent = serde_json::to_string(&got).unwrap();
    for secret in ["078-05-1120", "S-123", "S-456"] {
        assert!(!sent.contains(secret), "{secret} reached Sentry: {sent}");
    }
    let event = &got[0];
    assert_eq!(
        event["contexts"]["Rust Tracing Fields"]["ssn"],
        "[REDACTED]"
    );
    assert_eq!(
        event["contexts"]["Rust Tracing Fields"]["password"],
        "not-a-secret-now"
    );
    assert_eq!(event["request"]["headers"]["x-session-id"], "[REDACTED]");
    let crumbs = event["breadcrumbs"]["values"].as_array().unwrap();
    let looking = crumbs
        .iter()
        .find(|c| c["message"] == "looking up")
        .expect("the INFO line is a breadcrumb");
    assert_eq!(looking["data"]["ssn"], "[REDACTED]");
}
