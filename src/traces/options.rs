//! Trace settings: sampling, buffering, the debug ring and OTLP export, from code and from the
//! `OTEL_*` / `MERCENARY_OBS_*` environment variables, validated into a [`TracesConfig`].

use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::sampler::SamplingConfig;
use crate::core::env::{self, EnvVars, Setting, parse_key_values};
use crate::core::error::Error;

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// OTLP/gRPC (feature `grpc`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies, the OTel default.
    HttpProtobuf,
}

/// Trace settings as given (`ObsBuilder`'s trace setters) and read from the environment.
#[derive(Default)]
pub(crate) struct TraceOptions {
    pub(crate) enabled: Option<bool>,
    pub(crate) success_ratio: Setting<f64>,
    pub(crate) forced_per_second: Setting<f64>,
    pub(crate) forced_header: Option<(String, String)>,
    pub(crate) sample_client_errors: Option<bool>,
    pub(crate) keep_slower_than: Option<Duration>,
    pub(crate) trust_upstream_sampled: Option<bool>,
    pub(crate) max_buffered_traces: Option<usize>,
    pub(crate) max_spans_per_trace: Option<usize>,
    pub(crate) root_timeout: Option<Duration>,
    pub(crate) ring_size: Option<usize>,
    pub(crate) otlp: OtlpOptions,
}

/// OTLP export settings.
#[derive(Default)]
pub(crate) struct OtlpOptions {
    /// Set in code: a base URL like the environment's `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) endpoint: Option<String>,
    env_endpoint: Option<String>,
    env_traces_endpoint: Option<String>,
    pub(crate) protocol: Setting<OtlpProtocol>,
    pub(crate) headers: Setting<Vec<(String, String)>>,
    pub(crate) timeout: Setting<Duration>,
    pub(crate) schedule_delay: Setting<Duration>,
    pub(crate) queue_size: Setting<usize>,
}

/// Validated trace settings.
pub(crate) struct TracesConfig {
    pub(crate) enabled: bool,
    pub(crate) sampling: SamplingConfig,
    pub(crate) forced_header: HeaderName,
    pub(crate) forced_value: HeaderValue,
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

fn setting(setting: &'static str, value: String, expected: &str) -> Error {
    Error::InvalidSetting {
        setting,
        value,
        expected: expected.to_string(),
    }
}

fn positive(setting_name: &'static str, v: usize) -> Result<usize, Error> {
    if v == 0 {
        Err(setting(setting_name, v.to_string(), "a number above 0"))
    } else {
        Ok(v)
    }
}

fn millis(ms: &str) -> Option<Duration> {
    ms.parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

impl TraceOptions {
    /// Reads `MERCENARY_OBS_SUCCESS_RATIO`, `MERCENARY_OBS_FORCED_PER_SECOND` and the
    /// `OTEL_EXPORTER_OTLP_*` / `OTEL_BSP_*` variables.
    pub(crate) fn read_env(&mut self, vars: &mut EnvVars) {
        let ratio = vars.parse(
            env::MERCENARY_OBS_SUCCESS_RATIO,
            "a number from 0 to 1",
            |v| v.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)),
        );
        self.success_ratio.set_env(ratio);
        let forced = vars.parse(
            env::MERCENARY_OBS_FORCED_PER_SECOND,
            "a number of traces per second, 0 or more",
            |v| v.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0),
        );
        self.forced_per_second.set_env(forced);
        self.otlp.read_env(vars);
    }

    /// Validates the settings.
    pub(crate) fn resolve(&mut self) -> Result<TracesConfig, Error> {
        let success_ratio = self.success_ratio.or(0.1);
        if !(0.0..=1.0).contains(&success_ratio) {
            return Err(setting(
                "ObsBuilder::success_ratio",
                success_ratio.to_string(),
                "a number from 0 to 1",
            ));
        }
        let forced_per_second = self.forced_per_second.or(10.0);
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
        let forced_value = HeaderValue::try_from(fv.clone()).map_err(|_| {
            setting(
                "ObsBuilder::forced_header",
                fv.clone(),
                "a valid HTTP header value",
            )
        })?;
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
        Ok(TracesConfig {
            enabled: self.enabled.unwrap_or(true),
            sampling,
            forced_header,
            forced_value,
            ring_size: self.ring_size.unwrap_or(100),
            otlp: self.otlp.resolve()?,
        })
    }
}

impl OtlpOptions {
    fn read_env(&mut self, vars: &mut EnvVars) {
        if let Some(url) = vars.get(env::OTEL_EXPORTER_OTLP_ENDPOINT) {
            self.env_endpoint = Some(url.trim().to_string());
        }
        if let Some(url) = vars.get(env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
            self.env_traces_endpoint = Some(url.trim().to_string());
        }
        let protocol = vars.parse(
            env::OTEL_EXPORTER_OTLP_PROTOCOL,
            "`grpc` or `http/protobuf`",
            |v| match v {
                "grpc" => Some(OtlpProtocol::Grpc),
                "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
                _ => None,
            },
        );
        self.protocol.set_env(protocol);
        if let Some(text) = vars
            .get(env::OTEL_EXPORTER_OTLP_HEADERS)
            .map(str::to_string)
        {
            match parse_key_values(&text) {
                Ok(h) => self.headers.env = Some(h),
                Err(e) => vars.error(env::OTEL_EXPORTER_OTLP_HEADERS, &text, &e),
            }
        }
        let timeout = vars.parse(
            env::OTEL_EXPORTER_OTLP_TIMEOUT,
            "a timeout in milliseconds, above 0",
            millis,
        );
        self.timeout.set_env(timeout);
        let delay = vars.parse(
            env::OTEL_BSP_SCHEDULE_DELAY,
            "a delay in milliseconds, above 0",
            millis,
        );
        self.schedule_delay.set_env(delay);
        let queue = vars.parse(
            env::OTEL_BSP_MAX_QUEUE_SIZE,
            "a number of spans, above 0",
            |v| v.parse::<usize>().ok().filter(|n| *n > 0),
        );
        self.queue_size.set_env(queue);
    }

    fn resolve(&mut self) -> Result<Option<OtlpConfig>, Error> {
        let protocol = self.protocol.or(OtlpProtocol::HttpProtobuf);
        if protocol == OtlpProtocol::Grpc && !cfg!(feature = "grpc") {
            return Err(if self.protocol.code.is_some() {
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
            });
        }
        // (URL, name of its source, whether it is a base URL that needs `/v1/traces`)
        let endpoint = match (
            &self.endpoint,
            &self.env_traces_endpoint,
            &self.env_endpoint,
        ) {
            (Some(u), _, _) => (u.clone(), "ObsBuilder::otlp_endpoint", true),
            (None, Some(u), _) => (u.clone(), env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, false),
            (None, None, Some(u)) => (u.clone(), env::OTEL_EXPORTER_OTLP_ENDPOINT, true),
            _ => return Ok(None),
        };
        let (url, source, base) = endpoint;
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
        Ok(Some(OtlpConfig {
            endpoint,
            protocol,
            headers: self.headers.take().map(|(h, _)| h).unwrap_or_default(),
            timeout: self.timeout.or(Duration::from_secs(10)),
            schedule_delay: self.schedule_delay.or(Duration::from_secs(5)),
            queue_size: positive("ObsBuilder::export_queue_size", self.queue_size.or(2048))?,
        }))
    }
}
