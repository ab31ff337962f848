//! Database client metrics and spans, following the OpenTelemetry database semantic conventions
//! as mapped to Prometheus, so the monitoring kit's pool alerts and database dashboard have data.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `db_client_connections_usage` | gauge | `db_client_connection_pool_name`, `db_client_connection_state` (`idle` / `used`) |
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
//! With feature `sqlx`, `mercenary_obs::db::sqlx` feeds both from sqlx itself: every query a
//! sqlx connection runs is timed and traced with no code at the call site, and a watched pool's
//! gauges are read from the pool when `/metrics` is scraped.
//!
//! Decisions where the conventions leave room:
//!
//! - Label values are meant to be low-cardinality: an operation name (`SELECT`, `findAndModify`)
//!   and a table/collection name, never the query text. As a guard, each metric holds at most
//!   1000 label sets: past them new ones fold into one series whose labels are all `_other`
//!   (sums stay exact), and `mercenary_obs_metric_overflow_total{metric}` counts each folded
//!   resolution. The metrics are business-metric families (the series table of
//!   [`crate::counter!`] and friends): an existing series is found without allocating, and a
//!   label value is cut at 1024 bytes.
//! - `error_type` on an `Err` is the error's type name (`std::any::type_name`), as the HTTP
//!   layer does; a query future dropped before it finished is recorded once with
//!   `error_type="cancelled"`.
//! - The pool's `used` connections are `size - idle` (saturating), the pool name is the only
//!   pool label (`db_client_connection_pool_name`), and the gauges are exported only once a pool
//!   has been recorded.

#[cfg(feature = "sqlx")]
pub(crate) mod sql;
#[cfg(feature = "sqlx")]
pub mod sqlx;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus::Registry;

use crate::core::names::{
    DB_COLLECTION_LABEL as COLLECTION_LABEL, DB_CONNECTION_MAX as CONNECTION_MAX,
    DB_CONNECTIONS_USAGE as CONNECTION_COUNT, DB_OPERATION_DURATION as OPERATION_DURATION,
    DB_OPERATION_LABEL as OPERATION_LABEL, DB_PENDING_REQUESTS as PENDING_REQUESTS,
    DB_POOL_LABEL as POOL_LABEL, DB_STATE_LABEL as STATE_LABEL, DB_SYSTEM_LABEL as SYSTEM_LABEL,
};
use crate::metrics::business::{
    self, BusinessMetrics, Desc, Family, Gauge, GaugeKind, Histogram, HistogramKind, Kind,
    LabelRef, MetricKind,
};

/// Bucket boundaries of `db_client_operation_duration_seconds` (OTel's advice for
/// `db.client.operation.duration`).
pub const DB_DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// Distinct label sets of each database metric before new ones fold into `_other` (whatever
/// the instance's default series cap; a per-name cap set on the builder overrides it).
const MAX_SERIES: usize = 1000;

/// The label carrying the error's type name (`cancelled` for a dropped query, empty on success).
const ERROR_TYPE_LABEL: &str = "error_type";

static DURATION: Desc = Desc::new(
    Kind::Histogram,
    OPERATION_DURATION,
    &[
        SYSTEM_LABEL,
        OPERATION_LABEL,
        COLLECTION_LABEL,
        ERROR_TYPE_LABEL,
    ],
)
.with_help("Duration of database client operations.")
.with_buckets(DB_DURATION_BUCKETS)
.with_max_series(MAX_SERIES);

/// The HELP texts of the pool gauges (shared by [`DbPool`]'s families and the gauges of the
/// pools watched through sqlx, which are rendered into the same families).
const COUNT_HELP: &str = "Connections of a database client pool, by state (idle, used).";
const MAX_HELP: &str = "The most connections a database client pool may open.";
const PENDING_HELP: &str = "Requests waiting for a connection from a database client pool.";

static COUNT: Desc = Desc::new(Kind::Gauge, CONNECTION_COUNT, &[POOL_LABEL, STATE_LABEL])
    .with_help(COUNT_HELP)
    .with_max_series(MAX_SERIES);

static MAX: Desc = Desc::new(Kind::Gauge, CONNECTION_MAX, &[POOL_LABEL])
    .with_help(MAX_HELP)
    .with_max_series(MAX_SERIES);

static PENDING: Desc = Desc::new(Kind::Gauge, PENDING_REQUESTS, &[POOL_LABEL])
    .with_help(PENDING_HELP)
    .with_max_series(MAX_SERIES);

/// The database metric families of one instance: business-metric families in the instance's
/// table, created on first use (a pool's gauges on the first pool, the histogram on the first
/// query), so an instance that never touches a database exports nothing for them.
pub(crate) struct DbMetrics {
    business: Arc<BusinessMetrics>,
    duration: OnceLock<Option<Arc<Family<HistogramKind>>>>,
    pools: OnceLock<PoolFamilies>,
    /// The instance's registry, where collectors reading pools at scrape time go (`None` only
    /// for the lazily made global metrics of an instance installed without them).
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    registry: Option<Registry>,
    /// The sqlx pools this instance watches.
    #[cfg(feature = "sqlx")]
    sqlx: sqlx::SqlxState,
}

/// The three gauge families of the connection pools. `None`: the name conflicts with another
/// metric (logged once); the gauges are no-ops.
struct PoolFamilies {
    count: Option<Arc<Family<GaugeKind>>>,
    max: Option<Arc<Family<GaugeKind>>>,
    pending: Option<Arc<Family<GaugeKind>>>,
}

impl fmt::Debug for DbMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbMetrics").finish_non_exhaustive()
    }
}

impl DbMetrics {
    /// The database metrics of the instance whose business-metric families are `business`,
    /// registered in `registry`.
    pub(crate) fn new(business: &Arc<BusinessMetrics>, registry: Option<&Registry>) -> Self {
        Self {
            business: business.clone(),
            duration: OnceLock::new(),
            pools: OnceLock::new(),
            registry: registry.cloned(),
            #[cfg(feature = "sqlx")]
            sqlx: sqlx::SqlxState::default(),
        }
    }

    /// The histogram family (`None` when its name conflicts with another metric).
    fn duration(&self) -> Option<&Family<HistogramKind>> {
        self.duration
            .get_or_init(|| {
                self.business
                    .family::<HistogramKind>(&DURATION, OPERATION_DURATION)
            })
            .as_deref()
    }

    /// The duration series of these labels (a no-op when the family could not be made),
    /// found without allocating when it exists.
    pub(crate) fn histogram_for(
        &self,
        system: &str,
        operation: &str,
        collection: &str,
        error_type: &str,
    ) -> &Histogram {
        let values = [
            LabelRef::Str(system),
            LabelRef::Str(operation),
            LabelRef::Str(collection),
            LabelRef::Str(error_type),
        ];
        let noop: &Histogram = HistogramKind::noop();
        self.duration()
            .and_then(|f| f.series_ref(&values))
            .unwrap_or(noop)
    }

    fn pools(&self) -> &PoolFamilies {
        self.pools.get_or_init(|| PoolFamilies {
            count: self.business.family::<GaugeKind>(&COUNT, CONNECTION_COUNT),
            max: self.business.family::<GaugeKind>(&MAX, CONNECTION_MAX),
            pending: self
                .business
                .family::<GaugeKind>(&PENDING, PENDING_REQUESTS),
        })
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
    used: Gauge,
    idle: Gauge,
    max: Gauge,
    pending: Gauge,
}

impl DbPool {
    /// The pool `name` on the global instance (see [`crate::Obs::db_pool`] for another
    /// instance).
    pub fn new(name: &str) -> DbPool {
        DbMetrics::current().pool(name)
    }

    /// Sets the gauges from `stats`: `used = size - idle`, `idle`, `max` and `waiting`.
    pub fn record(&self, stats: PoolStats) {
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX) as f64;
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
    system: Cow<'static, str>,
    operation: Cow<'static, str>,
    collection: Option<String>,
    namespace: Option<String>,
    /// `db.query.text`, already sanitised (set by the sqlx instrumentation only).
    text: Option<String>,
}

/// How a failed operation is recorded: `error.type` (the metric label and the span attribute)
/// and, when the database answered with one, `db.response.status_code`.
pub(crate) struct Failure<'a> {
    pub(crate) error_type: &'a str,
    pub(crate) status_code: Option<&'a str>,
}

/// Records the observation once: at completion, or as `cancelled` when dropped before.
pub(crate) struct Recording<'q> {
    histogram: &'q Histogram,
    cancelled: Option<&'q Histogram>,
    start: Instant,
    span: tracing::Span,
}

impl Recording<'_> {
    fn finish<E>(self, result: Result<(), &E>, obs: &DbQuery) {
        let failure = result.err().map(|_| Failure {
            error_type: std::any::type_name::<E>(),
            status_code: None,
        });
        self.finish_with(failure, obs);
    }

    /// Records the outcome: success, or `failure`.
    pub(crate) fn finish_with(mut self, failure: Option<Failure<'_>>, obs: &DbQuery) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let histogram = match failure {
            None => self.histogram,
            Some(f) => {
                self.span.record("error.type", f.error_type);
                if let Some(code) = f.status_code {
                    self.span.record("db.response.status_code", code);
                }
                self.span.record("otel.status_code", "ERROR");
                obs.histogram(f.error_type)
            }
        };
        // The exemplar names the span the operation was called from (its own span's ID is
        // the span context layer's).
        histogram.observe_with_exemplar(elapsed);
        self.cancelled = None;
    }

    /// The `db.query` span the operation runs in.
    #[cfg(feature = "sqlx")]
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }
}

impl Drop for Recording<'_> {
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
        DbQuery::on_static(
            metrics,
            Cow::Owned(system.to_string()),
            Cow::Owned(operation.to_string()),
        )
    }

    /// Like [`DbQuery::on`], without copying names known at compile time.
    pub(crate) fn on_static(
        metrics: Arc<DbMetrics>,
        system: Cow<'static, str>,
        operation: Cow<'static, str>,
    ) -> DbQuery {
        DbQuery {
            metrics,
            system,
            operation,
            collection: None,
            namespace: None,
            text: None,
        }
    }

    /// Sets `db.query.text` on the span: `text` must be sanitised already.
    #[cfg(feature = "sqlx")]
    pub(crate) fn sanitized_text(mut self, text: String) -> Self {
        self.text = Some(text);
        self
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

    /// The series of this operation with `error_type` (empty: success), found without
    /// allocating when it exists.
    fn histogram(&self, error_type: &str) -> &Histogram {
        self.metrics.histogram_for(
            &self.system,
            &self.operation,
            self.collection.as_deref().unwrap_or_default(),
            error_type,
        )
    }

    pub(crate) fn start(&self) -> Recording<'_> {
        let name = match &self.collection {
            Some(c) => format!("{} {c}", self.operation),
            None => self.operation.to_string(),
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
            db.query.text = tracing::field::Empty,
            db.response.status_code = tracing::field::Empty,
            db.response.returned_rows = tracing::field::Empty,
            error.type = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(c) = &self.collection {
            span.record("db.collection.name", c.as_str());
        }
        if let Some(n) = &self.namespace {
            span.record("db.namespace", n.as_str());
        }
        if let Some(t) = &self.text {
            span.record("db.query.text", t.as_str());
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

/// The database metrics of the default (0) and global (1) instance, made on first use over
/// the business metrics the macros target ([`business::target_shared`]).
static SLOTS: [OnceLock<Arc<DbMetrics>>; 2] = [OnceLock::new(), OnceLock::new()];

impl DbMetrics {
    /// The metrics of the global instance, or of the default one before `init()`.
    pub(crate) fn current() -> &'static Arc<DbMetrics> {
        match business::target_shared() {
            (0, _) => DbMetrics::default_metrics(),
            (slot, business) => {
                SLOTS[slot].get_or_init(|| Arc::new(DbMetrics::new(business, None)))
            }
        }
    }

    /// The default instance's metrics, over [`business::default_metrics`].
    pub(crate) fn default_metrics() -> &'static Arc<DbMetrics> {
        SLOTS[0].get_or_init(|| {
            Arc::new(DbMetrics::new(
                business::default_metrics(),
                Some(&crate::metrics::default_handle().registry),
            ))
        })
    }

    /// Whether these are the global instance's metrics (the instance installed by `init()`).
    #[cfg(feature = "sqlx")]
    pub(crate) fn is_global(self: &Arc<Self>) -> bool {
        SLOTS[1].get().is_some_and(|g| Arc::ptr_eq(g, self))
    }

    /// Makes `metrics` (the instance being installed by `init()`) the global instance's
    /// database metrics. Called before the business metrics are made global, so
    /// [`DbMetrics::current`] never makes a second set for the global instance.
    pub(crate) fn install_global(metrics: Arc<DbMetrics>) {
        let _ = SLOTS[1].set(metrics);
    }

    /// The gauges of the connection pool `name`.
    pub(crate) fn pool(&self, name: &str) -> DbPool {
        let families = self.pools();
        let gauge = |family: &Option<Arc<Family<GaugeKind>>>, values: &[LabelRef<'_>]| {
            family
                .as_deref()
                .map(|f| f.series(values))
                .unwrap_or_default()
        };
        DbPool {
            name: Arc::from(name),
            used: gauge(
                &families.count,
                &[LabelRef::Str(name), LabelRef::Str("used")],
            ),
            idle: gauge(
                &families.count,
                &[LabelRef::Str(name), LabelRef::Str("idle")],
            ),
            max: gauge(&families.max, &[LabelRef::Str(name)]),
            pending: gauge(&families.pending, &[LabelRef::Str(name)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::future::Future;
    use std::task::{Context, Waker};

    use super::*;
    use crate::metrics::business::DEFAULT_SERIES_CAP;
    use crate::metrics::exposition::render;

    /// Database metrics over a fresh registry, whose business metrics have `default_cap`.
    fn metrics(default_cap: usize) -> (Registry, Arc<DbMetrics>) {
        let registry = Registry::new();
        let business =
            Arc::new(BusinessMetrics::new(&registry, default_cap, HashMap::new()).unwrap());
        (
            registry.clone(),
            Arc::new(DbMetrics::new(&business, Some(&registry))),
        )
    }

    fn count_lines(text: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with("db_client_operation_duration_seconds_count{"))
            .count()
    }

    #[test]
    fn nothing_is_exported_before_a_pool_or_a_query() {
        let (registry, db) = metrics(DEFAULT_SERIES_CAP);
        let _query = DbQuery::on(db.clone(), "postgresql", "SELECT");
        let text = render(&registry);
        assert!(!text.contains("db_client"), "{text}");
        assert!(!text.contains("metric=\"db_client"), "{text}");
    }

    #[test]
    fn pool_gauges_follow_the_recorded_stats() {
        let (registry, db) = metrics(DEFAULT_SERIES_CAP);
        let pool = db.pool("main");
        assert_eq!(pool.name(), "main");
        pool.record(PoolStats {
            size: 8,
            idle: 3,
            max: 10,
            waiting: 2,
        });
        let text = render(&registry);
        for line in [
            "# HELP db_client_connections_usage Connections of a database client pool, by state (idle, used).",
            "# TYPE db_client_connections_usage gauge",
            "db_client_connections_usage{db_client_connection_pool_name=\"main\",db_client_connection_state=\"used\"} 5",
            "db_client_connections_usage{db_client_connection_pool_name=\"main\",db_client_connection_state=\"idle\"} 3",
            "# HELP db_client_connection_max The most connections a database client pool may open.",
            "# TYPE db_client_connection_max gauge",
            "db_client_connection_max{db_client_connection_pool_name=\"main\"} 10",
            "# HELP db_client_connection_pending_requests Requests waiting for a connection from a database client pool.",
            "# TYPE db_client_connection_pending_requests gauge",
            "db_client_connection_pending_requests{db_client_connection_pool_name=\"main\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Another handle on the same pool is the same series.
        db.pool("main").record(PoolStats::default());
        assert!(
            render(&registry)
                .contains("db_client_connection_max{db_client_connection_pool_name=\"main\"} 0")
        );
    }

    #[test]
    fn queries_record_outcome_buckets_and_error_type() {
        let (registry, db) = metrics(DEFAULT_SERIES_CAP);
        let ok: Result<u8, std::io::Error> = DbQuery::on(db.clone(), "postgresql", "SELECT")
            .collection("users")
            .run_blocking(|| Ok(1));
        assert_eq!(ok.unwrap(), 1);
        let err: Result<(), std::fmt::Error> =
            DbQuery::on(db.clone(), "postgresql", "INSERT").run_blocking(|| Err(std::fmt::Error));
        assert!(err.is_err());
        let text = render(&registry);
        let select = "db_collection_name=\"users\",db_operation_name=\"SELECT\",db_system_name=\"postgresql\"";
        for line in [
            "# HELP db_client_operation_duration_seconds Duration of database client operations.",
            "# TYPE db_client_operation_duration_seconds histogram",
            &format!("db_client_operation_duration_seconds_count{{{select},error_type=\"\"}} 1"),
            // The `cancelled` series of a label set exists from its first run.
            &format!(
                "db_client_operation_duration_seconds_count{{{select},error_type=\"cancelled\"}} 0"
            ),
            "db_client_operation_duration_seconds_count{db_collection_name=\"\",db_operation_name=\"INSERT\",db_system_name=\"postgresql\",error_type=\"core::fmt::Error\"} 1",
            "db_client_operation_duration_seconds_count{db_collection_name=\"\",db_operation_name=\"INSERT\",db_system_name=\"postgresql\",error_type=\"\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        let bounds: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "db_client_operation_duration_seconds_bucket{{{select},error_type=\"\""
                ))
            })
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(
            bounds,
            [
                "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "10", "+Inf"
            ]
        );
    }

    #[test]
    fn a_query_dropped_before_it_finishes_is_recorded_once_as_cancelled() {
        let (registry, db) = metrics(DEFAULT_SERIES_CAP);
        let query = DbQuery::on(db, "postgresql", "UPDATE")
            .collection("t")
            .run(std::future::pending::<Result<(), std::fmt::Error>>());
        let mut query = Box::pin(query);
        assert!(
            query
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
        drop(query);
        let text = render(&registry);
        let labels =
            "db_collection_name=\"t\",db_operation_name=\"UPDATE\",db_system_name=\"postgresql\"";
        for line in [
            format!(
                "db_client_operation_duration_seconds_count{{{labels},error_type=\"cancelled\"}} 1"
            ),
            format!("db_client_operation_duration_seconds_count{{{labels},error_type=\"\"}} 0"),
        ] {
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn past_the_cap_new_label_sets_fold_into_other_and_are_counted() {
        // The instance's default cap does not apply: the database metrics keep their own 1000.
        let (registry, db) = metrics(10);
        let run = |operation: &str| {
            DbQuery::on(db.clone(), "postgresql", operation)
                .run_blocking(|| Ok::<_, std::fmt::Error>(()))
                .unwrap();
        };
        // Each label set takes two series (the outcome and its `cancelled` twin).
        for i in 0..MAX_SERIES / 2 {
            run(&format!("OP{i}"));
        }
        let text = render(&registry);
        assert_eq!(count_lines(&text), MAX_SERIES, "{text}");
        assert!(!text.contains("=\"_other\""), "{text}");
        assert!(
            text.contains("mercenary_obs_metric_overflow_total{metric=\"db_client_operation_duration_seconds\"} 0"),
            "{text}"
        );
        for i in 0..5 {
            run(&format!("NEW{i}"));
        }
        // A label set from before the cap still has its own series.
        run("OP0");
        let text = render(&registry);
        assert_eq!(count_lines(&text), MAX_SERIES + 1);
        assert!(
            text.contains("db_client_operation_duration_seconds_count{db_collection_name=\"_other\",db_operation_name=\"_other\",db_system_name=\"_other\",error_type=\"_other\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("db_client_operation_duration_seconds_count{db_collection_name=\"\",db_operation_name=\"OP0\",db_system_name=\"postgresql\",error_type=\"\"} 2"),
            "{text}"
        );
        // Five new label sets, each resolved twice (outcome and `cancelled`).
        assert!(
            text.contains("mercenary_obs_metric_overflow_total{metric=\"db_client_operation_duration_seconds\"} 10"),
            "{text}"
        );
    }

    #[test]
    fn the_default_instance_records_in_the_default_business_registry() {
        let db = DbMetrics::default_metrics();
        assert!(Arc::ptr_eq(
            &db.business,
            crate::metrics::business::default_metrics()
        ));
        db.pool("default_instance_pool").record(PoolStats {
            size: 1,
            idle: 1,
            max: 4,
            waiting: 0,
        });
        let text = render(&crate::metrics::default_handle().registry);
        assert!(
            text.contains("db_client_connection_max{db_client_connection_pool_name=\"default_instance_pool\"} 4"),
            "{text}"
        );
    }
}
