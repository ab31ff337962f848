//! The demo keeps its data in SQLite through sqlx, with the global instance: its traces show the
//! real queries (through the watched pool, and in a sign-up's transaction the ones read from
//! sqlx's events on SQLite's worker threads), its `/metrics` the query and pool metrics, and
//! neither its traces nor its log lines an email or a password.

use crate::common;

use common::processes::Demo;
use common::{client, samples, send};
use serde_json::Value;

const EMAIL: &str = "margaret@example.com";
const PASSWORD: &str = "apollo-11-guidance";

fn attr<'a>(span: &'a Value, key: &str) -> &'a str {
    span["attributes"][key].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_traces_and_measures_its_sqlite_queries() {
    // Every trace kept, so each request's is in the ring.
    let mut demo = Demo::start(&[("MERCENARY_OBS_SUCCESS_RATIO", "1")]).await;
    let c = client();
    let base = format!("http://{}", demo.addr);
    let signup = format!(r#"{{"plan":"team","email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    let (status, _) = send(&c, "POST", &format!("{base}/signup"), &signup).await;
    assert_eq!(status, 201);
    let login = format!(r#"{{"email":"{EMAIL}","password":"{PASSWORD}"}}"#);
    assert_eq!(
        send(&c, "POST", &format!("{base}/login"), &login).await.0,
        200
    );
    let (status, body) = send(&c, "GET", &format!("{base}/users/42"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["email"],
        "user-42@example.com"
    );
    assert_eq!(
        send(&c, "GET", &format!("{base}/users/1001"), "").await.0,
        404
    );
    let (status, body) = send(&c, "GET", &format!("{base}/pricing/7"), "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"id":7,"price":6.75}"#));

    let (_, traces) = send(&c, "GET", &format!("{base}/debug/traces"), "").await;
    let traces: Value = serde_json::from_str(&traces).unwrap();
    let traces = traces["traces"].as_array().unwrap();
    // The trace of the (most recent) request to `route` answered 2xx.
    let trace_of = |route: &str| {
        traces
            .iter()
            .find(|t| {
                t["spans"].as_array().unwrap().iter().any(|s| {
                    s["attributes"]["http.route"] == route
                        && s["attributes"]["http.response.status_code"]
                            .as_i64()
                            .is_some_and(|c| c < 300)
                })
            })
            .unwrap_or_else(|| panic!("a {route} trace in {traces:#?}"))
    };
    let db_spans = |trace: &Value| -> Vec<Value> {
        let server = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "Server")
            .unwrap()
            .clone();
        let spans: Vec<Value> = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["attributes"]["db.system.name"] == "sqlite")
            .cloned()
            .collect();
        for s in &spans {
            assert_eq!(s["parent_span_id"], server["span_id"], "{trace:#}");
            assert_eq!(s["kind"], "Client");
        }
        spans
    };
    // The sign-up's transaction: read from sqlx's events, on SQLite's worker thread.
    let signup_spans = db_spans(trace_of("/signup"));
    let names: Vec<&str> = signup_spans
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"INSERT users") && names.contains(&"INSERT signups"),
        "{signup_spans:#?}"
    );
    for s in &signup_spans {
        assert!(attr(s, "db.query.text").contains('?'), "{s:#}");
    }
    // Through the watched pool.
    let user_spans = db_spans(trace_of("/users/{id}"));
    assert!(
        user_spans.iter().any(|s| s["name"] == "SELECT users"
            && attr(s, "db.query.text") == "SELECT name, email, plan FROM users WHERE id = ?"),
        "{user_spans:#?}"
    );
    assert!(
        db_spans(trace_of("/pricing/{id}"))
            .iter()
            .any(|s| s["name"] == "SELECT prices")
    );
    let all = serde_json::to_string(&traces).unwrap();
    assert!(!all.contains(EMAIL) && !all.contains(PASSWORD));

    let (_, metrics) = send(&c, "GET", &format!("{base}/metrics"), "").await;
    let count = |operation: &str, table: &str| {
        samples(&metrics, "db_client_operation_duration_seconds_count")
            .into_iter()
            .find(|(l, _)| {
                *l == format!(
                    "{{db_collection_name=\"{table}\",db_operation_name=\"{operation}\",db_system_name=\"sqlite\",error_type=\"\"}}"
                )
            })
            .map_or(0.0, |(_, v)| v)
    };
    assert!(count("SELECT", "users") >= 2.0, "{metrics}");
    assert!(count("INSERT", "signups") >= 1.0, "{metrics}");
    assert!(count("SELECT", "prices") >= 1.0, "{metrics}");
    assert!(
        metrics.contains("db_client_connection_max{db_client_connection_pool_name=\"main\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "db_client_connection_pending_requests{db_client_connection_pool_name=\"main\"} 0"
    ));

    assert!(demo.stop().success());
    // sqlx's query events fed the instrumentation without being written (RUST_LOG unset), and
    // no line holds the email or the password.
    let lines = demo.lines();
    assert!(lines.iter().any(|l| l.contains("user signed up")));
    for line in &lines {
        assert!(!line.contains("\"target\":\"sqlx::query\""), "{line}");
        assert!(!line.contains(EMAIL) && !line.contains(PASSWORD), "{line}");
    }
}
