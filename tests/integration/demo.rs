//! The demo service as a user runs it: spawned as a child process, driven over real HTTP,
//! scraped by a real Prometheus server, its stdout read as a log shipper would.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::processes::{Demo, Prometheus, demo_binary, free_port};
use common::{client, get as http_get, send};

/// Sends the demo a bit of everything.
async fn traffic(addr: SocketAddr) {
    let c = client();
    let base = format!("http://{addr}");
    assert_eq!(send(&c, "GET", &format!("{base}/healthz"), "").await.0, 200);
    for id in 1..=5 {
        assert_eq!(
            send(&c, "GET", &format!("{base}/users/{id}"), "").await.0,
            200
        );
    }
    let signup = r#"{"plan":"pro","email":"a@example.com","password":"hunter2"}"#;
    assert!(send(&c, "POST", &format!("{base}/signup"), signup).await.0 < 300);
    assert!(
        send(&c, "POST", &format!("{base}/projects"), r#"{"name":"p"}"#)
            .await
            .0
            < 300
    );
    assert!(
        send(
            &c,
            "POST",
            &format!("{base}/proposals"),
            r#"{"project_id":1}"#
        )
        .await
        .0 < 300
    );
    let ok = r#"{"amount":49.0,"currency":"USD"}"#;
    assert_eq!(
        send(&c, "POST", &format!("{base}/payments"), ok).await.0,
        200
    );
    let big = r#"{"amount":20000.0,"currency":"USD"}"#;
    assert_eq!(
        send(&c, "POST", &format!("{base}/payments"), big).await.0,
        402
    );
    let wrong = r#"{"email":"ada@example.com","password":"guess-hunter3"}"#;
    assert_eq!(
        send(&c, "POST", &format!("{base}/login"), wrong).await.0,
        401
    );
    let right = r#"{"email":"ada@example.com","password":"correct horse battery staple"}"#;
    assert_eq!(
        send(&c, "POST", &format!("{base}/login"), right).await.0,
        200
    );
    assert_eq!(send(&c, "GET", &format!("{base}/fail"), "").await.0, 500);
    assert_eq!(
        send(&c, "GET", &format!("{base}/slow?ms=20"), "").await.0,
        200
    );
    assert_eq!(send(&c, "GET", &format!("{base}/panic"), "").await.0, 500);
    assert_eq!(
        send(&c, "GET", &format!("{base}/no/such/route"), "")
            .await
            .0,
        404
    );
    let r = http_get(
        addr,
        "/users/7",
        &[
            "authorization: Bearer top-secret",
            "x-request-id: demo-req-1",
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("demo-req-1"));
}

/// Parses every line as a JSON object in the log schema (panics naming the line otherwise).
fn parse_all(lines: &[String], stream: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{stream}: not JSON ({e}): {line}"));
            common::assert_schema(&v);
            v
        })
        .collect()
}

/// With backtraces on (`RUST_BACKTRACE=1`), every line the demo writes, on stdout and stderr,
/// from start to SIGTERM, is one JSON object in the schema, panics included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_are_json_lines_in_schema_order_with_redaction() {
    let mut demo = Demo::start(&[("RUST_BACKTRACE", "1")]).await;
    traffic(demo.addr).await;
    // No collector configured: kept traces are served at /debug/traces, errors among them.
    let r = http_get(demo.addr, "/debug/traces", &[]).await;
    assert_eq!(r.status, 200);
    let kept: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let traces = kept["traces"].as_array().unwrap();
    for route in ["/fail", "/panic"] {
        let t = traces
            .iter()
            .find(|t| {
                t["spans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["attributes"]["http.route"] == route)
            })
            .unwrap_or_else(|| panic!("the {route} trace is kept: {kept:#}"));
        assert_eq!(t["reason"], "error");
    }
    let status = demo.stop();
    assert!(
        status.success(),
        "the demo exits cleanly on SIGTERM: {status}"
    );
    let lines = demo.lines();
    assert!(lines.len() > 20, "{lines:#?}");
    let parsed = parse_all(&lines, "stdout");
    for v in &parsed {
        assert_eq!(v["service"], "mercenary-api");
    }
    let stderr = demo.stderr_lines();
    parse_all(&stderr, "stderr");
    assert!(
        stderr.is_empty(),
        "every log line goes to stdout: {stderr:#?}"
    );
    let listening = parsed
        .iter()
        .find(|l| l["message"] == "listening")
        .expect("the listening line");
    assert_eq!(
        listening["server.port"].as_u64(),
        Some(u64::from(demo.addr.port()))
    );
    let all = lines.join("\n");
    assert!(!all.contains("hunter2"), "password leaked");
    assert!(!all.contains("guess-hunter3"), "login password leaked");
    assert!(!all.contains("ada@example.com"), "emails are pseudonymised");
    assert!(!all.contains("top-secret"), "authorization header leaked");

    let access: Vec<_> = parsed
        .iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert_eq!(access.len(), 19, "one access line per request");
    for a in &access {
        for k in [
            "http.request.method",
            "http.route",
            "url.path",
            "duration_ms",
            "correlation_id",
            "trace_id",
        ] {
            assert!(a.get(k).is_some(), "{k} missing on {a}");
        }
    }
    let traced = access
        .iter()
        .find(|a| a["correlation_id"] == "demo-req-1")
        .unwrap();
    assert_eq!(traced["http.route"], "/users/{id}");
    assert_eq!(traced["http.request.header.authorization"], "[REDACTED]");
    let fail = access.iter().find(|a| a["url.path"] == "/fail").unwrap();
    assert_eq!(fail["level"], "ERROR");
    assert_eq!(fail["error.type"], "500");
    let panic = access.iter().find(|a| a["url.path"] == "/panic").unwrap();
    assert_eq!(panic["error.type"], "panic");
    // The panic hook's line: CRITICAL, in the request, with one backtrace string.
    let critical: Vec<_> = parsed.iter().filter(|l| l["level"] == "CRITICAL").collect();
    assert_eq!(
        critical.len(),
        1,
        "one line for the one panic: {critical:#?}"
    );
    let hook = critical[0];
    assert_eq!(hook["target"], mercenary_obs::names::PANIC_TARGET);
    assert_eq!(hook["exception.message"], "demo panic");
    assert_eq!(hook["correlation_id"], panic["correlation_id"]);
    assert_eq!(hook["trace_id"], panic["trace_id"]);
    assert_eq!(hook["code.filepath"], "examples/demo.rs");
    let stack = hook["exception.stacktrace"].as_str().expect("a backtrace");
    assert!(stack.contains("panic_handler"), "{stack}");
    let unmatched = access
        .iter()
        .find(|a| a["url.path"] == "/no/such/route")
        .unwrap();
    assert_eq!(unmatched["http.route"], "");
    assert_eq!(unmatched["level"], "WARNING");

    let signup = parsed
        .iter()
        .find(|l| l["password"].is_string())
        .expect("the signup line");
    assert_eq!(signup["password"], "[REDACTED]");
    // Handler lines share the request's correlation id with its access line.
    let handler_lines: Vec<_> = parsed
        .iter()
        .filter(|l| l["correlation_id"] == signup["correlation_id"])
        .collect();
    assert!(handler_lines.len() >= 2, "{handler_lines:#?}");
    assert!(parsed.iter().any(|l| l["message"] == "shutting down"));

    // Audit lines: sign-up, two payments, two logins; each with its request's correlation id.
    let audits: Vec<_> = parsed.iter().filter(|l| l["audit"] == true).collect();
    let actions: Vec<(&str, &str)> = audits
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    for expected in [
        ("user.signup", "success"),
        ("payment.create", "success"),
        ("payment.create", "declined"),
        ("auth.login", "failure"),
        ("auth.login", "success"),
    ] {
        assert!(actions.contains(&expected), "{expected:?} in {actions:?}");
    }
    for a in &audits {
        assert_eq!(a["target"], "mercenary_obs::audit");
        assert!(
            a["correlation_id"].is_string() && a["trace_id"].is_string(),
            "{a}"
        );
    }
    // The failed login: a security event (password redacted) and, for its 401, `unauthorized`.
    let failed = parsed
        .iter()
        .find(|l| l["kind"] == "failed_login")
        .expect("the failed_login line");
    assert_eq!(failed["level"], "WARNING");
    assert_eq!(failed["password"], "[REDACTED]");
    let unauthorized = parsed
        .iter()
        .find(|l| l["kind"] == "unauthorized")
        .expect("the unauthorized line");
    assert_eq!(unauthorized["http.route"], "/login");
    assert_eq!(unauthorized["correlation_id"], failed["correlation_id"]);
}

/// A bad setting stops the demo with one JSON line naming it: on stderr when the setting is
/// the log pipeline's own (exit 1), through the log pipeline otherwise (exit 2).
#[tokio::test]
async fn demo_refuses_bad_configuration() {
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(demo_binary());
        cmd.env("PORT", free_port().to_string())
            .env_remove("RUST_LOG")
            .env_remove("MERCENARY_OBS_LOG_FORMAT");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let lines = |b: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(b)
                .lines()
                .map(String::from)
                .collect()
        };
        (out.status, lines(&out.stdout), lines(&out.stderr))
    };

    let (status, stdout, stderr) = run(&[("MERCENARY_OBS_LOG_FORMAT", "bogus")]);
    assert_eq!(status.code(), Some(1), "{stderr:#?}");
    assert!(stdout.is_empty(), "{stdout:#?}");
    let lines = parse_all(&stderr, "stderr");
    assert_eq!(lines.len(), 1, "{stderr:#?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert_eq!(lines[0]["service"], "mercenary-api");
    assert!(
        stderr[0].contains("MERCENARY_OBS_LOG_FORMAT"),
        "{stderr:#?}"
    );

    let (status, stdout, stderr) = run(&[("PORT", "eighty")]);
    assert_eq!(status.code(), Some(2), "{stdout:#?}");
    assert!(stderr.is_empty(), "{stderr:#?}");
    let lines = parse_all(&stdout, "stdout");
    assert_eq!(lines.len(), 1, "{stdout:#?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("PORT"),
        "{stdout:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_demo() {
    let demo = Demo::start(&[]).await;
    traffic(demo.addr).await;
    // The demo's whole exposition, as a scraper without OpenMetrics gets it, passes promtool's
    // lint (the database pool gauges included).
    let metrics = common::get(demo.addr, "/metrics", &[]).await;
    let metrics = String::from_utf8(metrics.body).unwrap();
    assert!(
        metrics.contains("db_client_connections_usage{"),
        "{metrics}"
    );
    common::promtool_check(&metrics);
    let prom = Prometheus::start("demo", demo.addr, &[]);

    let wanted = [
        "/healthz",
        "/users/{id}",
        "/signup",
        "/payments",
        "/fail",
        "/panic",
        "",
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last = None;
    loop {
        if let Some(v) = prom
            .query("http_server_request_duration_seconds_count")
            .await
        {
            let routes: Vec<String> = v["data"]["result"]
                .as_array()
                // Prometheus drops empty label values: an absent route is the unmatched route.
                .map(|r| {
                    r.iter()
                        .map(|s| s["metric"]["http_route"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            if wanted.iter().all(|w| routes.iter().any(|r| r == w)) {
                // The scraped counts are the requests sent.
                let payments: f64 = v["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s["metric"]["http_route"] == "/payments")
                    .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
                    .sum();
                assert_eq!(payments, 2.0, "{v}");
                let panics = v["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["metric"]["error_type"] == "panic")
                    .expect("the panic series");
                assert_eq!(panics["metric"]["http_response_status_code"], "500");
                assert_eq!(panics["metric"]["job"], "demo");
                break;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not see every route within 90 s; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let up = prom.query("up").await.unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
    let info = prom.query("target_info").await.unwrap();
    assert_eq!(
        info["data"]["result"][0]["metric"]["service_name"], "mercenary-api",
        "{info}"
    );
    // Business metrics, audit and security counters as Prometheus stores them.
    let value = |v: &serde_json::Value| -> f64 {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("one sample in {v}"))
            .parse()
            .unwrap()
    };
    let q = |promql: &'static str| {
        let prom = &prom;
        async move {
            prom.query(promql)
                .await
                .unwrap_or_else(|| panic!("{promql}"))
        }
    };
    assert_eq!(value(&q("user_signups_total{plan=\"pro\"}").await), 1.0);
    assert_eq!(value(&q("sum(payments_total)").await), 2.0);
    assert_eq!(
        value(&q("payment_amount_dollars_count{currency=\"USD\"}").await),
        1.0
    );
    assert_eq!(
        value(&q("payment_amount_dollars_bucket{currency=\"USD\",le=~\"50|50.0\"}").await),
        1.0
    );
    assert_eq!(value(&q("sum(audit_events_total)").await), 5.0);
    assert_eq!(
        value(&q("audit_events_total{action=\"auth.login\",outcome=\"failure\"}").await),
        1.0
    );
    assert_eq!(
        value(&q("security_events_total{kind=\"failed_login\"}").await),
        1.0
    );
    assert_eq!(
        value(&q("security_events_total{kind=\"unauthorized\"}").await),
        1.0
    );
    assert_eq!(
        value(&q("feature_usage_total{feature=\"login\"}").await),
        1.0
    );
}
