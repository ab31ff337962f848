//! Starting an instance: each component from its validated config, in dependency order.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_core::dispatcher::WeakDispatch;

use super::{Obs, ObsInner, Pipelines, subscriber};
use crate::client::ClientState;
use crate::client::metrics::ClientMetrics;
use crate::context::layer::ContextLayer;
use crate::core::error::Error;
use crate::core::names::EXPORT_TARGET;
use crate::core::resource::Resource;
use crate::db::DbMetrics;
use crate::layer::options::RequestConfig;
use crate::layer::state::RequestState;
use crate::logging::events::EventsLayer;
use crate::logging::options::LogConfig;
use crate::metrics::options::MetricsConfig;
use crate::metrics::rpc::RpcHistogram;
use crate::traces::options::TracesConfig;

/// Every component's validated settings.
pub(crate) struct Config {
    pub(crate) resource: Resource,
    pub(crate) metrics: MetricsConfig,
    pub(crate) logs: LogConfig,
    pub(crate) traces: TracesConfig,
    pub(crate) request: RequestConfig,
    /// `None` when no DSN is set.
    #[cfg(feature = "sentry")]
    pub(crate) sentry: Option<crate::sentry::SentryConfig>,
    pub(crate) shutdown_timeout: Duration,
}

/// Starts the components: metrics, database metrics, traces, Sentry, the log pipeline; then
/// stacks the subscriber and prepares the request path. `global`: the subscriber will be
/// installed globally (else the layer makes it current around each request).
pub(crate) fn from_config(config: Config, global: bool) -> Result<Obs, Error> {
    let resource = config.resource;
    let metrics = crate::metrics::start(config.metrics, &resource)?;
    let db = Arc::new(DbMetrics::new(&metrics.business, Some(&metrics.registry)));

    // The exporter's warnings go through this instance's log pipeline, made below.
    let log_dispatch: Arc<OnceLock<WeakDispatch>> = Arc::new(OnceLock::new());
    let warn_dispatch = log_dispatch.clone();
    let warn = Box::new(move |reason: &str| {
        if let Some(dispatch) = warn_dispatch.get().and_then(|w| w.upgrade()) {
            tracing_core::dispatcher::with_default(&dispatch, || {
                tracing::warn!(target: EXPORT_TARGET, reason, "trace export failing");
            });
        }
    });
    let traces = crate::traces::start(
        &metrics.registry,
        config.traces,
        &resource,
        warn,
        metrics.exemplars().clone(),
    )?
    .map(Arc::new);

    #[cfg(feature = "sentry")]
    let sentry = match config.sentry {
        None => None,
        Some(sentry) => Some(Arc::new(crate::sentry::start(
            sentry,
            crate::sentry::SentryStart {
                registry: &metrics.registry,
                redact: &config.logs.redact,
                service_name: &resource.service_name,
                service_version: &resource.service_version,
                environment: &resource.environment,
                shutdown_timeout: config.shutdown_timeout,
            },
        )?)),
    };

    let dropped = metrics.red.log_lines_dropped.clone();
    let (logs, filter) = crate::logging::start(
        config.logs,
        &resource.service_name,
        Box::new(move || dropped.inc()),
        crate::logging::AuditCounters {
            diverted: metrics.red.audit_diverted.clone(),
            lost: metrics.red.audit_lost.clone(),
        },
    )
    .map_err(Error::WriterThread)?;
    crate::context::current::install_exemplar_hook();
    let context = ContextLayer::new(
        logs.settings.clone(),
        traces.as_ref().map(|t| t.sampler.clone()),
        logs.access_lines_enabled(),
    );
    #[cfg(feature = "sentry")]
    let with_sentry = sentry.is_some();
    #[cfg(not(feature = "sentry"))]
    let with_sentry = false;
    // With feature `sqlx`, the filter lets sqlx's query events through to the database
    // metrics and spans (and on to the log lines only when it enables them itself).
    #[cfg(feature = "sqlx")]
    let filter = crate::db::sqlx::WithQueries::new(
        filter,
        crate::db::sqlx::QueryEvents {
            metrics: db.clone(),
            sampler: traces.as_ref().map(|t| t.sampler.clone()),
            hooks: sqlx_hooks::HOOKS,
        },
    );
    let dispatch = subscriber::compose(
        &logs,
        filter,
        context,
        EventsLayer::new(&metrics.business),
        with_sentry,
    );
    let _ = log_dispatch.set(dispatch.downgrade());

    let request_id_header = config.request.request_id_header.clone();
    let mut request = RequestState::new(
        config.request,
        &metrics,
        (!global).then(|| dispatch.clone()),
        Some(logs.settings.clone()),
        traces.clone(),
    );
    request.access = logs.access_lines();
    #[cfg(feature = "sentry")]
    {
        request.sentry = sentry.clone();
    }
    let pipelines = Arc::new(Pipelines {
        logs: Some(logs),
        traces,
        #[cfg(feature = "sentry")]
        sentry,
        shutdown_timeout: config.shutdown_timeout,
    });
    request.keep_alive = Some(pipelines.clone());
    let client = ClientState {
        metrics: ClientMetrics::new(&metrics.business),
        rpc: RpcHistogram::client(&metrics.business),
        sampler: pipelines.traces.as_ref().map(|t| t.sampler.clone()),
        scope: (!global).then(|| dispatch.clone()),
        request_id_header,
        keep_alive: Some(pipelines.clone()),
    };
    Ok(Obs {
        inner: Arc::new(ObsInner {
            metrics,
            db,
            dispatch: Some(dispatch),
            scoped: !global,
            pipelines,
            request: Arc::new(request),
            client: Arc::new(client),
            service_name: resource.service_name,
        }),
    })
}

/// The instance used before `init()`: metrics only (in the default registry the macros use
/// before `init()`), no logs, no traces.
pub(crate) fn metrics_only() -> Obs {
    let metrics = crate::metrics::default_handle().clone();
    let config = RequestConfig::metrics_only();
    let client = ClientState {
        metrics: ClientMetrics::new(&metrics.business),
        rpc: RpcHistogram::client(&metrics.business),
        sampler: None,
        scope: None,
        request_id_header: config.request_id_header.clone(),
        keep_alive: None,
    };
    let request = RequestState::new(config, &metrics, None, None, None);
    Obs {
        inner: Arc::new(ObsInner {
            metrics,
            db: DbMetrics::default_metrics().clone(),
            dispatch: None,
            scoped: false,
            pipelines: Arc::new(Pipelines {
                logs: None,
                traces: None,
                #[cfg(feature = "sentry")]
                sentry: None,
                shutdown_timeout: Duration::from_secs(5),
            }),
            request: Arc::new(request),
            client: Arc::new(client),
            service_name: Resource::unknown().service_name,
        }),
    }
}

/// What the sqlx instrumentation (in `db`, below the span context layer) reads from the span
/// context layer: a span's trace context, and its local root for exemplars.
#[cfg(feature = "sqlx")]
mod sqlx_hooks {
    use tracing_subscriber::Registry;
    use tracing_subscriber::registry::SpanRef;

    use crate::context::current::mark_root;
    use crate::context::layer::SpanContext;
    use crate::core::exemplar::PendingExemplar;
    use crate::db::sqlx::{SpanParent, TraceHooks};

    pub(super) const HOOKS: TraceHooks = TraceHooks {
        context,
        add_exemplar,
    };

    fn context(span: &SpanRef<'_, Registry>) -> Option<SpanParent> {
        let ext = span.extensions();
        let c = ext.get::<SpanContext>()?;
        Some(SpanParent {
            trace_id: c.trace_id,
            span_id: c.span_id,
            local_root: c.local_root,
        })
    }

    fn add_exemplar(span: &SpanRef<'_, Registry>, p: PendingExemplar) {
        if p.is_some() {
            mark_root(span, |root| root.exemplars.push(p));
        }
    }
}
