//! Metrics: the RED metrics, business-metric families and their series table, exposition, and
//! the process and runtime collectors.
//!
//! [`start`] registers everything in the configured registry and returns a [`MetricsHandle`].
//! The macros reach the installed instance's families through [`business::target`], which the
//! composition root sets at `init()`.

pub(crate) mod business;
pub(crate) mod exposition;
pub(crate) mod openmetrics;
pub(crate) mod options;
pub(crate) mod red;
pub(crate) mod rpc;
pub(crate) mod runtime;

use std::sync::{Arc, LazyLock};

use prometheus::Registry;

pub use business::{Counter, Gauge, Histogram, HistogramTimer};
pub use exposition::MetricsService;

use self::business::BusinessMetrics;
use self::options::MetricsConfig;
use self::red::RedMetrics;
use crate::core::error::Error;
use crate::core::exemplar::{self, Exemplars};
use crate::core::names::REQUEST_DURATION;
use crate::core::resource::Resource;

/// The metrics of one instance.
#[derive(Clone)]
pub(crate) struct MetricsHandle {
    pub(crate) registry: Registry,
    pub(crate) red: RedMetrics,
    pub(crate) business: Arc<BusinessMetrics>,
}

/// Registers the RED metrics, `target_info`, the process and runtime collectors (when asked)
/// and the business-metric families' overflow counter.
pub(crate) fn start(config: MetricsConfig, resource: &Resource) -> Result<MetricsHandle, Error> {
    let registry = config.registry;
    let mut red = RedMetrics::register(&registry, &config.duration_buckets, resource)?;
    if config.process_metrics {
        red::register_process_metrics(&registry)?;
        #[cfg(feature = "tokio")]
        runtime::register_runtime_metrics(&registry)?;
    }
    let business = Arc::new(BusinessMetrics::new(
        &registry,
        config.series_cap,
        config.series_caps,
    )?);
    red.exemplars = business.exemplars().register(
        REQUEST_DURATION,
        &config.duration_buckets,
        exemplar::DEFAULT_SLOTS,
    );
    Ok(MetricsHandle {
        registry,
        red,
        business,
    })
}

impl MetricsHandle {
    /// The instance's exemplar tables.
    pub(crate) fn exemplars(&self) -> &Arc<Exemplars> {
        self.business.exemplars()
    }
}

/// The metrics of the metrics-only default instance (before `init()`), made on first use: the
/// RED metrics first, then the business families the macros use, in one registry (so a macro
/// reusing a RED name before anything else ran is a conflict, as on any instance).
static DEFAULT: LazyLock<MetricsHandle> = LazyLock::new(|| {
    let registry = Registry::new();
    let red = RedMetrics::register(
        &registry,
        options::DEFAULT_DURATION_BUCKETS,
        &Resource::unknown(),
    )
    .unwrap_or_else(|_| unreachable_registration());
    let business = Arc::new(
        BusinessMetrics::new(&registry, business::DEFAULT_SERIES_CAP, Default::default())
            .unwrap_or_else(|_| BusinessMetrics::unregistered(&registry)),
    );
    MetricsHandle {
        registry,
        red,
        business,
    }
});

/// The metrics of the metrics-only default instance.
pub(crate) fn default_handle() -> &'static MetricsHandle {
    &DEFAULT
}

#[cold]
fn unreachable_registration<T>() -> T {
    // A fresh registry with the crate's own, valid names cannot refuse a registration.
    panic!("registering the crate's metrics in a fresh registry failed")
}
