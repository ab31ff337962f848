//! `audit!` and `security_event!` through the global instance: the audit sink, never dropping,
//! redaction, request context, `RUST_LOG` bypass, and the layer's `unauthorized` events.
//!
//! `init()` is once per process, and these tests load its queues on purpose (the flood fills the
//! application queue): each test that uses the global instance runs in a process of its own
//! (`common::isolated`), under `cargo test` as under nextest, so the flood never drops the lines
//! another test waits for.

mod common;

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Capture, client, samples, send, serve};
use mercenary_obs::{Obs, ObsGuard};

/// A sink that takes `delay` per write, so the queue in front of it fills.
struct Slow(Capture, Duration);

impl Write for Slow {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.1);
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Setup {
    app: Capture,
    audit: Capture,
    /// Where audit lines go when the audit sink does not take them within `audit_max_wait`.
    fallback: Capture,
    _guard: ObsGuard,
}

/// The global instance of this process (the test's own: see `common::isolated`).
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let app = Capture::default();
        let audit = Capture::default();
        let fallback = Capture::default();
        let guard = Obs::builder()
            .service_name("audit-test")
            // Only ERROR passes the filter: audit and security events must pass anyway.
            .log_filter("error")
            .log_writer(Slow(app.clone(), Duration::from_millis(2)))
            .audit_writer(Slow(audit.clone(), Duration::from_millis(1)))
            .audit_fallback_writer(fallback.clone())
            .log_queue_bytes(16 * 1024)
            // Rust's hook: a failed assertion's message goes to stderr, which the parent shows,
            // not into the capture as a CRITICAL line.
            .panic_hook(false)
            .init()
            .unwrap();
        Setup {
            app,
            audit,
            fallback,
            _guard: guard,
        }
    })
}

fn audit_lines(s: &Setup) -> Vec<serde_json::Value> {
    assert!(Obs::global().flush());
    s.audit.json_lines()
}

#[test]
fn audit_lines_survive_a_flood_that_makes_the_application_queue_drop() {
    common::isolated::run(
        module_path!(),
        "audit_lines_survive_a_flood_that_makes_the_application_queue_drop",
        flood,
    );
}

fn flood() {
    let s = setup();
    let before = audit_lines(s).len();
    const THREADS: usize = 4;
    const AUDITS: usize = 500;
    let payload = "x".repeat(400);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let payload = payload.clone();
            std::thread::spawn(move || {
                for i in 0..AUDITS {
                    for _ in 0..10 {
                        tracing::error!(payload = payload.as_str(), "flood");
                    }
                    mercenary_obs::audit!(
                        actor = t as u64,
                        action = "flood.test",
                        resource = format!("item:{i}"),
                        outcome = "success",
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let obs = Obs::global();
    assert!(obs.flush());
    assert!(
        obs.log_lines_dropped() > 0,
        "the flood was meant to overflow the application queue"
    );
    let in_sink: Vec<_> = audit_lines(s)
        .into_iter()
        .skip(before)
        .filter(|l| l["action"] == "flood.test")
        .collect();
    // A line the audit sink did not take within `audit_max_wait` (a machine so loaded that the
    // 1 ms sink fell 2 s behind) went to the fallback, counted: it is not lost either.
    let diverted: Vec<_> = s
        .fallback
        .json_lines()
        .into_iter()
        .filter(|l| l["action"] == "flood.test")
        .collect();
    let text = obs.render_metrics();
    let failed = |outcome: &str| {
        samples(&text, mercenary_obs::names::AUDIT_LINES_FAILED)
            .into_iter()
            .find(|(l, _)| *l == format!("{{outcome=\"{outcome}\"}}"))
            .map_or(0.0, |(_, v)| v)
    };
    assert_eq!(failed("lost"), 0.0, "{text}");
    assert_eq!(failed("diverted"), diverted.len() as f64, "{text}");
    let audits: Vec<_> = in_sink.iter().chain(&diverted).collect();
    assert_eq!(
        audits.len(),
        THREADS * AUDITS,
        "no audit line is ever dropped ({} in the sink, {} diverted)",
        in_sink.len(),
        diverted.len()
    );
    for line in &audits {
        assert_eq!(line["audit"], true);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "mercenary_obs::audit");
        assert_eq!(line["outcome"], "success");
        assert_eq!(line["service"], "audit-test");
    }
    // Every resource of every thread is there exactly once.
    let mut seen: Vec<(u64, String)> = audits
        .iter()
        .map(|l| {
            (
                l["actor"].as_u64().unwrap(),
                l["resource"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), THREADS * AUDITS);
    // Audit lines do not go to the application sink.
    assert!(!s.app.text().contains("flood.test"));
    assert_eq!(
        samples(&text, "audit_events_total")
            .into_iter()
            .find(|(l, _)| l == "{action=\"flood.test\",outcome=\"success\"}")
            .map(|(_, v)| v),
        Some((THREADS * AUDITS) as f64),
        "{text}"
    );
}

#[test]
fn sensitive_audit_fields_are_redacted() {
    common::isolated::run(
        module_path!(),
        "sensitive_audit_fields_are_redacted",
        redaction,
    );
}

fn redaction() {
    let s = setup();
    mercenary_obs::audit!(
        actor = "user:7",
        action = "password.change",
        resource = "user:7",
        outcome = "success",
        password = "hunter2",
        api_token = "tok_123",
        ip = "203.0.113.9",
    );
    let lines = audit_lines(s);
    let line = lines
        .iter()
        .rev()
        .find(|l| l["action"] == "password.change")
        .expect("the audit line");
    assert_eq!(line["password"], mercenary_obs::names::REDACTED);
    assert_eq!(line["api_token"], mercenary_obs::names::REDACTED);
    assert_eq!(line["ip"], "203.0.113.9");
    assert!(!s.audit.text().contains("hunter2"));
    assert!(!s.audit.text().contains("tok_123"));
}

#[test]
fn events_inside_requests_carry_the_request_ids_and_401_403_are_security_events() {
    common::isolated::run(
        module_path!(),
        "events_inside_requests_carry_the_request_ids_and_401_403_are_security_events",
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(requests())
        },
    );
}

async fn requests() {
    let s = setup();
    let app = Router::new()
        .route(
            "/projects/{id}/grant",
            get(|| async {
                mercenary_obs::audit!(
                    actor = "user:1",
                    action = "permission.grant",
                    resource = "project:42",
                    outcome = "success",
                    role = "admin",
                );
                "granted"
            }),
        )
        .route(
            "/login",
            get(|| async {
                mercenary_obs::security_event!(
                    kind = "failed_login",
                    actor = "5f2b",
                    password = "pw"
                );
                StatusCode::UNAUTHORIZED
            }),
        )
        .route("/admin", get(|| async { StatusCode::FORBIDDEN }))
        .layer(mercenary_obs::layer());
    let addr = serve(app).await;
    let c = client();

    let resp = common::get(addr, "/projects/42/grant", &["x-request-id: grant-req-1"]).await;
    assert_eq!(resp.status, 200);
    let lines = audit_lines(s);
    let grant = lines
        .iter()
        .rev()
        .find(|l| l["action"] == "permission.grant")
        .expect("the audit line");
    assert_eq!(grant["correlation_id"], "grant-req-1");
    let trace_id = grant["trace_id"].as_str().expect("a trace id");
    assert_eq!(trace_id.len(), 32);
    assert_eq!(grant["role"], "admin");
    common::assert_schema(grant);

    assert_eq!(
        send(&c, "GET", &format!("http://{addr}/login"), "").await.0,
        401
    );
    for _ in 0..3 {
        assert_eq!(
            send(&c, "GET", &format!("http://{addr}/admin"), "").await.0,
            403
        );
    }
    assert!(Obs::global().flush());
    let app_lines = s.app.json_lines();
    let security: Vec<_> = app_lines
        .iter()
        .filter(|l| l["target"] == "mercenary_obs::security")
        .collect();
    let failed: Vec<_> = security
        .iter()
        .filter(|l| l["kind"] == "failed_login")
        .collect();
    assert_eq!(failed.len(), 1, "{security:?}");
    assert_eq!(failed[0]["level"], "WARNING");
    assert_eq!(failed[0]["password"], mercenary_obs::names::REDACTED);
    assert!(failed[0]["correlation_id"].is_string());
    let unauthorized: Vec<_> = security
        .iter()
        .filter(|l| l["kind"] == "unauthorized")
        .collect();
    assert_eq!(unauthorized.len(), 4, "one per 401/403: {security:?}");
    assert!(
        unauthorized
            .iter()
            .filter(|l| l["http.route"] == "/admin" && l["http.response.status_code"] == 403)
            .count()
            == 3
    );
    for line in &security {
        common::assert_schema(line);
    }

    let text = Obs::global().render_metrics();
    let kinds = samples(&text, "security_events_total");
    assert!(
        kinds.contains(&("{kind=\"failed_login\"}".into(), 1.0)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("{kind=\"unauthorized\"}".into(), 4.0)),
        "{kinds:?}"
    );
    assert!(
        text.contains("# HELP audit_events_total Audit events"),
        "{text}"
    );
    common::promtool_check(&text);
}

#[test]
fn audit_lines_stay_json_when_application_lines_are_pretty() {
    let app = Capture::default();
    let audit = Capture::default();
    let obs = Obs::builder()
        .log_format(mercenary_obs::LogFormat::Pretty)
        .log_writer(app.clone())
        .audit_writer(audit.clone())
        .build()
        .unwrap();
    obs.in_scope(|| {
        tracing::info!("an application line");
        mercenary_obs::audit!(
            actor = "user:9",
            action = "config.change",
            resource = "settings",
            outcome = "success",
            secret = "s3",
        );
        mercenary_obs::security_event!(kind = "suspicious_usage", requests = 900);
    });
    assert!(obs.flush());
    let lines = audit.json_lines();
    assert_eq!(lines.len(), 1, "{}", audit.text());
    assert_eq!(lines[0]["audit"], true);
    assert_eq!(lines[0]["action"], "config.change");
    assert_eq!(lines[0]["secret"], mercenary_obs::names::REDACTED);
    let text = app.text();
    assert!(text.contains("an application line"), "{text}");
    assert!(text.contains("suspicious_usage"), "{text}");
    assert!(
        !text.contains("config.change"),
        "audit lines only on the audit sink: {text}"
    );
    let metrics = obs.render_metrics();
    assert!(
        metrics.contains("audit_events_total{action=\"config.change\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("security_events_total{kind=\"suspicious_usage\"} 1"),
        "{metrics}"
    );
}
