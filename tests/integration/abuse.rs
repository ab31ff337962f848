//! Suspicious usage: a client with too many 401/403 or unmatched-route answers in a minute gets
//! one `security_event` of kind `suspicious_usage`, identified by a keyed hash of its principal
//! or address (never the raw value), whatever the number of other clients.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::routing::get;
use common::{Capture, samples};
use mercenary_obs::{Obs, Principal};

/// Sets the peer address from `x-test-peer` (as `into_make_service_with_connect_info` would).
async fn peer(mut req: Request) -> Request {
    if let Some(ip) = req
        .headers()
        .get("x-test-peer")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<std::net::IpAddr>().ok())
    {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40000)));
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scanner_and_a_brute_forcer_are_reported_once_and_never_by_name() {
    let logs = Capture::default();
    let obs = Obs::builder()
        .service_name("abuse")
        .log_writer(logs.clone())
        .process_metrics(false)
        .suspicious_usage_threshold(10)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/login",
            get(|| async {
                let mut r = axum::response::IntoResponse::into_response(StatusCode::UNAUTHORIZED);
                r.extensions_mut()
                    .insert(Principal::new("mallory@example.com"));
                r
            }),
        )
        .layer(obs.layer())
        .layer(axum::middleware::map_request(peer));
    let addr = common::serve(app).await;
    let raw = |peer: String, path: &'static str| async move {
        let header = format!("x-test-peer: {peer}");
        common::get(addr, path, &[header.as_str()]).await.status
    };

    // Thousands of addresses, two unmatched paths each: under the threshold, nobody reported.
    for n in 0..1500u32 {
        let ip = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
        assert_eq!(raw(ip.clone(), "/wp-admin").await, 404);
        assert_eq!(raw(ip, "/.env").await, 404);
    }
    // One scanner address over it; matched routes never count.
    for _ in 0..30 {
        assert_eq!(raw("192.0.2.77".into(), "/admin.php").await, 404);
        assert_eq!(raw("192.0.2.77".into(), "/ok").await, 200);
    }
    // A brute-forcer named by the application (from a changing address).
    for n in 0..15u32 {
        assert_eq!(raw(format!("198.51.100.{n}"), "/login").await, 401);
    }
    assert!(obs.flush());

    let text = logs.text();
    let events: Vec<serde_json::Value> = logs
        .json_lines()
        .into_iter()
        .filter(|l| l["kind"] == "suspicious_usage")
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    let by_reason: HashMap<&str, &serde_json::Value> = events
        .iter()
        .map(|e| (e["reason"].as_str().unwrap(), e))
        .collect();
    let scan = by_reason["unmatched_route"];
    assert_eq!(scan["client.kind"], "address");
    assert_eq!(scan["count"], 10);
    assert_eq!(scan["level"], "WARNING");
    let brute = by_reason["unauthorized"];
    assert_eq!(brute["client.kind"], "principal");
    for e in &events {
        let hash = e["client.hash"].as_str().unwrap();
        assert!(
            hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{e}"
        );
    }
    assert!(!text.contains("192.0.2.77"), "the address is never written");
    assert!(!text.contains("mallory"), "the principal is never written");
    let counted: HashMap<String, f64> = samples(&obs.render_metrics(), "security_events_total")
        .into_iter()
        .collect();
    assert_eq!(
        counted.get("{kind=\"suspicious_usage\"}"),
        Some(&2.0),
        "{counted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_can_be_switched_off() {
    let logs = Capture::default();
    let obs = Obs::builder()
        .log_writer(logs.clone())
        .process_metrics(false)
        .suspicious_usage_threshold(0)
        .build()
        .unwrap();
    let app = axum::Router::new()
        .layer(obs.layer())
        .layer(axum::middleware::map_request(peer));
    let addr = common::serve(app).await;
    for _ in 0..30 {
        common::get(addr, "/nope", &["x-test-peer: 192.0.2.1"]).await;
    }
    assert!(obs.flush());
    let lines = logs.json_lines();
    // The 30 scans went through the layer (one access line each); none made an event.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["message"] == "request completed" && l["url.path"] == "/nope")
            .count(),
        30,
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| l["kind"] != "suspicious_usage"),
        "off means off"
    );
}
