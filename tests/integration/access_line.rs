//! The request path's fast paths: the INFO access line written without a `tracing` event, and
//! the request span opened without its own fields (handed to the span context layer as they
//! are, made attributes or JSON only when needed). Their oracle is the slow path: an instance
//! whose `RUST_LOG` has a span directive takes it (the filter then depends on the entered
//! spans and their fields). Everything else being equal, both instances must write the same
//! lines byte for byte, but for the timestamp, the trace and span IDs and the duration, and
//! export the same attributes, in the same order, for the request span of a kept trace.

use crate::common;

use axum::Router;
use axum::routing::get;
use common::{Capture, get as http_get, serve};
use mercenary_obs::Obs;

/// A span directive that matches no span: it changes no decision, only the path taken.
const EVENT_PATH_FILTER: &str = "info,[never_opened]=trace";

struct Setup {
    traces: bool,
    /// 4xx traces kept as errors (`ObsBuilder::sample_client_errors`).
    client_errors: bool,
    redact: &'static [&'static str],
    value_cap: Option<usize>,
    /// A span (from tower-http's `TraceLayer`) around the request span.
    outer_span: bool,
}

const PLAIN: Setup = Setup {
    traces: true,
    client_errors: false,
    redact: &[],
    value_cap: None,
    outer_span: false,
};

fn instance(setup: &Setup, filter: &str) -> (Obs, Capture) {
    let capture = Capture::default();
    let mut builder = Obs::builder()
        .service_name("access-line")
        .log_headers(["user-agent", "authorization"])
        .log_writer(capture.clone())
        .log_filter(filter)
        .process_metrics(false)
        .traces(setup.traces)
        // Every trace kept, to compare what is exported (an outer span's too).
        .success_ratio(1.0)
        .sample_client_errors(setup.client_errors);
    if !setup.redact.is_empty() {
        builder = builder.redact_fields(setup.redact.iter().copied());
    }
    if let Some(cap) = setup.value_cap {
        builder = builder.log_value_max_bytes(cap);
    }
    (builder.build().unwrap(), capture)
}

fn app(obs: &Obs, outer_span: bool) -> Router {
    let app = Router::new()
        .route(
            "/logs/{id}",
            get(|| async {
                tracing::info!(step = "one", "handler line");
                "ok"
            }),
        )
        .route("/quiet/{id}", get(|| async { "ok" }))
        .route(
            "/missing/{id}",
            get(|| async { (axum::http::StatusCode::NOT_FOUND, "no such thing") }),
        )
        .route(
            "/fail/{id}",
            get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/panic/{id}",
            get(|| async {
                if true {
                    panic!("the handler gave up on this request");
                }
                "unreachable"
            }),
        )
        .layer(obs.layer());
    if outer_span {
        // At INFO, so that `RUST_LOG=info` keeps it.
        app.layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::INFO),
            ),
        )
    } else {
        app
    }
}

/// The value of each key that differs from run to run replaced by `_`.
fn normalize(line: &str) -> String {
    let mut out = line.to_string();
    for key in ["timestamp", "trace_id", "span_id", "duration_ms"] {
        let marker = format!("\"{key}\":");
        let Some(at) = out.find(&marker) else {
            continue;
        };
        let start = at + marker.len();
        let end = start
            + out[start..]
                .find([',', '}'])
                .expect("a value ends with `,` or `}`");
        out.replace_range(start..end, "\"_\"");
    }
    out
}

/// What an instance wrote and kept for one request.
#[derive(Debug, PartialEq)]
struct Seen {
    /// Every line, normalized.
    lines: Vec<String>,
    /// The access line, normalized.
    access: String,
    /// The kept request span's name and attributes (`"name":…` and `"attributes":{…}`).
    span: String,
}

/// The request span's name, status and attributes in a `recent_traces_json` answer.
fn server_span(traces: &str) -> String {
    let at = traces
        .find(r#""kind":"Server""#)
        .unwrap_or_else(|| panic!("a SERVER span: {traces}"));
    let name = traces[..at].rfind(r#""name":"#).unwrap();
    let status = at + traces[at..].find(r#""status":"#).unwrap();
    let end = status + traces[status..].find(r#"},"events""#).unwrap();
    format!("{} {}", &traces[name..at], &traces[status..=end])
}

/// The status a test route answers with.
fn expected_status(path: &str) -> u16 {
    if path.starts_with("/fail/") {
        503
    } else if path.starts_with("/missing/") {
        404
    } else if path.starts_with("/panic/") {
        500
    } else {
        200
    }
}

/// What each instance (fast path, then event path) writes and keeps for `path`.
async fn access_lines(setup: &Setup, path: &str) -> (Seen, Seen) {
    let mut seen = Vec::new();
    for filter in ["info", EVENT_PATH_FILTER] {
        let (obs, logs) = instance(setup, filter);
        let headers = [
            ("user-agent", "curl/8.0 \"quoted\""),
            ("authorization", "Bearer secret-token"),
            ("x-request-id", "req-0123456789"),
        ];
        if setup.outer_span {
            // The outer span must belong to the instance's subscriber: the router is called
            // in process, with the instance's dispatcher current while it runs.
            use tower::ServiceExt;
            use tracing::instrument::WithSubscriber;
            let mut request = axum::http::Request::get(path);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let dispatch = obs.dispatch().unwrap().clone();
            let response = app(&obs, true)
                .oneshot(request.body(axum::body::Body::empty()).unwrap())
                .with_subscriber(dispatch.clone())
                .await
                .unwrap();
            assert_eq!(response.status(), expected_status(path));
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .with_subscriber(dispatch)
                .await
                .unwrap();
            assert_eq!(&body[..], b"ok");
        } else {
            let addr = serve(app(&obs, false)).await;
            let lines: Vec<String> = headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let resp = http_get(addr, path, &lines).await;
            assert_eq!(resp.status, expected_status(path));
        }
        assert!(obs.flush());
        let text = logs.text();
        let access: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"duration_ms\":"))
            .collect();
        assert_eq!(access.len(), 1, "one access line:\n{text}");
        assert!(!text.contains("secret-token"), "{text}");
        let span = if setup.traces {
            server_span(&obs.recent_traces_json().unwrap())
        } else {
            String::new()
        };
        seen.push(Seen {
            lines: text.lines().map(normalize).collect(),
            access: normalize(access[0]),
            span,
        });
    }
    let slow = seen.pop().unwrap();
    let fast = seen.pop().unwrap();
    (fast, slow)
}

#[tokio::test]
async fn the_written_line_is_the_line_of_the_tracing_event() {
    let cases: [(&str, Setup, &str); 11] = [
        // Kept as an error for its status alone (its sampling reason says so).
        (
            "a client error, kept as an error",
            Setup {
                client_errors: true,
                ..PLAIN
            },
            "/missing/11",
        ),
        // How the request ended: the status, `error.type`, the span's error status and the
        // panic's message.
        ("traces, a failed request", PLAIN, "/fail/7"),
        ("traces, a panicking handler", PLAIN, "/panic/8"),
        (
            "redacted status and error type",
            Setup {
                redact: &["status_code", "error.type", "authorization"],
                ..PLAIN
            },
            "/fail/9",
        ),
        (
            "a panic message over the cap",
            Setup {
                value_cap: Some(16),
                ..PLAIN
            },
            "/panic/10",
        ),
        // The request span's fields were rendered for the handler's line.
        ("traces, handler logs", PLAIN, "/logs/1"),
        // Not rendered: the line shadows every field of the request span.
        ("traces, quiet handler", PLAIN, "/quiet/2"),
        (
            "no traces (spans rendered when opened)",
            Setup {
                traces: false,
                ..PLAIN
            },
            "/logs/3",
        ),
        (
            "redacted keys",
            Setup {
                redact: &["path", "method", "authorization"],
                ..PLAIN
            },
            "/logs/4",
        ),
        (
            "values over the cap",
            Setup {
                value_cap: Some(16),
                ..PLAIN
            },
            "/quiet/0123456789abcdefghijklmnopqrstuvwxyz",
        ),
        (
            "inside an outer span (its fields are inherited)",
            Setup {
                traces: false,
                outer_span: true,
                ..PLAIN
            },
            "/logs/5",
        ),
    ];
    for (name, setup, path) in cases {
        let (fast, slow) = access_lines(&setup, path).await;
        assert_eq!(fast.access, slow.access, "{name}");
        assert_eq!(fast.lines, slow.lines, "{name}");
        assert_eq!(fast.span, slow.span, "{name}");
        if setup.outer_span {
            // The outer span's own fields are on the line.
            assert!(
                fast.access
                    .contains(r#""uri":"/logs/5","version":"HTTP/1.1""#),
                "{}",
                fast.access
            );
        }
        if setup.traces {
            assert!(
                fast.span.contains(r#""correlation_id":"req-0123456789""#),
                "{}",
                fast.span
            );
        }
    }
}

#[tokio::test]
async fn an_outer_span_with_traces_on_keeps_the_event() {
    // The request span is then a lazily recorded child whose IDs are not rendered yet: the
    // event path renders them. The line must still be complete.
    let setup = Setup {
        outer_span: true,
        ..PLAIN
    };
    let (fast, slow) = access_lines(&setup, "/quiet/6").await;
    assert_eq!(fast, slow);
    assert!(
        fast.access.contains(r#""uri":"/quiet/6""#),
        "{}",
        fast.access
    );
    let line: serde_json::Value = serde_json::from_str(&fast.access).unwrap();
    assert_eq!(line["correlation_id"], "req-0123456789");
    assert_eq!(line["http.route"], "/quiet/{id}");
    assert_eq!(line["url.path"], "/quiet/6");
}
