//! [`RequestState`]: the handles the request path needs, and nothing else.

use std::any::Any;
use std::sync::Arc;

use http::HeaderName;
use tracing_core::Dispatch;

use super::options::RequestConfig;
use crate::core::escape::push_json_str;
use crate::core::render::RenderSettings;
use crate::metrics::MetricsHandle;
use crate::metrics::red::RedMetrics;
use crate::metrics::rpc::RpcHistogram;
use crate::traces::TracesHandle;

/// What the layer needs to observe a request: the RED metrics, the subscriber to make current,
/// the trace sampler, Sentry, and the request-path settings. Built once per instance by the
/// composition root and shared by every service and request.
pub(crate) struct RequestState {
    pub(crate) red: RedMetrics,
    /// `rpc_server_call_duration_seconds`, for gRPC calls (instead of the HTTP histogram).
    pub(crate) rpc: RpcHistogram,
    /// The instance's subscriber, when the layer must make it current around each request
    /// (instances from `build()`); `None` when it is the global subscriber or there is none.
    pub(crate) scope: Option<Dispatch>,
    /// The log rendering settings; `None` for the metrics-only default instance (no logs).
    pub(crate) render: Option<Arc<RenderSettings>>,
    pub(crate) request_id_header: HeaderName,
    pub(crate) log_headers: Vec<LoggedHeader>,
    pub(crate) catch_panics: bool,
    /// Record a security event of kind `unauthorized` for 401/403 responses.
    pub(crate) unauthorized_events: bool,
    /// Reports clients with too many 401/403 or unmatched-route answers (`None`: off).
    pub(crate) abuse: Option<super::abuse::AbuseDetector>,
    /// Where the admin listener serves, when one is configured (served by the `axum` feature).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) admin_addr: Option<std::net::SocketAddr>,
    /// Writes INFO access lines without a `tracing` event (JSON logs only).
    pub(crate) access: Option<crate::logging::access::AccessLines>,
    /// `None` when traces are off.
    pub(crate) traces: Option<Arc<TracesHandle>>,
    /// `None` when no Sentry DSN is set.
    #[cfg(feature = "sentry")]
    pub(crate) sentry: Option<Arc<crate::sentry::SentryState>>,
    /// What keeps the instance's pipelines (log writers, exporter, Sentry) running while a
    /// layer, a service or a request holds this state; the last one dropped shuts them down.
    pub(crate) keep_alive: Option<Arc<dyn Any + Send + Sync>>,
}

/// A request header written on the access line, prepared once.
pub(crate) struct LoggedHeader {
    pub(crate) name: HeaderName,
    /// `,"http.request.header.<name>":`
    pub(crate) prefix: String,
    pub(crate) sensitive: bool,
}

impl RequestState {
    /// The state for `config`; `render` decides which logged headers are sensitive.
    pub(crate) fn new(
        config: RequestConfig,
        metrics: &MetricsHandle,
        scope: Option<Dispatch>,
        render: Option<Arc<RenderSettings>>,
        traces: Option<Arc<TracesHandle>>,
    ) -> Self {
        let log_headers = config
            .log_headers
            .into_iter()
            .map(|name| {
                let mut prefix = String::from(",");
                push_json_str(
                    &mut prefix,
                    &format!("http.request.header.{}", name.as_str()),
                    usize::MAX,
                );
                prefix.push(':');
                let sensitive = render
                    .as_ref()
                    .is_some_and(|r| r.redactor.is_sensitive(name.as_str()));
                LoggedHeader {
                    name,
                    prefix,
                    sensitive,
                }
            })
            .collect();
        Self {
            red: metrics.red.clone(),
            rpc: RpcHistogram::server(&metrics.business),
            scope,
            render,
            request_id_header: config.request_id_header,
            log_headers,
            catch_panics: config.catch_panics,
            unauthorized_events: config.unauthorized_events,
            abuse: config
                .suspicious_usage_threshold
                .map(super::abuse::AbuseDetector::new),
            admin_addr: config.admin_addr,
            access: None,
            traces,
            #[cfg(feature = "sentry")]
            sentry: None,
            keep_alive: None,
        }
    }

    /// Whether the subscriber that sees the request (the instance's, or whatever is current for
    /// the global instance) is this instance's own, with JSON lines and no span directives in
    /// its filter. Then the request span is opened without its own fields (handed to the span
    /// context layer instead) and the INFO access line is written directly; a subscriber of
    /// anyone else's gets the fields and the event.
    ///
    /// Called with the instance's subscriber current (inside [`RequestState::in_scope`]).
    #[inline]
    pub(crate) fn current_is_own_json(&self) -> bool {
        let (Some(_), Some(render)) = (&self.access, &self.render) else {
            return false;
        };
        tracing_core::dispatcher::get_default(|d| {
            d.downcast_ref::<crate::context::layer::ContextLayer>()
                .is_some_and(|c| c.takes_request_fields && Arc::ptr_eq(&c.settings, render))
        })
    }

    /// Runs `f` with the instance's subscriber current (a no-op for the global one).
    #[inline]
    pub(crate) fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.scope {
            Some(dispatch) => tracing_core::dispatcher::with_default(dispatch, f),
            None => f(),
        }
    }
}
