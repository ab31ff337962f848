//! A stalled audit sink (a stuck log shipper, a full pipe) never hangs the service: an audit
//! line waits for room at most `audit_max_wait`, then goes to the fallback, counted; once the
//! sink writes again, audit lines go to it again. Nothing is lost silently.

use crate::common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::routing::get;
use common::{Capture, samples};
use mercenary_obs::Obs;

/// A sink whose `write` blocks until the gate opens, then records what it got.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    got: Capture,
}

impl Gate {
    fn open(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
}

impl Write for Gate {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let (lock, cond) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cond.wait(open).unwrap();
        }
        drop(open);
        self.got.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn audit_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per line"))
        .filter(|v| v["audit"] == true)
        .collect()
}

fn counters(obs: &Obs) -> HashMap<String, f64> {
    samples(
        &obs.render_metrics(),
        "mercenary_obs_audit_lines_failed_total",
    )
    .into_iter()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_sink_diverts_to_the_fallback_within_the_bound() {
    let gate = Gate::default();
    let fallback = Capture::default();
    let obs = Obs::builder()
        .service_name("audit-stall")
        .log_writer(std::io::sink())
        .audit_writer(gate.clone())
        .audit_fallback_writer(fallback.clone())
        .audit_max_wait(Duration::from_millis(300))
        .log_queue_bytes(4096)
        .process_metrics(false)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route(
            "/audited/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    mercenary_obs::audit!(
                        actor = "u-1",
                        action = "report.export",
                        outcome = "success",
                        n = n
                    );
                    "ok"
                },
            ),
        )
        .layer(obs.layer());
    let addr = common::serve(app).await;
    let c = common::client();
    let sent = 60u32;
    for n in 0..sent {
        // Bounded: a hang fails here instead of stalling the suite.
        let (status, _) = tokio::time::timeout(
            Duration::from_secs(20),
            common::send(&c, "GET", &format!("http://{addr}/audited/{n}"), ""),
        )
        .await
        .expect("an audited request is answered while the audit sink is stuck");
        assert_eq!(status, 200);
    }
    let diverted = counters(&obs)
        .get("{outcome=\"diverted\"}")
        .copied()
        .unwrap_or(0.0);
    assert!(
        diverted > 0.0,
        "the queue (4 KiB) cannot hold 60 audit lines"
    );
    // The fallback has a writer thread of its own: give it the moment it needs.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (audit_lines(&fallback.text()).len() as f64) < diverted
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stalled: Vec<_> = fallback
        .json_lines()
        .into_iter()
        .filter(|l| l["level"] == "CRITICAL")
        .collect();
    assert_eq!(stalled.len(), 1, "one CRITICAL line per stall: {stalled:?}");
    assert!(
        stalled[0]["message"]
            .as_str()
            .unwrap()
            .contains("audit sink stalled"),
        "{stalled:?}"
    );
    assert_eq!(stalled[0]["service"], "audit-stall");
    let in_fallback = audit_lines(&fallback.text());
    assert_eq!(in_fallback.len() as f64, diverted);

    // The sink drains: what it held is written, and audit lines go to it again.
    gate.open();
    assert!(obs.flush());
    common::send(&c, "GET", &format!("http://{addr}/audited/{sent}"), "").await;
    assert!(obs.flush());
    let in_sink = audit_lines(&gate.got.text());
    assert_eq!(
        in_sink.len() + in_fallback.len(),
        sent as usize + 1,
        "every audit line is in the sink or the fallback"
    );
    let mut ns: Vec<u64> = in_sink
        .iter()
        .chain(&in_fallback)
        .map(|l| l["n"].as_u64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..=u64::from(sent)).collect::<Vec<_>>(),
        "none twice, none lost"
    );
    assert_eq!(
        in_sink.last().unwrap()["n"],
        sent,
        "after the drain the sink takes audit lines again"
    );
    let lost = counters(&obs)
        .get("{outcome=\"lost\"}")
        .copied()
        .unwrap_or(0.0);
    assert_eq!(lost, 0.0);
}

#[test]
fn a_fallback_file_that_cannot_be_opened_is_an_error_naming_it() {
    let err = Obs::builder()
        .log_writer(std::io::sink())
        .from_vars([(
            "MERCENARY_OBS_AUDIT_FALLBACK_FILE",
            "/nonexistent-dir/audit-spill.log",
        )])
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("MERCENARY_OBS_AUDIT_FALLBACK_FILE"), "{err}");
    let err = Obs::builder()
        .log_writer(std::io::sink())
        .from_vars([("MERCENARY_OBS_AUDIT_MAX_WAIT_MS", "soon")])
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("MERCENARY_OBS_AUDIT_MAX_WAIT_MS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_file_receives_what_the_sink_could_not_take() {
    let dir = std::env::temp_dir().join(format!("mercenary-audit-spill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spill = dir.join("audit.log");
    let gate = Gate::default();
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .audit_writer(gate.clone())
        .audit_fallback_file(&spill)
        .audit_max_wait(Duration::ZERO)
        .log_queue_bytes(1024)
        .process_metrics(false)
        .build()
        .unwrap();
    obs.in_scope(|| {
        for n in 0..20 {
            mercenary_obs::audit!(actor = "u-2", action = "login", outcome = "failure", n = n);
        }
    });
    // The fallback's writer thread writes within milliseconds; the sink itself stays stuck.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while std::time::Instant::now() < deadline && !text.contains("\"audit\":true") {
        std::thread::sleep(Duration::from_millis(20));
        text = std::fs::read_to_string(&spill).unwrap_or_default();
    }
    let spilled = audit_lines(&text);
    assert!(!spilled.is_empty(), "{text}");
    assert!(
        text.contains(&format!("go to {}", spill.display())),
        "{text}"
    );
    gate.open();
    drop(obs);
    let _ = std::fs::remove_dir_all(&dir);
}
