//! Fault modes end to end: a collector that is down when the service starts and comes up later.
//! Every span is accounted for: exported, or counted as lost with its reason; none silently.

use crate::common;
use crate::otlp::Got;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use common::samples;
use mercenary_obs::Obs;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

/// An OTLP/HTTP receiver on `addr` (a port chosen earlier), counting the spans it accepts.
async fn receiver_on(addr: SocketAddr) -> Arc<Mutex<Vec<Got>>> {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP body");
                let mut out = sink.lock().unwrap();
                for s in req
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    out.push(Got {
                        trace_id: s.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                        name: s.name,
                        ..Got::default()
                    });
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

fn counters(obs: &Obs) -> HashMap<String, f64> {
    let text = obs.render_metrics();
    let mut out: HashMap<String, f64> = samples(&text, "mercenary_obs_spans_dropped_total")
        .into_iter()
        .collect();
    out.insert(
        "exported".into(),
        samples(&text, "mercenary_obs_spans_exported_total")[0].1,
    );
    out
}

/// Sends `n` requests to `/ok` (three spans each); returns their trace IDs.
async fn requests(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = common::get(addr, "/ok", &["trace: true"]).await;
        assert_eq!(r.status, 200);
        let tr = r.header("traceresponse").expect("traceresponse");
        ids.push(tr.split('-').nth(1).unwrap().to_string());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_down_at_start_then_up_loses_nothing_silently() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let obs = Obs::builder()
        .service_name("faults")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .otlp_endpoint(format!("http://{addr}"))
        .success_ratio(1.0)
        .otlp_timeout(Duration::from_millis(500))
        .export_schedule_delay(Duration::from_millis(50))
        .export_queue_size(100_000)
        .build()
        .unwrap();
    let app = common::serve(common::traced_routes().layer(obs.layer())).await;

    // The collector is down: every export fails, counted.
    let during = requests(app, 100).await;
    assert!(
        obs.flush(),
        "a refusing collector is handled, not waited for"
    );
    let c = counters(&obs);
    assert_eq!(c["exported"], 0.0);
    assert_eq!(c["{reason=\"export_failed\"}"], 300.0, "{c:?}");

    // It comes up: what is kept from now on arrives, every span once.
    let got = receiver_on(addr).await;
    let after = requests(app, 100).await;
    assert!(obs.flush());
    let received = got.lock().unwrap().clone();
    let traces: std::collections::HashSet<&str> =
        received.iter().map(|g| g.trace_id.as_str()).collect();
    for id in &after {
        assert!(
            traces.contains(id.as_str()),
            "trace {id} kept after recovery arrives"
        );
    }
    assert!(
        during.iter().all(|id| !traces.contains(id.as_str())),
        "the outage's spans were counted lost, not sent twice"
    );
    let c = counters(&obs);
    assert_eq!(c["exported"], received.len() as f64);
    assert_eq!(c["exported"], 300.0);
    let lost: f64 = c
        .iter()
        .filter(|(k, _)| k.starts_with("{reason"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        c["exported"] + lost,
        600.0,
        "every span exported or counted: {c:?}"
    );
}

/// The demo with its stdout never read (a stuck log shipper): plain requests keep their
/// latency (their lines are dropped and counted), audited requests are answered within the
/// bound (their lines go to stderr, counted), and once stdout drains the service is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_a_blocked_stdout_keeps_answering() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut child = Command::new(common::processes::demo_binary())
        .env("PORT", "0")
        .env_remove("RUST_LOG")
        .env_remove("MERCENARY_OBS_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // stdout: read up to the "listening" line, then not at all until `drain` is set.
    let drain = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let out_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (drain, out_lines) = (drain.clone(), out_lines.clone());
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(pipe).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "listening" {
                    let ip: std::net::IpAddr =
                        v["server.address"].as_str().unwrap().parse().unwrap();
                    let port = v["server.port"].as_u64().unwrap() as u16;
                    tx.send(SocketAddr::new(ip, port)).unwrap();
                    break;
                }
            }
            while !drain.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            for line in lines.map_while(Result::ok) {
                out_lines.lock().unwrap().push(line);
            }
        });
    }
    let err_lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let err_lines = err_lines.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                err_lines.lock().unwrap().push(line);
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo listens");

    // Plain requests with 8 KB user agents (logged) fill the pipe, then the 8 MiB log queue.
    let agent = format!("user-agent: {}", "a".repeat(8000));
    for i in 0..1500 {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            common::get(addr, &format!("/users/{}", i % 50 + 1), &[agent.as_str()]),
        )
        .await
        .expect("a plain request is answered while stdout is blocked");
        assert_eq!(r.status, 200);
    }
    // Audited requests: answered within the bound (2 s at most, once per stall).
    let c = common::client();
    for i in 0..5 {
        let body =
            format!(r#"{{"email":"user{i}@example.com","password":"pw-{i}","plan":"free"}}"#);
        let (status, _) = tokio::time::timeout(
            Duration::from_secs(15),
            common::send(&c, "POST", &format!("http://{addr}/signup"), &body),
        )
        .await
        .expect("an audited request is answered while stdout is blocked");
        assert!(status < 300, "{status}");
    }
    let metrics = String::from_utf8(common::get(addr, "/metrics", &[]).await.body).unwrap();
    let value = |name: &str, labels: &str| -> f64 {
        samples(&metrics, name)
            .into_iter()
            .find(|(l, _)| l == labels)
            .map_or(0.0, |(_, v)| v)
    };
    assert!(
        value("mercenary_obs_log_lines_dropped_total", "") > 0.0,
        "drops are counted"
    );
    assert_eq!(
        value(
            "mercenary_obs_audit_lines_failed_total",
            "{outcome=\"diverted\"}"
        ),
        5.0
    );
    // The diverted audit lines are on stderr, with one CRITICAL line, all JSON.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let audits = err_lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"audit\":true"))
            .count();
        if audits == 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{audits} audit lines on stderr"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = err_lines.lock().unwrap().clone();
    for line in &err {
        let v: serde_json::Value = serde_json::from_str(line).expect("stderr lines are JSON");
        assert!(v.is_object());
    }
    assert_eq!(
        err.iter()
            .filter(|l| l.contains("audit sink stalled"))
            .count(),
        1,
        "{err:#?}"
    );

    // stdout drains: the service is healthy and audit lines go to stdout again.
    drain.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = r#"{"email":"late@example.com","password":"pw","plan":"pro"}"#;
        let (status, _) = common::send(&c, "POST", &format!("http://{addr}/signup"), body).await;
        assert!(status < 300);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let back = out_lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"audit\":true") && l.contains("user.signup"));
        if back {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit lines reach stdout again"
        );
    }
    assert_eq!(common::get(addr, "/healthz", &[]).await.status, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// SIGTERM with requests in flight: they finish, their access lines are written, and the
/// process exits cleanly within the shutdown bound (the demo's 10 s grace, `Demo::stop`'s 15 s).
async fn sigterm_under_load(runtime: &str) {
    use crate::common::processes::Demo;
    let mut demo = Demo::start(&[("DEMO_RUNTIME", runtime)]).await;
    let addr = demo.addr;
    let in_flight: Vec<_> = (0..40)
        .map(|i| {
            tokio::spawn(async move {
                let id = format!("x-request-id: sigterm-{i}");
                common::get(addr, "/slow?ms=1500", &[id.as_str()])
                    .await
                    .status
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = demo.stop();
        (status, demo.lines())
    });
    for r in in_flight {
        assert_eq!(r.await.unwrap(), 200, "an in-flight request finishes");
    }
    let (status, lines) = status.await.unwrap();
    assert!(status.success(), "{status}");
    let completed: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"] == "request completed"
                && v["correlation_id"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("sigterm-"))
        })
        .collect();
    assert_eq!(
        completed.len(),
        40,
        "every access line is flushed before exit"
    );
    assert!(
        lines.iter().any(|l| l.contains("\"shutting down\"")),
        "the shutdown is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_on_the_multi_thread_runtime() {
    sigterm_under_load("multi_thread").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_on_the_current_thread_runtime() {
    sigterm_under_load("current_thread").await;
}

/// Resident memory of a process, in bytes (Linux).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// About a minute at a steady rate, with errors, forced traces and a collector that takes
/// 300 ms per export: the demo's resident memory and its buffered traces stop growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_memory_and_buffers_stop_growing() {
    use crate::common::processes::Demo;
    use std::time::Instant;

    // A slow collector: accepts every batch after 300 ms.
    let app = axum::Router::new().route(
        "/v1/traces",
        post(|_body: Bytes| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            (
                [("content-type", "application/x-protobuf")],
                Vec::<u8>::new(),
            )
        }),
    );
    let collector = common::serve(app).await;
    let endpoint = format!("http://{collector}");
    let demo = Demo::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ])
    .await;
    let pid = demo.child.id();
    let addr = demo.addr;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drivers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut tick = tokio::time::interval(Duration::from_millis(8));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tick.tick().await;
                    n += 1;
                    let (path, header) = match n % 20 {
                        0 => ("/fail".to_string(), "x-request-id: soak-fail"),
                        1 => (format!("/users/{}", n % 50 + 1), "trace: true"),
                        _ => (format!("/users/{}", (n + w) % 50 + 1), "x-soak: 1"),
                    };
                    let _ = common::get(addr, &path, &[header]).await;
                }
                n
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples_rss = Vec::new();
    let mut buffered = Vec::new();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples_rss.push(rss_bytes(pid));
        let metrics = String::from_utf8(common::get(addr, "/metrics", &[]).await.body).unwrap();
        buffered.push(samples(&metrics, "mercenary_obs_trace_buffer_traces")[0].1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for d in drivers {
        sent += d.await.unwrap();
    }
    assert!(sent > 5000, "{sent} requests sent");
    // After warm-up, the last third never goes meaningfully above the middle third.
    let third = samples_rss.len() / 3;
    let middle = samples_rss[third..2 * third].iter().max().unwrap();
    let last = samples_rss[2 * third..].iter().max().unwrap();
    assert!(
        *last <= middle + middle / 10 + (8 << 20),
        "resident memory keeps growing: {samples_rss:?}"
    );
    assert!(
        buffered.iter().all(|b| *b <= 10_000.0),
        "buffered traces within their bound: {buffered:?}"
    );
    let b_middle = buffered[third..2 * third]
        .iter()
        .cloned()
        .fold(0.0, f64::max);
    let b_last = buffered[2 * third..].iter().cloned().fold(0.0, f64::max);
    assert!(
        b_last <= b_middle + 100.0,
        "buffered traces keep growing: {buffered:?}"
    );
    drop(demo);
}
