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

/// Compression of OTLP export bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OtlpCompression {
    /// Bodies sent as they are (the OTel default).
    None,
    /// gzip (`content-encoding: gzip` over HTTP, `grpc-encoding: gzip` over gRPC).
    Gzip,
}

/// A setting's value and the name of its source, for errors: `ObsBuilder::otlp_certificate`
/// or the variable it was read from.
pub(crate) type Sourced<T> = (&'static str, T);

/// Where the TLS material comes from: PEM file paths, each with the name of its source.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsFiles {
    /// CA bundle that replaces the system's trust roots.
    pub(crate) ca: Option<Sourced<String>>,
    /// Client certificate chain (mutual TLS).
    pub(crate) client_certificate: Option<Sourced<String>>,
    /// The client certificate's private key.
    pub(crate) client_key: Option<Sourced<String>>,
}

impl TlsFiles {
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client_certificate.is_none() && self.client_key.is_none()
    }
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
    pub(crate) certificate: Setting<Sourced<String>>,
    pub(crate) client_certificate: Setting<Sourced<String>>,
    pub(crate) client_key: Setting<Sourced<String>>,
    pub(crate) compression: Setting<OtlpCompression>,
    pub(crate) insecure: Setting<bool>,
}

/// Header names with their values hidden: values are secrets more often than not.
pub(crate) struct RedactedHeaders<'a>(pub(crate) &'a [(String, String)]);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, _)| (k, "[REDACTED]")))
            .finish()
    }
}

impl std::fmt::Debug for OtlpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpOptions")
            .field("endpoint", &self.endpoint)
            .field("env_endpoint", &self.env_endpoint)
            .field("env_traces_endpoint", &self.env_traces_endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.value().map(|h| RedactedHeaders(h.as_slice())),
            )
            .field("timeout", &self.timeout)
            .field("certificate", &self.certificate)
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("compression", &self.compression)
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &RedactedHeaders(&self.headers))
            .field("timeout", &self.timeout)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
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
    pub(crate) compression: OtlpCompression,
    pub(crate) tls: TlsFiles,
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
        // The `_TRACES_` form wins over the generic one.
        for name in [
            env::OTEL_EXPORTER_OTLP_HEADERS,
            env::OTEL_EXPORTER_OTLP_TRACES_HEADERS,
        ] {
            if let Some(text) = vars.get(name).map(str::to_string) {
                match parse_key_values(&text) {
                    Ok(h) => self.headers.env = Some(h),
                    // Neither the value nor the parser's message (which quotes it) is shown.
                    Err(_) => vars.error(
                        name,
                        &redact_header_text(&text),
                        "comma-separated `name=value` pairs with percent-encoded values",
                    ),
                }
            }
        }
        for (generic, traces, slot) in [
            (
                env::OTEL_EXPORTER_OTLP_CERTIFICATE,
                env::OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE,
                &mut self.certificate,
            ),
            (
                env::OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
                env::OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE,
                &mut self.client_certificate,
            ),
            (
                env::OTEL_EXPORTER_OTLP_CLIENT_KEY,
                env::OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY,
                &mut self.client_key,
            ),
        ] {
            for name in [generic, traces] {
                if let Some(path) = vars.get(name) {
                    slot.env = Some((name, path.trim().to_string()));
                }
            }
        }
        for name in [
            env::OTEL_EXPORTER_OTLP_COMPRESSION,
            env::OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
        ] {
            let compression = vars.parse(name, "`gzip` or `none`", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "gzip" => Some(OtlpCompression::Gzip),
                    "none" => Some(OtlpCompression::None),
                    _ => None,
                }
            });
            self.compression.set_env(compression);
        }
        for name in [
            env::OTEL_EXPORTER_OTLP_INSECURE,
            env::OTEL_EXPORTER_OTLP_TRACES_INSECURE,
        ] {
            let insecure = vars.parse(name, "`true` or `false`", |v| {
                match v.to_ascii_lowercase().as_str() {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                }
            });
            self.insecure.set_env(insecure);
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
        let (mut url, source, base) = endpoint;
        // OTLP/gRPC takes a bare `host:port`: TLS unless `OTEL_EXPORTER_OTLP_INSECURE=true`.
        if protocol == OtlpProtocol::Grpc && !url.contains("://") {
            let scheme = if self.insecure.or(false) {
                "http"
            } else {
                "https"
            };
            url = format!("{scheme}://{url}");
        }
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
        // The base `OTEL_EXPORTER_OTLP_ENDPOINT` always gets `v1/traces` after its path, as the
        // OTLP exporter specification says (`http://gw/otlp` → `http://gw/otlp/v1/traces`); a
        // URL given in code gets it only when it has no path of its own.
        let endpoint = if protocol == OtlpProtocol::HttpProtobuf && base {
            let path = parsed.path();
            if path.is_empty() || path == "/" || source == env::OTEL_EXPORTER_OTLP_ENDPOINT {
                format!("{}/v1/traces", url.trim_end_matches('/'))
            } else {
                url.clone()
            }
        } else {
            url.clone()
        };
        let tls = self.tls_files()?;
        Ok(Some(OtlpConfig {
            endpoint,
            protocol,
            headers: self.headers.take().map(|(h, _)| h).unwrap_or_default(),
            timeout: self.timeout.or(Duration::from_secs(10)),
            schedule_delay: self.schedule_delay.or(Duration::from_secs(5)),
            queue_size: positive("ObsBuilder::export_queue_size", self.queue_size.or(2048))?,
            compression: self.compression.or(OtlpCompression::None),
            tls,
        }))
    }

    /// The certificate files, checked for consistency (the files are read when the exporter
    /// starts, by `traces::tls`).
    fn tls_files(&mut self) -> Result<TlsFiles, Error> {
        let files = TlsFiles {
            ca: self.certificate.take().map(|(v, _)| v),
            client_certificate: self.client_certificate.take().map(|(v, _)| v),
            client_key: self.client_key.take().map(|(v, _)| v),
        };
        match (&files.client_certificate, &files.client_key) {
            (Some((name, path)), None) => {
                return Err(source_error(
                    name,
                    path.clone(),
                    "a client certificate together with its key \
                     (OTEL_EXPORTER_OTLP_CLIENT_KEY or ObsBuilder::otlp_client_certificate)",
                ));
            }
            (None, Some((name, path))) => {
                return Err(source_error(
                    name,
                    path.clone(),
                    "a client key together with its certificate \
                     (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE or ObsBuilder::otlp_client_certificate)",
                ));
            }
            _ => {}
        }
        if !cfg!(feature = "tls") {
            let first = files
                .ca
                .as_ref()
                .or(files.client_certificate.as_ref())
                .or(files.client_key.as_ref());
            if let Some((name, path)) = first {
                return Err(source_error(
                    name,
                    path.clone(),
                    "no TLS files: this build of mercenary-obs has no `tls` feature",
                ));
            }
        }
        Ok(files)
    }
}

/// An error naming `name`: a variable (`OTEL_*`) or a setter.
pub(crate) fn source_error(name: &'static str, value: String, expected: &str) -> Error {
    if name.starts_with("OTEL_") {
        Error::InvalidEnv {
            variable: name,
            value,
            expected: expected.into(),
        }
    } else {
        setting(name, value, expected)
    }
}

/// `name=value,...` with every value replaced by `…`, for errors.
fn redact_header_text(text: &str) -> String {
    text.split(',')
        .map(|item| match item.split_once('=') {
            Some((k, _)) => format!("{}=…", k.trim()),
            None => "…".to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
