//! Metric settings: the registry, duration buckets, process metrics and series caps.

use std::collections::HashMap;

use prometheus::Registry;

use super::business::{DEFAULT_SERIES_CAP, MAX_SERIES_CAP};
use crate::core::error::Error;

/// The default bucket boundaries of `http_server_request_duration_seconds` (OTel HTTP semconv).
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Metric settings as given (`ObsBuilder::registry`, `duration_buckets`, `process_metrics`,
/// `series_cap`, `series_cap_for`). None is read from the environment.
#[derive(Default)]
pub(crate) struct MetricsOptions {
    pub(crate) registry: Option<Registry>,
    pub(crate) duration_buckets: Option<Vec<f64>>,
    pub(crate) process_metrics: Option<bool>,
    pub(crate) series_cap: Option<usize>,
    pub(crate) series_caps: HashMap<String, usize>,
}

/// Validated metric settings.
pub(crate) struct MetricsConfig {
    pub(crate) registry: Registry,
    pub(crate) duration_buckets: Vec<f64>,
    pub(crate) process_metrics: bool,
    pub(crate) series_cap: usize,
    pub(crate) series_caps: HashMap<String, usize>,
}

impl MetricsOptions {
    /// Validates the settings.
    pub(crate) fn resolve(&mut self) -> Result<MetricsConfig, Error> {
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
        let series_cap = self.series_cap.unwrap_or(DEFAULT_SERIES_CAP);
        if series_cap == 0 || series_cap > MAX_SERIES_CAP {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::series_cap",
                value: series_cap.to_string(),
                expected: "from 1 to 100000 series".into(),
            });
        }
        if let Some((name, n)) = self
            .series_caps
            .iter()
            .find(|(_, n)| **n == 0 || **n > MAX_SERIES_CAP)
        {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::series_cap_for",
                value: format!("{name} = {n}"),
                expected: "from 1 to 100000 series".into(),
            });
        }
        Ok(MetricsConfig {
            registry: self.registry.take().unwrap_or_default(),
            duration_buckets: buckets,
            process_metrics: self.process_metrics.unwrap_or(true),
            series_cap,
            series_caps: std::mem::take(&mut self.series_caps),
        })
    }
}
