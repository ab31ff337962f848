//! [`Obs`], the instance, and [`ObsGuard`], which flushes it at the end of `main`.

use std::fmt;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use http::HeaderName;
use tracing_core::Dispatch;

use crate::builder::{Config, ObsBuilder, TracingConfig};
use crate::error::Error;
use crate::layer::ObsLayer;
use crate::logging::{self, LogConfig, LogPipeline};
use crate::metrics::business::{BusinessMetrics, CounterKind, GaugeKind, HistogramKind};
use crate::metrics::exposition::{self, MetricsService};
use crate::metrics::red::{self, RedMetrics};
use crate::metrics::{Counter, Gauge, Histogram};
use crate::tracing::ring::TraceRing;
use crate::tracing::sampler::{Sinks, TailSampler, TraceMetrics};

/// One observability instance: a metrics registry, the RED metrics, a log pipeline, and the
/// settings its tower layer applies.
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

pub(crate) struct ObsInner {
    pub(crate) registry: prometheus::Registry,
    pub(crate) red: RedMetrics,
    pub(crate) business: Arc<BusinessMetrics>,
    /// Database pool gauges and query histogram (`crate::db`).
    pub(crate) db: crate::db::DbMetrics,
    /// `None` for the metrics-only default instance.
    pub(crate) logs: Option<LogPipeline>,
    /// Whether the layer must make this instance's subscriber current around each request
    /// (instances from `build()`); `false` when it is the global subscriber.
    pub(crate) scoped: bool,
    pub(crate) request_id_header: HeaderName,
    pub(crate) log_headers: Vec<LoggedHeader>,
    pub(crate) catch_panics: bool,
    /// Record a `security_event!` of kind `unauthorized` for 401/403 responses.
    pub(crate) unauthorized_events: bool,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) service_name: String,
    /// `None` when traces are off (and for the metrics-only default instance).
    pub(crate) tracing: Option<TracingState>,
    /// `None` when no Sentry DSN is set.
    #[cfg(feature = "sentry")]
    pub(crate) sentry: Option<crate::sentry::SentryState>,
}

/// The trace side of an instance.
pub(crate) struct TracingState {
    pub(crate) sampler: Arc<TailSampler>,
    pub(crate) forced_header: HeaderName,
    pub(crate) forced_value: http::HeaderValue,
}

impl fmt::Debug for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obs")
            .field("service_name", &self.inner.service_name)
            .field("logs", &self.inner.logs.is_some())
            .field("global", &!self.inner.scoped)
            .finish_non_exhaustive()
    }
}

/// A request header written on the access line, prepared once.
pub(crate) struct LoggedHeader {
    pub(crate) name: HeaderName,
    /// `,"http.request.header.<name>":`
    pub(crate) prefix: String,
    pub(crate) sensitive: bool,
}

static GLOBAL: OnceLock<Obs> = OnceLock::new();

/// The call-site slot of the instance the metric macros use now (0: default, 1: global).
#[inline]
pub(crate) fn macro_slot() -> usize {
    usize::from(GLOBAL.get().is_some())
}

/// The instance the metric macros use now, with its call-site slot (0: default, 1: global).
#[inline]
pub(crate) fn macro_target() -> (usize, &'static Obs) {
    match GLOBAL.get() {
        Some(obs) => (1, obs),
        None => (0, &DEFAULT),
    }
}

/// The instance used before `init()`: metrics only, logs go to whatever subscriber is current.
static DEFAULT: LazyLock<Obs> = LazyLock::new(Obs::metrics_only);

impl Obs {
    /// A builder with every setting at its default.
    pub fn builder() -> ObsBuilder {
        ObsBuilder::new()
    }

    /// The instance installed by `init()`, else the metrics-only default.
    pub fn global() -> Obs {
        GLOBAL.get().unwrap_or(&DEFAULT).clone()
    }

    pub(crate) fn from_config(config: Config, global: bool) -> Result<Obs, Error> {
        let registry = config.registry.unwrap_or_default();
        let red = RedMetrics::register(
            &registry,
            &config.duration_buckets,
            &config.service_name,
            &config.service_version,
            &config.environment,
        )?;
        if config.process_metrics {
            red::register_process_metrics(&registry)?;
            #[cfg(feature = "tokio")]
            crate::metrics::runtime::register_runtime_metrics(&registry)?;
        }
        let db = crate::db::DbMetrics::register(&registry)?;
        let business = Arc::new(BusinessMetrics::new(
            &registry,
            config.series_cap,
            config.series_caps,
        )?);
        let log_dispatch = Arc::new(OnceLock::new());
        let tracing = Self::start_tracing(
            &registry,
            config.tracing,
            &config.service_name,
            &config.service_version,
            &config.environment,
            &config.resource_attributes,
            log_dispatch.clone(),
        )?;
        #[cfg(feature = "sentry")]
        let sentry = match config.sentry {
            None => None,
            Some(sentry) => Some(crate::sentry::start(
                sentry,
                crate::sentry::SentryStart {
                    registry: &registry,
                    redact: &config.redact_fields,
                    service_name: &config.service_name,
                    service_version: &config.service_version,
                    environment: &config.environment,
                    shutdown_timeout: config.shutdown_timeout,
                },
            )?),
        };
        let dropped = red.log_lines_dropped.clone();
        let logs = logging::start(
            LogConfig {
                format: config.log_format,
                filter: config.log_filter,
                sink: config.log_writer,
                sink_is_terminal: config.sink_is_terminal,
                queue_bytes: config.log_queue_bytes,
                value_cap: config.log_value_max_bytes,
                redact: config.redact_fields,
                service: config.service_name.clone(),
                audit_sink: config.audit_sink,
                business: business.clone(),
                #[cfg(feature = "sentry")]
                sentry: sentry.is_some(),
            },
            Box::new(move || dropped.inc()),
            tracing.as_ref().map(|t| t.sampler.clone()),
        )
        .map_err(Error::WriterThread)?;
        let _ = log_dispatch.set(logs.dispatch.downgrade());
        let log_headers = config
            .log_headers
            .into_iter()
            .map(|name| {
                let mut prefix = String::from(",");
                crate::logging::escape::push_json_str(
                    &mut prefix,
                    &format!("http.request.header.{}", name.as_str()),
                    usize::MAX,
                );
                prefix.push(':');
                let sensitive = logs.settings.redactor.is_sensitive(name.as_str());
                LoggedHeader {
                    name,
                    prefix,
                    sensitive,
                }
            })
            .collect();
        Ok(Obs {
            inner: Arc::new(ObsInner {
                registry,
                red,
                business,
                db,
                logs: Some(logs),
                scoped: !global,
                request_id_header: config.request_id_header,
                log_headers,
                catch_panics: config.catch_panics,
                unauthorized_events: config.unauthorized_events,
                shutdown_timeout: config.shutdown_timeout,
                service_name: config.service_name,
                tracing,
                #[cfg(feature = "sentry")]
                sentry,
            }),
        })
    }

    fn start_tracing(
        registry: &prometheus::Registry,
        config: TracingConfig,
        service_name: &str,
        service_version: &str,
        environment: &str,
        resource_attributes: &[(String, String)],
        log_dispatch: Arc<OnceLock<tracing_core::dispatcher::WeakDispatch>>,
    ) -> Result<Option<TracingState>, Error> {
        let metrics = TraceMetrics::register(registry)?;
        if !config.enabled {
            return Ok(None);
        }
        let ring = config
            .otlp
            .is_none()
            .then(|| TraceRing::new(config.ring_size));
        #[cfg(not(feature = "otlp"))]
        if let Some(otlp) = &config.otlp {
            return Err(Error::InvalidSetting {
                setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
                value: otlp.endpoint.clone(),
                expected: "no endpoint: this build has no `otlp` feature".into(),
            });
        }
        #[cfg(feature = "otlp")]
        let export = match config.otlp {
            None => None,
            Some(otlp) => Some(crate::tracing::export_pipeline(
                registry,
                otlp,
                &metrics,
                service_name,
                service_version,
                environment,
                resource_attributes,
                log_dispatch,
            )?),
        };
        #[cfg(not(feature = "otlp"))]
        let _ = (
            service_name,
            service_version,
            environment,
            resource_attributes,
            log_dispatch,
        );
        let sinks = Sinks {
            ring,
            #[cfg(feature = "otlp")]
            export,
        };
        Ok(Some(TracingState {
            sampler: Arc::new(TailSampler::new(config.sampling, metrics, sinks)),
            forced_header: config.forced_header,
            forced_value: config.forced_value,
        }))
    }

    /// The most recent kept traces as JSON (`{"traces":[…]}`, newest first), as served at
    /// `/debug/traces`. `None` when traces go to an OTLP endpoint instead, or are off.
    pub fn recent_traces_json(&self) -> Option<String> {
        let tracing = self.inner.tracing.as_ref()?;
        tracing
            .sampler
            .sinks()
            .ring
            .as_ref()
            .map(|r| r.render_json())
    }

    /// Decides every buffered trace and exports what is kept, within `timeout`.
    pub(crate) fn shutdown_traces(&self, timeout: Duration) -> bool {
        let Some(tracing) = &self.inner.tracing else {
            return true;
        };
        tracing.sampler.decide_all();
        #[cfg(feature = "otlp")]
        if let Some(export) = &tracing.sampler.sinks().export {
            return export.shutdown(timeout);
        }
        let _ = timeout;
        true
    }

    fn metrics_only() -> Obs {
        let registry = prometheus::Registry::new();
        let red = RedMetrics::register(
            &registry,
            crate::builder::DEFAULT_DURATION_BUCKETS,
            "unknown_service",
            "unknown",
            "unknown",
        )
        .unwrap_or_else(|_| unreachable_registration());
        let db = crate::db::DbMetrics::register(&registry)
            .unwrap_or_else(|_| unreachable_registration());
        let business = Arc::new(
            BusinessMetrics::new(
                &registry,
                crate::metrics::business::DEFAULT_SERIES_CAP,
                Default::default(),
            )
            .unwrap_or_else(|_| BusinessMetrics::unregistered(&registry)),
        );
        Obs {
            inner: Arc::new(ObsInner {
                registry,
                red,
                business,
                db,
                logs: None,
                scoped: false,
                request_id_header: HeaderName::from_static("x-request-id"),
                log_headers: Vec::new(),
                catch_panics: true,
                unauthorized_events: false,
                shutdown_timeout: Duration::from_secs(5),
                service_name: "unknown_service".into(),
                tracing: None,
                #[cfg(feature = "sentry")]
                sentry: None,
            }),
        }
    }

    /// The tower layer bound to this instance.
    pub fn layer(&self) -> ObsLayer {
        ObsLayer::new(self.clone())
    }

    /// The registry every metric of this instance is registered in. Register your own
    /// collectors here to expose them on the same `/metrics`.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.inner.registry
    }

    /// The Prometheus text exposition of the registry.
    pub fn render_metrics(&self) -> String {
        exposition::render(&self.inner.registry)
    }

    /// A tower `Service` answering `GET /metrics` with this instance's exposition.
    pub fn metrics_service(&self) -> MetricsService {
        MetricsService { obs: self.clone() }
    }

    /// This instance's `tracing` dispatcher (JSON or pretty logs), for code that installs it
    /// itself, for example `tracing::dispatcher::with_default` in a test. `None` for the
    /// metrics-only default instance.
    pub fn dispatch(&self) -> Option<&Dispatch> {
        self.inner.logs.as_ref().map(|l| &l.dispatch)
    }

    /// Runs `f` with this instance's subscriber current (a no-op wrapper for the global one).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match (&self.inner.logs, self.inner.scoped) {
            (Some(logs), true) => tracing_core::dispatcher::with_default(&logs.dispatch, f),
            _ => f(),
        }
    }

    /// Waits until every log line emitted so far has been written and every kept trace exported
    /// (each bounded by the shutdown timeout).
    /// Returns whether everything was written in time.
    pub fn flush(&self) -> bool {
        #[cfg(feature = "otlp")]
        let traces = match self
            .inner
            .tracing
            .as_ref()
            .and_then(|t| t.sampler.sinks().export.as_ref())
        {
            Some(export) => export.flush(self.inner.shutdown_timeout),
            None => true,
        };
        #[cfg(not(feature = "otlp"))]
        let traces = true;
        #[cfg(feature = "sentry")]
        let traces = traces
            && self
                .inner
                .sentry
                .as_ref()
                .is_none_or(|s| s.flush(self.inner.shutdown_timeout));
        let logs = match &self.inner.logs {
            Some(logs) => logs.flush(self.inner.shutdown_timeout),
            None => true,
        };
        traces && logs
    }

    /// Application log lines dropped so far because the log queue was full.
    pub fn log_lines_dropped(&self) -> u64 {
        self.inner.logs.as_ref().map_or(0, |l| l.writer.dropped())
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
        self.inner.business.resolve::<CounterKind>(name, labels)
    }

    /// A business gauge on this instance.
    pub fn gauge(&self, name: &str, labels: &[(&str, &dyn fmt::Display)]) -> Gauge {
        self.inner.business.resolve::<GaugeKind>(name, labels)
    }

    /// A business histogram on this instance (default buckets; the [`crate::histogram!`] macro
    /// takes `buckets:`).
    pub fn histogram(&self, name: &str, labels: &[(&str, &dyn fmt::Display)]) -> Histogram {
        self.inner.business.resolve::<HistogramKind>(name, labels)
    }

    pub(crate) fn shutdown_logs_within(&self, timeout: Duration) -> bool {
        match &self.inner.logs {
            Some(logs) => logs.shutdown(timeout.max(Duration::from_millis(100))),
            None => true,
        }
    }
}

impl Drop for ObsInner {
    fn drop(&mut self) {
        if let Some(tracing) = &self.tracing {
            tracing.sampler.decide_all();
            #[cfg(feature = "otlp")]
            if let Some(export) = &tracing.sampler.sinks().export {
                export.shutdown(self.shutdown_timeout);
            }
        }
        #[cfg(feature = "sentry")]
        if let Some(sentry) = &self.sentry {
            sentry.close(self.shutdown_timeout);
        }
        if let Some(logs) = &self.logs {
            logs.shutdown(self.shutdown_timeout);
        }
    }
}

#[cold]
fn unreachable_registration<T>() -> T {
    // A fresh registry with the crate's own, valid names cannot refuse a registration.
    panic!("registering the crate's metrics in a fresh registry failed")
}

/// Builds, then installs as the global subscriber and instance.
pub(crate) fn install_global(config: Config) -> Result<ObsGuard, Error> {
    if GLOBAL.get().is_some() {
        return Err(Error::AlreadyInitialized);
    }
    let obs = Obs::from_config(config, true)?;
    let dispatch = obs
        .dispatch()
        .cloned()
        .ok_or(Error::GlobalSubscriberAlreadySet)?;
    tracing_core::dispatcher::set_global_default(dispatch)
        .map_err(|_| Error::GlobalSubscriberAlreadySet)?;
    if GLOBAL.set(obs.clone()).is_err() {
        return Err(Error::AlreadyInitialized);
    }
    #[cfg(feature = "sentry")]
    if let Some(sentry) = &obs.inner.sentry {
        sentry.bind_main();
    }
    Ok(ObsGuard { obs: Some(obs) })
}

/// Flushes and shuts down the global instance when dropped. Keep it alive for all of `main`:
///
/// ```no_run
/// fn main() -> Result<(), mercenary_obs::Error> {
///     let _guard = mercenary_obs::Obs::builder().service_name("api").from_env().init()?;
///     // ... run the server ...
///     Ok(())
/// }
/// ```
///
/// Shutting down is bounded by [`ObsBuilder::shutdown_timeout`]: it never hangs, on any
/// runtime flavour, because it waits on a plain thread, not on the async runtime. Lines logged
/// after shutdown are written synchronously.
#[must_use = "dropping the guard at once shuts the log writer down at once"]
pub struct ObsGuard {
    obs: Option<Obs>,
}

impl fmt::Debug for ObsGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObsGuard").finish_non_exhaustive()
    }
}

impl ObsGuard {
    /// The installed instance.
    pub fn obs(&self) -> Option<&Obs> {
        self.obs.as_ref()
    }

    /// Flushes and shuts down now, reporting whether everything was written in time.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.shutdown_inner()
    }

    fn shutdown_inner(&mut self) -> Result<(), Error> {
        let Some(obs) = self.obs.take() else {
            return Ok(());
        };
        let timeout = obs.inner.shutdown_timeout;
        let started = std::time::Instant::now();
        let traces = obs.shutdown_traces(timeout);
        #[cfg(feature = "sentry")]
        let traces = traces
            && obs
                .inner
                .sentry
                .as_ref()
                .is_none_or(|s| s.close(timeout.saturating_sub(started.elapsed())));
        let logs = obs.shutdown_logs_within(timeout.saturating_sub(started.elapsed()));
        if traces && logs {
            Ok(())
        } else {
            Err(Error::ShutdownTimedOut { timeout })
        }
    }
}

impl Drop for ObsGuard {
    fn drop(&mut self) {
        let _ = self.shutdown_inner();
    }
}
