//! Correlation IDs over real HTTP: kept, generated, replaced, echoed, and on every log line.

use crate::common;

use axum::Router;
use axum::routing::get;
use common::{Capture, get as http_get, raw, serve};
use mercenary_obs::{CorrelationId, Obs};

fn app(obs: &Obs) -> Router {
    Router::new()
        .route(
            "/work",
            get(|id: CorrelationId| async move {
                tracing::info!(step = 1, "handler started");
                let from_fn = mercenary_obs::correlation_id()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                {
                    let span = tracing::info_span!("db.query", db.system = "postgresql");
                    let _e = span.enter();
                    tracing::warn!("slow query");
                }
                async {
                    tracing::info!("in an instrumented child future");
                }
                .instrument_child()
                .await;
                format!("{id}|{from_fn}")
            }),
        )
        .layer(obs.layer())
}

trait InstrumentChild: Sized {
    fn instrument_child(self) -> tracing::instrument::Instrumented<Self>;
}
impl<F: std::future::Future> InstrumentChild for F {
    fn instrument_child(self) -> tracing::instrument::Instrumented<Self> {
        use tracing::Instrument;
        self.instrument(tracing::info_span!("child.task"))
    }
}

fn instance() -> (Obs, Capture) {
    let capture = Capture::default();
    let obs = Obs::builder()
        .service_name("corr-test")
        .log_writer(capture.clone())
        .process_metrics(false)
        .build()
        .unwrap();
    (obs, capture)
}

#[tokio::test]
async fn valid_id_is_kept_echoed_and_on_every_line() {
    let (obs, logs) = instance();
    let addr = serve(app(&obs)).await;
    let resp = http_get(addr, "/work", &["x-request-id: req-42.abc:7"]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-request-id").as_deref(), Some("req-42.abc:7"));
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        "req-42.abc:7|req-42.abc:7"
    );
    assert!(obs.flush());
    let lines = logs.json_lines();
    println!("{}", logs.text());
    let request_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["target"] != "axum::serve")
        .collect();
    // handler started, slow query, child future, access line
    assert_eq!(request_lines.len(), 4, "{lines:#?}");
    for line in &request_lines {
        assert_eq!(line["correlation_id"], "req-42.abc:7", "{line}");
    }
    let messages: Vec<_> = request_lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "handler started",
            "slow query",
            "in an instrumented child future",
            "request completed"
        ]
    );
    // trace ids agree across the request, span ids differ for the child span
    let trace = request_lines[0]["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert!(request_lines.iter().all(|l| l["trace_id"] == trace));
    assert_ne!(request_lines[0]["span_id"], request_lines[1]["span_id"]);
    assert_eq!(request_lines[1]["db.system"], "postgresql");
}

#[tokio::test]
async fn alternate_header_is_accepted() {
    let (obs, _logs) = instance();
    let addr = serve(app(&obs)).await;
    let resp = http_get(addr, "/work", &["x-correlation-id: from-gateway"]).await;
    assert_eq!(resp.header("x-request-id").as_deref(), Some("from-gateway"));
}

#[tokio::test]
async fn missing_id_is_generated_as_uuid_v4() {
    let (obs, logs) = instance();
    let addr = serve(app(&obs)).await;
    let a = http_get(addr, "/work", &[]).await;
    let b = http_get(addr, "/work", &[]).await;
    let ida = a.header("x-request-id").unwrap();
    let idb = b.header("x-request-id").unwrap();
    assert_ne!(ida, idb);
    for id in [&ida, &idb] {
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version nibble of {id}");
        assert!(
            matches!(&id[19..20], "8" | "9" | "a" | "b"),
            "variant of {id}"
        );
    }
    assert!(obs.flush());
    assert!(
        logs.json_lines()
            .iter()
            .any(|l| l["correlation_id"] == ida.as_str())
    );
}

/// Each hostile value is replaced by a fresh ID, and never appears raw in any log line.
#[tokio::test]
async fn hostile_ids_are_replaced_and_never_logged() {
    let (obs, logs) = instance();
    let addr = serve(app(&obs)).await;
    let long = "a".repeat(10 * 1024);
    let mut obs_text = b"GET /work HTTP/1.1\r\nx-request-id: caf".to_vec();
    obs_text.extend_from_slice(&[0x80, 0xff, 0xe9]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "10 KB",
            format!("GET /work HTTP/1.1\r\nx-request-id: {long}").into_bytes(),
        ),
        ("obs-text bytes 0x80-0xFF", obs_text),
        (
            "space inside",
            b"GET /work HTTP/1.1\r\nx-request-id: a b".to_vec(),
        ),
        (
            "quote",
            b"GET /work HTTP/1.1\r\nx-request-id: a\"},\"level\":\"ERROR".to_vec(),
        ),
    ];
    let mut replacements = Vec::new();
    for (what, head) in &cases {
        let resp = raw(addr, head).await;
        assert_eq!(resp.status, 200, "{what}");
        let echoed = resp.header("x-request-id").unwrap();
        assert_eq!(
            echoed.len(),
            36,
            "{what}: replaced by a UUID, got {echoed:?}"
        );
        replacements.push(echoed);
    }
    // CR/LF and ANSI escapes cannot even reach the service: hyper refuses the request. Check
    // that whatever comes back, nothing of it is logged.
    for (what, head) in [
        (
            "CRLF injection",
            b"GET /work HTTP/1.1\r\nx-request-id: a\r\nb".to_vec(),
        ),
        (
            "ANSI escape",
            b"GET /work HTTP/1.1\r\nx-request-id: \x1b[31mred".to_vec(),
        ),
    ] {
        let resp = raw(addr, &head).await;
        if resp.status == 200 {
            assert_eq!(resp.header("x-request-id").unwrap().len(), 36, "{what}");
        } else {
            assert_eq!(resp.status, 400, "{what}");
        }
    }
    assert!(obs.flush());
    let text = logs.text();
    assert!(!text.contains(&long[..200]), "the 10 KB id was logged");
    assert!(!text.contains("caf\u{fffd}"), "obs-text id was logged");
    assert!(!text.contains("a b"), "id with a space was logged");
    assert!(!text.contains("\x1b"), "raw ESC in the log");
    assert!(
        !text.contains("\\u001b[31mred"),
        "the ANSI id was logged, even escaped"
    );
    assert!(
        !text.contains("\"level\":\"ERROR"),
        "injected JSON was logged"
    );
    let lines = logs.json_lines();
    let logged: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["correlation_id"].as_str())
        .collect();
    // Each request was logged under the UUID it was answered with, and only UUIDs were logged.
    for id in &replacements {
        assert!(logged.contains(&id.as_str()), "{id} not logged: {logged:?}");
    }
    for id in &logged {
        assert_eq!(id.len(), 36, "{id}");
    }
}

#[test]
fn validation_rules() {
    assert!(CorrelationId::parse("abc-DEF_1.2:3@4/5+6=7").is_some());
    assert!(CorrelationId::parse(&"x".repeat(128)).is_some());
    assert!(CorrelationId::parse(&"x".repeat(129)).is_none());
    assert!(CorrelationId::parse("").is_none());
    assert!(CorrelationId::parse("a\r\nb").is_none());
    assert!(CorrelationId::parse("\x1b[31m").is_none());
    assert!(CorrelationId::parse_bytes(&[0x80, 0xff]).is_none());
    assert!(CorrelationId::parse("é").is_none());
}
