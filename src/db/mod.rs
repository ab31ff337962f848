//! Database client metrics and spans, following the OpenTelemetry database semantic conventions
//! as mapped to Prometheus, so the monitoring kit's pool alerts and database dashboard have data.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `db_client_connection_count` | gauge | `db_client_connection_pool_name`, `db_client_connection_state` (`idle` / `used`) |
//! | `db_client_connection_max` | gauge | `db_client_connection_pool_name` |
//! | `db_client_connection_pending_requests` | gauge | `db_client_connection_pool_name` |
//! | `db_client_operation_duration_seconds` | histogram, buckets `0.001 0.005 0.01 0.05 0.1 0.5 1 5 10` (OTel's advice) | `db_system_name`, `db_operation_name`, `db_collection_name`, `error_type` (set only on errors) |
//!
//! Two pieces, both independent of any particular driver:
//!
//! - [`DbPool`]: a gauge set you feed from any pool (sqlx, deadpool, bb8, r2d2, your own) with
//!   its size, idle connections, maximum and waiting requests, as often as you like (on every
//!   checkout, or from a periodic task).
//! - [`DbQuery`]: times a query (a future, or a closure for blocking drivers), records the
//!   histogram, and runs it inside a `db.query` span carrying `db.system.name`,
//!   `db.operation.name`, `db.collection.name` and `db.namespace`, so it shows in traces. An
//!   `Err` sets `error.type` and marks the span as an error, which keeps the trace.
//!
//! ```
//! use mercenary_obs::db::{DbPool, DbQuery, PoolStats};
//!
//! # async fn f() -> Result<(), std::io::Error> {
//! let pool = DbPool::new("main"); // on the global instance; `obs.db_pool("main")` for another
//! pool.record(PoolStats { size: 10, idle: 7, max: 20, waiting: 0 });
//!
//! let rows: Vec<u64> = DbQuery::new("postgresql", "SELECT")
//!     .collection("users")
//!     .run(async { Ok::<_, std::io::Error>(vec![1, 2, 3]) })
//!     .await?;
//! # let _ = rows; Ok(()) }
//! ```
//!
//! Decisions where the conventions leave room:
//!
//! - Label values are meant to be low-cardinality: an operation name (`SELECT`, `findAndModify`)
//!   and a table/collection name, never the query text. As a guard, past 1000 label sets new
//!   ones fold into one series whose labels are all `_other` (sums stay exact).
//! - `error_type` on an `Err` is the error's type name (`std::any::type_name`), as the HTTP
//!   layer does; a query future dropped before it finished is recorded once with
//!   `error_type="cancelled"`.
//! - The pool's `used` connections are `size - idle` (saturating), the pool name is the only
//!   pool label (`db_client_connection_pool_name`), and the gauges are exported only once a pool
//!   has been recorded.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::core::error::Error;
use crate::core::names::{
    DB_CONNECTION_COUNT as CONNECTION_COUNT, DB_CONNECTION_MAX as CONNECTION_MAX,
    DB_OPERATION_DURATION as OPERATION_DURATION, DB_PENDING_REQUESTS as PENDING_REQUESTS,
    DB_POOL_LABEL as POOL_LABEL, DB_STATE_LABEL as STATE_LABEL,
};

/// Bucket boundaries of `db_client_operation_duration_seconds` (OTel's advice for
/// `db.client.operation.duration`).
pub const DB_DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Distinct label sets of the duration histogram before new ones fold into `_other`.
const MAX_SERIES: usize = 1000;
const OTHER: &str = "_other";

type SeriesKey = (String, String, String, String);

/// The database metric families of one instance, registered when it is built (a family with
/// no series is not exported, so they cost nothing until used).
#[derive(Debug)]
pub(crate) struct DbMetrics {
    count: IntGaugeVec,
    max: IntGaugeVec,
    pending: IntGaugeVec,
    duration: HistogramVec,
    series: Mutex<HashMap<SeriesKey, Histogram>>,
}

impl DbMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, Error> {
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            name: &str,
            c: Result<C, prometheus::Error>,
        ) -> Result<C, Error> {
            let err = |e: prometheus::Error| Error::MetricRegistration {
                metric: name.to_string(),
                reason: e.to_string(),
            };
            let c = c.map_err(err)?;
            registry.register(Box::new(c.clone())).map_err(err)?;
            Ok(c)
        }
        let count = reg(
            registry,
            CONNECTION_COUNT,
            IntGaugeVec::new(
                Opts::new(
                    CONNECTION_COUNT,
                    "Connections of a database client pool, by state (idle, used).",
                ),
                &[POOL_LABEL, STATE_LABEL],
            ),
        )?;
        let max = reg(
            registry,
            CONNECTION_MAX,
            IntGaugeVec::new(
                Opts::new(
                    CONNECTION_MAX,
                    "The most connections a database client pool may open.",
                ),
                &[POOL_LABEL],
            ),
        )?;
        let pending = reg(
            registry,
            PENDING_REQUESTS,
            IntGaugeVec::new(
                Opts::new(
                    PENDING_REQUESTS,
                    "Requests waiting for a connection from a database client pool.",
                ),
                &[POOL_LABEL],
            ),
        )?;
        let duration = reg(
            registry,
            OPERATION_DURATION,
            HistogramVec::new(
                HistogramOpts::new(
                    OPERATION_DURATION,
                    "Duration of database client operations.",
                )
                .buckets(DB_DURATION_BUCKETS.to_vec()),
                &[
                    "db_system_name",
                    "db_operation_name",
                    "db_collection_name",
                    "error_type",
                ],
            ),
        )?;
        Ok(Self {
            count,
            max,
            pending,
            duration,
            series: Mutex::new(HashMap::new()),
        })
    }

    /// The histogram of one label set, cached; past [`MAX_SERIES`] sets, the `_other` series.
    fn histogram(&self, key: SeriesKey) -> Histogram {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = series.get(&key) {
            return h.clone();
        }
        let key = if series.len() >= MAX_SERIES {
            let other = |s: &str| {
                if s.is_empty() {
                    String::new()
                } else {
                    OTHER.to_string()
                }
            };
            (
                OTHER.to_string(),
                OTHER.to_string(),
                other(&key.2),
                other(&key.3),
            )
        } else {
            key
        };
        series
            .entry(key)
            .or_insert_with_key(|k| {
                self.duration.with_label_values(&[
                    k.0.as_str(),
                    k.1.as_str(),
                    k.2.as_str(),
                    k.3.as_str(),
                ])
            })
            .clone()
    }
}

/// A snapshot of a connection pool, as any pool reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections currently open (idle and in use).
    pub size: u64,
    /// Open connections not in use.
    pub idle: u64,
    /// The most connections the pool may open.
    pub max: u64,
    /// Requests waiting for a connection.
    pub waiting: u64,
}

/// The gauges of one named connection pool. Cheap to clone; feed it with [`DbPool::record`].
///
/// ```
/// let pool = mercenary_obs::db::DbPool::new("main");
/// pool.record(mercenary_obs::db::PoolStats { size: 5, idle: 2, max: 10, waiting: 0 });
/// ```
#[derive(Clone, Debug)]
pub struct DbPool {
    name: Arc<str>,
    used: IntGauge,
    idle: IntGauge,
    max: IntGauge,
    pending: IntGauge,
}

impl DbPool {
    /// The pool `name` on the global instance (see [`crate::Obs::db_pool`] for another
    /// instance).
    pub fn new(name: &str) -> DbPool {
        DbMetrics::current().pool(name)
    }

    /// Sets the gauges from `stats`: `used = size - idle`, `idle`, `max` and `waiting`.
    pub fn record(&self, stats: PoolStats) {
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.used.set(g(stats.size.saturating_sub(stats.idle)));
        self.idle.set(g(stats.idle));
        self.max.set(g(stats.max));
        self.pending.set(g(stats.waiting));
    }

    /// The pool's name (the `db_client_connection_pool_name` label).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One database operation to time and trace: the system, the operation, and optionally the
/// collection (table) and namespace (database). Run it with [`DbQuery::run`] (a future
/// returning `Result`), [`DbQuery::time`] (any future) or [`DbQuery::run_blocking`].
#[derive(Clone, Debug)]
#[must_use = "a DbQuery does nothing until it runs a query"]
pub struct DbQuery {
    metrics: Arc<DbMetrics>,
    system: String,
    operation: String,
    collection: Option<String>,
    namespace: Option<String>,
}

/// Records the observation once: at completion, or as `cancelled` when dropped before.
struct Recording {
    histogram: Histogram,
    cancelled: Option<Histogram>,
    start: Instant,
    span: tracing::Span,
}

impl Recording {
    fn finish<E>(mut self, result: Result<(), &E>, obs: &DbQuery) {
        let elapsed = self.start.elapsed().as_secs_f64();
        match result {
            Ok(()) => self.histogram.observe(elapsed),
            Err(_) => {
                let error_type = std::any::type_name::<E>();
                self.span.record("error.type", error_type);
                self.span.record("otel.status_code", "ERROR");
                obs.histogram(error_type).observe(elapsed);
            }
        }
        self.cancelled = None;
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(h) = self.cancelled.take() {
            self.span.record("error.type", "cancelled");
            h.observe(self.start.elapsed().as_secs_f64());
        }
    }
}

impl DbQuery {
    /// An operation on the global instance: `system` is `db.system.name` (`postgresql`,
    /// `mysql`, `sqlite`, `redis`, `mongodb`, ...), `operation` is `db.operation.name`
    /// (`SELECT`, `INSERT`, `GET`, ...).
    pub fn new(system: &str, operation: &str) -> DbQuery {
        DbQuery::on(DbMetrics::current().clone(), system, operation)
    }

    /// An operation recorded in `metrics` (what [`crate::Obs::db_query`] makes).
    pub(crate) fn on(metrics: Arc<DbMetrics>, system: &str, operation: &str) -> DbQuery {
        DbQuery {
            metrics,
            system: system.to_string(),
            operation: operation.to_string(),
            collection: None,
            namespace: None,
        }
    }

    /// Sets `db.collection.name`: the table or collection (low-cardinality; not the query).
    pub fn collection(mut self, collection: &str) -> Self {
        self.collection = Some(collection.to_string());
        self
    }

    /// Sets `db.namespace` (the database name) on the span.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    fn histogram(&self, error_type: &str) -> Histogram {
        self.metrics.histogram((
            self.system.clone(),
            self.operation.clone(),
            self.collection.clone().unwrap_or_default(),
            error_type.to_string(),
        ))
    }

    fn start(&self) -> Recording {
        let name = match &self.collection {
            Some(c) => format!("{} {c}", self.operation),
            None => self.operation.clone(),
        };
        let span = tracing::info_span!(
            target: crate::core::names::DB_TARGET,
            "db.query",
            otel.name = %name,
            otel.kind = "client",
            db.system.name = %self.system,
            db.operation.name = %self.operation,
            db.collection.name = tracing::field::Empty,
            db.namespace = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(c) = &self.collection {
            span.record("db.collection.name", c.as_str());
        }
        if let Some(n) = &self.namespace {
            span.record("db.namespace", n.as_str());
        }
        Recording {
            histogram: self.histogram(""),
            cancelled: Some(self.histogram("cancelled")),
            start: Instant::now(),
            span,
        }
    }

    /// Runs `query` in a `db.query` span and records its duration; an `Err` is recorded with
    /// `error_type` set to the error's type name. Dropped before it finishes, it is recorded as
    /// `cancelled`.
    pub async fn run<T, E, F>(self, query: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        use tracing::Instrument;
        let recording = self.start();
        let span = recording.span.clone();
        let out = query.instrument(span).await;
        recording.finish(out.as_ref().map(|_| ()), &self);
        out
    }

    /// Like [`DbQuery::run`] for a future that cannot fail.
    pub async fn time<T, F>(self, query: F) -> T
    where
        F: Future<Output = T>,
    {
        self.run(async { Ok::<T, std::convert::Infallible>(query.await) })
            .await
            .unwrap_or_else(|never| match never {})
    }

    /// Like [`DbQuery::run`] for a blocking driver: runs `query` inside the span, now.
    pub fn run_blocking<T, E>(self, query: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let recording = self.start();
        let out = recording.span.in_scope(query);
        recording.finish(out.as_ref().map(|_| ()), &self);
        out
    }
}

/// The database metrics of the instance `init()` installed.
static GLOBAL: OnceLock<Arc<DbMetrics>> = OnceLock::new();

/// The database metrics of the metrics-only default instance, in its registry.
static DEFAULT: LazyLock<Arc<DbMetrics>> = LazyLock::new(|| {
    let registry = crate::metrics::business::default_metrics().registry();
    Arc::new(DbMetrics::register(registry).unwrap_or_else(|_| {
        // A fresh registry with the crate's own, valid names cannot refuse a registration.
        panic!("registering the database metrics in the default registry failed")
    }))
});

impl DbMetrics {
    /// The metrics of the global instance, or of the default one before `init()`.
    pub(crate) fn current() -> &'static Arc<DbMetrics> {
        GLOBAL.get().unwrap_or(&DEFAULT)
    }

    /// The default instance's metrics.
    pub(crate) fn default_metrics() -> &'static Arc<DbMetrics> {
        &DEFAULT
    }

    /// Makes `metrics` what [`DbPool::new`] and [`DbQuery::new`] use (`init()`).
    pub(crate) fn install_global(metrics: Arc<DbMetrics>) {
        let _ = GLOBAL.set(metrics);
    }

    /// The gauges of the connection pool `name`.
    pub(crate) fn pool(&self, name: &str) -> DbPool {
        DbPool {
            name: Arc::from(name),
            used: self.count.with_label_values(&[name, "used"]),
            idle: self.count.with_label_values(&[name, "idle"]),
            max: self.max.with_label_values(&[name]),
            pending: self.pending.with_label_values(&[name]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Obs;

    fn obs() -> Obs {
        Obs::builder().log_writer(std::io::sink()).build().unwrap()
    }

    #[test]
    fn pool_gauges_follow_the_recorded_stats() {
        let obs = obs();
        let pool = obs.db_pool("main");
        pool.record(PoolStats {
            size: 8,
            idle: 3,
            max: 10,
            waiting: 2,
        });
        let text = obs.render_metrics();
        for line in [
            "db_client_connection_count{db_client_connection_pool_name=\"main\",db_client_connection_state=\"used\"} 5",
            "db_client_connection_count{db_client_connection_pool_name=\"main\",db_client_connection_state=\"idle\"} 3",
            "db_client_connection_max{db_client_connection_pool_name=\"main\"} 10",
            "db_client_connection_pending_requests{db_client_connection_pool_name=\"main\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn queries_record_outcome_and_fold_past_the_series_cap() {
        let obs = obs();
        let ok: Result<u8, std::io::Error> = obs
            .db_query("postgresql", "SELECT")
            .collection("users")
            .run_blocking(|| Ok(1));
        assert_eq!(ok.unwrap(), 1);
        let err: Result<(), std::fmt::Error> = obs
            .db_query("postgresql", "INSERT")
            .run_blocking(|| Err(std::fmt::Error));
        assert!(err.is_err());
        let text = obs.render_metrics();
        assert!(text.contains(
            "db_client_operation_duration_seconds_count{db_collection_name=\"users\",db_operation_name=\"SELECT\",db_system_name=\"postgresql\",error_type=\"\"} 1"
        ), "{text}");
        assert!(
            text.contains("error_type=\"core::fmt::Error\"} 1"),
            "{text}"
        );
        for i in 0..MAX_SERIES + 5 {
            let _ = obs
                .db_query("postgresql", &format!("OP{i}"))
                .run_blocking(|| Ok::<_, std::fmt::Error>(()));
        }
        let text = obs.render_metrics();
        assert!(
            text.contains("db_operation_name=\"_other\""),
            "past the cap, label sets fold"
        );
    }
}
