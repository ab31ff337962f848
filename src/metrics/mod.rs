//! Metrics: the RED catalogue, business metrics, exposition.

pub(crate) mod business;
pub(crate) mod exposition;
pub(crate) mod red;
pub(crate) mod runtime;

pub use business::{Counter, Gauge, Histogram, HistogramTimer, METRIC_OVERFLOW};
pub use exposition::{CONTENT_TYPE, MetricsService};
pub use red::{ACTIVE_REQUESTS, LOG_LINES_DROPPED, REQUEST_DURATION, TARGET_INFO};
