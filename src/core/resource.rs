//! The service resource: name, version, deployment environment and extra attributes, from code
//! or from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.

use super::env::{self, EnvVars, Setting, parse_key_values};

/// The service identity as configured (`ObsBuilder::service_name`, `service_version`,
/// `environment`, and the environment).
#[derive(Default, Debug)]
pub(crate) struct ResourceOptions {
    pub(crate) service_name: Setting<String>,
    pub(crate) service_version: Setting<String>,
    pub(crate) environment: Setting<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` entries other than the service identity.
    attributes: Vec<(String, String)>,
}

/// The service identity every component writes: `service` on log lines, `target_info`, the
/// resource of exported spans, Sentry's release and environment.
#[derive(Clone, Debug)]
pub(crate) struct Resource {
    pub(crate) service_name: String,
    /// `unknown` when not set.
    pub(crate) service_version: String,
    /// `unknown` when not set.
    pub(crate) environment: String,
    /// Extra resource attributes for exported traces.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) attributes: Vec<(String, String)>,
}

impl ResourceOptions {
    /// Reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub(crate) fn read_env(&mut self, vars: &mut EnvVars) {
        if let Some(name) = vars.get(env::OTEL_SERVICE_NAME) {
            self.service_name.env = Some(name.trim().to_string());
        }
        let Some(text) = vars.get(env::OTEL_RESOURCE_ATTRIBUTES).map(str::to_string) else {
            return;
        };
        match parse_key_values(&text) {
            Ok(attrs) => {
                for (k, v) in attrs {
                    match k.as_str() {
                        "service.name" if self.service_name.env.is_none() => {
                            self.service_name.env = Some(v)
                        }
                        "service.version" => self.service_version.env = Some(v),
                        "deployment.environment.name" => self.environment.env = Some(v),
                        "deployment.environment" if self.environment.env.is_none() => {
                            self.environment.env = Some(v)
                        }
                        _ => self.attributes.push((k, v)),
                    }
                }
            }
            Err(expected) => vars.error(env::OTEL_RESOURCE_ATTRIBUTES, &text, &expected),
        }
    }

    /// The resource, with defaults for what is not set.
    pub(crate) fn resolve(&mut self) -> Resource {
        let service_name = self
            .service_name
            .take()
            .map(|(name, _)| name)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(default_service_name);
        Resource {
            service_name,
            service_version: self
                .service_version
                .take()
                .map_or_else(|| "unknown".into(), |(v, _)| v),
            environment: self
                .environment
                .take()
                .map_or_else(|| "unknown".into(), |(v, _)| v),
            attributes: std::mem::take(&mut self.attributes),
        }
    }
}

impl Resource {
    /// The resource of an instance that was never configured (the metrics-only default).
    pub(crate) fn unknown() -> Self {
        Self {
            service_name: "unknown_service".into(),
            service_version: "unknown".into(),
            environment: "unknown".into(),
            attributes: Vec::new(),
        }
    }
}

fn default_service_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".into())
}
