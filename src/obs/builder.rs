//! [`ObsBuilder`]: configuration in code and from the environment.
//!
//! The builder holds each component's options and delegates to them: setters write a
//! component's settings, [`ObsBuilder::from_env`] lets each component read its own variables,
//! and [`ObsBuilder::build`] has each validate its settings before the instance is started.

use std::io::Write;
use std::time::Duration;

use super::start::{self, Config};
use super::{Obs, ObsGuard};
use crate::core::env::EnvVars;
use crate::core::error::Error;
use crate::core::resource::ResourceOptions;
use crate::layer::options::RequestOptions;
use crate::logging::options::{LogFormat, LogOptions};
use crate::metrics::options::MetricsOptions;
use crate::traces::options::{OtlpCompression, OtlpProtocol, TraceOptions};

/// Configuration of an [`Obs`] instance.
///
/// Values set in code win over the environment (read by [`from_env`](Self::from_env)), which
/// wins over the defaults. Nothing is validated until [`build`](Self::build) or
/// [`init`](Self::init), which return an [`Error`] naming the first bad setting or variable.
///
/// ```
/// let obs = mercenary_obs::Obs::builder()
///     .service_name("mercenary-api")
///     .log_writer(std::io::sink())
///     .build()
///     .unwrap();
/// assert!(obs.render_metrics().contains("target_info"));
/// ```
#[derive(Default)]
pub struct ObsBuilder {
    resource: ResourceOptions,
    metrics: MetricsOptions,
    logs: LogOptions,
    traces: TraceOptions,
    request: RequestOptions,
    #[cfg(feature = "sentry")]
    sentry: crate::sentry::SentryOptions,
    shutdown_timeout: Option<Duration>,
    /// Environment values that did not parse, returned by `build()`.
    env_errors: Vec<Error>,
}

impl std::fmt::Debug for ObsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObsBuilder")
            .field("resource", &self.resource)
            .field("log_format", &self.logs.format)
            .field("log_filter", &self.logs.filter)
            .field("otlp", &self.traces.otlp)
            .finish_non_exhaustive()
    }
}

impl ObsBuilder {
    /// A builder with every setting at its default. Same as [`Obs::builder`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The service name, written on every log line (`service`) and in `target_info`.
    ///
    /// Env: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`. Default: the
    /// file name of the running executable.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.resource.service_name.set(name.into());
        self
    }

    /// The service version (`target_info{service_version}`).
    ///
    /// Env: `service.version` in `OTEL_RESOURCE_ATTRIBUTES`. Default: `unknown`.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.resource.service_version.set(version.into());
        self
    }

    /// The deployment environment (`target_info{deployment_environment}`).
    ///
    /// Env: `deployment.environment.name` (or the older `deployment.environment`) in
    /// `OTEL_RESOURCE_ATTRIBUTES`. Default: `unknown`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.resource.environment.set(environment.into());
        self
    }

    /// The request header that carries the correlation ID, echoed on the response.
    ///
    /// `x-correlation-id` is accepted on requests as well. Default: `x-request-id`.
    pub fn request_id_header(mut self, name: impl Into<String>) -> Self {
        self.request.request_id_header = Some(name.into());
        self
    }

    /// JSON lines or the human format. Env: `MERCENARY_OBS_LOG_FORMAT` (`json`, `pretty`).
    /// Default: JSON.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.logs.format.set(format);
        self
    }

    /// The log filter in `RUST_LOG` syntax (`info,my_crate=debug`). Env: `RUST_LOG`.
    /// Default: `info`.
    pub fn log_filter(mut self, directives: impl Into<String>) -> Self {
        self.logs.filter.set(directives.into());
        self
    }

    /// Where log lines go. A writer thread owns it, so writing never blocks requests.
    /// Default: standard output.
    pub fn log_writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.logs.writer = Some(Box::new(writer));
        self
    }

    /// Where [`crate::audit!`] lines go. Audit lines are never dropped silently: when this sink
    /// is slow, the thread logging the audit event waits for room, at most
    /// [`audit_max_wait`](Self::audit_max_wait); a line that still does not fit goes to the
    /// fallback ([`audit_fallback_file`](Self::audit_fallback_file), standard error by default)
    /// and is counted. Default: standard output (shared with the application log lines when
    /// those go to standard output too, so the two stay in order).
    ///
    /// ```
    /// let obs = mercenary_obs::Obs::builder()
    ///     .log_writer(std::io::sink())
    ///     .audit_writer(std::io::stderr())
    ///     .build()
    ///     .unwrap();
    /// # let _ = obs;
    /// ```
    pub fn audit_writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.logs.audit_writer = Some(Box::new(writer));
        self
    }

    /// How long an audit line waits for room in a stalled audit sink before it goes to the
    /// fallback (`MERCENARY_OBS_AUDIT_MAX_WAIT_MS`; default 2 s, at most 60 s, 0 diverts at
    /// once). While the sink has not written since a line timed out, later lines do not wait at
    /// all, so a stuck sink costs each audited request nothing more than a queue check.
    pub fn audit_max_wait(mut self, wait: std::time::Duration) -> Self {
        self.logs.audit_max_wait.set(wait);
        self
    }

    /// A file audit lines go to (appended) when their sink is stalled
    /// (`MERCENARY_OBS_AUDIT_FALLBACK_FILE`; default: standard error). A file that cannot be
    /// opened for appending is an error from `build()` naming the setting.
    pub fn audit_fallback_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.logs.audit_fallback_file.set(path.into());
        self
    }

    /// A writer audit lines go to when their sink is stalled, instead of standard error or a
    /// file (for tests, or a second log pipe). Wins over
    /// [`audit_fallback_file`](Self::audit_fallback_file).
    pub fn audit_fallback_writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.logs.audit_fallback_writer = Some(Box::new(writer));
        self
    }

    /// The most series a business metric (`counter!`, `gauge!`, `histogram!`) may have. Past
    /// it, new label sets are folded into one series whose label values are all `_other`, and
    /// `mercenary_obs_metric_overflow_total{metric}` counts each folded resolution. A per-call
    /// site `max_series:` or [`Self::series_cap_for`] overrides it. Default: 1000.
    pub fn series_cap(mut self, max: usize) -> Self {
        self.metrics.series_cap = Some(max);
        self
    }

    /// The series cap of one business metric, overriding [`Self::series_cap`] and the macro's
    /// `max_series:`.
    pub fn series_cap_for(mut self, metric: impl Into<String>, max: usize) -> Self {
        self.metrics.series_caps.insert(metric.into(), max);
        self
    }

    /// Whether every 401 and 403 response also records a `security_event!` of kind
    /// `unauthorized` (a WARNING line and `security_events_total{kind="unauthorized"}`).
    /// Default: `true`.
    pub fn unauthorized_events(mut self, enabled: bool) -> Self {
        self.request.unauthorized_events = Some(enabled);
        self
    }

    /// The address of the admin listener, which serves `/metrics`, `/debug/traces` and
    /// `/healthz` apart from the application's port (`MERCENARY_OBS_ADMIN_ADDR`, for example
    /// `127.0.0.1:9464`). Default: none. Start it with
    /// [`mercenary_obs::axum::serve_admin`](crate::axum::serve_admin) (feature `axum`); its
    /// requests are not application traffic (no metrics, logs or traces of their own).
    pub fn admin_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.request.admin_addr.set(addr);
        self
    }

    /// From how many 401/403 answers, or answers for unmatched routes (404 with no route), in
    /// one minute a client gets a `security_event` of kind `suspicious_usage` (one per client,
    /// reason and minute). Default 20; 0 turns the detector off. The client is the
    /// [`Principal`](crate::Principal) the application names, else the peer address (axum's
    /// `ConnectInfo<SocketAddr>`, or a `SocketAddr` request extension); the event carries a
    /// keyed hash of it, never the address or name. Memory is fixed (about 500 KiB) whatever
    /// the number of clients.
    pub fn suspicious_usage_threshold(mut self, answers_per_minute: u32) -> Self {
        self.request.suspicious_usage_threshold = Some(answers_per_minute);
        self
    }

    /// The size of the log queue in bytes. When it is full, application lines are dropped and
    /// counted in `mercenary_obs_log_lines_dropped_total`. Default: 8 MiB.
    pub fn log_queue_bytes(mut self, bytes: usize) -> Self {
        self.logs.queue_bytes = Some(bytes);
        self
    }

    /// The longest value (message or field) written on a log line, in bytes; longer values are
    /// cut and marked `…[truncated]`. Default: 8192.
    pub fn log_value_max_bytes(mut self, bytes: usize) -> Self {
        self.logs.value_max_bytes = Some(bytes);
        self
    }

    /// The words that make a field or header name sensitive; its value is written as
    /// `[REDACTED]`. Matching ignores case, `-`, `_` and `.`, and finds the word anywhere in the
    /// name. Replaces the default list ([`DEFAULT_SENSITIVE`](crate::DEFAULT_SENSITIVE)).
    pub fn redact_fields<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.logs.redact_fields = Some(words.into_iter().map(Into::into).collect());
        self
    }

    /// Request headers written on the access line as `http.request.header.<name>` (sensitive
    /// ones redacted). Default: `user-agent`.
    pub fn log_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request.log_headers = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Bucket boundaries of `http_server_request_duration_seconds`, in seconds, strictly
    /// increasing. Default: [`DEFAULT_DURATION_BUCKETS`](crate::DEFAULT_DURATION_BUCKETS).
    pub fn duration_buckets(mut self, buckets: impl Into<Vec<f64>>) -> Self {
        self.metrics.duration_buckets = Some(buckets.into());
        self
    }

    /// Registers every metric in this registry instead of a new one.
    pub fn registry(mut self, registry: prometheus::Registry) -> Self {
        self.metrics.registry = Some(registry);
        self
    }

    /// Whether a handler panic becomes a 500 response (`true`, the default) or is re-raised
    /// after being recorded.
    pub fn catch_panics(mut self, catch: bool) -> Self {
        self.request.catch_panics = Some(catch);
        self
    }

    /// Whether [`init`](Self::init) installs a panic hook that writes each panic as one
    /// `CRITICAL` JSON line (target `mercenary_obs::panic`) where the log lines go, with
    /// `exception.message`, `code.filepath`, `code.lineno`, `code.column`, `thread.name`, the
    /// current request's `correlation_id` / `trace_id` / `span_id`, and `exception.stacktrace`
    /// (one string) when `RUST_BACKTRACE` asks for backtraces. It replaces Rust's default hook,
    /// which prints the panic as text on standard error (see
    /// [`chain_panic_hook`](Self::chain_panic_hook)). [`build`](Self::build) installs no hook
    /// whatever this says.
    ///
    /// Env: `MERCENARY_OBS_PANIC_HOOK` (`true`, `false`). Default: `true`.
    pub fn panic_hook(mut self, enabled: bool) -> Self {
        self.logs.panic_hook.set(enabled);
        self
    }

    /// Whether the panic hook also runs the hook that was installed before `init()` (Rust's
    /// default one, printing the panic on standard error, unless something replaced it).
    /// Default: `false`.
    pub fn chain_panic_hook(mut self, chain: bool) -> Self {
        self.logs.chain_panic_hook = Some(chain);
        self
    }

    /// How long [`ObsGuard`] waits on drop for buffered logs, traces and error reports to be
    /// written. Default: 5 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Whether to register the `process_*` metrics (Linux only) and, with feature `tokio`, the
    /// `tokio_runtime_*` gauges (read at scrape time from the runtime serving `/metrics`).
    /// Default: `true`.
    pub fn process_metrics(mut self, enabled: bool) -> Self {
        self.metrics.process_metrics = Some(enabled);
        self
    }

    /// Whether spans are recorded and traces sampled (error-aware tail sampling). Default: `true`.
    pub fn traces(mut self, enabled: bool) -> Self {
        self.traces.enabled = Some(enabled);
        self
    }

    /// The share of successful traces kept (rule `ratio`), decided from the trace ID so every
    /// replica agrees. Env: `MERCENARY_OBS_SUCCESS_RATIO`. Default: 0.1.
    pub fn success_ratio(mut self, ratio: f64) -> Self {
        self.traces.success_ratio.set(ratio);
        self
    }

    /// How many forced traces (requests with `trace: true`) are kept per second at most; past
    /// the budget a request is sampled like any other. Env: `MERCENARY_OBS_FORCED_PER_SECOND`.
    /// Default: 10.
    pub fn forced_per_second(mut self, rate: f64) -> Self {
        self.traces.forced_per_second.set(rate);
        self
    }

    /// The request header and value that force a trace to be kept. Default: `trace: true`.
    pub fn forced_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.traces.forced_header = Some((name.into(), value.into()));
        self
    }

    /// Whether 4xx responses count as errors for sampling. Default: `false`.
    pub fn sample_client_errors(mut self, enabled: bool) -> Self {
        self.traces.sample_client_errors = Some(enabled);
        self
    }

    /// Keeps traces whose root lasted longer than this (rule `slow`). Default: off.
    pub fn keep_slower_than(mut self, threshold: Duration) -> Self {
        self.traces.keep_slower_than = Some(threshold);
        self
    }

    /// Whether an incoming `traceparent` with the sampled flag keeps the trace (rule `parent`).
    /// Turn it off at an edge facing untrusted clients. Default: `true`.
    pub fn trust_upstream_sampled(mut self, trust: bool) -> Self {
        self.traces.trust_upstream_sampled = Some(trust);
        self
    }

    /// Traces buffered while their root runs, at most; past it the oldest is decided early.
    /// Default: 8192.
    pub fn max_buffered_traces(mut self, n: usize) -> Self {
        self.traces.max_buffered_traces = Some(n);
        self
    }

    /// Spans buffered per trace, at most; more are dropped and counted. Default: 512.
    pub fn max_spans_per_trace(mut self, n: usize) -> Self {
        self.traces.max_spans_per_trace = Some(n);
        self
    }

    /// A trace whose root has not ended after this long is decided with what is known.
    /// Default: 60 s.
    pub fn root_timeout(mut self, timeout: Duration) -> Self {
        self.traces.root_timeout = Some(timeout);
        self
    }

    /// Kept traces held in memory for `/debug/traces` when no OTLP endpoint is set. Default: 100.
    pub fn trace_ring_size(mut self, n: usize) -> Self {
        self.traces.ring_size = Some(n);
        self
    }

    /// The OTLP endpoint (for HTTP, `/v1/traces` is appended unless the URL already has a path;
    /// the variable `OTEL_EXPORTER_OTLP_ENDPOINT` always gets it after its path, as the OTLP
    /// specification says). Default: none, kept traces go to the in-memory ring.
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.traces.otlp.endpoint = Some(url.into());
        self
    }

    /// The OTLP transport. Env: `OTEL_EXPORTER_OTLP_PROTOCOL`. Default: HTTP/protobuf.
    pub fn otlp_protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.traces.otlp.protocol.set(protocol);
        self
    }

    /// Headers sent with every export (authentication). Env: `OTEL_EXPORTER_OTLP_HEADERS` or
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`name=value` pairs, values percent-encoded).
    /// Values never appear in errors, logs or `Debug` output.
    pub fn otlp_headers<I, K, V>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.traces.otlp.headers.set(
            headers
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// A PEM file of CA certificates that verify the collector's certificate, instead of the
    /// system's trust roots (feature `tls`). Env: `OTEL_EXPORTER_OTLP_CERTIFICATE` or
    /// `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE`. A file that cannot be read or holds no
    /// certificate makes `build()` fail.
    pub fn otlp_certificate(mut self, path: impl Into<String>) -> Self {
        self.traces
            .otlp
            .certificate
            .set(("ObsBuilder::otlp_certificate", path.into()));
        self
    }

    /// PEM files of the client certificate chain and its private key, for collectors that
    /// require mutual TLS (feature `tls`). Env: `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and
    /// `OTEL_EXPORTER_OTLP_CLIENT_KEY` (or their `_TRACES_` forms).
    pub fn otlp_client_certificate(
        mut self,
        certificate: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        let name = "ObsBuilder::otlp_client_certificate";
        self.traces
            .otlp
            .client_certificate
            .set((name, certificate.into()));
        self.traces.otlp.client_key.set((name, key.into()));
        self
    }

    /// Compression of export bodies. Env: `OTEL_EXPORTER_OTLP_COMPRESSION` or
    /// `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION` (`gzip`, `none`). Default: none.
    pub fn otlp_compression(mut self, compression: OtlpCompression) -> Self {
        self.traces.otlp.compression.set(compression);
        self
    }

    /// For OTLP/gRPC with an endpoint given as a bare `host:port`: `true` connects in
    /// plaintext, `false` with TLS. An `http://` or `https://` endpoint says it itself. Env:
    /// `OTEL_EXPORTER_OTLP_INSECURE` or `OTEL_EXPORTER_OTLP_TRACES_INSECURE`. Default: `false`.
    pub fn otlp_insecure(mut self, insecure: bool) -> Self {
        self.traces.otlp.insecure.set(insecure);
        self
    }

    /// The timeout of one export. Env: `OTEL_EXPORTER_OTLP_TIMEOUT` (ms). Default: 10 s.
    pub fn otlp_timeout(mut self, timeout: Duration) -> Self {
        self.traces.otlp.timeout.set(timeout);
        self
    }

    /// The delay between batch exports. Env: `OTEL_BSP_SCHEDULE_DELAY` (ms). Default: 5 s.
    pub fn export_schedule_delay(mut self, delay: Duration) -> Self {
        self.traces.otlp.schedule_delay.set(delay);
        self
    }

    /// Spans queued for export at most; more are dropped and counted. Env:
    /// `OTEL_BSP_MAX_QUEUE_SIZE`. Default: 2048.
    pub fn export_queue_size(mut self, n: usize) -> Self {
        self.traces.otlp.queue_size.set(n);
        self
    }

    /// Reads the environment variables listed in the [`env`](mod@crate::env) module.
    ///
    /// Values set in code win over these. A value that does not parse makes `build()` and
    /// `init()` return [`Error::InvalidEnv`].
    pub fn from_env(self) -> Self {
        self.from_vars(
            std::env::vars_os().filter_map(|(k, v)| {
                Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))
            }),
        )
    }

    /// Like [`from_env`](Self::from_env), reading from the given pairs instead of the process
    /// environment (for configuration files, and for tests, which cannot safely change the
    /// process environment).
    pub fn from_vars<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut vars = EnvVars::new(vars);
        self.resource.read_env(&mut vars);
        self.logs.read_env(&mut vars);
        self.traces.read_env(&mut vars);
        self.request.read_env(&mut vars);
        #[cfg(feature = "sentry")]
        self.sentry.read_env(&mut vars);
        self.env_errors.append(&mut vars.errors);
        self
    }

    /// Builds an instance with its own registry, log pipeline and exporters. Installs nothing
    /// global: its layer scopes its own subscriber around each request, so several instances
    /// can live in one process (tests use this).
    pub fn build(self) -> Result<Obs, Error> {
        start::from_config(self.resolve()?, false)
    }

    /// [`build`](Self::build), then installs the instance globally: its subscriber becomes the
    /// global `tracing` subscriber, and [`crate::layer()`] and the metric macros use it.
    ///
    /// Returns [`Error::AlreadyInitialized`] when called twice, and
    /// [`Error::GlobalSubscriberAlreadySet`] when another global subscriber exists. The
    /// returned guard flushes logs when dropped: keep it alive for the whole of `main`.
    pub fn init(self) -> Result<ObsGuard, Error> {
        let config = self.resolve()?;
        if super::GLOBAL.get().is_some() {
            return Err(Error::AlreadyInitialized);
        }
        super::install_global(start::from_config(config, true)?)
    }

    /// Each component validates its settings; the first error wins.
    fn resolve(mut self) -> Result<Config, Error> {
        if let Some(err) = self.env_errors.drain(..).next() {
            return Err(err);
        }
        let traces = self.traces.resolve()?;
        #[cfg(feature = "sentry")]
        let sentry = crate::sentry::resolve(&mut self.sentry)?;
        let logs = self.logs.resolve()?;
        let request = self.request.resolve()?;
        let metrics = self.metrics.resolve()?;
        Ok(Config {
            resource: self.resource.resolve(),
            metrics,
            logs,
            traces,
            request,
            #[cfg(feature = "sentry")]
            sentry,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// Sentry settings (feature `sentry`).
#[cfg(feature = "sentry")]
impl ObsBuilder {
    /// The Sentry DSN; with one, errors are reported to Sentry (see the crate docs). An invalid
    /// DSN makes `build()` fail.
    ///
    /// Env: `SENTRY_DSN`. Default: none, Sentry off.
    pub fn sentry_dsn(mut self, dsn: impl Into<String>) -> Self {
        self.sentry.dsn.set(dsn.into());
        self
    }

    /// The Sentry environment of the events.
    ///
    /// Env: `SENTRY_ENVIRONMENT`. Default: the deployment environment
    /// ([`environment`](Self::environment)) when one is set.
    pub fn sentry_environment(mut self, environment: impl Into<String>) -> Self {
        self.sentry.environment.set(environment.into());
        self
    }

    /// The Sentry release of the events.
    ///
    /// Env: `SENTRY_RELEASE`. Default: `service_name@service_version` when a service version
    /// is set.
    pub fn sentry_release(mut self, release: impl Into<String>) -> Self {
        self.sentry.release.set(release.into());
        self
    }

    /// The share of error events sent to Sentry, from 0 to 1. Default: 1.
    pub fn sentry_sample_rate(mut self, rate: f32) -> Self {
        self.sentry.sample_rate = Some(rate);
        self
    }

    /// The connect timeout, and the timeout of one whole post, of the Sentry transport.
    /// Default: 5 s.
    pub fn sentry_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.sentry.timeout = Some(timeout);
        self
    }

    /// Events queued for the Sentry transport at most; past it they are dropped and counted in
    /// `mercenary_obs_sentry_events_dropped_total{reason="queue_full"}`. Default: 100.
    pub fn sentry_queue_size(mut self, events: usize) -> Self {
        self.sentry.queue_size = Some(events);
        self
    }

    /// Replaces the HTTP transport, for example with `sentry::test::TestTransport` in tests.
    /// A DSN is still needed to turn Sentry on.
    pub fn sentry_transport(
        mut self,
        transport: std::sync::Arc<dyn sentry::TransportFactory>,
    ) -> Self {
        self.sentry.transport = Some(transport);
        self
    }
}
