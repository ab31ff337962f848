//! Every metric name, label name, log target and span attribute the crate emits, defined once.
//!
//! The code that registers a metric, the log pipeline that routes a target and the monitoring
//! kit that queries them all read these constants, so a rename changes all of them together.
//! Use them in your own PromQL tests, log queries or assertions:
//!
//! ```
//! use mercenary_obs::names;
//!
//! let obs = mercenary_obs::Obs::builder().log_writer(std::io::sink()).build().unwrap();
//! assert!(obs.render_metrics().contains(names::ACTIVE_REQUESTS));
//! ```

// ---------------------------------------------------------------------------------------------
// HTTP server metrics (OpenTelemetry HTTP semantic conventions, as mapped to Prometheus)

/// `http_server_request_duration_seconds`: histogram of request durations, to the response head.
pub const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// `http_server_active_requests`: gauge of requests in flight, until the body ends.
pub const ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// `target_info`: gauge = 1 carrying the service identity.
pub const TARGET_INFO: &str = "target_info";

/// Label: the request method (`GET`, …, `_OTHER`).
pub const METHOD_LABEL: &str = "http_request_method";
/// Label: the route template (`/users/{id}`), empty for unmatched requests.
pub const ROUTE_LABEL: &str = "http_route";
/// Label: the response status code, empty when no response was sent.
pub const STATUS_LABEL: &str = "http_response_status_code";
/// Label: the error type (5xx status, `panic`, `cancelled`, an error's type name), empty on
/// success.
pub const ERROR_TYPE_LABEL: &str = "error_type";

// ---------------------------------------------------------------------------------------------
// HTTP client metrics (OpenTelemetry HTTP semantic conventions, as mapped to Prometheus)

/// `http_client_request_duration_seconds{http_request_method, server_address, server_port,
/// http_response_status_code, error_type}`: histogram of outgoing calls, to the response head.
pub const CLIENT_REQUEST_DURATION: &str = "http_client_request_duration_seconds";
/// Label: the host an outgoing call went to (name or IP, as in the URL).
pub const SERVER_ADDRESS_LABEL: &str = "server_address";
/// Label: the port an outgoing call went to (the scheme's default when the URL has none).
pub const SERVER_PORT_LABEL: &str = "server_port";

// ---------------------------------------------------------------------------------------------
// RPC metrics (OpenTelemetry RPC semantic conventions, gRPC, as mapped to Prometheus)

/// `rpc_server_call_duration_seconds{rpc_system_name, rpc_method, rpc_response_status_code,
/// error_type}`: histogram of gRPC calls served, to the end of the response stream. gRPC calls
/// are not also counted in `http_server_request_duration_seconds`.
pub const RPC_SERVER_DURATION: &str = "rpc_server_call_duration_seconds";
/// `rpc_client_call_duration_seconds{rpc_system_name, rpc_method, rpc_response_status_code,
/// error_type, server_address, server_port}`: histogram of gRPC calls made.
pub const RPC_CLIENT_DURATION: &str = "rpc_client_call_duration_seconds";
/// Label: the RPC system (`grpc`).
pub const RPC_SYSTEM_LABEL: &str = "rpc_system_name";
/// Label: the full method, `package.Service/Method` (`_OTHER` for a method the server does
/// not implement).
pub const RPC_METHOD_LABEL: &str = "rpc_method";
/// Label: the gRPC status code name (`OK`, `NOT_FOUND`, `INTERNAL`, …).
pub const RPC_STATUS_LABEL: &str = "rpc_response_status_code";

// ---------------------------------------------------------------------------------------------
// The crate's self-metrics

/// `mercenary_obs_log_lines_dropped_total`: application log lines dropped on a full queue.
pub const LOG_LINES_DROPPED: &str = "mercenary_obs_log_lines_dropped_total";
/// `mercenary_obs_audit_lines_failed_total{outcome}`: audit lines their sink did not take in
/// time, `diverted` to the fallback or `lost` (the fallback's queue was full too).
pub const AUDIT_LINES_FAILED: &str = "mercenary_obs_audit_lines_failed_total";
/// `mercenary_obs_metric_overflow_total{metric}`: label sets folded into `_other`.
pub const METRIC_OVERFLOW: &str = "mercenary_obs_metric_overflow_total";
/// `mercenary_obs_trace_buffer_traces`: traces buffered while their root runs.
pub const BUFFERED_TRACES: &str = "mercenary_obs_trace_buffer_traces";
/// `mercenary_obs_trace_buffer_spans`: spans buffered while their root runs.
pub const BUFFERED_SPANS: &str = "mercenary_obs_trace_buffer_spans";
/// `mercenary_obs_traces_decided_early_total{cause}`: traces decided before their root ended.
pub const DECIDED_EARLY: &str = "mercenary_obs_traces_decided_early_total";
/// `mercenary_obs_traces_total{decision,reason}`: sampling decisions.
pub const TRACES_TOTAL: &str = "mercenary_obs_traces_total";
/// `mercenary_obs_spans_dropped_total{reason}`: spans lost, by reason.
pub const SPANS_DROPPED: &str = "mercenary_obs_spans_dropped_total";
/// `mercenary_obs_spans_exported_total`: spans the OTLP collector accepted.
pub const SPANS_EXPORTED: &str = "mercenary_obs_spans_exported_total";
/// `mercenary_obs_export_requests_total{outcome}`: OTLP export calls (one per batch, retries
/// included), by outcome: `success`, `failed`, `timed_out`.
pub const EXPORT_REQUESTS: &str = "mercenary_obs_export_requests_total";
/// `mercenary_obs_sentry_events_dropped_total{reason}`: Sentry events not delivered (registered
/// with feature `sentry` and a DSN).
pub const SENTRY_EVENTS_DROPPED: &str = "mercenary_obs_sentry_events_dropped_total";

// ---------------------------------------------------------------------------------------------
// Audit and security events

/// `audit_events_total{action,outcome}`: audit lines written.
pub const AUDIT_EVENTS: &str = "audit_events_total";
/// `security_events_total{kind}`: security events logged.
pub const SECURITY_EVENTS: &str = "security_events_total";

// ---------------------------------------------------------------------------------------------
// Database client metrics (OpenTelemetry database semantic conventions)

/// `db_client_connections_usage{db_client_connection_pool_name,db_client_connection_state}`:
/// OpenTelemetry's `db.client.connection.count` (semantic conventions 1.26+), exposed under
/// its earlier name `db.client.connections.usage`, because a Prometheus gauge must not end in
/// `_count` (`promtool check metrics` refuses it: that suffix belongs to histograms and
/// summaries).
pub const DB_CONNECTIONS_USAGE: &str = "db_client_connections_usage";
/// The former name of [`DB_CONNECTIONS_USAGE`]'s constant (it now holds the new name).
#[deprecated(note = "use DB_CONNECTIONS_USAGE (the gauge is `db_client_connections_usage`)")]
pub const DB_CONNECTION_COUNT: &str = DB_CONNECTIONS_USAGE;
/// `db_client_connection_max{db_client_connection_pool_name}`.
pub const DB_CONNECTION_MAX: &str = "db_client_connection_max";
/// `db_client_connection_pending_requests{db_client_connection_pool_name}`.
pub const DB_PENDING_REQUESTS: &str = "db_client_connection_pending_requests";
/// `db_client_operation_duration_seconds`: histogram of database operations.
pub const DB_OPERATION_DURATION: &str = "db_client_operation_duration_seconds";
/// Label: the pool name.
pub const DB_POOL_LABEL: &str = "db_client_connection_pool_name";
/// Label: the connection state (`idle` / `used`).
pub const DB_STATE_LABEL: &str = "db_client_connection_state";
/// Label: the database system (`postgresql`, `sqlite`, …).
pub const DB_SYSTEM_LABEL: &str = "db_system_name";
/// Label: the operation (`SELECT`, `INSERT`, …).
pub const DB_OPERATION_LABEL: &str = "db_operation_name";
/// Label: the table or collection.
pub const DB_COLLECTION_LABEL: &str = "db_collection_name";

// ---------------------------------------------------------------------------------------------
// Process and runtime metrics

/// `process_cpu_seconds_total` (Linux process collector).
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// `process_resident_memory_bytes`.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// `process_open_fds`.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// `process_max_fds`.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// `process_threads`.
pub const PROCESS_THREADS: &str = "process_threads";
/// `tokio_runtime_workers` (feature `tokio`).
pub const TOKIO_WORKERS: &str = "tokio_runtime_workers";
/// `tokio_runtime_alive_tasks` (feature `tokio`).
pub const TOKIO_ALIVE_TASKS: &str = "tokio_runtime_alive_tasks";
/// `tokio_runtime_global_queue_depth` (feature `tokio`).
pub const TOKIO_GLOBAL_QUEUE_DEPTH: &str = "tokio_runtime_global_queue_depth";

// ---------------------------------------------------------------------------------------------
// Log targets

/// The target of the request span the tower layer opens.
pub const REQUEST_TARGET: &str = "mercenary_obs::request";
/// The target of the access line (`"message":"request completed"`).
pub const ACCESS_TARGET: &str = "mercenary_obs::access";
/// The target of [`crate::audit!`] events.
pub const AUDIT_TARGET: &str = "mercenary_obs::audit";
/// The target of [`crate::security_event!`] events (and of the layer's `unauthorized` events).
pub const SECURITY_TARGET: &str = "mercenary_obs::security";
/// The target of the trace exporter's warnings.
pub const EXPORT_TARGET: &str = "mercenary_obs::export";
/// The target of business-metric warnings (conflicts, bad names).
pub const METRICS_TARGET: &str = "mercenary_obs::metrics";
/// The target of database query spans.
pub const DB_TARGET: &str = "mercenary_obs::db";
/// The target of the line the panic hook writes for a panic (`"level":"CRITICAL"`).
pub const PANIC_TARGET: &str = "mercenary_obs::panic";
/// The target of the events sqlx logs for every statement (`summary`, `db.statement`,
/// `rows_returned`, `elapsed_secs`), which the `sqlx` feature turns into spans and
/// observations.
pub const SQLX_QUERY_TARGET: &str = "sqlx::query";

// ---------------------------------------------------------------------------------------------
// Fields and attributes

/// The span field (and log key) that carries the correlation ID.
pub const CORRELATION_FIELD: &str = "correlation_id";
/// The attribute every exported span of a kept trace carries: why it was kept.
pub const SAMPLING_REASON: &str = "mercenary.sampling.reason";
/// What a sensitive field's or header's value is written as.
pub const REDACTED: &str = "[REDACTED]";
/// The marker appended to a value cut at the length cap.
pub const TRUNCATED: &str = "…[truncated]";
/// The value every label of a folded (over the series cap) series takes.
pub const OTHER: &str = "_other";

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
