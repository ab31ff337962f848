//! sqlx auto-instrumentation on a real PostgreSQL server the test starts (initdb into a temporary
//! directory, a free port): queries through a watched pool and through a bare pool or a
//! transaction (read from sqlx's own events), their metrics, spans and errors, the pool gauges,
//! and a saturated pool's waiting requests firing the kit's alert.

use std::time::Duration;

use mercenary_obs::Obs;
use mercenary_obs::db::sqlx::WatchedPool;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};

use crate::sqlx_support::{
    PgServer, await_pool, await_waiting, db_spans, in_request, instance, kept_trace,
    pool_alert_fires, pool_gauge, query_count, server_span, within,
};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "hunter2";

async fn connect(server: &PgServer, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(20))
        .connect(&server.url())
        .await
        .unwrap()
}

async fn schema(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE TABLE users (id BIGSERIAL PRIMARY KEY, email TEXT UNIQUE NOT NULL, \
         password TEXT NOT NULL, plan TEXT NOT NULL DEFAULT 'free');
         CREATE TABLE projects (id BIGSERIAL PRIMARY KEY, owner BIGINT NOT NULL, name TEXT)",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// Starts a server, an instance, and a pool of `max` connections watched as `main`.
async fn setup(max: u32) -> (PgServer, Obs, PgPool, WatchedPool<Postgres>) {
    let server = PgServer::start();
    let (obs, _) = instance(None);
    let pool = within(&obs, connect(&server, max)).await;
    within(&obs, schema(&pool)).await;
    let watched = obs.watch_sqlx_pool("main", &pool);
    (server, obs, pool, watched)
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_are_metrics_by_operation_and_table_and_spans_of_the_request() {
    let (_server, obs, pool, watched) = setup(4).await;
    let (trace_id, body) = in_request(&obs, true, {
        let (pool, watched) = (pool.clone(), watched.clone());
        move || async move {
            // Through the watched pool: literals written inline, as people do.
            sqlx::query(&format!(
                "INSERT INTO users (email, password, plan) VALUES ('{EMAIL}', '{PASSWORD}', 'pro')"
            ))
            .execute(&watched)
            .await
            .unwrap();
            let id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                .bind(EMAIL)
                .fetch_one(&watched)
                .await
                .unwrap();
            sqlx::query("UPDATE users SET plan = 'team' WHERE id = 4242 OR email = $1")
                .bind(EMAIL)
                .execute(&watched)
                .await
                .unwrap();
            // A bare pool and a transaction: sqlx's own events.
            let rows = sqlx::query(&format!(
                "SELECT id, plan FROM users WHERE email = '{EMAIL}' AND id IN (1, 2, 3)"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut tx = watched.begin().await.unwrap();
            sqlx::query("INSERT INTO projects (owner, name) VALUES ($1, 'Secret plan')")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            sqlx::query("DELETE FROM projects WHERE owner = $1")
                .bind(id)
                .execute(&watched)
                .await
                .unwrap();
            format!("{} {}", rows.len(), rows[0].get::<String, _>("plan"))
        }
    })
    .await;
    assert_eq!(body, "1 team");

    // The metrics, by operation and table.
    let text = obs.render_metrics();
    for (operation, table, n) in [
        ("INSERT", "users", 1.0),
        ("SELECT", "users", 2.0),
        ("UPDATE", "users", 1.0),
        ("INSERT", "projects", 1.0),
        ("DELETE", "projects", 1.0),
        // sqlx sends PostgreSQL's BEGIN without logging it: only the COMMIT is seen.
        ("BEGIN", "", 0.0),
        ("COMMIT", "", 1.0),
    ] {
        assert_eq!(
            query_count(&text, "postgresql", operation, table, ""),
            n,
            "{operation} {table} in\n{text}"
        );
    }
    assert!(!text.contains(EMAIL) && !text.contains(PASSWORD), "{text}");

    // The spans: children of the request span, in its trace, with sanitised text.
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
            "INSERT projects",
            "COMMIT",
            "DELETE projects"
        ],
        "{trace:#}"
    );
    let server_start = server["start_unix_nanos"].as_u64().unwrap();
    for span in &spans {
        assert_eq!(span["kind"], "Client", "{span:#}");
        assert_eq!(span["parent_span_id"], server["span_id"], "{span:#}");
        assert_eq!(attr(span, "db.system.name"), "postgresql");
        assert!(span["start_unix_nanos"].as_u64().unwrap() >= server_start);
        let text = attr(span, "db.query.text").as_str().unwrap();
        for secret in [EMAIL, PASSWORD, "4242", "Secret plan", "'pro'", "'team'"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(span["status"], "unset", "{span:#}");
    }
    assert_eq!(
        attr(&spans[0], "db.query.text"),
        "INSERT INTO users (email, password, plan) VALUES (?, ?, ?)"
    );
    assert_eq!(attr(&spans[0], "db.operation.name"), "INSERT");
    assert_eq!(attr(&spans[0], "db.collection.name"), "users");
    assert_eq!(
        attr(&spans[1], "db.query.text"),
        "SELECT id FROM users WHERE email = $1"
    );
    assert_eq!(attr(&spans[1], "db.response.returned_rows"), 1);
    assert_eq!(
        attr(&spans[2], "db.query.text"),
        "UPDATE users SET plan = ? WHERE id = ? OR email = $1"
    );
    // Read from sqlx's event: the bare pool's query, IN-list folded.
    assert_eq!(
        attr(&spans[3], "db.query.text"),
        "SELECT id, plan FROM users WHERE email = ? AND id IN (?)"
    );
    assert_eq!(attr(&spans[3], "db.response.returned_rows"), 1);
    assert_eq!(
        attr(&spans[4], "db.query.text"),
        "INSERT INTO projects (owner, name) VALUES ($1, ?)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified_by_sqlstate_and_keep_the_trace() {
    let (_server, obs, _pool, watched) = setup(2).await;
    within(
        &obs,
        sqlx::query("INSERT INTO users (email, password) VALUES ($1, 'x')")
            .bind(EMAIL)
            .execute(&watched),
    )
    .await
    .unwrap();
    // Not forced, and the success ratio is 0: only the database errors can keep this trace.
    let (trace_id, body) = in_request(&obs, false, {
        let watched = watched.clone();
        move || async move {
            let missing = sqlx::query("SELECT * FROM no_such_table WHERE id = 7")
                .fetch_all(&watched)
                .await
                .unwrap_err();
            let duplicate = sqlx::query(&format!(
                "INSERT INTO users (email, password) VALUES ('{EMAIL}', '{PASSWORD}')"
            ))
            .execute(&watched)
            .await
            .unwrap_err();
            let found = sqlx::query("SELECT id FROM users WHERE id = $1")
                .bind(-1_i64)
                .fetch_optional(&watched)
                .await
                .unwrap();
            // The handler recovers: the request is a 200.
            format!("{missing} / {duplicate} / {found:?}")
        }
    })
    .await;
    assert!(body.ends_with("/ None"), "{body}");

    let text = obs.render_metrics();
    assert_eq!(
        query_count(&text, "postgresql", "SELECT", "no_such_table", "42P01"),
        1.0,
        "{text}"
    );
    assert_eq!(
        query_count(&text, "postgresql", "INSERT", "users", "23505"),
        1.0,
        "{text}"
    );
    assert_eq!(
        query_count(&text, "postgresql", "SELECT", "users", ""),
        1.0,
        "{text}"
    );

    let trace = kept_trace(&obs, &trace_id);
    assert_eq!(trace["reason"], "error", "{trace:#}");
    assert_eq!(server_span(&trace)["status"], "unset");
    let spans = db_spans(&trace);
    assert_eq!(spans.len(), 3, "{trace:#}");
    for (span, code) in [(&spans[0], "42P01"), (&spans[1], "23505")] {
        assert_eq!(span["status"], "error", "{span:#}");
        assert_eq!(attr(span, "error.type"), code);
        assert_eq!(attr(span, "db.response.status_code"), code);
    }
    assert_eq!(spans[2]["status"], "unset");
    assert!(attr(&spans[2], "error.type").is_null());
    assert_eq!(
        attr(&spans[1], "db.query.text"),
        "INSERT INTO users (email, password) VALUES (?, ?)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_gauges_are_read_from_the_pool_at_scrape_time() {
    let (_server, obs, pool, watched) = setup(3).await;
    let gauges = |text: &str| {
        (
            pool_gauge(text, "db_client_connections_usage", "main", Some("used")),
            pool_gauge(text, "db_client_connections_usage", "main", Some("idle")),
            pool_gauge(text, "db_client_connection_max", "main", None),
            pool_gauge(text, "db_client_connection_pending_requests", "main", None),
        )
    };
    // Once the setup's connections are back in the pool (a connection is returned by a task
    // of its own), the pool holds still: what a scrape reads is what the pool says.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pool.num_idle() != pool.size() as usize && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let idle = pool.num_idle() as f64;
    let size = f64::from(pool.size());
    assert_eq!(
        gauges(&obs.render_metrics()),
        (Some(size - idle), Some(idle), Some(3.0), Some(0.0))
    );
    let a = watched.acquire().await.unwrap();
    let b = watched.acquire().await.unwrap();
    let text = obs.render_metrics();
    let (used, idle, _, _) = gauges(&text);
    assert_eq!(used, Some(2.0), "{text}");
    assert_eq!(used.unwrap() + idle.unwrap(), f64::from(pool.size()));
    drop((a, b));
    pool.close().await;
    // A closed pool's gauges are gone.
    assert_eq!(
        gauges(&obs.render_metrics()),
        (None, None, None, None),
        "{}",
        obs.render_metrics()
    );
    crate::common::promtool_check(&obs.render_metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_saturated_by_slow_queries_has_waiting_requests_and_fires_the_alert() {
    let (_server, obs, _pool, watched) = setup(2).await;
    let before = pool_gauge(
        &obs.render_metrics(),
        "db_client_connection_pending_requests",
        "main",
        None,
    )
    .unwrap();
    assert_eq!(before, 0.0);
    let query = |sql: &'static str| {
        let watched = watched.clone();
        tokio::spawn(async move { sqlx::query(sql).execute(&watched).await.map(|_| ()) })
    };
    // Two slow queries take both connections; three more wait for one.
    let slow: Vec<_> = (0..2).map(|_| query("SELECT pg_sleep(2)")).collect();
    await_pool(&obs, 2.0, 0.0).await;
    let waiting: Vec<_> = (0..3).map(|_| query("SELECT 1")).collect();
    let during = await_waiting(&obs, "main", 3.0).await;
    assert_eq!(during, 3.0);
    for task in slow.into_iter().chain(waiting) {
        task.await.unwrap().unwrap();
    }
    let after = pool_gauge(
        &obs.render_metrics(),
        "db_client_connection_pending_requests",
        "main",
        None,
    );
    assert_eq!(after, Some(0.0));
    // The kit's alert, fed with the scraped series: it fires on the saturated pool only.
    assert!(pool_alert_fires(before, during));
    assert!(!pool_alert_fires(before, after.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_events_reach_the_instrumentation_but_are_logged_only_when_asked() {
    let server = PgServer::start();
    for (filter, logged) in [(None, false), (Some("info,sqlx::query=debug"), true)] {
        let (obs, capture) = instance(filter);
        let pool = within(&obs, connect(&server, 2)).await;
        // Before any pool is watched, a query read from sqlx's event has no known system.
        in_request(&obs, false, {
            let pool = pool.clone();
            move || async move {
                sqlx::query("SELECT 1 AS one")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                String::new()
            }
        })
        .await;
        // A watched query is recorded once, by its span, whether or not sqlx logs it.
        let watched = obs.watch_sqlx_pool("main", &pool);
        in_request(&obs, false, move || async move {
            sqlx::query("SELECT 2 AS two")
                .fetch_one(&watched)
                .await
                .unwrap();
            String::new()
        })
        .await;
        pool.close().await;
        let text = obs.render_metrics();
        assert_eq!(
            query_count(&text, "other_sql", "SELECT", "", ""),
            1.0,
            "{text}"
        );
        assert_eq!(
            query_count(&text, "postgresql", "SELECT", "", ""),
            1.0,
            "{text}"
        );
        obs.flush();
        let lines = capture.json_lines();
        let logged_lines = lines
            .iter()
            .filter(|l| l["target"] == "sqlx::query")
            .count();
        assert_eq!(
            logged_lines,
            if logged { 2 } else { 0 },
            "filter {filter:?}: {lines:#?}"
        );
    }
}
