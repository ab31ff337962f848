//! JSON log lines as a log pipeline (Loki, a terminal, a SIEM) receives them.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use axum::Router;
use axum::routing::get;
use common::{Capture, assert_schema, get as http_get, serve};
use mercenary_obs::{Error, LogFormat, Obs};
use tracing::dispatcher::with_default;

fn instance(vars: &[(&str, &str)]) -> (Obs, Capture) {
    let capture = Capture::default();
    let obs = Obs::builder()
        .service_name("logs-test")
        .log_headers(["user-agent", "authorization", "x-api-key"])
        .log_writer(capture.clone())
        .process_metrics(false)
        .from_vars(vars.iter().copied())
        .build()
        .unwrap();
    (obs, capture)
}

#[tokio::test]
async fn access_line_and_handler_lines_follow_the_schema() {
    let (obs, logs) = instance(&[]);
    let app = Router::new()
        .route(
            "/signup",
            get(|| async {
                // A known minimum duration for the access line's `duration_ms`.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                tracing::info!(
                    plan = "pro",
                    password = "hunter2",
                    api_key = "k-123",
                    "user signed up"
                );
                "ok"
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    let resp = http_get(
        addr,
        "/signup?token=sekret-query",
        &[
            "user-agent: curl/8.0",
            "authorization: Bearer abc.def",
            "x-api-key: key-999",
        ],
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(obs.flush());
    let text = logs.text();
    for secret in ["hunter2", "k-123", "abc.def", "key-999", "sekret-query"] {
        assert!(
            !text.contains(secret),
            "`{secret}` leaked into the log:\n{text}"
        );
    }
    let lines = logs.json_lines();
    lines.iter().for_each(assert_schema);
    let handler = lines
        .iter()
        .find(|l| l["message"] == "user signed up")
        .unwrap();
    assert_eq!(handler["level"], "INFO");
    assert_eq!(handler["service"], "logs-test");
    assert_eq!(handler["plan"], "pro");
    assert_eq!(handler["password"], "[REDACTED]");
    assert_eq!(handler["api_key"], "[REDACTED]");
    assert_eq!(handler["http.route"], "/signup");

    let access = lines
        .iter()
        .find(|l| l["message"] == "request completed")
        .unwrap();
    assert_eq!(access["target"], "mercenary_obs::access");
    assert_eq!(access["http.request.method"], "GET");
    assert_eq!(access["http.route"], "/signup");
    assert_eq!(access["url.path"], "/signup", "no query string");
    assert_eq!(access["http.response.status_code"], 200);
    // The handler slept 20 ms: the request took at least that, and the access line says the
    // same as the histogram (one measurement, to the microsecond).
    let duration_ms = access["duration_ms"].as_f64().unwrap();
    assert!(
        (20.0..10_000.0).contains(&duration_ms),
        "duration_ms {duration_ms}"
    );
    let exposition = obs.render_metrics();
    let sum = common::samples(&exposition, "http_server_request_duration_seconds_sum");
    assert_eq!(sum.len(), 1, "{sum:?}");
    assert!(
        (sum[0].1 * 1000.0 - duration_ms).abs() < 0.002,
        "histogram {} s, access line {duration_ms} ms",
        sum[0].1
    );
    assert!(access.get("error.type").is_none());
    assert_eq!(access["http.request.header.user-agent"], "curl/8.0");
    assert_eq!(access["http.request.header.authorization"], "[REDACTED]");
    assert_eq!(access["http.request.header.x-api-key"], "[REDACTED]");
    assert_eq!(access["correlation_id"], handler["correlation_id"]);
    assert_eq!(access["trace_id"], handler["trace_id"]);
}

#[tokio::test]
async fn access_levels_follow_the_outcome() {
    let (obs, logs) = instance(&[]);
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/fail",
            get(|| async { (http::StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/panic",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("kaboom \u{1b}[31m");
                }
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    for path in ["/ok", "/nope", "/fail", "/panic"] {
        http_get(addr, path, &[]).await;
    }
    assert!(obs.flush());
    let lines = logs.json_lines();
    let level_of = |path: &str| {
        let l = lines
            .iter()
            .find(|l| l["url.path"] == path && l["message"] == "request completed")
            .unwrap_or_else(|| panic!("no access line for {path}"));
        (
            l["level"].as_str().unwrap().to_string(),
            l.get("error.type").cloned(),
        )
    };
    assert_eq!(level_of("/ok"), ("INFO".into(), None));
    assert_eq!(level_of("/nope"), ("WARNING".into(), None));
    assert_eq!(level_of("/fail"), ("ERROR".into(), Some("503".into())));
    assert_eq!(level_of("/panic"), ("ERROR".into(), Some("panic".into())));
    let panic_line = lines.iter().find(|l| l["url.path"] == "/panic").unwrap();
    assert_eq!(panic_line["exception.message"], "kaboom \u{1b}[31m");
    assert!(!logs.text().contains('\u{1b}'), "raw ESC written");
}

#[test]
fn levels_critical_escaping_and_value_cap() {
    let (obs, logs) = instance(&[("RUST_LOG", "trace")]);
    with_default(obs.dispatch().unwrap(), || {
        tracing::trace!("t");
        tracing::debug!("d");
        tracing::info!("i");
        tracing::warn!("w");
        tracing::error!("e");
        mercenary_obs::critical!(db = "primary", "c");
        tracing::info!(
            evil = "line1\nline2\r\u{1b}[2J\u{2028}\"}",
            big = "x".repeat(20_000).as_str(),
            n = 42u64,
            f = 1.5f64,
            nan = f64::NAN,
            ok = true,
            "msg with \"quotes\" and \n newline"
        );
    });
    assert!(obs.flush());
    let text = logs.text();
    assert_eq!(text.lines().count(), 7, "one line per event:\n{text}");
    let lines = logs.json_lines();
    lines.iter().for_each(assert_schema);
    let levels: Vec<_> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(
        levels,
        [
            "TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "INFO"
        ]
    );
    assert!(lines[5].get("critical").is_none());
    assert_eq!(lines[5]["db"], "primary");
    let last = &lines[6];
    assert_eq!(last["evil"], "line1\nline2\r\u{1b}[2J\u{2028}\"}");
    assert_eq!(last["message"], "msg with \"quotes\" and \n newline");
    let big = last["big"].as_str().unwrap();
    assert!(big.ends_with("…[truncated]"), "cap marker");
    assert_eq!(big.len(), 8192 + "…[truncated]".len());
    assert_eq!(last["n"], 42);
    assert_eq!(last["f"], 1.5);
    assert_eq!(last["nan"], "NaN");
    assert_eq!(last["ok"], true);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{2028}'));
    assert!(
        lines
            .iter()
            .all(|l| l.get("correlation_id").is_none() && l.get("trace_id").is_none())
    );
}

#[tokio::test]
async fn rust_log_filters_events_but_never_the_correlation_id() {
    let (obs, logs) = instance(&[("RUST_LOG", "warn")]);
    let app = Router::new()
        .route(
            "/x",
            get(|| async {
                tracing::info!("hidden");
                tracing::warn!("shown");
                "ok"
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    http_get(addr, "/x", &["x-request-id: filtered-1"]).await;
    http_get(addr, "/missing", &[]).await;
    assert!(obs.flush());
    let lines = logs.json_lines();
    assert!(lines.iter().all(|l| l["message"] != "hidden"));
    let shown = lines.iter().find(|l| l["message"] == "shown").unwrap();
    assert_eq!(shown["correlation_id"], "filtered-1");
    // The INFO access line of /x is filtered, the WARNING one of the 404 is not.
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["http.response.status_code"], 404);

    let (obs, logs) = instance(&[("RUST_LOG", "info,mercenary_obs::access=off")]);
    let addr = serve(
        Router::new()
            .route(
                "/y",
                get(|| async {
                    tracing::info!("serving y");
                    "y"
                }),
            )
            .layer(obs.layer()),
    )
    .await;
    let resp = http_get(addr, "/y", &["x-request-id: quiet-1"]).await;
    assert_eq!((resp.status, &resp.body[..]), (200, &b"y"[..]));
    assert!(obs.flush());
    // The request went through the layer (measured, its handler's line written with its
    // correlation ID); only its access line is switched off.
    let exposition = obs.render_metrics();
    assert_eq!(
        common::samples(&exposition, "http_server_request_duration_seconds_count"),
        vec![(
            "{error_type=\"\",http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/y\"}"
                .to_string(),
            1.0
        )],
        "{exposition}"
    );
    let lines = logs.json_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["message"], "serving y");
    assert_eq!(lines[0]["correlation_id"], "quiet-1");
    assert!(
        lines.iter().all(|l| l["message"] != "request completed"),
        "access lines can be switched off: {lines:?}"
    );
}

/// Span directives (`[span]=level`) follow spans as they are entered: a DEBUG line inside the
/// named span passes, the same line outside it does not.
#[tokio::test]
async fn rust_log_span_directives_follow_spans() {
    let (obs, logs) = instance(&[("RUST_LOG", "info,[checkout]=debug")]);
    let app = Router::new()
        .route(
            "/checkout",
            get(|| async {
                tracing::debug!("outside the span");
                let span = tracing::info_span!("checkout", cart = 7);
                let _entered = span.enter();
                tracing::debug!("inside the span");
                "ok"
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    http_get(addr, "/checkout", &[]).await;
    assert!(obs.flush());
    let lines = logs.json_lines();
    let inside = lines
        .iter()
        .find(|l| l["message"] == "inside the span")
        .expect("the span directive enables DEBUG inside `checkout`");
    assert_eq!(inside["cart"], 7);
    assert!(lines.iter().all(|l| l["message"] != "outside the span"));
}

#[tokio::test]
async fn pretty_format_is_for_terminals_and_still_redacts() {
    let (obs, logs) = instance(&[("MERCENARY_OBS_LOG_FORMAT", "pretty")]);
    let app = Router::new()
        .route(
            "/p",
            get(|| async {
                tracing::info!(password = "hunter2", note = "a\u{1b}[31mb", "pretty line");
                "ok"
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    http_get(addr, "/p", &["x-request-id: pretty-1"]).await;
    assert!(obs.flush());
    let text = logs.text();
    println!("{text}");
    assert!(text.contains("pretty line"), "{text}");
    assert!(text.contains("pretty-1"), "correlation id shown: {text}");
    assert!(
        text.contains("[REDACTED]") && !text.contains("hunter2"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no raw ESC (the sink is not a terminal)"
    );
    assert!(serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).is_err());
}

/// A sink that blocks until released, like a stalled pipe to a log shipper.
#[derive(Clone)]
struct StalledSink {
    gate: Arc<(Mutex<bool>, Condvar)>,
    out: Capture,
}

impl Write for StalledSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (m, c) = &*self.gate;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait(open).unwrap();
        }
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stalled_sink_never_blocks_logging_and_drops_are_counted() {
    let sink = StalledSink {
        gate: Arc::new((Mutex::new(false), Condvar::new())),
        out: Capture::default(),
    };
    let obs = Obs::builder()
        .log_writer(sink.clone())
        .log_queue_bytes(64 * 1024)
        .process_metrics(false)
        .build()
        .unwrap();
    const N: usize = 20_000;
    with_default(obs.dispatch().unwrap(), || {
        for i in 0..N {
            tracing::info!(i, "flood");
        }
    });
    let dropped = obs.log_lines_dropped();
    assert!(dropped > 0, "a stalled sink with a 64 KiB queue must drop");
    let exposition = obs.render_metrics();
    assert!(
        exposition.contains(&format!("mercenary_obs_log_lines_dropped_total {dropped}")),
        "{exposition}"
    );
    {
        let (m, c) = &*sink.gate;
        *m.lock().unwrap() = true;
        c.notify_all();
    }
    assert!(obs.flush());
    let written = sink.out.text().lines().count() as u64;
    assert_eq!(
        written + dropped,
        N as u64,
        "every line is written or counted"
    );
}

#[test]
fn bad_configuration_is_an_error_naming_the_setting() {
    let err = Obs::builder()
        .from_vars([("MERCENARY_OBS_LOG_FORMAT", "xml")])
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidEnv {
                variable: "MERCENARY_OBS_LOG_FORMAT",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("MERCENARY_OBS_LOG_FORMAT") && err.to_string().contains("xml")
    );

    let err = Obs::builder()
        .from_vars([("RUST_LOG", "info,foo=notalevel")])
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidEnv {
                variable: "RUST_LOG",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("RUST_LOG"));

    let err = Obs::builder()
        .from_vars([("OTEL_RESOURCE_ATTRIBUTES", "service.version")])
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("OTEL_RESOURCE_ATTRIBUTES"),
        "{err}"
    );

    let err = Obs::builder()
        .duration_buckets(vec![1.0, 0.5])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("duration_buckets"), "{err}");
    let err = Obs::builder()
        .request_id_header("bad header")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("request_id_header"), "{err}");
    let err = Obs::builder().log_filter("=[").build().unwrap_err();
    assert!(err.to_string().contains("log_filter"), "{err}");

    // Code wins over the environment.
    let capture = Capture::default();
    let obs = Obs::builder()
        .log_format(LogFormat::Json)
        .service_name("from-code")
        .log_writer(capture.clone())
        .process_metrics(false)
        .from_vars([
            ("MERCENARY_OBS_LOG_FORMAT", "pretty"),
            ("OTEL_SERVICE_NAME", "from-env"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.version=9.9,deployment.environment.name=prod",
            ),
        ])
        .build()
        .unwrap();
    with_default(obs.dispatch().unwrap(), || tracing::info!("x"));
    assert!(obs.flush());
    assert_eq!(capture.json_lines()[0]["service"], "from-code");
    assert!(obs.render_metrics().contains(
        "target_info{deployment_environment=\"prod\",service_name=\"from-code\",service_version=\"9.9\"} 1"
    ));
}

/// Span fields reach the lines logged inside the span, redacted and typed, in both the lazy
/// rendering (traces on) and the eager one (traces off).
#[test]
fn span_fields_on_lines_inside_the_span() {
    for traces in [true, false] {
        let capture = Capture::default();
        let obs = Obs::builder()
            .log_writer(capture.clone())
            .process_metrics(false)
            .traces(traces)
            .build()
            .unwrap();
        with_default(obs.dispatch().unwrap(), || {
            let outer =
                tracing::info_span!("job", job_id = 7u64, secret_token = "s3cr3t", ratio = 0.5);
            let _o = outer.enter();
            let inner = tracing::info_span!("step", step = "load", job_id = 8u64, flag = true, dbg = ?vec![1, 2]);
            let _i = inner.enter();
            tracing::info!(n = 1, "inside");
        });
        assert!(obs.flush());
        let lines = capture.json_lines();
        let line = lines.iter().find(|l| l["message"] == "inside").unwrap();
        assert_eq!(line["step"], "load", "traces {traces}: {line}");
        assert_eq!(
            line["job_id"], 8,
            "the inner span shadows the outer: {line}"
        );
        assert_eq!(line["secret_token"], "[REDACTED]");
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["flag"], true);
        assert_eq!(line["dbg"], "[1, 2]");
        assert_eq!(line["n"], 1);
        assert!(!capture.text().contains("s3cr3t"));
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.iter().filter(|k| **k == "job_id").count(), 1);
    }
}

/// `ObsBuilder::redact_fields` replaces the sensitive words: fields and logged headers named
/// with them are redacted, the default words (`password`) no longer are.
#[tokio::test]
async fn redact_fields_replaces_the_sensitive_words() {
    let logs = Capture::default();
    let obs = Obs::builder()
        .service_name("logs-test")
        .log_writer(logs.clone())
        .audit_writer(logs.clone())
        .process_metrics(false)
        .redact_fields(["ssn", "session"])
        .log_headers(["x-session-id", "authorization"])
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/lookup",
            get(|| async {
                tracing::info!(
                    ssn = "078-05-1120",
                    user_session = "S-789",
                    password = "plain-now",
                    "looked up"
                );
                mercenary_obs::audit!(
                    actor = "user:1",
                    action = "ssn.read",
                    outcome = "success",
                    ssn = "078-05-1120",
                );
                "ok"
            }),
        )
        .layer(obs.layer());
    let addr = serve(app).await;
    let resp = http_get(
        addr,
        "/lookup",
        &["x-session-id: S-456", "authorization: Bearer visible"],
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(obs.flush());
    let text = logs.text();
    for secret in ["078-05-1120", "S-789", "S-456"] {
        assert!(!text.contains(secret), "`{secret}` leaked:\n{text}");
    }
    let lines = logs.json_lines();
    let line = lines.iter().find(|l| l["message"] == "looked up").unwrap();
    assert_eq!(line["ssn"], "[REDACTED]");
    assert_eq!(
        line["user_session"], "[REDACTED]",
        "the word anywhere in the name"
    );
    assert_eq!(
        line["password"], "plain-now",
        "the default list is replaced"
    );
    let audit = lines.iter().find(|l| l["action"] == "ssn.read").unwrap();
    assert_eq!(audit["ssn"], "[REDACTED]");
    let access = lines
        .iter()
        .find(|l| l["message"] == "request completed")
        .unwrap();
    assert_eq!(access["http.request.header.x-session-id"], "[REDACTED]");
    assert_eq!(
        access["http.request.header.authorization"],
        "Bearer visible"
    );
}
