//! sqlx auto-instrumentation (feature `sqlx`): queries and pools with no per-query code.
//!
//! ```no_run
//! # async fn f() -> Result<(), sqlx::Error> {
//! let _guard = mercenary_obs::Obs::builder().init().unwrap();
//! let pool = sqlx::postgres::PgPoolOptions::new()
//!     .max_connections(10)
//!     .connect("postgres://app@db/app")
//!     .await?;
//! // One call: the pool's gauges on `/metrics`, read from the pool at scrape time; the
//! // returned handle also counts the requests waiting for one of its connections.
//! let pool = mercenary_obs::db::sqlx::watch_pool("main", &pool);
//!
//! // Unchanged query code: a `db.query` span in the request's trace and an observation of
//! // `db_client_operation_duration_seconds{db_operation_name="SELECT",db_collection_name="users"}`.
//! let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE plan = $1")
//!     .bind("pro")
//!     .fetch_one(&pool)
//!     .await?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! # What is recorded, and from where
//!
//! **Pools** ([`watch_pool`]): `db_client_connections_usage{state="used"|"idle"}`,
//! `db_client_connection_max` and `db_client_connection_pending_requests`, labelled with the
//! pool's name. A collector in the instance's registry reads `Pool::size()`,
//! `Pool::num_idle()` and `PoolOptions::get_max_connections()` when `/metrics` is scraped: no
//! task polls the pool, and the values are those of the scrape. `used` is `size - idle`
//! (connections checked out, or being opened). A closed pool's gauges disappear.
//!
//! sqlx has no getter for the requests waiting for a connection, so **`pending_requests`
//! counts the acquisitions in flight through the [`WatchedPool`] handle** `watch_pool`
//! returns: every query run with it as the executor (`.fetch_one(&pool)`, …), and its
//! [`WatchedPool::acquire`] and [`WatchedPool::begin`] (which counts the `BEGIN` round trip as
//! well), from the call until a connection is handed over. Code holding the bare `Pool`
//! (`pool.acquire()` on it, `&*watched`) still gets its queries traced, and the size, idle,
//! used and maximum gauges stay exact, but its waits are not counted.
//!
//! **Queries**, two ways:
//!
//! - Run with a [`WatchedPool`] as the executor, a query runs in a `db.query` span (CLIENT
//!   kind, a child of the current span, or the root of a trace of its own outside any span, as
//!   a [`DbQuery`](crate::db::DbQuery) is),
//!   timed from the call to the last row (waiting for a connection included) and classified:
//!   an error sets `error.type` to the database's code (`SQLSTATE` for PostgreSQL, `23505`;
//!   SQLite's extended result code, `2067`), or to the kind of failure (`pool_timed_out`,
//!   `io`, `row_not_found`, `decode`, …), records `db.response.status_code`, and marks the span
//!   as an error, which keeps the trace. A query future dropped before it ends is recorded as
//!   `cancelled`.
//! - Any other query (on a bare `Pool`, a connection, a transaction: `.execute(&mut *tx)`)
//!   is read from the event sqlx logs when it finishes (target `sqlx::query`, DEBUG, or WARN
//!   past the slow threshold): the observation, and, inside a span, a CLIENT span child of it,
//!   ending now and starting `elapsed` earlier (sqlx's own measure of the statement, without
//!   waiting for a connection). Outside any span such a query is only counted: sqlx runs
//!   statements of its own there (connection setup, pool maintenance). **sqlx does not log failures**, so these queries cannot be classified: a
//!   failed one is recorded like a successful one. Its `db.system.name` is `sqlite` on
//!   sqlx's SQLite worker threads, else the system of the watched pools when there is only
//!   one, else `other_sql`. A connection with `disable_statement_logging()` reports nothing.
//!
//! Both give the span `db.system.name`, `db.operation.name` (the statement's keyword:
//! `SELECT`, `INSERT`, …, `_OTHER` for another), `db.collection.name` (the first table the
//! statement names, when it names one) and `db.query.text`: the statement with **every
//! literal value replaced by `?`** (strings of every form, numbers, hex and bit strings,
//! dollar-quoted strings, and, outside PostgreSQL, double-quoted text), comments removed and
//! value lists after `IN` shortened to `IN (?)`, capped at 2 KiB. Placeholders (`$1`, `?`)
//! stay: bound values never reach the instrumentation. The metric gets the same system,
//! operation and table labels, and `error_type` (empty on success).
//!
//! The instance's log filter lets `sqlx::query` events through to this instrumentation
//! whatever `RUST_LOG` says (so the `tracing` level hint of the process is at least DEBUG),
//! but writes them as log lines only when `RUST_LOG` enables them, as before; sqlx's own
//! lines print the statement as written, literals included. Inside a watched query's span
//! sqlx is told logging is off for its statement (unless `RUST_LOG` enables it), so it does
//! not format a line nobody reads.
//!
//! # Caveats
//!
//! - sqlx runs each SQLite connection on a thread of its own and logs its queries there, to
//!   the *global* subscriber: queries on a bare SQLite pool are seen by the instance installed
//!   with `init()`, not by one made with `build()` (which is current only around its
//!   requests). Queries through a [`WatchedPool`] are seen by any instance.
//! - Call `watch_pool` after `init()` (like [`crate::db::DbPool::new`]): before, it registers
//!   the pool with the metrics-only default instance.
//! - Do not also feed a [`DbPool`](crate::db::DbPool) of the same name: the series would be
//!   written twice.

mod events;
mod pool;
mod watched;

pub use watched::WatchedPool;

pub(crate) use events::{QueryEvents, SpanParent, TraceHooks, WithQueries};

use std::sync::{Arc, Mutex, OnceLock};

use ::sqlx::{Database, Pool};

use super::DbMetrics;
use pool::{PoolSource, PoolTable};

/// What an instance keeps for sqlx: its watched pools (the collector reading them, registered
/// on the first) and their systems.
#[derive(Default)]
pub(crate) struct SqlxState {
    table: OnceLock<Option<Arc<PoolTable>>>,
    systems: Mutex<Vec<&'static str>>,
}

/// Registers `pool` under `name` on the global instance (the metrics-only default before
/// `init()`): its gauges are read from it at every scrape. Returns a handle to run queries
/// with, which also counts the requests waiting for a connection (see the [module
/// docs](self)); it dereferences to the `Pool`.
///
/// Watching another pool under the same name replaces the first. The instance keeps a handle
/// on the pool (as a clone of it would) until the pool is closed.
///
/// ```no_run
/// # async fn f() -> Result<(), sqlx::Error> {
/// let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
/// let pool = mercenary_obs::db::sqlx::watch_pool("main", &pool);
/// sqlx::query("CREATE TABLE t (id INTEGER)").execute(&pool).await?;
/// # Ok(()) }
/// ```
#[must_use = "queries run on the returned handle count their waits for a connection"]
pub fn watch_pool<DB: Database>(name: &str, pool: &Pool<DB>) -> WatchedPool<DB> {
    watch_pool_on(DbMetrics::current(), name, pool)
}

/// [`watch_pool`] on the instance whose database metrics are `metrics` (what
/// [`crate::Obs::watch_sqlx_pool`] calls).
pub(crate) fn watch_pool_on<DB: Database>(
    metrics: &Arc<DbMetrics>,
    name: &str,
    pool: &Pool<DB>,
) -> WatchedPool<DB> {
    let system = system_name(DB::NAME);
    let source = Arc::new(PoolSource::new(name, pool.clone()));
    if let Some(table) = metrics.sqlx_table() {
        table.watch(source.clone());
    }
    {
        let mut systems = metrics
            .sqlx
            .systems
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !systems.contains(&system) {
            systems.push(system);
        }
    }
    WatchedPool::new(pool.clone(), metrics.clone(), system, source)
}

impl DbMetrics {
    /// The collector of watched pools, registered on first use (`None` without a registry, or
    /// when the gauges' names are taken by other metrics, which is reported once).
    fn sqlx_table(&self) -> Option<&Arc<PoolTable>> {
        self.sqlx
            .table
            .get_or_init(|| {
                let families = self.pools();
                let table = Arc::new(PoolTable::new(
                    families.count.is_some(),
                    families.max.is_some(),
                    families.pending.is_some(),
                ));
                let registry = self.registry.as_ref()?;
                registry.register(Box::new(table.collector())).ok()?;
                Some(table)
            })
            .as_ref()
    }

    /// The `db.system.name` of a query logged by sqlx outside a watched pool's handle: SQLite
    /// on its worker threads, else the one system of the watched pools other than SQLite,
    /// else `other_sql`.
    pub(crate) fn sqlx_event_system(&self) -> &'static str {
        if std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("sqlx-sqlite-worker"))
        {
            return "sqlite";
        }
        let systems = self.sqlx.systems.lock().unwrap_or_else(|e| e.into_inner());
        let mut others = systems.iter().filter(|s| **s != "sqlite");
        match (others.next(), others.next()) {
            (Some(one), None) => one,
            _ => "other_sql",
        }
    }
}

/// OpenTelemetry's `db.system.name` for a sqlx driver's `Database::NAME`.
fn system_name(driver: &'static str) -> &'static str {
    match driver {
        "PostgreSQL" => "postgresql",
        "SQLite" => "sqlite",
        "MySQL" => "mysql",
        _ => "other_sql",
    }
}

#[cfg(test)]
mod tests;
