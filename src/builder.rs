//! [`ObsBuilder`]: configuration in code and from the environment.

use std::collections::HashMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use http::HeaderName;
use tracing_subscriber::EnvFilter;

use crate::error::Error;
use crate::logging::{DEFAULT_SENSITIVE, LogFormat};
use crate::obs::{Obs, ObsGuard};
use crate::tracing::sampler::SamplingConfig;

/// The default bucket boundaries of `http_server_request_duration_seconds` (OTel HTTP semconv).
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The default request headers written on the access line.
pub const DEFAULT_LOG_HEADERS: &[&str] = &["user-agent"];

/// Environment variables read by [`ObsBuilder::from_env`].
pub mod env {
    /// Service name (wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    /// `key=value,key=value` resource attributes (values percent-encoded).
    pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    /// `json` or `pretty`.
    pub const MERCENARY_OBS_LOG_FORMAT: &str = "MERCENARY_OBS_LOG_FORMAT";
    /// The log filter, in `tracing-subscriber`'s `EnvFilter` syntax.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// Base OTLP endpoint (`/v1/traces` is appended for HTTP).
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// OTLP traces endpoint, used as is (wins over the base endpoint).
    pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    /// `grpc` or `http/protobuf`.
    pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    /// `key=value,key=value` headers sent with every export (values percent-encoded).
    pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    /// Export timeout in milliseconds.
    pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
    /// Delay between batch exports in milliseconds.
    pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
    /// Spans queued for export at most.
    pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
    /// Share of successful traces kept, 0 to 1.
    pub const MERCENARY_OBS_SUCCESS_RATIO: &str = "MERCENARY_OBS_SUCCESS_RATIO";
    /// Forced (`trace: true`) traces kept per second at most.
    pub const MERCENARY_OBS_FORCED_PER_SECOND: &str = "MERCENARY_OBS_FORCED_PER_SECOND";
    /// Sentry DSN (feature `sentry`); unset or empty: Sentry off.
    pub const SENTRY_DSN: &str = "SENTRY_DSN";
    /// Sentry environment of the events (feature `sentry`).
    pub const SENTRY_ENVIRONMENT: &str = "SENTRY_ENVIRONMENT";
    /// Sentry release of the events (feature `sentry`).
    pub const SENTRY_RELEASE: &str = "SENTRY_RELEASE";
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/gRPC (feature `grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies, the OTel default.
    HttpProtobuf,
}

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
pub struct ObsBuilder {
    pub(crate) service_name: Option<String>,
    pub(crate) service_version: Option<String>,
    pub(crate) environment: Option<String>,
    pub(crate) request_id_header: Option<String>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) log_filter: Option<String>,
    pub(crate) log_writer: Option<Box<dyn Write + Send>>,
    pub(crate) log_queue_bytes: Option<usize>,
    pub(crate) log_value_max_bytes: Option<usize>,
    pub(crate) redact_fields: Option<Vec<String>>,
    pub(crate) log_headers: Option<Vec<String>>,
    pub(crate) duration_buckets: Option<Vec<f64>>,
    pub(crate) registry: Option<prometheus::Registry>,
    pub(crate) catch_panics: Option<bool>,
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) process_metrics: Option<bool>,
    pub(crate) traces: Option<bool>,
    pub(crate) success_ratio: Option<f64>,
    pub(crate) forced_per_second: Option<f64>,
    pub(crate) forced_header: Option<(String, String)>,
    pub(crate) sample_client_errors: Option<bool>,
    pub(crate) keep_slower_than: Option<Duration>,
    pub(crate) trust_upstream_sampled: Option<bool>,
    pub(crate) max_buffered_traces: Option<usize>,
    pub(crate) max_spans_per_trace: Option<usize>,
    pub(crate) root_timeout: Option<Duration>,
    pub(crate) trace_ring_size: Option<usize>,
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) otlp_protocol: Option<OtlpProtocol>,
    pub(crate) otlp_headers: Option<Vec<(String, String)>>,
    pub(crate) otlp_timeout: Option<Duration>,
    pub(crate) export_schedule_delay: Option<Duration>,
    pub(crate) export_queue_size: Option<usize>,
    pub(crate) audit_writer: Option<Box<dyn Write + Send>>,
    pub(crate) series_cap: Option<usize>,
    pub(crate) series_caps: HashMap<String, usize>,
    pub(crate) unauthorized_events: Option<bool>,
    #[cfg(feature = "sentry")]
    pub(crate) sentry: crate::sentry::SentrySettings,
    env: EnvValues,
}

/// Values read from the environment, kept apart so that code settings win.
#[derive(Default, Debug)]
struct EnvValues {
    service_name: Option<String>,
    service_version: Option<String>,
    environment: Option<String>,
    log_format: Option<LogFormat>,
    log_filter: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` entries other than the service identity.
    resource_attributes: Vec<(String, String)>,
    success_ratio: Option<f64>,
    forced_per_second: Option<f64>,
    otlp_endpoint: Option<String>,
    otlp_traces_endpoint: Option<String>,
    otlp_protocol: Option<OtlpProtocol>,
    otlp_headers: Option<Vec<(String, String)>>,
    otlp_timeout: Option<Duration>,
    export_schedule_delay: Option<Duration>,
    export_queue_size: Option<usize>,
    #[cfg(feature = "sentry")]
    sentry: crate::sentry::SentryEnv,
    errors: Vec<Error>,
}

impl fmt::Debug for ObsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObsBuilder")
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .field("environment", &self.environment)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Default for ObsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ObsBuilder {
    /// A builder with every setting at its default. Same as [`Obs::builder`].
    pub fn new() -> Self {
        Self {
            service_name: None,
            service_version: None,
            environment: None,
            request_id_header: None,
            log_format: None,
            log_filter: None,
            log_writer: None,
            log_queue_bytes: None,
            log_value_max_bytes: None,
            redact_fields: None,
            log_headers: None,
            duration_buckets: None,
            registry: None,
            catch_panics: None,
            shutdown_timeout: None,
            process_metrics: None,
            traces: None,
            success_ratio: None,
            forced_per_second: None,
            forced_header: None,
            sample_client_errors: None,
            keep_slower_than: None,
            trust_upstream_sampled: None,
            max_buffered_traces: None,
            max_spans_per_trace: None,
            root_timeout: None,
            trace_ring_size: None,
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers: None,
            otlp_timeout: None,
            export_schedule_delay: None,
            export_queue_size: None,
            audit_writer: None,
            series_cap: None,
            series_caps: HashMap::new(),
            unauthorized_events: None,
            #[cfg(feature = "sentry")]
            sentry: Default::default(),
            env: EnvValues::default(),
        }
    }

    /// The service name, written on every log line (`service`) and in `target_info`.
    ///
    /// Env: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`. Default: the
    /// file name of the running executable.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The service version (`target_info{service_version}`).
    ///
    /// Env: `service.version` in `OTEL_RESOURCE_ATTRIBUTES`. Default: `unknown`.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// The deployment environment (`target_info{deployment_environment}`).
    ///
    /// Env: `deployment.environment.name` (or the older `deployment.environment`) in
    /// `OTEL_RESOURCE_ATTRIBUTES`. Default: `unknown`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The request header that carries the correlation ID, echoed on the response.
    ///
    /// `x-correlation-id` is accepted on requests as well. Default: `x-request-id`.
    pub fn request_id_header(mut self, name: impl Into<String>) -> Self {
        self.request_id_header = Some(name.into());
        self
    }

    /// JSON lines or the human format. Env: `MERCENARY_OBS_LOG_FORMAT` (`json`, `pretty`).
    /// Default: JSON.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = Some(format);
        self
    }

    /// The log filter in `RUST_LOG` syntax (`info,my_crate=debug`). Env: `RUST_LOG`.
    /// Default: `info`.
    pub fn log_filter(mut self, directives: impl Into<String>) -> Self {
        self.log_filter = Some(directives.into());
        self
    }

    /// Where log lines go. A writer thread owns it, so writing never blocks requests.
    /// Default: standard output.
    pub fn log_writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.log_writer = Some(Box::new(writer));
        self
    }

    /// Where [`crate::audit!`] lines go. Audit lines are never dropped: when this sink is slow,
    /// the thread logging the audit event waits for room instead. Default: standard output
    /// (shared with the application log lines when those go to standard output too, so the two
    /// stay in order).
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
        self.audit_writer = Some(Box::new(writer));
        self
    }

    /// The most series a business metric (`counter!`, `gauge!`, `histogram!`) may have. Past
    /// it, new label sets are folded into one series whose label values are all `_other`, and
    /// `mercenary_obs_metric_overflow_total{metric}` counts each folded resolution. A per-call
    /// site `max_series:` or [`Self::series_cap_for`] overrides it. Default: 1000.
    pub fn series_cap(mut self, max: usize) -> Self {
        self.series_cap = Some(max);
        self
    }

    /// The series cap of one business metric, overriding [`Self::series_cap`] and the macro's
    /// `max_series:`.
    pub fn series_cap_for(mut self, metric: impl Into<String>, max: usize) -> Self {
        self.series_caps.insert(metric.into(), max);
        self
    }

    /// Whether every 401 and 403 response also records a `security_event!` of kind
    /// `unauthorized` (a WARNING line and `security_events_total{kind="unauthorized"}`).
    /// Default: `true`.
    pub fn unauthorized_events(mut self, enabled: bool) -> Self {
        self.unauthorized_events = Some(enabled);
        self
    }

    /// The size of the log queue in bytes. When it is full, application lines are dropped and
    /// counted in `mercenary_obs_log_lines_dropped_total`. Default: 8 MiB.
    pub fn log_queue_bytes(mut self, bytes: usize) -> Self {
        self.log_queue_bytes = Some(bytes);
        self
    }

    /// The longest value (message or field) written on a log line, in bytes; longer values are
    /// cut and marked `…[truncated]`. Default: 8192.
    pub fn log_value_max_bytes(mut self, bytes: usize) -> Self {
        self.log_value_max_bytes = Some(bytes);
        self
    }

    /// The words that make a field or header name sensitive; its value is written as
    /// `[REDACTED]`. Matching ignores case, `-`, `_` and `.`, and finds the word anywhere in the
    /// name. Replaces the default list ([`DEFAULT_SENSITIVE`]).
    pub fn redact_fields<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redact_fields = Some(words.into_iter().map(Into::into).collect());
        self
    }

    /// Request headers written on the access line as `http.request.header.<name>` (sensitive
    /// ones redacted). Default: `user-agent`.
    pub fn log_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.log_headers = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Bucket boundaries of `http_server_request_duration_seconds`, in seconds, strictly
    /// increasing. Default: [`DEFAULT_DURATION_BUCKETS`].
    pub fn duration_buckets(mut self, buckets: impl Into<Vec<f64>>) -> Self {
        self.duration_buckets = Some(buckets.into());
        self
    }

    /// Registers every metric in this registry instead of a new one.
    pub fn registry(mut self, registry: prometheus::Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Whether a handler panic becomes a 500 response (`true`, the default) or is re-raised
    /// after being recorded.
    pub fn catch_panics(mut self, catch: bool) -> Self {
        self.catch_panics = Some(catch);
        self
    }

    /// How long [`ObsGuard`] waits on drop for buffered logs (and, later, traces and error
    /// reports) to be written. Default: 5 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Whether to register the `process_*` metrics (Linux only) and, with feature `tokio`, the
    /// `tokio_runtime_*` gauges (read at scrape time from the runtime serving `/metrics`).
    /// Default: `true`.
    pub fn process_metrics(mut self, enabled: bool) -> Self {
        self.process_metrics = Some(enabled);
        self
    }

    /// Whether spans are recorded and traces sampled (DESIGN §7). Default: `true`.
    pub fn traces(mut self, enabled: bool) -> Self {
        self.traces = Some(enabled);
        self
    }

    /// The share of successful traces kept (rule `ratio`), decided from the trace ID so every
    /// replica agrees. Env: `MERCENARY_OBS_SUCCESS_RATIO`. Default: 0.1.
    pub fn success_ratio(mut self, ratio: f64) -> Self {
        self.success_ratio = Some(ratio);
        self
    }

    /// How many forced traces (requests with `trace: true`) are kept per second at most; past
    /// the budget a request is sampled like any other. Env: `MERCENARY_OBS_FORCED_PER_SECOND`.
    /// Default: 10.
    pub fn forced_per_second(mut self, rate: f64) -> Self {
        self.forced_per_second = Some(rate);
        self
    }

    /// The request header and value that force a trace to be kept. Default: `trace: true`.
    pub fn forced_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.forced_header = Some((name.into(), value.into()));
        self
    }

    /// Whether 4xx responses count as errors for sampling. Default: `false`.
    pub fn sample_client_errors(mut self, enabled: bool) -> Self {
        self.sample_client_errors = Some(enabled);
        self
    }

    /// Keeps traces whose root lasted longer than this (rule `slow`). Default: off.
    pub fn keep_slower_than(mut self, threshold: Duration) -> Self {
        self.keep_slower_than = Some(threshold);
        self
    }

    /// Whether an incoming `traceparent` with the sampled flag keeps the trace (rule `parent`).
    /// Turn it off at an edge facing untrusted clients. Default: `true`.
    pub fn trust_upstream_sampled(mut self, trust: bool) -> Self {
        self.trust_upstream_sampled = Some(trust);
        self
    }

    /// Traces buffered while their root runs, at most; past it the oldest is decided early.
    /// Default: 8192.
    pub fn max_buffered_traces(mut self, n: usize) -> Self {
        self.max_buffered_traces = Some(n);
        self
    }

    /// Spans buffered per trace, at most; more are dropped and counted. Default: 512.
    pub fn max_spans_per_trace(mut self, n: usize) -> Self {
        self.max_spans_per_trace = Some(n);
        self
    }

    /// A trace whose root has not ended after this long is decided with what is known.
    /// Default: 60 s.
    pub fn root_timeout(mut self, timeout: Duration) -> Self {
        self.root_timeout = Some(timeout);
        self
    }

    /// Kept traces held in memory for `/debug/traces` when no OTLP endpoint is set. Default: 100.
    pub fn trace_ring_size(mut self, n: usize) -> Self {
        self.trace_ring_size = Some(n);
        self
    }

    /// The OTLP endpoint, as `OTEL_EXPORTER_OTLP_ENDPOINT` (for HTTP, `/v1/traces` is appended
    /// unless the URL already has a path). Default: none, kept traces go to the in-memory ring.
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(url.into());
        self
    }

    /// The OTLP transport. Env: `OTEL_EXPORTER_OTLP_PROTOCOL`. Default: HTTP/protobuf.
    pub fn otlp_protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.otlp_protocol = Some(protocol);
        self
    }

    /// Headers sent with every export (authentication). Env: `OTEL_EXPORTER_OTLP_HEADERS`.
    pub fn otlp_headers<I, K, V>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.otlp_headers = Some(
            headers
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// The timeout of one export. Env: `OTEL_EXPORTER_OTLP_TIMEOUT` (ms). Default: 10 s.
    pub fn otlp_timeout(mut self, timeout: Duration) -> Self {
        self.otlp_timeout = Some(timeout);
        self
    }

    /// The delay between batch exports. Env: `OTEL_BSP_SCHEDULE_DELAY` (ms). Default: 5 s.
    pub fn export_schedule_delay(mut self, delay: Duration) -> Self {
        self.export_schedule_delay = Some(delay);
        self
    }

    /// Spans queued for export at most; more are dropped and counted. Env:
    /// `OTEL_BSP_MAX_QUEUE_SIZE`. Default: 2048.
    pub fn export_queue_size(mut self, n: usize) -> Self {
        self.export_queue_size = Some(n);
        self
    }

    /// Reads the environment variables of DESIGN §8 (see the [`env`](mod@crate::env) module).
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
        let mut resource: Option<String> = None;
        for (key, value) in vars {
            let value = value.as_ref();
            match key.as_ref() {
                env::OTEL_SERVICE_NAME if !value.trim().is_empty() => {
                    self.env.service_name = Some(value.trim().to_string());
                }
                env::OTEL_RESOURCE_ATTRIBUTES => resource = Some(value.to_string()),
                env::MERCENARY_OBS_LOG_FORMAT => match value.trim().to_ascii_lowercase().as_str() {
                    "" => {}
                    "json" => self.env.log_format = Some(LogFormat::Json),
                    "pretty" => self.env.log_format = Some(LogFormat::Pretty),
                    _ => self.env.errors.push(Error::InvalidEnv {
                        variable: env::MERCENARY_OBS_LOG_FORMAT,
                        value: value.to_string(),
                        expected: "`json` or `pretty`".into(),
                    }),
                },
                env::RUST_LOG if !value.trim().is_empty() => {
                    self.env.log_filter = Some(value.to_string());
                }
                _ if value.trim().is_empty() => {}
                env::MERCENARY_OBS_SUCCESS_RATIO => match value.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => self.env.success_ratio = Some(r),
                    _ => self.env_error(
                        env::MERCENARY_OBS_SUCCESS_RATIO,
                        value,
                        "a number from 0 to 1",
                    ),
                },
                env::MERCENARY_OBS_FORCED_PER_SECOND => match value.trim().parse::<f64>() {
                    Ok(r) if r.is_finite() && r >= 0.0 => self.env.forced_per_second = Some(r),
                    _ => self.env_error(
                        env::MERCENARY_OBS_FORCED_PER_SECOND,
                        value,
                        "a number of traces per second, 0 or more",
                    ),
                },
                env::OTEL_EXPORTER_OTLP_ENDPOINT => {
                    self.env.otlp_endpoint = Some(value.trim().to_string())
                }
                env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT => {
                    self.env.otlp_traces_endpoint = Some(value.trim().to_string())
                }
                env::OTEL_EXPORTER_OTLP_PROTOCOL => match value.trim() {
                    "grpc" => self.env.otlp_protocol = Some(OtlpProtocol::Grpc),
                    "http/protobuf" => self.env.otlp_protocol = Some(OtlpProtocol::HttpProtobuf),
                    _ => self.env_error(
                        env::OTEL_EXPORTER_OTLP_PROTOCOL,
                        value,
                        "`grpc` or `http/protobuf`",
                    ),
                },
                env::OTEL_EXPORTER_OTLP_HEADERS => match parse_resource_attributes(value) {
                    Ok(h) => self.env.otlp_headers = Some(h),
                    Err(e) => self.env_error(env::OTEL_EXPORTER_OTLP_HEADERS, value, &e),
                },
                env::OTEL_EXPORTER_OTLP_TIMEOUT => match value.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => self.env.otlp_timeout = Some(Duration::from_millis(ms)),
                    _ => self.env_error(
                        env::OTEL_EXPORTER_OTLP_TIMEOUT,
                        value,
                        "a timeout in milliseconds, above 0",
                    ),
                },
                env::OTEL_BSP_SCHEDULE_DELAY => match value.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => {
                        self.env.export_schedule_delay = Some(Duration::from_millis(ms))
                    }
                    _ => self.env_error(
                        env::OTEL_BSP_SCHEDULE_DELAY,
                        value,
                        "a delay in milliseconds, above 0",
                    ),
                },
                #[cfg(feature = "sentry")]
                variable @ (env::SENTRY_DSN | env::SENTRY_ENVIRONMENT | env::SENTRY_RELEASE) => {
                    self.env.sentry.set(variable, value)
                }
                env::OTEL_BSP_MAX_QUEUE_SIZE => match value.trim().parse::<usize>() {
                    Ok(n) if n > 0 => self.env.export_queue_size = Some(n),
                    _ => self.env_error(
                        env::OTEL_BSP_MAX_QUEUE_SIZE,
                        value,
                        "a number of spans, above 0",
                    ),
                },
                _ => {}
            }
        }
        if let Some(resource) = resource {
            match parse_resource_attributes(&resource) {
                Ok(attrs) => {
                    for (k, v) in attrs {
                        match k.as_str() {
                            "service.name" if self.env.service_name.is_none() => {
                                self.env.service_name = Some(v)
                            }
                            "service.version" => self.env.service_version = Some(v),
                            "deployment.environment.name" => self.env.environment = Some(v),
                            "deployment.environment" if self.env.environment.is_none() => {
                                self.env.environment = Some(v)
                            }
                            _ => self.env.resource_attributes.push((k, v)),
                        }
                    }
                }
                Err(expected) => self.env.errors.push(Error::InvalidEnv {
                    variable: env::OTEL_RESOURCE_ATTRIBUTES,
                    value: resource,
                    expected,
                }),
            }
        }
        self
    }

    fn env_error(&mut self, variable: &'static str, value: &str, expected: &str) {
        self.env.errors.push(Error::InvalidEnv {
            variable,
            value: value.to_string(),
            expected: expected.to_string(),
        });
    }

    /// Builds an instance with its own registry, log pipeline and (later) exporters. Installs
    /// nothing global: its layer scopes its own subscriber around each request, so several
    /// instances can live in one process (tests use this).
    pub fn build(self) -> Result<Obs, Error> {
        Obs::from_config(self.resolve()?, false)
    }

    /// [`build`](Self::build), then installs the instance globally: its subscriber becomes the
    /// global `tracing` subscriber, and [`crate::layer()`] and the metric macros use it.
    ///
    /// Returns [`Error::AlreadyInitialized`] when called twice, and
    /// [`Error::GlobalSubscriberAlreadySet`] when another global subscriber exists. The
    /// returned guard flushes logs when dropped: keep it alive for the whole of `main`.
    pub fn init(self) -> Result<ObsGuard, Error> {
        let config = self.resolve()?;
        crate::obs::install_global(config)
    }

    fn resolve(mut self) -> Result<Config, Error> {
        if let Some(err) = self.env.errors.drain(..).next() {
            return Err(err);
        }
        let env = std::mem::take(&mut self.env);
        let tracing = self.resolve_tracing(&env)?;
        #[cfg(feature = "sentry")]
        let sentry = crate::sentry::resolve(&mut self.sentry, &env.sentry)?;

        let filter_text = self
            .log_filter
            .clone()
            .or(env.log_filter.clone())
            .unwrap_or_else(|| "info".into());
        let filter = EnvFilter::builder().parse(&filter_text).map_err(|e| {
            if self.log_filter.is_some() {
                Error::InvalidSetting {
                    setting: "ObsBuilder::log_filter",
                    value: filter_text.clone(),
                    expected: format!("RUST_LOG directives such as `info,my_crate=debug` ({e})"),
                }
            } else {
                Error::InvalidEnv {
                    variable: env::RUST_LOG,
                    value: filter_text.clone(),
                    expected: format!("directives such as `info,my_crate=debug` ({e})"),
                }
            }
        })?;

        let request_id_header = match self.request_id_header.take() {
            None => HeaderName::from_static("x-request-id"),
            Some(name) => HeaderName::try_from(name.to_ascii_lowercase()).map_err(|_| {
                Error::InvalidSetting {
                    setting: "ObsBuilder::request_id_header",
                    value: name,
                    expected: "a valid HTTP header name".into(),
                }
            })?,
        };

        let mut log_headers = Vec::new();
        for name in self
            .log_headers
            .take()
            .unwrap_or_else(|| DEFAULT_LOG_HEADERS.iter().map(|s| s.to_string()).collect())
        {
            let header = HeaderName::try_from(name.to_ascii_lowercase()).map_err(|_| {
                Error::InvalidSetting {
                    setting: "ObsBuilder::log_headers",
                    value: name.clone(),
                    expected: "valid HTTP header names".into(),
                }
            })?;
            log_headers.push(header);
        }

        let buckets = self
            .duration_buckets
            .take()
            .unwrap_or_else(|| DEFAULT_DURATION_BUCKETS.to_vec());
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::duration_buckets",
                value: format!("{buckets:?}"),
                expected: "a non-empty list of positive, finite, strictly increasing seconds"
                    .into(),
            });
        }

        let log_queue_bytes = self.log_queue_bytes.unwrap_or(8 << 20);
        if log_queue_bytes < 1024 {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::log_queue_bytes",
                value: log_queue_bytes.to_string(),
                expected: "at least 1024 bytes".into(),
            });
        }
        let log_value_max_bytes = self.log_value_max_bytes.unwrap_or(8192);
        if log_value_max_bytes < 16 {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::log_value_max_bytes",
                value: log_value_max_bytes.to_string(),
                expected: "at least 16 bytes".into(),
            });
        }

        let service_name = self
            .service_name
            .take()
            .or(env.service_name)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(default_service_name);

        let audit_sink = match (self.audit_writer.take(), self.log_writer.is_some()) {
            (Some(w), _) => AuditSink::Own(w),
            (None, true) => AuditSink::Own(Box::new(std::io::stdout())),
            (None, false) => AuditSink::SameAsLogs,
        };
        let series_cap = self
            .series_cap
            .unwrap_or(crate::metrics::business::DEFAULT_SERIES_CAP);
        if series_cap == 0 || series_cap > crate::metrics::business::MAX_SERIES_CAP {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::series_cap",
                value: series_cap.to_string(),
                expected: "from 1 to 100000 series".into(),
            });
        }
        if let Some((name, n)) = self
            .series_caps
            .iter()
            .find(|(_, n)| **n == 0 || **n > crate::metrics::business::MAX_SERIES_CAP)
        {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::series_cap_for",
                value: format!("{name} = {n}"),
                expected: "from 1 to 100000 series".into(),
            });
        }
        let (log_writer, sink_is_terminal) = match self.log_writer.take() {
            Some(w) => (w, false),
            None => (
                Box::new(std::io::stdout()) as Box<dyn Write + Send>,
                std::io::stdout().is_terminal(),
            ),
        };

        Ok(Config {
            tracing,
            resource_attributes: env.resource_attributes.clone(),
            service_name,
            service_version: self
                .service_version
                .take()
                .or(env.service_version)
                .unwrap_or_else(|| "unknown".into()),
            environment: self
                .environment
                .take()
                .or(env.environment)
                .unwrap_or_else(|| "unknown".into()),
            request_id_header,
            log_format: self.log_format.or(env.log_format).unwrap_or_default(),
            log_filter: filter,
            log_writer,
            sink_is_terminal,
            log_queue_bytes,
            log_value_max_bytes,
            redact_fields: self
                .redact_fields
                .take()
                .unwrap_or_else(|| DEFAULT_SENSITIVE.iter().map(|s| s.to_string()).collect()),
            log_headers,
            duration_buckets: buckets,
            registry: self.registry.take(),
            catch_panics: self.catch_panics.unwrap_or(true),
            shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(5)),
            process_metrics: self.process_metrics.unwrap_or(true),
            audit_sink,
            series_cap,
            series_caps: std::mem::take(&mut self.series_caps),
            unauthorized_events: self.unauthorized_events.unwrap_or(true),
            #[cfg(feature = "sentry")]
            sentry,
        })
    }
}

/// Validated trace settings.
pub(crate) struct TracingConfig {
    pub(crate) enabled: bool,
    pub(crate) sampling: SamplingConfig,
    pub(crate) forced_header: HeaderName,
    pub(crate) forced_value: http::HeaderValue,
    pub(crate) ring_size: usize,
    pub(crate) otlp: Option<OtlpConfig>,
}

/// Validated OTLP export settings.
#[allow(dead_code)] // read by the export pipeline (feature `otlp`)
pub(crate) struct OtlpConfig {
    pub(crate) endpoint: String,
    pub(crate) protocol: OtlpProtocol,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
    pub(crate) schedule_delay: Duration,
    pub(crate) queue_size: usize,
}

/// Where audit lines go.
pub(crate) enum AuditSink {
    /// The application log writer (both on standard output).
    SameAsLogs,
    /// A writer of their own.
    Own(Box<dyn Write + Send>),
}

/// A validated configuration.
pub(crate) struct Config {
    pub(crate) tracing: TracingConfig,
    /// Extra resource attributes for exported traces.
    pub(crate) resource_attributes: Vec<(String, String)>,
    pub(crate) service_name: String,
    pub(crate) service_version: String,
    pub(crate) environment: String,
    pub(crate) request_id_header: HeaderName,
    pub(crate) log_format: LogFormat,
    pub(crate) log_filter: EnvFilter,
    pub(crate) log_writer: Box<dyn Write + Send>,
    pub(crate) sink_is_terminal: bool,
    pub(crate) log_queue_bytes: usize,
    pub(crate) log_value_max_bytes: usize,
    pub(crate) redact_fields: Vec<String>,
    pub(crate) log_headers: Vec<HeaderName>,
    pub(crate) duration_buckets: Vec<f64>,
    pub(crate) registry: Option<prometheus::Registry>,
    pub(crate) catch_panics: bool,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) process_metrics: bool,
    pub(crate) audit_sink: AuditSink,
    pub(crate) series_cap: usize,
    pub(crate) series_caps: HashMap<String, usize>,
    pub(crate) unauthorized_events: bool,
    /// `None` when no DSN is set.
    #[cfg(feature = "sentry")]
    pub(crate) sentry: Option<crate::sentry::SentryConfig>,
}

impl ObsBuilder {
    fn resolve_tracing(&mut self, env: &EnvValues) -> Result<TracingConfig, Error> {
        let setting =
            |setting: &'static str, value: String, expected: &str| Error::InvalidSetting {
                setting,
                value,
                expected: expected.to_string(),
            };
        let success_ratio = self.success_ratio.or(env.success_ratio).unwrap_or(0.1);
        if !(0.0..=1.0).contains(&success_ratio) {
            return Err(setting(
                "ObsBuilder::success_ratio",
                success_ratio.to_string(),
                "a number from 0 to 1",
            ));
        }
        let forced_per_second = self
            .forced_per_second
            .or(env.forced_per_second)
            .unwrap_or(10.0);
        if !forced_per_second.is_finite() || forced_per_second < 0.0 {
            return Err(setting(
                "ObsBuilder::forced_per_second",
                forced_per_second.to_string(),
                "a number of traces per second, 0 or more",
            ));
        }
        let (fh, fv) = self
            .forced_header
            .take()
            .unwrap_or_else(|| ("trace".into(), "true".into()));
        let forced_header = HeaderName::try_from(fh.to_ascii_lowercase()).map_err(|_| {
            setting(
                "ObsBuilder::forced_header",
                fh.clone(),
                "a valid HTTP header name",
            )
        })?;
        let forced_value = http::HeaderValue::try_from(fv.clone()).map_err(|_| {
            setting(
                "ObsBuilder::forced_header",
                fv.clone(),
                "a valid HTTP header value",
            )
        })?;
        let positive = |setting_name: &'static str, v: usize| {
            if v == 0 {
                Err(setting(setting_name, v.to_string(), "a number above 0"))
            } else {
                Ok(v)
            }
        };
        let sampling = SamplingConfig {
            success_ratio,
            forced_per_second,
            sample_client_errors: self.sample_client_errors.unwrap_or(false),
            keep_slower_than: self.keep_slower_than,
            trust_parent: self.trust_upstream_sampled.unwrap_or(true),
            max_traces: positive(
                "ObsBuilder::max_buffered_traces",
                self.max_buffered_traces.unwrap_or(8192),
            )?,
            max_spans_per_trace: positive(
                "ObsBuilder::max_spans_per_trace",
                self.max_spans_per_trace.unwrap_or(512),
            )?,
            root_timeout: self.root_timeout.unwrap_or(Duration::from_secs(60)),
        };

        let protocol = self
            .otlp_protocol
            .or(env.otlp_protocol)
            .unwrap_or(OtlpProtocol::HttpProtobuf);
        if protocol == OtlpProtocol::Grpc && !cfg!(feature = "grpc") {
            let err = if self.otlp_protocol.is_some() {
                setting(
                    "ObsBuilder::otlp_protocol",
                    "Grpc".into(),
                    "HttpProtobuf, or enable the `grpc` feature",
                )
            } else {
                Error::InvalidEnv {
                    variable: env::OTEL_EXPORTER_OTLP_PROTOCOL,
                    value: "grpc".into(),
                    expected: "`http/protobuf`, or enable the `grpc` feature of mercenary-obs"
                        .into(),
                }
            };
            return Err(err);
        }
        // (URL, name of its source, whether it is a base URL that needs `/v1/traces`)
        let endpoint = match (
            &self.otlp_endpoint,
            &env.otlp_traces_endpoint,
            &env.otlp_endpoint,
        ) {
            (Some(u), _, _) => Some((u.clone(), "ObsBuilder::otlp_endpoint", true)),
            (None, Some(u), _) => Some((u.clone(), env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, false)),
            (None, None, Some(u)) => Some((u.clone(), env::OTEL_EXPORTER_OTLP_ENDPOINT, true)),
            _ => None,
        };
        let otlp = match endpoint {
            None => None,
            Some((url, source, base)) => {
                let parsed = url.parse::<http::Uri>().ok().filter(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
                });
                let Some(parsed) = parsed else {
                    let expected = "an http:// or https:// URL such as http://localhost:4318";
                    return Err(if source.starts_with("OTEL_") {
                        Error::InvalidEnv {
                            variable: source,
                            value: url,
                            expected: expected.into(),
                        }
                    } else {
                        setting(source, url, expected)
                    });
                };
                let endpoint = if protocol == OtlpProtocol::HttpProtobuf && base {
                    let path = parsed.path();
                    if path.is_empty() || path == "/" {
                        format!("{}/v1/traces", url.trim_end_matches('/'))
                    } else {
                        url.clone()
                    }
                } else {
                    url.clone()
                };
                Some(OtlpConfig {
                    endpoint,
                    protocol,
                    headers: self
                        .otlp_headers
                        .take()
                        .or(env.otlp_headers.clone())
                        .unwrap_or_default(),
                    timeout: self
                        .otlp_timeout
                        .or(env.otlp_timeout)
                        .unwrap_or(Duration::from_secs(10)),
                    schedule_delay: self
                        .export_schedule_delay
                        .or(env.export_schedule_delay)
                        .unwrap_or(Duration::from_secs(5)),
                    queue_size: positive(
                        "ObsBuilder::export_queue_size",
                        self.export_queue_size
                            .or(env.export_queue_size)
                            .unwrap_or(2048),
                    )?,
                })
            }
        };
        Ok(TracingConfig {
            enabled: self.traces.unwrap_or(true),
            sampling,
            forced_header,
            forced_value,
            ring_size: self.trace_ring_size.unwrap_or(100),
            otlp,
        })
    }
}

fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".into())
}

/// Parses `k=v,k2=v2` with percent-encoded values (W3C Baggage octets, as the OTel spec says).
fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!(
                "comma-separated `key=value` pairs; `{item}` has no `=`"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err("comma-separated `key=value` pairs with non-empty keys".into());
        }
        out.push((key.to_string(), percent_decode(value.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("percent-encoded values; `{s}` has a bad `%` escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("UTF-8 values; `{s}` decodes to invalid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_attributes() {
        let attrs =
            parse_resource_attributes("service.name=api, service.version=1.2%2C3 ,x=").unwrap();
        assert_eq!(attrs[0], ("service.name".into(), "api".into()));
        assert_eq!(attrs[1], ("service.version".into(), "1.2,3".into()));
        assert_eq!(attrs[2], ("x".into(), "".into()));
        assert!(parse_resource_attributes("novalue").is_err());
        assert!(parse_resource_attributes("a=%zz").is_err());
    }
}
