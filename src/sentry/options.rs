//! Sentry settings: [`SentryOptions`] as given to the builder and read from `SENTRY_DSN`,
//! `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE`, and [`resolve`], which validates them into a
//! [`SentryConfig`] (or `None` when no DSN is set).

use std::sync::Arc;
use std::time::Duration;

use ::sentry::TransportFactory;
use ::sentry::types::Dsn;

use crate::core::env::{self, EnvVars, Setting};
use crate::core::error::Error;

/// Sentry settings as given (`ObsBuilder::sentry_*`) and read from `SENTRY_DSN`,
/// `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE`.
#[derive(Default)]
pub(crate) struct SentryOptions {
    pub(crate) dsn: Setting<String>,
    pub(crate) environment: Setting<String>,
    pub(crate) release: Setting<String>,
    pub(crate) sample_rate: Option<f32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) queue_size: Option<usize>,
    pub(crate) transport: Option<Arc<dyn TransportFactory>>,
}

impl SentryOptions {
    /// Reads `SENTRY_DSN`, `SENTRY_ENVIRONMENT` and `SENTRY_RELEASE` (validated in `build()`).
    pub(crate) fn read_env(&mut self, vars: &mut EnvVars) {
        for (name, setting) in [
            (env::SENTRY_DSN, &mut self.dsn),
            (env::SENTRY_ENVIRONMENT, &mut self.environment),
            (env::SENTRY_RELEASE, &mut self.release),
        ] {
            if let Some(value) = vars.get(name) {
                setting.env = Some(value.trim().to_string());
            }
        }
    }
}

/// Validated Sentry settings.
pub(crate) struct SentryConfig {
    pub(super) dsn: Dsn,
    pub(super) environment: Option<String>,
    pub(super) release: Option<String>,
    pub(super) sample_rate: f32,
    pub(super) timeout: Duration,
    pub(super) queue_size: usize,
    pub(super) transport: Option<Arc<dyn TransportFactory>>,
}

/// Validates the Sentry settings: `None` when no DSN is set (Sentry off).
pub(crate) fn resolve(settings: &mut SentryOptions) -> Result<Option<SentryConfig>, Error> {
    let sample_rate = settings.sample_rate.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_rate) {
        return Err(Error::InvalidSetting {
            setting: "ObsBuilder::sentry_sample_rate",
            value: sample_rate.to_string(),
            expected: "a number from 0 to 1".into(),
        });
    }
    let timeout = settings.timeout.unwrap_or(Duration::from_secs(5));
    if timeout.is_zero() {
        return Err(Error::InvalidSetting {
            setting: "ObsBuilder::sentry_timeout",
            value: format!("{timeout:?}"),
            expected: "a timeout above 0".into(),
        });
    }
    let queue_size = settings.queue_size.unwrap_or(100);
    if queue_size == 0 {
        return Err(Error::InvalidSetting {
            setting: "ObsBuilder::sentry_queue_size",
            value: "0".into(),
            expected: "a number of events above 0".into(),
        });
    }
    let Some((text, from_code)) = settings.dsn.take() else {
        return Ok(None);
    };
    let from_env = !from_code;
    let expected = "a Sentry DSN such as https://PUBLIC_KEY@o0.ingest.sentry.io/PROJECT_ID";
    let dsn = text.trim().parse::<Dsn>().map_err(|_| match from_env {
        true => Error::InvalidEnv {
            variable: env::SENTRY_DSN,
            value: text.clone(),
            expected: expected.into(),
        },
        false => Error::InvalidSetting {
            setting: "ObsBuilder::sentry_dsn",
            value: text.clone(),
            expected: expected.into(),
        },
    })?;
    Ok(Some(SentryConfig {
        dsn,
        environment: settings.environment.take().map(|(v, _)| v),
        release: settings.release.take().map(|(v, _)| v),
        sample_rate,
        timeout,
        queue_size,
        transport: settings.transport.take(),
    }))
}
