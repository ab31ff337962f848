//! The local stack: `compose.yaml` starting Prometheus, Alertmanager, Grafana, Loki, Grafana Alloy
//! (the log shipper), Tempo and an OpenTelemetry Collector around the demo, the demo's
//! Dockerfile, and what the stack's files share: service names, ports, image versions, the
//! kit's file names and the retention of each backend ([`RetentionSettings`]).
//!
//! Every image is pinned to an exact version: the set Grafana Labs' `docker-otel-lgtm` ships
//! together (Grafana 13.2.0, Prometheus 3.14.0, Tempo 3.0.3, Loki 3.7.6, Collector 0.159.0),
//! Alloy 1.18.1 and Alertmanager 0.34.0, whose configuration formats the generated files follow
//! (Tempo 3's backend worker holds the block retention, the Collector's OTLP gRPC exporter is
//! `otlp_grpc`).

use std::fmt::Write as _;
use std::time::Duration;

use super::MonitoringConfig;
use super::text::{prom_duration, quote};

/// A service of the local stack: its name in `compose.yaml` (also its host name on the compose
/// network) and the port the other services reach it on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
}

const fn service(name: &'static str, port: u16) -> Service {
    Service { name, port }
}

impl Service {
    /// `name:port`
    pub(crate) fn addr(self) -> String {
        format!("{}:{}", self.name, self.port)
    }

    /// `http://name:port`
    pub(crate) fn url(self) -> String {
        format!("http://{}", self.addr())
    }
}

/// The demo, as Prometheus scrapes it: the port the `demo-port` forwarder listens on in the
/// demo's network namespace.
pub(crate) const DEMO: Service = service("demo", 8080);
/// The port the demo itself listens on, on its loopback interface (`PORT`).
pub(crate) const DEMO_LISTEN_PORT: u16 = 3000;
pub(crate) const PROMETHEUS: Service = service("prometheus", 9090);
pub(crate) const ALERTMANAGER: Service = service("alertmanager", 9093);
pub(crate) const GRAFANA: Service = service("grafana", 3000);
pub(crate) const LOKI: Service = service("loki", 3100);
/// Tempo's HTTP API (queries).
pub(crate) const TEMPO: Service = service("tempo", 3200);
/// Tempo's OTLP/gRPC receiver, which the Collector exports to.
pub(crate) const TEMPO_OTLP: Service = service("tempo", 4317);
/// The Collector's OTLP/HTTP receiver, which the demo exports to.
pub(crate) const COLLECTOR_OTLP_HTTP: Service = service("otel-collector", 4318);
/// The Collector's OTLP/gRPC receiver.
pub(crate) const COLLECTOR_OTLP_GRPC: Service = service("otel-collector", 4317);
/// Alloy's HTTP server (its UI and `/metrics`).
pub(crate) const ALLOY: Service = service("alloy", 12345);

/// How often Prometheus scrapes; also the Prometheus datasource's `timeInterval`.
pub(crate) const SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

/// The `environment` the local stack's demo runs in (not production: 7-day log retention).
pub(crate) const LOCAL_ENVIRONMENT: &str = "development";

/// The container label that makes Alloy ship a container's logs.
pub(crate) const LOGS_CONTAINER_LABEL: &str = "mercenary-obs.logs";
/// The container label Alloy reads the `service` of lines that are not JSON from.
pub(crate) const SERVICE_CONTAINER_LABEL: &str = "mercenary-obs.service";
/// The container label Alloy reads the `environment` from.
pub(crate) const ENVIRONMENT_CONTAINER_LABEL: &str = "mercenary-obs.environment";

/// The Loki stream labels the shipper sets, and the only ones: each has a handful of values.
pub(crate) const LOG_LABELS: [&str; 4] = ["service", "level", "audit", "environment"];

/// The files of the kit the stack mounts (paths relative to the kit's directory).
pub(crate) const RULES_FILE: &str = "alert.rules.yml";
pub(crate) const ALERTMANAGER_FILE: &str = "alertmanager.yml";
pub(crate) const PROMETHEUS_FILE: &str = "prometheus.yml";
pub(crate) const LOKI_FILE: &str = "loki.yml";
pub(crate) const TEMPO_FILE: &str = "tempo.yml";
pub(crate) const COLLECTOR_FILE: &str = "otel-collector.yml";
pub(crate) const ALLOY_FILE: &str = "alloy/config.alloy";
pub(crate) const DATASOURCES_FILE: &str = "grafana/datasources.yml";
pub(crate) const DASHBOARD_PROVIDER_FILE: &str = "grafana/dashboards.yml";
pub(crate) const DASHBOARDS_DIR: &str = "dashboards";
pub(crate) const COMPOSE_FILE: &str = "compose.yaml";
pub(crate) const DOCKERFILE: &str = "demo.Dockerfile";
/// BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile before the context's own.
pub(crate) const DOCKERIGNORE: &str = "demo.Dockerfile.dockerignore";

/// Where Grafana finds the dashboards (the provider's path and the compose mount).
pub(crate) const GRAFANA_DASHBOARDS_PATH: &str = "/etc/grafana/dashboards/mercenary-obs";

const PROMETHEUS_IMAGE: &str = "prom/prometheus:v3.14.0";
const ALERTMANAGER_IMAGE: &str = "prom/alertmanager:v0.34.0";
const GRAFANA_IMAGE: &str = "grafana/grafana:13.2.0";
const LOKI_IMAGE: &str = "grafana/loki:3.7.6";
const TEMPO_IMAGE: &str = "grafana/tempo:3.0.3";
const ALLOY_IMAGE: &str = "grafana/alloy:v1.18.1";
const COLLECTOR_IMAGE: &str = "otel/opentelemetry-collector-contrib:0.159.0";
/// The toolchain that builds the demo (the crate's `rust-version` is older; the lock file's
/// dependencies are tested with this one).
const RUST_IMAGE: &str = "rust:1.95.0-slim-bookworm";
/// The demo's runtime (the same Debian release as the builder, for glibc).
const DEBIAN_IMAGE: &str = "debian:12.13-slim";

/// How long each backend of the stack keeps its data. The defaults are the monitoring guide's
/// numbers; [`MonitoringConfig::retention`](super::MonitoringConfig::retention).
///
/// | data | where | default |
/// |---|---|---|
/// | application logs | Loki, global `retention_period` | 7 days |
/// | application logs with `environment="production"` | Loki `retention_stream` | 30 days |
/// | audit logs (`audit="true"`, any environment) | Loki `retention_stream`, higher priority | 365 days |
/// | metrics | Prometheus `--storage.tsdb.retention.time` | 30 days |
/// | traces (high-cardinality data) | Tempo `block_retention` | 7 days |
///
/// The guide's compliance section also keeps application logs "90 days": a ceiling the two
/// application-log periods must stay under ([`RetentionSettings::application_logs_max`]), since
/// its logging section keeps them 7 days (30 in production).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RetentionSettings {
    /// Application logs of every environment but production. Default: 7 days.
    pub logs: Duration,
    /// Application logs of [`RetentionSettings::production_environment`]. Default: 30 days.
    pub production_logs: Duration,
    /// The `environment` label value of production. Default: `production`.
    pub production_environment: String,
    /// The longest the application logs may be kept; [`crate::monitoring::generate`] rejects a
    /// `logs` or `production_logs` above it. Default: 90 days.
    pub application_logs_max: Duration,
    /// Audit logs (`"audit": true` lines), in every environment. Default: 365 days.
    pub audit_logs: Duration,
    /// Metrics. Default: 30 days.
    pub metrics: Duration,
    /// Traces. Default: 7 days.
    pub traces: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        Self {
            logs: days(7),
            production_logs: days(30),
            production_environment: "production".into(),
            application_logs_max: days(90),
            audit_logs: days(365),
            metrics: days(30),
            traces: days(7),
        }
    }
}

impl RetentionSettings {
    /// Why the settings cannot be generated: `(setting, value, expected)`.
    pub(crate) fn problem(&self) -> Option<(&'static str, String, String)> {
        let periods = [
            ("MonitoringConfig::retention.logs", self.logs),
            (
                "MonitoringConfig::retention.production_logs",
                self.production_logs,
            ),
            (
                "MonitoringConfig::retention.application_logs_max",
                self.application_logs_max,
            ),
            ("MonitoringConfig::retention.audit_logs", self.audit_logs),
            ("MonitoringConfig::retention.metrics", self.metrics),
            ("MonitoringConfig::retention.traces", self.traces),
        ];
        for (setting, d) in periods {
            if d < Duration::from_secs(86_400) || !d.as_secs().is_multiple_of(3_600) {
                return Some((
                    setting,
                    format!("{d:?}"),
                    "whole hours, at least 24h (Loki's shortest retention)".into(),
                ));
            }
        }
        for (setting, d) in [periods[0], periods[1]] {
            if d > self.application_logs_max {
                return Some((
                    setting,
                    format!("{d:?}"),
                    format!(
                        "at most retention.application_logs_max ({:?}); audit logs have \
                         retention.audit_logs",
                        self.application_logs_max
                    ),
                ));
            }
        }
        let env = &self.production_environment;
        if env.is_empty() || env.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            return Some((
                "MonitoringConfig::retention.production_environment",
                env.clone(),
                "a non-empty label value without quotes, backslashes or control characters".into(),
            ));
        }
        None
    }
}

/// A duration in whole hours, as Loki and Tempo (Go's `time.ParseDuration`) both read it.
pub(crate) fn hours(d: Duration) -> String {
    format!("{}h", d.as_secs().div_ceil(3_600))
}

/// `7 days`, or `36 hours` when not a whole number of days.
pub(crate) fn days_text(d: std::time::Duration) -> String {
    let h = d.as_secs() / 3_600;
    if h.is_multiple_of(24) {
        format!("{} days", h / 24)
    } else {
        format!("{h} hours")
    }
}

/// `compose.yaml`
pub(crate) fn compose_yaml(c: &MonitoringConfig) -> String {
    let r = &c.retention;
    let mut out = String::new();
    let build = |target: &str| {
        format!(
            "    build:\n      context: ..\n      dockerfile: monitoring/{DOCKERFILE}\n      target: {target}\n"
        )
    };
    let mounts = |files: &[(&str, &str)]| -> String {
        files
            .iter()
            .map(|(from, to)| format!("      - ./{from}:{to}:ro\n"))
            .collect()
    };
    let port = |p: u16| format!("      - \"127.0.0.1:{p}:{p}\"\n");
    let _ = write!(
        out,
        "# The local stack of the mercenary-obs monitoring kit, generated by mercenary_obs::monitoring\n\
         # (docs/local-stack.md). From the directory of this file: `docker compose up --build`.\n\
         # Every image is pinned; every port is published on 127.0.0.1 only (Grafana lets anyone in\n\
         # as an admin, Alloy reads the Docker socket: a local setup, not a production one).\n\
         name: mercenary-obs\n\
         services:\n\
         \x20 # The demo (examples/demo.rs), built from this repository. Its JSON logs go to stdout,\n\
         \x20 # where Alloy reads them (the labels below opt it in and name its environment); its\n\
         \x20 # traces go to the Collector over OTLP/HTTP.\n\
         \x20 {demo}:\n{demo_build}\
         \x20   environment:\n\
         \x20     PORT: \"{listen}\"\n\
         \x20     OTEL_SERVICE_NAME: {service}\n\
         \x20     OTEL_RESOURCE_ATTRIBUTES: \"deployment.environment.name={env}\"\n\
         \x20     OTEL_EXPORTER_OTLP_ENDPOINT: \"{collector}\"\n\
         \x20     OTEL_EXPORTER_OTLP_PROTOCOL: \"http/protobuf\"\n\
         \x20   labels:\n\
         \x20     {logs_label}: \"true\"\n\
         \x20     {service_label}: {service}\n\
         \x20     {env_label}: \"{env}\"\n\
         \x20   ports:\n{demo_port}\
         \x20   depends_on: [\"{collector_name}\"]\n\
         \x20 # The demo listens on 127.0.0.1 only. This forwarder shares the demo's network\n\
         \x20 # namespace and listens on port {demo_port_no} there: {demo_addr} for Prometheus, and\n\
         \x20 # http://127.0.0.1:{demo_port_no} on the host (the demo's published port).\n\
         \x20 {demo}-port:\n{forward_build}\
         \x20   network_mode: \"service:{demo}\"\n\
         \x20   command: [\"TCP-LISTEN:{demo_port_no},fork,reuseaddr\", \"TCP:127.0.0.1:{listen}\"]\n\
         \x20   depends_on: [\"{demo}\"]\n\
         \x20 {prometheus}:\n\
         \x20   image: {prometheus_image}\n\
         \x20   # Retention is a flag, not a setting of prometheus.yml: metrics are kept {metrics}.\n\
         \x20   # The demo publishes exemplars (trace IDs on latency buckets): Prometheus stores them\n\
         \x20   # only with exemplar-storage. Tempo's metrics generator writes the service graph\n\
         \x20   # through the remote-write receiver.\n\
         \x20   command:\n\
         \x20     - \"--config.file=/etc/prometheus/{prometheus_file}\"\n\
         \x20     - \"--storage.tsdb.path=/prometheus\"\n\
         \x20     - \"--storage.tsdb.retention.time={metrics}\"\n\
         \x20     - \"--enable-feature=exemplar-storage\"\n\
         \x20     - \"--web.enable-remote-write-receiver\"\n\
         \x20   volumes:\n{prometheus_mounts}\
         \x20     - prometheus-data:/prometheus\n\
         \x20   ports:\n{prometheus_port}\
         \x20   depends_on: [\"{alertmanager}\"]\n\
         \x20 # Sends nowhere until alertmanager.yml's placeholders are replaced; see its UI.\n\
         \x20 {alertmanager}:\n\
         \x20   image: {alertmanager_image}\n\
         \x20   command:\n\
         \x20     - \"--config.file=/etc/alertmanager/{alertmanager_file}\"\n\
         \x20     - \"--storage.path=/alertmanager\"\n\
         \x20   volumes:\n{alertmanager_mounts}\
         \x20     - alertmanager-data:/alertmanager\n\
         \x20   ports:\n{alertmanager_port}\
         \x20 {loki}:\n\
         \x20   image: {loki_image}\n\
         \x20   command: [\"-config.file=/etc/loki/{loki_file}\"]\n\
         \x20   volumes:\n{loki_mounts}\
         \x20     - loki-data:/loki\n\
         \x20   ports:\n{loki_port}\
         \x20 # Ships the logs of the containers labelled {logs_label}=true to Loki.\n\
         \x20 {alloy}:\n\
         \x20   image: {alloy_image}\n\
         \x20   command:\n\
         \x20     - \"run\"\n\
         \x20     - \"/etc/alloy/config.alloy\"\n\
         \x20     - \"--storage.path=/var/lib/alloy/data\"\n\
         \x20     - \"--server.http.listen-addr=0.0.0.0:{alloy_port}\"\n\
         \x20   volumes:\n{alloy_mounts}\
         \x20     # The container list and their logs: read access to the Docker API.\n\
         \x20     - /var/run/docker.sock:/var/run/docker.sock:ro\n\
         \x20     - alloy-data:/var/lib/alloy/data\n\
         \x20   ports:\n{alloy_port_line}\
         \x20   depends_on: [\"{loki}\"]\n\
         \x20 {tempo}:\n\
         \x20   image: {tempo_image}\n\
         \x20   command: [\"-config.file=/etc/tempo/{tempo_file}\"]\n\
         \x20   volumes:\n{tempo_mounts}\
         \x20     - tempo-data:/var/tempo\n\
         \x20   ports:\n{tempo_port}\
         \x20 # Receives OTLP (gRPC {grpc_port}, HTTP {http_port}; published for a demo run with cargo\n\
         \x20 # outside compose) and exports to Tempo. It does not sample: the crate already kept\n\
         \x20 # 100% of errors, 10% of successes and the forced traces.\n\
         \x20 {collector_name}:\n\
         \x20   image: {collector_image}\n\
         \x20   command: [\"--config=/etc/otelcol/{collector_file}\"]\n\
         \x20   volumes:\n{collector_mounts}\
         \x20   ports:\n{grpc_port_line}{http_port_line}\
         \x20   depends_on: [\"{tempo}\"]\n\
         \x20 {grafana}:\n\
         \x20   image: {grafana_image}\n\
         \x20   environment:\n\
         \x20     GF_AUTH_ANONYMOUS_ENABLED: \"true\"\n\
         \x20     GF_AUTH_ANONYMOUS_ORG_ROLE: \"Admin\"\n\
         \x20     GF_AUTH_DISABLE_LOGIN_FORM: \"true\"\n\
         \x20   volumes:\n{grafana_mounts}\
         \x20     - grafana-data:/var/lib/grafana\n\
         \x20   ports:\n{grafana_port}\
         \x20   depends_on: [\"{prometheus}\", \"{loki}\", \"{tempo}\"]\n\
         volumes:\n\
         \x20 prometheus-data: {{}}\n\
         \x20 alertmanager-data: {{}}\n\
         \x20 loki-data: {{}}\n\
         \x20 alloy-data: {{}}\n\
         \x20 tempo-data: {{}}\n\
         \x20 grafana-data: {{}}\n",
        demo = DEMO.name,
        demo_build = build("demo"),
        forward_build = build("port-forward"),
        listen = DEMO_LISTEN_PORT,
        service = quote(&c.service),
        env = LOCAL_ENVIRONMENT,
        collector = COLLECTOR_OTLP_HTTP.url(),
        collector_name = COLLECTOR_OTLP_HTTP.name,
        logs_label = LOGS_CONTAINER_LABEL,
        env_label = ENVIRONMENT_CONTAINER_LABEL,
        service_label = SERVICE_CONTAINER_LABEL,
        demo_port = port(DEMO.port),
        demo_port_no = DEMO.port,
        demo_addr = DEMO.addr(),
        prometheus = PROMETHEUS.name,
        prometheus_image = PROMETHEUS_IMAGE,
        prometheus_file = PROMETHEUS_FILE,
        metrics = prom_duration(r.metrics),
        prometheus_mounts = mounts(&[
            (
                PROMETHEUS_FILE,
                &format!("/etc/prometheus/{PROMETHEUS_FILE}")
            ),
            (RULES_FILE, &format!("/etc/prometheus/{RULES_FILE}")),
        ]),
        prometheus_port = port(PROMETHEUS.port),
        alertmanager = ALERTMANAGER.name,
        alertmanager_image = ALERTMANAGER_IMAGE,
        alertmanager_file = ALERTMANAGER_FILE,
        alertmanager_mounts = mounts(&[(
            ALERTMANAGER_FILE,
            &format!("/etc/alertmanager/{ALERTMANAGER_FILE}")
        )]),
        alertmanager_port = port(ALERTMANAGER.port),
        loki = LOKI.name,
        loki_image = LOKI_IMAGE,
        loki_file = LOKI_FILE,
        loki_mounts = mounts(&[(LOKI_FILE, &format!("/etc/loki/{LOKI_FILE}"))]),
        loki_port = port(LOKI.port),
        alloy = ALLOY.name,
        alloy_image = ALLOY_IMAGE,
        alloy_port = ALLOY.port,
        alloy_mounts = mounts(&[(ALLOY_FILE, "/etc/alloy/config.alloy")]),
        alloy_port_line = port(ALLOY.port),
        tempo = TEMPO.name,
        tempo_image = TEMPO_IMAGE,
        tempo_file = TEMPO_FILE,
        tempo_mounts = mounts(&[(TEMPO_FILE, &format!("/etc/tempo/{TEMPO_FILE}"))]),
        tempo_port = port(TEMPO.port),
        grpc_port = COLLECTOR_OTLP_GRPC.port,
        http_port = COLLECTOR_OTLP_HTTP.port,
        collector_image = COLLECTOR_IMAGE,
        collector_file = COLLECTOR_FILE,
        collector_mounts = mounts(&[(COLLECTOR_FILE, &format!("/etc/otelcol/{COLLECTOR_FILE}"))]),
        grpc_port_line = port(COLLECTOR_OTLP_GRPC.port),
        http_port_line = port(COLLECTOR_OTLP_HTTP.port),
        grafana = GRAFANA.name,
        grafana_image = GRAFANA_IMAGE,
        grafana_mounts = mounts(&[
            (
                DATASOURCES_FILE,
                "/etc/grafana/provisioning/datasources/mercenary-obs.yml"
            ),
            (
                DASHBOARD_PROVIDER_FILE,
                "/etc/grafana/provisioning/dashboards/mercenary-obs.yml"
            ),
            (DASHBOARDS_DIR, GRAFANA_DASHBOARDS_PATH),
        ]),
        grafana_port = port(GRAFANA.port),
    );
    out
}

/// `demo.Dockerfile`: the demo, and the forwarder that exposes its loopback port.
pub(crate) fn dockerfile() -> String {
    format!(
        r#"# syntax=docker/dockerfile:1
# The demo of mercenary-obs for the local stack, generated by mercenary_obs::monitoring
# (docs/local-stack.md). compose.yaml builds it with the repository as the context.

FROM {RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --example demo \
    && cp target/release/examples/demo /usr/local/bin/mercenary-demo

# The demo listens on 127.0.0.1 only; socat, in the demo's network namespace, forwards a port
# the other containers and the host can reach.
FROM {DEBIAN_IMAGE} AS port-forward
RUN apt-get update \
    && apt-get install -y --no-install-recommends socat \
    && rm -rf /var/lib/apt/lists/*
USER 65534:65534
ENTRYPOINT ["socat"]

FROM {DEBIAN_IMAGE} AS demo
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/mercenary-demo /usr/local/bin/mercenary-demo
USER 65534:65534
ENV PORT={DEMO_LISTEN_PORT}
# The demo drains its requests and flushes logs and traces on SIGTERM (docker stop).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mercenary-demo"]
"#
    )
}

/// `demo.Dockerfile.dockerignore`: what the build does not need.
pub(crate) fn dockerignore() -> String {
    "# The build context of demo.Dockerfile is the repository; this keeps it small.\n\
     target\n.git\n.ci\ndocs\nmonitoring\nscripts\nwip\n*.profraw\n"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_whole_units() {
        let d = RetentionSettings::default();
        assert_eq!(hours(d.logs), "168h");
        assert_eq!(hours(d.audit_logs), "8760h");
        assert_eq!(prom_duration(d.metrics), "30d");
    }

    #[test]
    fn application_logs_stay_under_the_ceiling() {
        assert!(RetentionSettings::default().problem().is_none());
        let r = RetentionSettings {
            production_logs: Duration::from_secs(91 * 86_400),
            ..Default::default()
        };
        let (setting, _, expected) = r.problem().unwrap();
        assert_eq!(setting, "MonitoringConfig::retention.production_logs");
        assert!(expected.contains("application_logs_max"), "{expected}");
        let r = RetentionSettings {
            traces: Duration::from_secs(3_600),
            ..Default::default()
        };
        assert_eq!(r.problem().unwrap().0, "MonitoringConfig::retention.traces");
    }
}
