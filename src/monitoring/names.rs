//! The metric names the kit queries: the crate's own [`crate::names`], under the short names the
//! rule and dashboard code uses, so a rename there changes the rules, tests and dashboards with
//! it.

pub(crate) use crate::names::{
    ACTIVE_REQUESTS, AUDIT_EVENTS, BUFFERED_TRACES,
    CLIENT_REQUEST_DURATION as HTTP_CLIENT_DURATION, DB_CONNECTION_MAX as CONNECTION_MAX,
    DB_CONNECTIONS_USAGE as CONNECTION_COUNT, DB_OPERATION_DURATION as DB_DURATION,
    DB_PENDING_REQUESTS as PENDING_REQUESTS, DB_POOL_LABEL as POOL_LABEL,
    DB_STATE_LABEL as STATE_LABEL, EXPORT_REQUESTS, LOG_LINES_DROPPED, METRIC_OVERFLOW,
    PROCESS_CPU_SECONDS, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY,
    PROCESS_THREADS, REQUEST_DURATION, RPC_CLIENT_DURATION, RPC_SERVER_DURATION, SECURITY_EVENTS,
    SENTRY_EVENTS_DROPPED, SPANS_DROPPED, SPANS_EXPORTED, TARGET_INFO, TOKIO_ALIVE_TASKS,
    TOKIO_GLOBAL_QUEUE_DEPTH, TOKIO_WORKERS, TRACES_TOTAL,
};

/// `http_server_request_duration_seconds_count`
pub(crate) fn count() -> String {
    format!("{REQUEST_DURATION}_count")
}

/// `http_server_request_duration_seconds_bucket`
pub(crate) fn bucket() -> String {
    format!("{REQUEST_DURATION}_bucket")
}

/// `rpc_server_call_duration_seconds_count`
pub(crate) fn rpc_count() -> String {
    format!("{RPC_SERVER_DURATION}_count")
}

/// `rpc_server_call_duration_seconds_bucket`
pub(crate) fn rpc_bucket() -> String {
    format!("{RPC_SERVER_DURATION}_bucket")
}

#[cfg(test)]
mod tests {
    use crate::names::*;

    /// The rules, their test series and the dashboards write these label names as they are in
    /// PromQL and legends; a rename in `crate::names` must show up here first.
    #[test]
    fn label_names_written_out_are_the_crates() {
        assert_eq!(METHOD_LABEL, "http_request_method");
        assert_eq!(ROUTE_LABEL, "http_route");
        assert_eq!(STATUS_LABEL, "http_response_status_code");
        assert_eq!(ERROR_TYPE_LABEL, "error_type");
        assert_eq!(RPC_SYSTEM_LABEL, "rpc_system_name");
        assert_eq!(RPC_METHOD_LABEL, "rpc_method");
        assert_eq!(RPC_STATUS_LABEL, "rpc_response_status_code");
        assert_eq!(SERVER_ADDRESS_LABEL, "server_address");
    }
}
