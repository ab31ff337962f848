//! The composition root: [`Obs`] (an instance) and [`ObsBuilder`](builder::ObsBuilder), which
//! validate every component's options, start the components, stack their `tracing` layers into
//! the instance's subscriber, and own flushing and shutdown, in one place.

pub(crate) mod builder;
mod guard;
mod start;
mod subscriber;

use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use tracing_core::Dispatch;

pub use self::builder::ObsBuilder;
pub use self::guard::ObsGuard;

use crate::client::ClientState;
use crate::client::tower::ClientLayer;
use crate::core::error::Error;
use crate::db::{DbMetrics, DbPool, DbQuery};
use crate::layer::ObsLayer;
use crate::layer::state::RequestState;
use crate::logging::LogPipeline;
use crate::metrics::MetricsHandle;
use crate::metrics::business::{CounterKind, GaugeKind, HistogramKind};
use crate::metrics::exposition::{self, MetricsService};
use crate::metrics::{Counter, Gauge, Histogram};
use crate::traces::TracesHandle;

/// One observability instance: a metrics registry, the RED metrics, a log pipeline, traces,
/// and the settings its tower layer applies.
///
/// Cheap to clone (an `Arc`). Made by [`ObsBuilder::build`] (nothing global) or
/// [`ObsBuilder::init`] (installed globally).
///
/// ```
/// let obs = mercenary_obs::Obs::builder().log_writer(std::io::sink()).build().unwrap();
/// let layer = obs.layer(); // for `Router::layer`
/// # let _ = layer;
/// assert!(obs.render_metrics().contains("# TYPE http_server_active_requests gauge"));
/// ```
#[derive(Clone)]
pub struct Obs {
    pub(crate) inner: Arc<ObsInner>,
}

/// The components of an instance, each behind its own handle.
pub(crate) struct ObsInner {
    pub(crate) metrics: MetricsHandle,
    pub(crate) db: Arc<DbMetrics>,
    /// The instance's subscriber; `None` for the metrics-only default instance.
    pub(crate) dispatch: Option<Dispatch>,
    /// Whether the instance is scoped around each request (`build()`), not global (`init()`).
    pub(crate) scoped: bool,
    /// The components with threads or queues to flush and stop.
    pub(crate) pipelines: Arc<Pipelines>,
    /// What the request path needs (it also keeps `pipelines` alive).
    pub(crate) request: Arc<RequestState>,
    /// What outgoing calls need (it also keeps `pipelines` alive).
    pub(crate) client: Arc<ClientState>,
    pub(crate) service_name: String,
}

/// The components of an instance that have something to flush and to stop: shut down, in
/// order, when the last handle to them goes (the last `Obs`, layer, service or request in
/// flight), or by [`ObsGuard`].
pub(crate) struct Pipelines {
    /// `None` for the metrics-only default instance.
    pub(crate) logs: Option<LogPipeline>,
    /// `None` when traces are off (and for the metrics-only default instance).
    pub(crate) traces: Option<Arc<TracesHandle>>,
    /// `None` when no Sentry DSN is set.
    #[cfg(feature = "sentry")]
    pub(crate) sentry: Option<Arc<crate::sentry::SentryState>>,
    pub(crate) shutdown_timeout: Duration,
}

impl fmt::Debug for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obs")
            .field("service_name", &self.inner.service_name)
            .field("logs", &self.inner.pipelines.logs.is_some())
            .field("global", &!self.inner.scoped)
            .finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<Obs> = OnceLock::new();

/// The instance used before `init()`: metrics only, logs go to whatever subscriber is current.
static DEFAULT: LazyLock<Obs> = LazyLock::new(start::metrics_only);

impl Obs {
    /// A builder with every setting at its default.
    pub fn builder() -> ObsBuilder {
        ObsBuilder::new()
    }

    /// The instance installed by `init()`, else the metrics-only default.
    pub fn global() -> Obs {
        GLOBAL.get().unwrap_or(&DEFAULT).clone()
    }

    /// The tower layer bound to this instance.
    pub fn layer(&self) -> ObsLayer {
        ObsLayer::new(self.clone())
    }

    /// The client tower layer bound to this instance: instruments outgoing HTTP calls made
    /// through the service it wraps (see [`ClientLayer`]).
    pub fn client_layer(&self) -> ClientLayer {
        ClientLayer::new(self.inner.client.clone())
    }

    /// The registry every metric of this instance is registered in. Register your own
    /// collectors here to expose them on the same `/metrics`.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.inner.metrics.registry
    }

    /// The Prometheus text exposition of the registry.
    pub fn render_metrics(&self) -> String {
        exposition::render(&self.inner.metrics.registry)
    }

    /// A tower `Service` answering `GET /metrics` with this instance's exposition.
    pub fn metrics_service(&self) -> MetricsService {
        MetricsService::new(self.inner.metrics.registry.clone())
            .with_exemplars(self.inner.metrics.exemplars().clone())
    }

    /// The OpenMetrics 1.0 exposition of the registry, with the exemplars of kept and
    /// exported traces (what `/metrics` answers a scraper that asks for OpenMetrics).
    pub fn render_openmetrics(&self) -> String {
        exposition::render_openmetrics_registry(
            &self.inner.metrics.registry,
            self.inner.metrics.exemplars(),
        )
    }

    /// The most recent kept traces as JSON (`{"traces":[…]}`, newest first), as served at
    /// `/debug/traces`. `None` when traces go to an OTLP endpoint instead, or are off.
    pub fn recent_traces_json(&self) -> Option<String> {
        self.inner.pipelines.traces.as_ref()?.recent_json()
    }

    /// This instance's `tracing` dispatcher (JSON or pretty logs), for code that installs it
    /// itself, for example `tracing::dispatcher::with_default` in a test. `None` for the
    /// metrics-only default instance.
    pub fn dispatch(&self) -> Option<&Dispatch> {
        self.inner.dispatch.as_ref()
    }

    /// Runs `f` with this instance's subscriber current (a no-op wrapper for the global one).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        self.inner.request.in_scope(f)
    }

    /// Waits until every log line emitted so far has been written and every kept trace exported
    /// (each bounded by the shutdown timeout).
    /// Returns whether everything was written in time.
    pub fn flush(&self) -> bool {
        self.inner.pipelines.flush()
    }

    /// Application log lines dropped so far because the log queue was full.
    pub fn log_lines_dropped(&self) -> u64 {
        self.inner
            .pipelines
            .logs
            .as_ref()
            .map_or(0, |l| l.dropped())
    }

    /// A business counter on this instance (what [`crate::counter!`] does on the global one).
    ///
    /// The family is looked up by name on each call; the macros cache it per call site. Label
    /// keys must be the same on every call for one name.
    ///
    /// ```
    /// let obs = mercenary_obs::Obs::builder().log_writer(std::io::sink()).build().unwrap();
    /// obs.counter("jobs_total", &[("queue", &"mail")]).inc();
    /// assert!(obs.render_metrics().contains("jobs_total{queue=\"mail\"} 1"));
    /// ```
    pub fn counter(&self, name: &str, labels: &[(&str, &dyn fmt::Display)]) -> Counter {
        self.inner
            .metrics
            .business
            .resolve::<CounterKind>(name, labels)
    }

    /// A business gauge on this instance.
    pub fn gauge(&self, name: &str, labels: &[(&str, &dyn fmt::Display)]) -> Gauge {
        self.inner
            .metrics
            .business
            .resolve::<GaugeKind>(name, labels)
    }

    /// A business histogram on this instance (default buckets; the [`crate::histogram!`] macro
    /// takes `buckets:`).
    pub fn histogram(&self, name: &str, labels: &[(&str, &dyn fmt::Display)]) -> Histogram {
        self.inner
            .metrics
            .business
            .resolve::<HistogramKind>(name, labels)
    }

    /// The gauges of the connection pool `name` on this instance (see [`DbPool`]).
    pub fn db_pool(&self, name: &str) -> DbPool {
        self.inner.db.pool(name)
    }

    /// A database operation timed and traced on this instance (see [`DbQuery`]).
    pub fn db_query(&self, system: &str, operation: &str) -> DbQuery {
        DbQuery::on(self.inner.db.clone(), system, operation)
    }

    /// [`crate::db::sqlx::watch_pool`] on this instance: the pool's gauges in this instance's
    /// registry, and a handle whose queries are recorded by it.
    #[cfg(feature = "sqlx")]
    #[must_use = "queries run on the returned handle count their waits for a connection"]
    pub fn watch_sqlx_pool<DB: ::sqlx::Database>(
        &self,
        name: &str,
        pool: &::sqlx::Pool<DB>,
    ) -> crate::db::sqlx::WatchedPool<DB> {
        crate::db::sqlx::watch_pool_on(&self.inner.db, name, pool)
    }
}

impl ObsLayer {
    /// A layer bound to `obs` (what [`Obs::layer`] returns). It keeps the instance alive.
    pub fn new(obs: Obs) -> Self {
        ObsLayer::from_state(obs.inner.request.clone())
    }
}

impl Pipelines {
    /// Waits until every log line so far is written, every kept trace exported and every
    /// Sentry event sent, each within the shutdown timeout.
    fn flush(&self) -> bool {
        let timeout = self.shutdown_timeout;
        let traces = self.traces.as_ref().is_none_or(|t| t.flush(timeout));
        #[cfg(feature = "sentry")]
        let traces = traces && self.sentry.as_ref().is_none_or(|s| s.flush(timeout));
        let logs = self.logs.as_ref().is_none_or(|l| l.flush(timeout));
        traces && logs
    }

    /// Shuts every component down in order, within `timeout` in all: decide the buffered
    /// traces and export the kept ones, close Sentry, then write the queued log lines (which
    /// include what the first two logged). Returns whether everything finished in time.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        let started = Instant::now();
        let left = || timeout.saturating_sub(started.elapsed());
        let traces = self.traces.as_ref().is_none_or(|t| t.shutdown(timeout));
        #[cfg(feature = "sentry")]
        let traces = traces && self.sentry.as_ref().is_none_or(|s| s.close(left()));
        // The log writer always gets a moment, even when the rest used the whole budget.
        let logs = self
            .logs
            .as_ref()
            .is_none_or(|l| l.shutdown(left().max(Duration::from_millis(100))));
        traces && logs
    }
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        self.shutdown(self.shutdown_timeout);
    }
}

/// Installs a built instance as the global subscriber and the instance the macros use.
pub(crate) fn install_global(obs: Obs) -> Result<ObsGuard, Error> {
    if GLOBAL.get().is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let dispatch = obs
        .dispatch()
        .cloned()
        .ok_or(Error::GlobalSubscriberAlreadySet)?;
    tracing_core::dispatcher::set_global_default(dispatch)
        .map_err(|_| Error::GlobalSubscriberAlreadySet)?;
    if GLOBAL.set(obs.clone()).is_err() {
        return Err(Error::AlreadyInitialized);
    }
    crate::db::DbMetrics::install_global(obs.inner.db.clone());
    crate::metrics::business::install_global(obs.inner.metrics.business.clone());
    #[cfg(feature = "sentry")]
    if let Some(sentry) = &obs.inner.pipelines.sentry {
        sentry.bind_main();
    }
    if let Some(logs) = &obs.inner.pipelines.logs {
        // Sentry's stack recorder, when the hook replaced would have run it.
        #[cfg(feature = "sentry")]
        let also = crate::sentry::panic_stack_recorder();
        #[cfg(not(feature = "sentry"))]
        let also = None;
        logs.install_panic_hook(also, obs.inner.pipelines.shutdown_timeout);
    }
    Ok(ObsGuard::new(obs))
}
