//! Request-path settings: the correlation header, the headers on the access line, panics and
//! `unauthorized` events.

use std::net::SocketAddr;

use http::HeaderName;

use crate::core::env::{self, EnvVars, Setting};
use crate::core::error::Error;

/// The default request headers written on the access line.
pub const DEFAULT_LOG_HEADERS: &[&str] = &["user-agent"];

/// Request-path settings as given (`ObsBuilder::request_id_header`, `log_headers`,
/// `catch_panics`, `unauthorized_events`).
#[derive(Default)]
pub(crate) struct RequestOptions {
    pub(crate) request_id_header: Option<String>,
    pub(crate) log_headers: Option<Vec<String>>,
    pub(crate) catch_panics: Option<bool>,
    pub(crate) unauthorized_events: Option<bool>,
    /// `Some(0)`: off.
    pub(crate) suspicious_usage_threshold: Option<u32>,
    pub(crate) admin_addr: Setting<SocketAddr>,
}

/// A client's 401/403 (or unmatched-route) answers per minute from which it is reported.
pub(crate) const DEFAULT_SUSPICIOUS_THRESHOLD: u32 = 20;

/// Validated request-path settings.
pub(crate) struct RequestConfig {
    pub(crate) request_id_header: HeaderName,
    pub(crate) log_headers: Vec<HeaderName>,
    pub(crate) catch_panics: bool,
    pub(crate) unauthorized_events: bool,
    /// `None`: off.
    pub(crate) suspicious_usage_threshold: Option<u32>,
    /// Where the admin listener serves (`None`: no admin listener).
    pub(crate) admin_addr: Option<SocketAddr>,
}

impl RequestOptions {
    /// Reads `MERCENARY_OBS_ADMIN_ADDR`.
    pub(crate) fn read_env(&mut self, vars: &mut EnvVars) {
        let addr = vars.parse(
            env::MERCENARY_OBS_ADMIN_ADDR,
            "an address and port such as 127.0.0.1:9464",
            |v| v.parse::<SocketAddr>().ok(),
        );
        self.admin_addr.set_env(addr);
    }

    /// Validates the header names.
    pub(crate) fn resolve(&mut self) -> Result<RequestConfig, Error> {
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
        Ok(RequestConfig {
            request_id_header,
            log_headers,
            catch_panics: self.catch_panics.unwrap_or(true),
            unauthorized_events: self.unauthorized_events.unwrap_or(true),
            suspicious_usage_threshold: Some(
                self.suspicious_usage_threshold
                    .unwrap_or(DEFAULT_SUSPICIOUS_THRESHOLD),
            )
            .filter(|t| *t > 0),
            admin_addr: self.admin_addr.take().map(|(a, _)| a),
        })
    }
}

impl RequestConfig {
    /// The settings of the metrics-only default instance.
    pub(crate) fn metrics_only() -> Self {
        Self {
            request_id_header: HeaderName::from_static("x-request-id"),
            log_headers: Vec::new(),
            catch_panics: true,
            unauthorized_events: false,
            suspicious_usage_threshold: None,
            admin_addr: None,
        }
    }
}
