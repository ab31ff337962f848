//! Environment variables read by [`ObsBuilder::from_env`](crate::ObsBuilder::from_env), and the
//! plumbing every component's options share: code over environment over default.

use std::collections::HashMap;

use super::error::Error;

/// Service name (wins over `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `key=value,key=value` resource attributes (values percent-encoded).
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// `json` or `pretty`.
pub const MERCENARY_OBS_LOG_FORMAT: &str = "MERCENARY_OBS_LOG_FORMAT";
/// The log filter, in `tracing-subscriber`'s `EnvFilter` syntax.
pub const RUST_LOG: &str = "RUST_LOG";
/// `true` or `false`: whether `init()` installs the JSON panic hook (default `true`).
pub const MERCENARY_OBS_PANIC_HOOK: &str = "MERCENARY_OBS_PANIC_HOOK";
/// Base OTLP endpoint (`/v1/traces` is appended for HTTP).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// OTLP traces endpoint, used as is (wins over the base endpoint).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `grpc` or `http/protobuf`.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `key=value,key=value` headers sent with every export (values percent-encoded).
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// Like `OTEL_EXPORTER_OTLP_HEADERS`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
/// PEM file of the CA certificates that verify the collector (instead of the system's roots).
pub const OTEL_EXPORTER_OTLP_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// Like `OTEL_EXPORTER_OTLP_CERTIFICATE`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";
/// PEM file of the client certificate chain (mutual TLS).
pub const OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
/// Like `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: &str =
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE";
/// PEM file of the client certificate's private key (mutual TLS).
pub const OTEL_EXPORTER_OTLP_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
/// Like `OTEL_EXPORTER_OTLP_CLIENT_KEY`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY";
/// `gzip` or `none`.
pub const OTEL_EXPORTER_OTLP_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
/// Like `OTEL_EXPORTER_OTLP_COMPRESSION`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";
/// `true`: a gRPC endpoint given as a bare `host:port` is plaintext (default `false`: TLS).
pub const OTEL_EXPORTER_OTLP_INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
/// Like `OTEL_EXPORTER_OTLP_INSECURE`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_INSECURE: &str = "OTEL_EXPORTER_OTLP_TRACES_INSECURE";
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

/// The address of the admin listener (`/metrics`, `/debug/traces`, `/healthz`), for example
/// `127.0.0.1:9464`; unset: no admin listener.
pub const MERCENARY_OBS_ADMIN_ADDR: &str = "MERCENARY_OBS_ADMIN_ADDR";
/// How long an audit line waits for room in a stalled sink before it goes to the fallback, in
/// milliseconds (0: not at all).
pub const MERCENARY_OBS_AUDIT_MAX_WAIT_MS: &str = "MERCENARY_OBS_AUDIT_MAX_WAIT_MS";
/// A file audit lines go to when their sink is stalled (appended; default: standard error).
pub const MERCENARY_OBS_AUDIT_FALLBACK_FILE: &str = "MERCENARY_OBS_AUDIT_FALLBACK_FILE";

/// The environment as given to `from_env` / `from_vars`, and the errors found reading it.
///
/// Each component's options read their own variables from it; a value that does not parse is
/// recorded here and returned by `build()`, naming the variable.
pub(crate) struct EnvVars {
    vars: HashMap<String, String>,
    pub(crate) errors: Vec<Error>,
}

impl EnvVars {
    pub(crate) fn new<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
                .collect(),
            errors: Vec::new(),
        }
    }

    /// The value of `name`, unless it is unset or blank (blank counts as unset).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Parses `name` with `parse`; a value it refuses is recorded as an error naming the
    /// variable and what it accepts.
    pub(crate) fn parse<T>(
        &mut self,
        name: &'static str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let value = self.get(name)?.to_string();
        match parse(value.trim()) {
            Some(v) => Some(v),
            None => {
                self.error(name, &value, expected);
                None
            }
        }
    }

    /// Records that `name` holds `value`, which is not what it accepts.
    pub(crate) fn error(&mut self, name: &'static str, value: &str, expected: &str) {
        self.errors.push(Error::InvalidEnv {
            variable: name,
            value: value.to_string(),
            expected: expected.to_string(),
        });
    }
}

/// One setting: the value given in code, the one read from the environment; code wins.
#[derive(Debug)]
pub(crate) struct Setting<T> {
    pub(crate) code: Option<T>,
    pub(crate) env: Option<T>,
}

impl<T> Default for Setting<T> {
    fn default() -> Self {
        Self {
            code: None,
            env: None,
        }
    }
}

impl<T> Setting<T> {
    /// Sets the value from code.
    pub(crate) fn set(&mut self, value: T) {
        self.code = Some(value);
    }

    /// Records a value read from the environment; `None` (unset or refused) keeps what an
    /// earlier `from_env`/`from_vars` read.
    pub(crate) fn set_env(&mut self, value: Option<T>) {
        if value.is_some() {
            self.env = value;
        }
    }

    /// The value from code, else from the environment.
    pub(crate) fn value(&self) -> Option<&T> {
        self.code.as_ref().or(self.env.as_ref())
    }

    /// Takes the value, and whether it came from code (rather than the environment).
    pub(crate) fn take(&mut self) -> Option<(T, bool)> {
        match (self.code.take(), self.env.take()) {
            (Some(v), _) => Some((v, true)),
            (None, Some(v)) => Some((v, false)),
            (None, None) => None,
        }
    }
}

impl<T: Clone> Setting<T> {
    /// The value from code, else from the environment, else `default`.
    pub(crate) fn or(&self, default: T) -> T {
        self.value().cloned().unwrap_or(default)
    }
}

/// Parses `k=v,k2=v2` with percent-encoded values (W3C Baggage octets, as the OTel spec says).
pub(crate) fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!(
                "comma-separated `key=value` pairs; `{}` has no `=`",
                shown(item)
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
                // The value is not quoted: it may be a header's secret.
                .ok_or_else(|| "percent-encoded values; one has a bad `%` escape".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "UTF-8 values; one decodes to invalid UTF-8".to_string())
}

/// `s` for an error message: at most 64 characters, control characters escaped.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        let attrs = parse_key_values("service.name=api, service.version=1.2%2C3 ,x=").unwrap();
        assert_eq!(attrs[0], ("service.name".into(), "api".into()));
        assert_eq!(attrs[1], ("service.version".into(), "1.2,3".into()));
        assert_eq!(attrs[2], ("x".into(), "".into()));
        assert!(parse_key_values("novalue").is_err());
        assert!(parse_key_values("a=%zz").is_err());
    }

    #[test]
    fn code_wins_over_env_and_blank_is_unset() {
        let mut vars = EnvVars::new([("A", "  "), ("B", "2"), ("C", "x")]);
        assert_eq!(vars.get("A"), None);
        assert_eq!(
            vars.parse("B", "a number", |v| v.parse::<u8>().ok()),
            Some(2)
        );
        assert_eq!(vars.parse("C", "a number", |v| v.parse::<u8>().ok()), None);
        assert!(matches!(
            vars.errors[0],
            Error::InvalidEnv { variable: "C", .. }
        ));
        let mut s = Setting {
            code: None,
            env: Some(1),
        };
        assert_eq!(s.or(0), 1);
        s.set(5);
        assert_eq!(s.take(), Some((5, true)));
    }
}
