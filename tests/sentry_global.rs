//! Sentry with the global instance: `init()` reports events logged outside requests too, and
//! the `ObsGuard` flushes queued events within its timeout. One test per binary (`init()` is once
//! per process).
#![cfg(feature = "sentry")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, send, serve};
use mercenary_obs::Obs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Sentry endpoint that answers 200 after 50 ms and keeps the bodies it received.
async fn slow_sentry() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = bodies.clone();
    std::thread::spawn(move || {
        // Its own runtime: the test's runtime is blocked while the guard shuts down.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener.into_std().unwrap()).unwrap();
            for _ in 0..100 {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]);
                        kept.lock().unwrap().push(body.into_owned());
                        buf.drain(..end + 4 + len);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    (addr, bodies)
}

#[tokio::test]
async fn init_reports_outside_requests_and_the_guard_flushes() {
    let (sentry_addr, bodies) = slow_sentry().await;
    let guard = Obs::builder()
        .service_name("sentry-global-test")
        .log_writer(std::io::sink())
        .from_vars([("SENTRY_DSN", format!("http://public@{sentry_addr}/3"))])
        .shutdown_timeout(Duration::from_secs(5))
        .init()
        .unwrap();

    // Outside any request: the main hub has the client.
    tracing::error!(job = "nightly-report", "background job failed");

    let app = common::traced_routes().layer(mercenary_obs::layer());
    let addr = serve(app).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            send(&c, "GET", &format!("http://{addr}/fail"), "").await.0,
            500
        );
    }

    // Four events, 50 ms each at the endpoint: most are still queued when the guard shuts down.
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        4,
        "every event was delivered before the guard returned"
    );
    assert!(bodies.iter().any(|b| b.contains("background job failed")));
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("\"http.route\":\"/fail\""))
            .count(),
        3
    );
}
