//! The metric names the kit queries, taken from the constants the code registers, so a rename
//! there changes the rules, tests and dashboards with it.

pub(crate) use crate::db::{
    CONNECTION_COUNT, CONNECTION_MAX, OPERATION_DURATION as DB_DURATION, PENDING_REQUESTS,
    POOL_LABEL, STATE_LABEL,
};
pub(crate) use crate::metrics::red::{
    ACTIVE_REQUESTS, LOG_LINES_DROPPED, REQUEST_DURATION, TARGET_INFO,
};
pub(crate) use crate::metrics::runtime::{
    PROCESS_CPU_SECONDS, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY,
    PROCESS_THREADS, TOKIO_ALIVE_TASKS, TOKIO_GLOBAL_QUEUE_DEPTH, TOKIO_WORKERS,
};
pub(crate) use crate::tracing::sampler::{
    BUFFERED_TRACES, SPANS_DROPPED, SPANS_EXPORTED, TRACES_TOTAL,
};

pub(crate) use crate::logging::events::{AUDIT_EVENTS, SECURITY_EVENTS};
pub(crate) use crate::metrics::business::METRIC_OVERFLOW;
#[cfg(feature = "sentry")]
pub(crate) use crate::sentry::SENTRY_EVENTS_DROPPED;
/// `mercenary_obs_sentry_events_dropped_total` (registered with feature `sentry`; the rules
/// and dashboards name it in every build, so the generated kit does not depend on features).
#[cfg(not(feature = "sentry"))]
pub(crate) const SENTRY_EVENTS_DROPPED: &str = "mercenary_obs_sentry_events_dropped_total";

/// `http_server_request_duration_seconds_count`
pub(crate) fn count() -> String {
    format!("{REQUEST_DURATION}_count")
}

/// `http_server_request_duration_seconds_bucket`
pub(crate) fn bucket() -> String {
    format!("{REQUEST_DURATION}_bucket")
}
