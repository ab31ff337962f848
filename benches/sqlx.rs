//! Added cost per query of the sqlx instrumentation, against the same sqlx query with no
//! instrumentation, on SQLite (in memory, one connection per pool, so no query waits).
//!
//! Every case runs `SELECT id, name FROM users WHERE id = ?` (`fetch_one`, a 100-row table,
//! the id bound) on a tokio current-thread runtime, in batches of 50 queries inside one
//! parent span (`handler`, as a request span would be), so there is a trace to record into;
//! the parent span's own cost is shared by its 50 queries. The instance is installed with
//! `init()` (logs to `io::sink()`, traces on at the default success ratio): sqlx logs SQLite
//! queries from its own threads, to the global subscriber.
//!
//! - `bare`: a pool whose connections do not log statements
//!   (`ConnectOptions::disable_statement_logging()`), run with no subscriber current (the
//!   parent span is not recorded either): sqlx alone;
//! - `events`: a pool with sqlx's default logging, the query run on the bare `Pool`: read from
//!   sqlx's query event (the statement parsed, the text sanitised, a CLIENT span handed to the
//!   tail sampler, the histogram observed);
//! - `watched`: the same pool, the query run on the `WatchedPool` `watch_pool` returns: a
//!   `db.query` span around the query, the waiting-requests count, the error classification,
//!   the histogram (sqlx's event for it is skipped).
//!
//! Criterion measures each case; then the cases run round-robin, 31 rounds of 400 queries
//! each, and the medians and the ratios to `bare` are printed ("interleaved"): a burst of load
//! from other processes then hits every case alike. Skipped under `--test`, `--profile-time`
//! and `cargo test`.
//!
//! Run with `cargo bench --bench sqlx -- --noplot`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mercenary_obs::Obs;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Executor, Sqlite};
use tokio::runtime::Runtime;
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

const QUERY: &str = "SELECT id, name FROM users WHERE id = ?";
const BATCH: u64 = 50;

async fn database(log_statements: bool) -> SqlitePool {
    let mut options = SqliteConnectOptions::from_str("sqlite::memory:").unwrap();
    if !log_statements {
        options = options.disable_statement_logging();
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO users (id, name)
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         SELECT i, 'user-' || i FROM n;",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// Runs `iters` queries through `executor`, in batches inside a parent span; the elapsed time.
async fn run<'a, E>(executor: E, iters: u64) -> Duration
where
    E: Executor<'a, Database = Sqlite> + Copy,
{
    let start = Instant::now();
    let mut done = 0;
    while done < iters {
        let n = BATCH.min(iters - done);
        async {
            for i in 0..n {
                let row: (i64, String) = sqlx::query_as(QUERY)
                    .bind(((done + i) % 100 + 1) as i64)
                    .fetch_one(executor)
                    .await
                    .unwrap();
                black_box(row);
            }
        }
        .instrument(tracing::info_span!("handler", correlation_id = "bench"))
        .await;
        done += n;
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let _guard = Obs::builder()
        .service_name("bench")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .init()
        .unwrap();
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare_pool = rt.block_on(database(false));
    let pool = rt.block_on(database(true));
    let watched = mercenary_obs::db::sqlx::watch_pool("main", &pool);

    let none = tracing::Dispatch::none();
    let bare = |iters: u64| rt.block_on(run(&bare_pool, iters).with_subscriber(none.clone()));
    let events = |iters: u64| rt.block_on(run(&pool, iters));
    let watched = |iters: u64| rt.block_on(run(&watched, iters));

    // What each case records, checked before measuring.
    let count = || {
        let text = Obs::global().render_metrics();
        text.lines()
            .find(|l| l.starts_with("db_client_operation_duration_seconds_count{db_collection_name=\"users\",db_operation_name=\"SELECT\",db_system_name=\"sqlite\",error_type=\"\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = count();
    bare(10);
    assert_eq!(count(), before, "the bare case records nothing");
    events(10);
    watched(10);
    assert_eq!(
        count(),
        before + 20,
        "each instrumented query is observed once"
    );

    let cases: [(&str, &dyn Fn(u64) -> Duration); 3] =
        [("bare", &bare), ("events", &events), ("watched", &watched)];
    for (name, f) in cases {
        c.bench_function(&format!("sqlite/{name}"), |b| b.iter_custom(f));
    }

    // Only under `cargo bench` (which passes `--bench`), not `--test` or `--profile-time`.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench")
        || args.iter().any(|a| a == "--test" || a == "--profile-time")
    {
        return;
    }
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..31 {
        for (i, (_, f)) in cases.iter().enumerate() {
            rounds[i].push(f(400).as_nanos() as f64 / 400.0);
        }
    }
    let medians: Vec<f64> = rounds
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    println!("\ninterleaved (median of 31 rounds of 400 queries, ns per query):");
    for ((name, _), ns) in cases.iter().zip(&medians) {
        println!(
            "  {name:<8} {ns:>8.0} ns   x{:.2} of bare   {:+.0} ns",
            ns / medians[0],
            ns - medians[0]
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
