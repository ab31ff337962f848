//! The demo service as a user runs it: spawned as a child process, driven over real HTTP,
//! scraped by a real Prometheus server, its stdout read as a log shipper would.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, get as http_get, send};

/// Builds the demo (a no-op when it is up to date) and returns the executable's path.
fn demo_binary() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--example",
            "demo",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building the demo failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "demo")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the demo executable")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running demo; killed when dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    async fn start(envs: &[(&str, &str)]) -> Demo {
        let port = free_port();
        let mut cmd = Command::new(demo_binary());
        cmd.env("PORT", port.to_string())
            .env_remove("RUST_LOG")
            .env_remove("MERCENARY_OBS_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the demo starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("demo stderr: {line}");
            }
        });
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the demo exited early with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not listen within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Demo {
            child,
            addr,
            stdout,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_are_json_lines_in_schema_order_with_redaction() {
    let mut demo = Demo::start(&[]).await;
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
    let mut parsed = Vec::new();
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        common::assert_schema(&v);
        assert_eq!(v["service"], "mercenary-api");
        parsed.push(v);
    }
    let all = lines.join("\n");
    assert!(!all.contains("hunter2"), "password leaked");
    assert!(!all.contains("top-secret"), "authorization header leaked");

    let access: Vec<_> = parsed
        .iter()
        .filter(|l| l["message"] == "request completed")
        .collect();
    assert_eq!(access.len(), 17, "one access line per request");
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
}

#[tokio::test]
async fn demo_refuses_bad_configuration() {
    let out = Command::new(demo_binary())
        .env("MERCENARY_OBS_LOG_FORMAT", "bogus")
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MERCENARY_OBS_LOG_FORMAT"), "{stderr}");
}

/// A Prometheus server started by the test; killed and cleaned up when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "mercenary-obs-prom-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: demo\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the prometheus server is needed for this test ({e}); install it with \
                     `apt-get install -y prometheus` or run `bash scripts/test.sh`, which does"
                )
            });
        Prometheus { child, port, dir }
    }

    async fn query(&self, promql: &str) -> Option<serde_json::Value> {
        let c = client();
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={encoded}",
            self.port
        );
        let req = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), c.request(req))
            .await
            .ok()?
            .ok()?;
        use http_body_util::BodyExt;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_demo() {
    let demo = Demo::start(&[]).await;
    traffic(demo.addr).await;
    let prom = Prometheus::start(demo.addr);

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
}
