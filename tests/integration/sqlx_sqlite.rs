//! sqlx auto-instrumentation on an embedded SQLite database (a file in a temporary directory),
//! through a watched pool: metrics by operation and table, spans in the request's trace with
//! the literals gone, errors classified by SQLite's result codes, the pool gauges, and a pool
//! saturated by busy queries firing the kit's alert.
//!
//! Queries on a bare SQLite pool are logged by sqlx from its worker threads, to the global
//! subscriber, which these tests (one process, many instances) do not install: the demo's
//! test covers them (`sqlx_demo.rs`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use mercenary_obs::Obs;
use mercenary_obs::db::sqlx::WatchedPool;
use serde_json::Value;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::common::processes::temp_dir;
use crate::sqlx_support::{
    await_pool, await_waiting, db_spans, in_request, instance, kept_trace, pool_alert_fires,
    pool_gauge, query_count, server_span, within,
};

const EMAIL: &str = "grace@example.com";
const PASSWORD: &str = "correct horse";

/// A database file of the test's own, removed on drop.
struct Db {
    dir: PathBuf,
    pool: SqlitePool,
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup(max: u32) -> (Db, Obs, WatchedPool<Sqlite>) {
    let dir = temp_dir("sqlite");
    let options =
        SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.join("test.db").display()))
            .unwrap()
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(20));
    let (obs, _) = instance(None);
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(20))
        .connect_with(options);
    let pool = within(&obs, pool).await.unwrap();
    within(
        &obs,
        sqlx::raw_sql(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, \
             password TEXT NOT NULL, plan TEXT NOT NULL DEFAULT 'free')",
        )
        .execute(&pool),
    )
    .await
    .unwrap();
    let watched = obs.watch_sqlx_pool("main", &pool);
    (Db { dir, pool }, obs, watched)
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// A statement that keeps SQLite busy for a while (it has no sleep function).
const BUSY: &str = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) \
                    SELECT count(*) FROM c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_metrics_by_operation_and_table_and_spans_of_the_request() {
    let (_db, obs, watched) = setup(2).await;
    let (trace_id, body) = in_request(&obs, true, {
        let watched = watched.clone();
        move || async move {
            sqlx::query(&format!(
                "INSERT INTO users (email, password) VALUES ('{EMAIL}', '{PASSWORD}')"
            ))
            .execute(&watched)
            .await
            .unwrap();
            let plan: String = sqlx::query_scalar("SELECT plan FROM users WHERE email = ?")
                .bind(EMAIL)
                .fetch_one(&watched)
                .await
                .unwrap();
            sqlx::query("UPDATE users SET plan = 'pro' WHERE id = 31337")
                .execute(&watched)
                .await
                .unwrap();
            let all = sqlx::query("SELECT * FROM users WHERE id IN (1, 2) AND email <> x'00ff'")
                .fetch_all(&watched)
                .await
                .unwrap();
            sqlx::query("DELETE FROM users WHERE email = ?")
                .bind(EMAIL)
                .execute(&watched)
                .await
                .unwrap();
            format!("{plan} {}", all.len())
        }
    })
    .await;
    assert_eq!(body, "free 1");
    let text = obs.render_metrics();
    for (operation, n) in [
        ("INSERT", 1.0),
        ("SELECT", 2.0),
        ("UPDATE", 1.0),
        ("DELETE", 1.0),
    ] {
        assert_eq!(
            query_count(&text, "sqlite", operation, "users", ""),
            n,
            "{operation} in\n{text}"
        );
    }

    let trace = kept_trace(&obs, &trace_id);
    let server = server_span(&trace);
    let spans = db_spans(&trace);
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "INSERT users",
            "SELECT users",
            "UPDATE users",
            "SELECT users",
            "DELETE users"
        ],
        "{trace:#}"
    );
    for span in &spans {
        assert_eq!(span["kind"], "Client");
        assert_eq!(span["parent_span_id"], server["span_id"]);
        assert_eq!(attr(span, "db.system.name"), "sqlite");
        assert_eq!(attr(span, "db.collection.name"), "users");
        let text = attr(span, "db.query.text").as_str().unwrap();
        for secret in [EMAIL, PASSWORD, "31337", "00ff", "'pro'"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    let texts: Vec<&str> = spans
        .iter()
        .map(|s| attr(s, "db.query.text").as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "INSERT INTO users (email, password) VALUES (?, ?)",
            "SELECT plan FROM users WHERE email = ?",
            "UPDATE users SET plan = ? WHERE id = ?",
            "SELECT * FROM users WHERE id IN (?) AND email <> ?",
            "DELETE FROM users WHERE email = ?",
        ]
    );
    assert_eq!(attr(&spans[3], "db.response.returned_rows"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified_by_result_code_and_keep_the_trace() {
    let (_db, obs, watched) = setup(2).await;
    within(
        &obs,
        sqlx::query("INSERT INTO users (email, password) VALUES (?, 'x')")
            .bind(EMAIL)
            .execute(&watched),
    )
    .await
    .unwrap();
    let (trace_id, _) = in_request(&obs, false, {
        let watched = watched.clone();
        move || async move {
            let Err(missing) = sqlx::query("SELECT * FROM no_such_table")
                .fetch_optional(&watched)
                .await
            else {
                panic!("the table does not exist");
            };
            let duplicate = sqlx::query(&format!(
                "INSERT INTO users (email, password) VALUES ('{EMAIL}', '{PASSWORD}')"
            ))
            .execute(&watched)
            .await
            .unwrap_err();
            format!("{missing} / {duplicate}")
        }
    })
    .await;
    let text = obs.render_metrics();
    // SQLITE_ERROR (1) for the missing table, SQLITE_CONSTRAINT_UNIQUE (2067).
    assert_eq!(
        query_count(&text, "sqlite", "SELECT", "no_such_table", "1"),
        1.0,
        "{text}"
    );
    assert_eq!(query_count(&text, "sqlite", "INSERT", "users", "2067"), 1.0);
    let trace = kept_trace(&obs, &trace_id);
    assert_eq!(trace["reason"], "error");
    let spans = db_spans(&trace);
    assert_eq!(spans.len(), 2, "{trace:#}");
    for (span, code) in spans.iter().zip(["1", "2067"]) {
        assert_eq!(span["status"], "error");
        assert_eq!(attr(span, "error.type"), code);
        assert_eq!(attr(span, "db.response.status_code"), code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_gauges_are_read_from_the_pool_at_scrape_time() {
    let (db, obs, watched) = setup(4).await;
    // Once the setup's connections are back in the pool (a connection is returned by a task
    // of its own), the pool holds still: what a scrape reads is what the pool says.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while db.pool.num_idle() != db.pool.size() as usize && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let text = obs.render_metrics();
    let used = pool_gauge(&text, "db_client_connections_usage", "main", Some("used"));
    let idle = pool_gauge(&text, "db_client_connections_usage", "main", Some("idle"));
    assert_eq!(
        (used, idle),
        (
            Some(f64::from(db.pool.size()) - db.pool.num_idle() as f64),
            Some(db.pool.num_idle() as f64)
        ),
        "{text}"
    );
    assert_eq!(
        pool_gauge(&text, "db_client_connection_max", "main", None),
        Some(4.0)
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(watched.acquire().await.unwrap());
    }
    let text = obs.render_metrics();
    assert_eq!(
        pool_gauge(&text, "db_client_connections_usage", "main", Some("used")),
        Some(3.0),
        "{text}"
    );
    drop(held);
    db.pool.close().await;
    assert!(
        !obs.render_metrics()
            .contains("db_client_connection_pool_name=\"main\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_saturated_by_busy_queries_has_waiting_requests_and_fires_the_alert() {
    let (_db, obs, watched) = setup(2).await;
    let before = pool_gauge(
        &obs.render_metrics(),
        "db_client_connection_pending_requests",
        "main",
        None,
    )
    .unwrap();
    let query = |sql: &'static str| {
        let watched = watched.clone();
        tokio::spawn(async move { sqlx::query(sql).execute(&watched).await.map(|_| ()) })
    };
    let busy: Vec<_> = (0..2).map(|_| query(BUSY)).collect();
    await_pool(&obs, 2.0, 0.0).await;
    let waiting: Vec<_> = (0..2).map(|_| query("SELECT 1")).collect();
    let during = await_waiting(&obs, "main", 2.0).await;
    for task in busy.into_iter().chain(waiting) {
        task.await.unwrap().unwrap();
    }
    let after = pool_gauge(
        &obs.render_metrics(),
        "db_client_connection_pending_requests",
        "main",
        None,
    )
    .unwrap();
    assert_eq!((before, during, after), (0.0, 2.0, 0.0));
    assert!(pool_alert_fires(before, during));
    assert!(!pool_alert_fires(before, after));
}

/// sqlx holds the current span of each SQLite command on the connection's own thread: were a
/// watched query's span entered there on a `build()` instance, a request whose span that
/// thread released last would never end (`tracing` releases the parent through the thread's
/// default subscriber). A hundred requests, and every trace is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_trace_ends_after_its_sqlite_queries() {
    let (_db, obs, watched) = setup(2).await;
    for i in 0..100_i64 {
        in_request(&obs, false, {
            let watched = watched.clone();
            move || async move {
                for _ in 0..2 {
                    sqlx::query("SELECT plan FROM users WHERE id = ?")
                        .bind(i)
                        .fetch_optional(&watched)
                        .await
                        .unwrap();
                    sqlx::query("UPDATE users SET plan = plan WHERE id = ?")
                        .bind(i)
                        .execute(&watched)
                        .await
                        .unwrap();
                }
                String::new()
            }
        })
        .await;
    }
    let buffered =
        || crate::common::samples(&obs.render_metrics(), "mercenary_obs_trace_buffer_traces")[0].1;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while buffered() > 0.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(buffered(), 0.0, "{}", obs.render_metrics());
    let decided: f64 = crate::common::samples(&obs.render_metrics(), "mercenary_obs_traces_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(decided, 100.0);
}
