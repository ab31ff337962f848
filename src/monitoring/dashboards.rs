//! Grafana dashboards: application overview, business, database, process and runtime.
//!
//! Every Prometheus query selects the service with `{<service label>="$service"}` and uses
//! Grafana's `$__rate_interval` (or `$__range` for totals over the shown period). The `$datasource`
//! and `$tempo` variables select the provisioned datasources' UIDs by default
//! (`grafana/datasources.yml`); in a Grafana without those UIDs, choose the datasources in the
//! variables' menus.

use super::MonitoringConfig;
use super::grafana::{PROMETHEUS_DS, TEMPO_DS};
use super::names::{self, *};
use super::text::{Json, obj};

const PROM: &str = "${datasource}";
const TEMPO: &str = "${tempo}";

/// One panel before layout.
struct Panel {
    title: String,
    description: String,
    kind: &'static str,
    unit: &'static str,
    width: u32,
    targets: Vec<(String, String)>,
    /// Instant query (tables, bar gauges, stats over the range).
    instant: bool,
    exemplars: bool,
    /// Per-route panels link to the route's error traces in Tempo.
    trace_link: bool,
    /// A TraceQL panel instead of PromQL.
    traceql: Option<String>,
}

impl Panel {
    fn new(title: &str, kind: &'static str, unit: &'static str, description: &str) -> Panel {
        Panel {
            title: title.into(),
            description: description.into(),
            kind,
            unit,
            width: 12,
            targets: Vec::new(),
            instant: false,
            exemplars: false,
            trace_link: false,
            traceql: None,
        }
    }

    fn q(mut self, expr: String, legend: &str) -> Panel {
        self.targets.push((expr, legend.into()));
        self
    }

    fn wide(mut self) -> Panel {
        self.width = 24;
        self
    }

    fn instant(mut self) -> Panel {
        self.instant = true;
        self
    }

    fn exemplars(mut self) -> Panel {
        self.exemplars = true;
        self
    }

    fn trace_link(mut self) -> Panel {
        self.trace_link = true;
        self
    }
}

/// Percent-encodes `s` for a URL, leaving Grafana `${...}` variables as they are.
fn url_encode(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(end) = rest.starts_with("${").then(|| rest.find('}')).flatten() {
            out.push_str(&rest[..=end]);
            rest = &rest[end + 1..];
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c.is_ascii_alphanumeric() || "-_.~".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A Grafana Explore link to a TraceQL search in the `$tempo` datasource.
fn tempo_explore(traceql: &str) -> String {
    let panes = obj! {
        "traces" => obj! {
            "datasource" => TEMPO,
            "queries" => vec![obj! {
                "refId" => "A",
                "datasource" => obj! {"type" => "tempo", "uid" => TEMPO},
                "queryType" => "traceql",
                "query" => traceql,
            }],
            "range" => obj! {"from" => "${__from}", "to" => "${__to}"},
        },
    };
    let compact: String = panes
        .pretty()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("");
    format!("/explore?schemaVersion=1&panes={}", url_encode(&compact))
}

fn prom_ds() -> Json {
    obj! {"type" => "prometheus", "uid" => PROM}
}

fn render(panels: Vec<Panel>) -> Vec<Json> {
    let (mut x, mut y, mut row_h) = (0u32, 0u32, 0u32);
    let mut out = Vec::new();
    for (i, p) in panels.into_iter().enumerate() {
        let h = if p.kind == "stat" { 5 } else { 8 };
        if x + p.width > 24 {
            x = 0;
            y += row_h;
            row_h = 0;
        }
        let grid = obj! {"h" => h, "w" => p.width, "x" => x, "y" => y};
        x += p.width;
        row_h = row_h.max(h);
        let mut links = Vec::new();
        if p.trace_link {
            links.push(obj! {
                "title" => "Error traces of ${__field.labels.http_route} in Tempo",
                "url" => tempo_explore(
                    "{ resource.service.name = \"${service}\" && span.http.route = \"${__field.labels.http_route}\" && status = error }",
                ),
                "targetBlank" => true,
            });
        }
        let (datasource, targets) = match &p.traceql {
            Some(query) => (
                obj! {"type" => "tempo", "uid" => TEMPO},
                vec![obj! {
                    "refId" => "A",
                    "datasource" => obj! {"type" => "tempo", "uid" => TEMPO},
                    "queryType" => "traceql",
                    "query" => query.as_str(),
                    "limit" => 20u32,
                    "tableType" => "traces",
                }],
            ),
            None => (
                prom_ds(),
                p.targets
                    .iter()
                    .enumerate()
                    .map(|(j, (expr, legend))| {
                        let ref_id = char::from(b'A' + (j as u8 % 26)).to_string();
                        obj! {
                            "refId" => ref_id,
                            "datasource" => prom_ds(),
                            "expr" => expr.as_str(),
                            "legendFormat" => legend.as_str(),
                            "instant" => p.instant,
                            "range" => !p.instant,
                            "exemplar" => p.exemplars,
                        }
                    })
                    .collect(),
            ),
        };
        let mut defaults = vec![("unit".to_string(), Json::from(p.unit))];
        if !links.is_empty() {
            defaults.push(("links".into(), Json::Arr(links)));
        }
        let options = match p.kind {
            "timeseries" => obj! {
                "legend" => obj! {"displayMode" => "table", "placement" => "bottom", "calcs" => vec![Json::from("mean"), Json::from("max")]},
                "tooltip" => obj! {"mode" => "multi", "sort" => "desc"},
            },
            "bargauge" => {
                obj! {"orientation" => "horizontal", "displayMode" => "gradient", "reduceOptions" => obj! {"calcs" => vec![Json::from("lastNotNull")], "values" => false}}
            }
            "stat" => {
                obj! {"reduceOptions" => obj! {"calcs" => vec![Json::from("lastNotNull")], "values" => false}, "colorMode" => "value"}
            }
            _ => obj! {"showHeader" => true},
        };
        out.push(obj! {
            "id" => (i + 1) as u32,
            "type" => p.kind,
            "title" => p.title,
            "description" => p.description,
            "datasource" => datasource,
            "gridPos" => grid,
            "fieldConfig" => obj! {"defaults" => Json::Obj(defaults), "overrides" => Vec::<Json>::new()},
            "options" => options,
            "targets" => targets,
        });
    }
    out
}

fn dashboard(
    c: &MonitoringConfig,
    slug: &str,
    title: &str,
    description: &str,
    panels: Vec<Panel>,
    with_tempo: bool,
) -> String {
    let svc = &c.service_label;
    let mut vars = vec![
        obj! {
            "name" => "datasource",
            "label" => "Prometheus",
            "type" => "datasource",
            "query" => "prometheus",
            "current" => obj! {"text" => PROMETHEUS_DS.0, "value" => PROMETHEUS_DS.1},
            "hide" => 0u32,
        },
        obj! {
            "name" => "service",
            "label" => "Service",
            "type" => "query",
            "datasource" => prom_ds(),
            "query" => obj! {"query" => format!("label_values({TARGET_INFO}, {svc})"), "refId" => "service"},
            "definition" => format!("label_values({TARGET_INFO}, {svc})"),
            "current" => obj! {"text" => c.service.as_str(), "value" => c.service.as_str()},
            "refresh" => 2u32,
            "includeAll" => false,
            "multi" => false,
            "sort" => 1u32,
            "hide" => 0u32,
        },
    ];
    if with_tempo {
        vars.push(obj! {
            "name" => "tempo",
            "label" => "Tempo",
            "type" => "datasource",
            "query" => "tempo",
            "current" => obj! {"text" => TEMPO_DS.0, "value" => TEMPO_DS.1},
            "hide" => 0u32,
        });
    }
    let uid = format!("{}-{slug}", c.dashboard_uid_prefix);
    obj! {
        "uid" => uid,
        "title" => title,
        "description" => description,
        "tags" => vec![Json::from("mercenary-obs")],
        "editable" => true,
        "graphTooltip" => 1u32,
        "schemaVersion" => 39u32,
        "version" => 1u32,
        "time" => obj! {"from" => "now-6h", "to" => "now"},
        "refresh" => "30s",
        "timezone" => "browser",
        "annotations" => obj! {"list" => Vec::<Json>::new()},
        "templating" => obj! {"list" => vars},
        "panels" => render(panels),
    }
    .pretty()
}

/// `(file stem, JSON)` of every dashboard.
pub(crate) fn dashboards(c: &MonitoringConfig) -> Vec<(&'static str, String)> {
    vec![
        ("overview", overview(c)),
        ("business", business(c)),
        ("database", database(c)),
        ("runtime", runtime(c)),
    ]
}

fn sel(c: &MonitoringConfig) -> String {
    format!("{}=\"$service\"", c.service_label)
}

fn overview(c: &MonitoringConfig) -> String {
    let s = sel(c);
    let (count, bucket) = (names::count(), names::bucket());
    let (rpc_count, rpc_bucket) = (names::rpc_count(), names::rpc_bucket());
    let ri = "$__rate_interval";
    let quantile =
        |q: &str| format!("histogram_quantile({q}, sum by (le) (rate({bucket}{{{s}}}[{ri}])))");
    let rpc_quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (rpc_method, le) (rate({rpc_bucket}{{{s}}}[{ri}])))"
        )
    };
    // Failed over all, by `by`, of a call-duration histogram (0 where nothing failed).
    let ratio = |metric: &str, failed: &str, by: &str| {
        format!(
            "(\n  sum by ({by}) (rate({metric}_count{{{s}, {failed}}}[{ri}]))\n  or\n  0 * sum by ({by}) (rate({metric}_count{{{s}}}[{ri}]))\n)\n/\nsum by ({by}) (rate({metric}_count{{{s}}}[{ri}]))"
        )
    };
    let out_quantile = |q: &str, metric: &str| {
        format!(
            "histogram_quantile({q}, sum by (server_address, le) (rate({metric}_bucket{{{s}}}[{ri}])))"
        )
    };
    // Outgoing HTTP calls failed: 5xx or no response (4xx carry an error_type too, but are
    // answers to this service's own mistakes).
    let http_out_failed = "error_type!=\"\", http_response_status_code!~\"4..\"";
    let panels = vec![
        Panel::new("Request rate", "timeseries", "reqps", "Requests per second by route (from the duration histogram's _count).")
            .q(format!("sum by (http_route) (rate({count}{{{s}}}[{ri}]))"), "{{http_route}}")
            .trace_link(),
        Panel::new("Error ratio (HTTP and gRPC)", "timeseries", "percentunit", "Share of the requests and gRPC calls served that failed: HTTP 5xx (panics are 500s) and gRPC calls with an error_type (server faults; NOT_FOUND, INVALID_ARGUMENT and other client faults are not errors). The HighErrorRate alert fires when the first series is over its threshold.")
            .q(format!("(\n  sum(\n    rate({count}{{{s}, http_response_status_code=~\"5..\"}}[{ri}])\n    or\n    rate({rpc_count}{{{s}, error_type!=\"\", error_type!=\"cancelled\"}}[{ri}])\n  )\n  or\n  vector(0)\n)\n/\nsum(\n  rate({count}{{{s}}}[{ri}])\n  or\n  rate({rpc_count}{{{s}}}[{ri}])\n)"), "all calls")
            .q(format!("(sum(rate({count}{{{s}, http_response_status_code=~\"5..\"}}[{ri}])) or vector(0))\n/\nsum(rate({count}{{{s}}}[{ri}]))"), "HTTP 5xx share"),
        Panel::new("Latency p50 / p90 / p99", "timeseries", "s", "Request duration to the response head. Exemplars link to traces where the backend stores them.")
            .q(quantile("0.5"), "p50")
            .q(quantile("0.9"), "p90")
            .q(quantile("0.99"), "p99")
            .exemplars(),
        Panel::new("Active requests", "timeseries", "short", "Requests in flight, until the response body ends.")
            .q(format!("sum by (http_request_method) ({ACTIVE_REQUESTS}{{{s}}})"), "{{http_request_method}}"),
        Panel::new("Errors by route and type", "timeseries", "reqps", "Failed requests per second by route and error_type (5xx status, panic, cancelled). Click a series for its error traces.")
            .q(format!("sum by (http_route, error_type) (rate({count}{{{s}, error_type!=\"\"}}[{ri}]))"), "{{http_route}} {{error_type}}")
            .trace_link(),
        Panel::new("Active sessions", "stat", "short", "The application's active_sessions gauge.")
            .q(format!("sum({}{{{s}}})", c.business.active_sessions), "sessions"),
        Panel::new("gRPC calls", "timeseries", "reqps", "gRPC calls served per second by method and status code (gRPC calls are not in the HTTP panels).")
            .q(format!("sum by (rpc_method, rpc_response_status_code) (rate({rpc_count}{{{s}}}[{ri}]))"), "{{rpc_method}} {{rpc_response_status_code}}"),
        Panel::new("gRPC error ratio", "timeseries", "percentunit", "Share of the gRPC calls served that failed (an error_type: INTERNAL, UNAVAILABLE, DEADLINE_EXCEEDED, ...), over all methods and by method. Client faults (NOT_FOUND, INVALID_ARGUMENT, ...) and calls the client cancelled are not errors.")
            .q(format!("(sum(rate({rpc_count}{{{s}, error_type!=\"\", error_type!=\"cancelled\"}}[{ri}])) or vector(0))\n/\nsum(rate({rpc_count}{{{s}}}[{ri}]))"), "all methods")
            .q(ratio(RPC_SERVER_DURATION, "error_type!=\"\", error_type!=\"cancelled\"", "rpc_method"), "{{rpc_method}}"),
        Panel::new("gRPC latency p50 / p95 / p99 by method", "timeseries", "s", "Duration of the gRPC calls served, to the end of the response stream (a streaming method's is the stream's life).")
            .q(rpc_quantile("0.5"), "p50 {{rpc_method}}")
            .q(rpc_quantile("0.95"), "p95 {{rpc_method}}")
            .q(rpc_quantile("0.99"), "p99 {{rpc_method}}")
            .exemplars()
            .wide(),
        Panel::new("Outgoing calls", "timeseries", "reqps", "Calls this service makes per second, by server address and status: HTTP (http_client_request_duration_seconds; no status when no response came) and gRPC (rpc_client_call_duration_seconds).")
            .q(format!("sum by (server_address, http_response_status_code) (rate({HTTP_CLIENT_DURATION}_count{{{s}}}[{ri}]))"), "HTTP {{server_address}} {{http_response_status_code}}")
            .q(format!("sum by (server_address, rpc_response_status_code) (rate({RPC_CLIENT_DURATION}_count{{{s}}}[{ri}]))"), "gRPC {{server_address}} {{rpc_response_status_code}}"),
        Panel::new("Outgoing error ratio", "timeseries", "percentunit", "Share of the outgoing calls that failed, by server address: HTTP 5xx or no response (refused, timeout, cancelled), gRPC calls with an error_type.")
            .q(ratio(HTTP_CLIENT_DURATION, http_out_failed, "server_address"), "HTTP {{server_address}}")
            .q(ratio(RPC_CLIENT_DURATION, "error_type!=\"\"", "server_address"), "gRPC {{server_address}}"),
        Panel::new("Outgoing latency p50 / p99", "timeseries", "s", "Duration of the outgoing calls by server address: HTTP to the response head, gRPC to the end of the response stream.")
            .q(out_quantile("0.5", HTTP_CLIENT_DURATION), "HTTP p50 {{server_address}}")
            .q(out_quantile("0.99", HTTP_CLIENT_DURATION), "HTTP p99 {{server_address}}")
            .q(out_quantile("0.5", RPC_CLIENT_DURATION), "gRPC p50 {{server_address}}")
            .q(out_quantile("0.99", RPC_CLIENT_DURATION), "gRPC p99 {{server_address}}")
            .exemplars()
            .wide(),
        Panel::new("Top endpoints by traffic", "bargauge", "short", "Requests over the shown period, top 10 routes.")
            .q(format!("topk(10, sum by (http_route, http_request_method) (increase({count}{{{s}}}[$__range])))"), "{{http_request_method}} {{http_route}}")
            .instant()
            .trace_link(),
        Panel::new("Slowest endpoints (p99)", "bargauge", "s", "p99 duration by route over the shown period, top 10.")
            .q(format!("topk(10, histogram_quantile(0.99, sum by (http_route, le) (rate({bucket}{{{s}}}[$__range]))))"), "{{http_route}}")
            .instant()
            .trace_link(),
        Panel::new("Trace sampling decisions", "timeseries", "short", "Tail-sampling decisions per second by decision and reason (error, forced, parent, slow, ratio).")
            .q(format!("sum by (decision, reason) (rate({TRACES_TOTAL}{{{s}}}[{ri}]))"), "{{decision}} {{reason}}"),
        Panel {
            traceql: Some(
                "{ resource.service.name = \"${service}\" && status = error }".to_string(),
            ),
            ..Panel::new("Recent error traces", "table", "short", "Kept error traces in Tempo; the trace id opens the trace.")
        },
    ];
    dashboard(
        c,
        "overview",
        "Application overview",
        "RED metrics of one service (HTTP requests and gRPC calls served, calls made): rate, errors, duration, with links to error traces.",
        panels,
        true,
    )
}

fn business(c: &MonitoringConfig) -> String {
    let s = sel(c);
    let b = &c.business;
    let ri = "$__rate_interval";
    let panels = vec![
        Panel::new("Signups", "timeseries", "short", "Signups per minute.").q(
            format!("sum(rate({}{{{s}}}[{ri}])) * 60", b.signups),
            "signups/min",
        ),
        Panel::new(
            "Projects created",
            "timeseries",
            "short",
            "Projects created per minute.",
        )
        .q(
            format!("sum(rate({}{{{s}}}[{ri}])) * 60", b.projects),
            "projects/min",
        ),
        Panel::new(
            "Proposals submitted",
            "timeseries",
            "short",
            "Proposals submitted per minute.",
        )
        .q(
            format!("sum(rate({}{{{s}}}[{ri}])) * 60", b.proposals),
            "proposals/min",
        ),
        Panel::new(
            "Payments by outcome",
            "timeseries",
            "short",
            "Payments per minute by currency and outcome.",
        )
        .q(
            format!(
                "sum by (currency, outcome) (rate({}{{{s}}}[{ri}])) * 60",
                b.payments
            ),
            "{{currency}} {{outcome}}",
        ),
        Panel::new(
            "Payment volume",
            "timeseries",
            "currencyUSD",
            "Amount paid per minute by currency.",
        )
        .q(
            format!(
                "sum by (currency) (rate({}_sum{{{s}}}[{ri}])) * 60",
                b.payment_amount
            ),
            "{{currency}}",
        ),
        Panel::new(
            "Payment amount p50 / p99",
            "timeseries",
            "short",
            "Distribution of payment amounts.",
        )
        .q(
            format!(
                "histogram_quantile(0.5, sum by (le) (rate({}_bucket{{{s}}}[{ri}])))",
                b.payment_amount
            ),
            "p50",
        )
        .q(
            format!(
                "histogram_quantile(0.99, sum by (le) (rate({}_bucket{{{s}}}[{ri}])))",
                b.payment_amount
            ),
            "p99",
        ),
        Panel::new(
            "Feature usage",
            "bargauge",
            "short",
            "Uses per feature over the shown period.",
        )
        .q(
            format!(
                "sum by (feature) (increase({}{{{s}}}[$__range]))",
                b.feature_usage
            ),
            "{{feature}}",
        )
        .instant(),
        Panel::new(
            "Active sessions",
            "timeseries",
            "short",
            "The active_sessions gauge.",
        )
        .q(format!("sum({}{{{s}}})", b.active_sessions), "sessions"),
        Panel::new(
            "Audit events",
            "timeseries",
            "short",
            "Audit events per minute by action and outcome.",
        )
        .q(
            format!("sum by (action, outcome) (rate({AUDIT_EVENTS}{{{s}}}[{ri}])) * 60"),
            "{{action}} {{outcome}}",
        ),
        Panel::new(
            "Security events",
            "timeseries",
            "short",
            "Security events per minute by kind (failed_login, unauthorized, ...).",
        )
        .q(
            format!("sum by (kind) (rate({SECURITY_EVENTS}{{{s}}}[{ri}])) * 60"),
            "{{kind}}",
        ),
    ];
    dashboard(
        c,
        "business",
        "Business metrics",
        "Signups, projects, proposals, payments and feature usage, with audit and security events.",
        panels,
        false,
    )
}

fn database(c: &MonitoringConfig) -> String {
    let s = sel(c);
    let ri = "$__rate_interval";
    let by_pool = format!("instance, {POOL_LABEL}");
    let panels = vec![
        Panel::new("Pool connections in use", "timeseries", "short", "Used connections and the pool's maximum, by instance and pool.")
            .q(format!("sum by ({by_pool}) ({CONNECTION_COUNT}{{{s}, {STATE_LABEL}=\"used\"}})"), "used {{instance}} {{db_client_connection_pool_name}}")
            .q(format!("sum by ({by_pool}) ({CONNECTION_COUNT}{{{s}, {STATE_LABEL}=\"idle\"}})"), "idle {{instance}} {{db_client_connection_pool_name}}")
            .q(format!("sum by ({by_pool}) ({CONNECTION_MAX}{{{s}}})"), "max {{instance}} {{db_client_connection_pool_name}}"),
        Panel::new("Pool usage", "timeseries", "percentunit", "Used / max connections. The DatabasePoolNearExhaustion alert fires over its threshold.")
            .q(format!("sum by ({by_pool}) ({CONNECTION_COUNT}{{{s}, {STATE_LABEL}=\"used\"}})\n/\nsum by ({by_pool}) ({CONNECTION_MAX}{{{s}}} > 0)"), "{{instance}} {{db_client_connection_pool_name}}"),
        Panel::new("Requests waiting for a connection", "timeseries", "short", "Pending requests; above zero the pool is exhausted (DatabasePoolRequestsWaiting pages).")
            .q(format!("sum by ({by_pool}) ({PENDING_REQUESTS}{{{s}}})"), "{{instance}} {{db_client_connection_pool_name}}"),
        Panel::new("Queries per second", "timeseries", "ops", "Database operations per second by system, operation and collection.")
            .q(format!("sum by (db_system_name, db_operation_name, db_collection_name) (rate({DB_DURATION}_count{{{s}}}[{ri}]))"), "{{db_operation_name}} {{db_collection_name}}"),
        Panel::new("Query duration p99", "timeseries", "s", "p99 operation duration by operation and collection.")
            .q(format!("histogram_quantile(0.99, sum by (db_operation_name, db_collection_name, le) (rate({DB_DURATION}_bucket{{{s}}}[{ri}])))"), "{{db_operation_name}} {{db_collection_name}}")
            .exemplars(),
        Panel::new("Query errors", "timeseries", "ops", "Failed or cancelled operations per second by error type.")
            .q(format!("sum by (db_operation_name, error_type) (rate({DB_DURATION}_count{{{s}, error_type!=\"\"}}[{ri}]))"), "{{db_operation_name}} {{error_type}}"),
        Panel::new("Slowest queries (p99 over the period)", "bargauge", "s", "Long-running operations: p99 by operation and collection over the shown period.")
            .q(format!("topk(10, histogram_quantile(0.99, sum by (db_operation_name, db_collection_name, le) (rate({DB_DURATION}_bucket{{{s}}}[$__range]))))"), "{{db_operation_name}} {{db_collection_name}}")
            .instant()
            .wide(),
    ];
    dashboard(
        c,
        "database",
        "Database and connection pool",
        "Connection pool usage and query performance (OpenTelemetry database conventions).",
        panels,
        false,
    )
}

fn runtime(c: &MonitoringConfig) -> String {
    let s = sel(c);
    let ri = "$__rate_interval";
    let panels = vec![
        Panel::new("CPU", "timeseries", "short", "CPU seconds per second (cores) by instance.")
            .q(format!("sum by (instance) (rate({PROCESS_CPU_SECONDS}{{{s}}}[{ri}]))"), "{{instance}}"),
        Panel::new("Resident memory", "timeseries", "bytes", "Resident set size by instance.")
            .q(format!("sum by (instance) ({PROCESS_RESIDENT_MEMORY}{{{s}}})"), "{{instance}}"),
        Panel::new("File descriptors", "timeseries", "short", "Open file descriptors and the limit.")
            .q(format!("sum by (instance) ({PROCESS_OPEN_FDS}{{{s}}})"), "open {{instance}}")
            .q(format!("sum by (instance) ({PROCESS_MAX_FDS}{{{s}}})"), "max {{instance}}"),
        Panel::new("OS threads", "timeseries", "short", "Threads of the process.")
            .q(format!("sum by (instance) ({PROCESS_THREADS}{{{s}}})"), "{{instance}}"),
        Panel::new("Tokio workers and alive tasks", "timeseries", "short", "Worker threads and tasks alive on the runtime serving /metrics (feature tokio).")
            .q(format!("sum by (instance) ({TOKIO_WORKERS}{{{s}}})"), "workers {{instance}}")
            .q(format!("sum by (instance) ({TOKIO_ALIVE_TASKS}{{{s}}})"), "alive tasks {{instance}}"),
        Panel::new("Tokio global queue depth", "timeseries", "short", "Tasks waiting in the runtime's global queue: a sustained backlog means the workers cannot keep up.")
            .q(format!("sum by (instance) ({TOKIO_GLOBAL_QUEUE_DEPTH}{{{s}}})"), "{{instance}}"),
        Panel::new("Spans dropped", "timeseries", "short", "Spans lost per second by reason (export_failed and queue_full fire TraceExportFailing).")
            .q(format!("sum by (reason) (rate({SPANS_DROPPED}{{{s}}}[{ri}]))"), "{{reason}}"),
        Panel::new("Spans exported and buffered traces", "timeseries", "short", "Spans exported per second (OTLP) and traces buffered until their root ends.")
            .q(format!("sum(rate({SPANS_EXPORTED}{{{s}}}[{ri}]))"), "exported/s")
            .q(format!("sum({BUFFERED_TRACES}{{{s}}})"), "buffered traces"),
        Panel::new("Telemetry dropped", "timeseries", "short", "Log lines, Sentry events and business-metric label sets dropped or folded, per second.")
            .q(format!("sum(rate({LOG_LINES_DROPPED}{{{s}}}[{ri}]))"), "log lines")
            .q(format!("sum(rate({SENTRY_EVENTS_DROPPED}{{{s}}}[{ri}]))"), "sentry events")
            .q(format!("sum by (metric) (rate({METRIC_OVERFLOW}{{{s}}}[{ri}]))"), "overflow {{metric}}")
            .wide(),
    ];
    dashboard(
        c,
        "runtime",
        "Process and runtime",
        "CPU, memory, file descriptors, tokio runtime and the crate's own telemetry health.",
        panels,
        false,
    )
}
