//! What the sqlx tests share: an instance with traces in the ring, a request to run queries in,
//! the kept traces' database spans, metric samples, a PostgreSQL server of the test's own, and
//! the alert rule test fed with the scraped waiting-requests gauge.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use mercenary_obs::Obs;
use serde_json::Value;
use tower::ServiceExt;

use crate::common::processes::{free_port, temp_dir};
use crate::common::{Capture, samples};

/// An instance keeping only error traces and forced ones (`trace: true`), in a large ring.
pub fn instance(log_filter: Option<&str>) -> (Obs, Capture) {
    let capture = Capture::default();
    let mut builder = Obs::builder()
        .service_name("sqlx-test")
        .log_writer(capture.clone())
        .process_metrics(false)
        .success_ratio(0.0)
        .trace_ring_size(10_000);
    if let Some(filter) = log_filter {
        builder = builder.log_filter(filter);
    }
    (builder.build().unwrap(), capture)
}

/// Runs `work` with `obs`'s subscriber current, as the request layer does around a request.
///
/// Needed for the setup a test does outside requests: with a single non-global subscriber,
/// `tracing` decides whether a call site is enabled by asking the subscriber current where it
/// is first reached, and keeps the answer; a sqlx or `db.query` call site first reached with no
/// subscriber current would stay disabled for the instance.
pub async fn within<T>(obs: &Obs, work: impl std::future::Future<Output = T>) -> T {
    use tracing::instrument::WithSubscriber;
    work.with_subscriber(obs.dispatch().expect("a subscriber").clone())
        .await
}

/// Runs `work` as the handler of one request through `obs`'s layer (`trace: true` when
/// `forced`), and returns the request's trace ID (from `traceresponse`) and the handler's
/// answer.
pub async fn in_request<F, Fut>(obs: &Obs, forced: bool, work: F) -> (String, String)
where
    F: FnOnce() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let app = Router::new()
        .route("/work", get(move || (work.clone())()))
        .layer(obs.layer());
    let mut request = Request::get("/work");
    if forced {
        request = request.header("trace", "true");
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let trace_id = response
        .headers()
        .get("traceresponse")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split('-').nth(1))
        .expect("a traceresponse header")
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (trace_id, String::from_utf8(body.to_vec()).unwrap())
}

/// The kept trace `trace_id`, waiting (bounded) for it to reach the ring.
pub fn kept_trace(obs: &Obs, trace_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let json: Value = serde_json::from_str(&obs.recent_traces_json().expect("a ring")).unwrap();
        if let Some(t) = json["traces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trace_id"] == trace_id)
        {
            return t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} was not kept: {json:#}\n{}",
            obs.render_metrics()
                .lines()
                .filter(|l| l.starts_with("mercenary_obs_trace"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The request (SERVER) span of a kept trace.
pub fn server_span(trace: &Value) -> Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "Server")
        .unwrap_or_else(|| panic!("no server span in {trace:#}"))
        .clone()
}

/// The database spans of a kept trace, in start order.
pub fn db_spans(trace: &Value) -> Vec<Value> {
    let mut spans: Vec<Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["attributes"]["db.system.name"].is_null())
        .cloned()
        .collect();
    spans.sort_by_key(|s| s["start_unix_nanos"].as_u64());
    spans
}

/// The value of `db_client_operation_duration_seconds_count` for these labels (0 when the
/// series does not exist).
pub fn query_count(
    exposition: &str,
    system: &str,
    operation: &str,
    table: &str,
    error: &str,
) -> f64 {
    let labels = format!(
        "{{db_collection_name=\"{table}\",db_operation_name=\"{operation}\",db_system_name=\"{system}\",error_type=\"{error}\"}}"
    );
    samples(exposition, "db_client_operation_duration_seconds_count")
        .into_iter()
        .find(|(l, _)| *l == labels)
        .map_or(0.0, |(_, v)| v)
}

/// The value of a pool gauge for pool `pool` (and `state`, for the usage gauge).
pub fn pool_gauge(exposition: &str, metric: &str, pool: &str, state: Option<&str>) -> Option<f64> {
    let labels = match state {
        Some(state) => format!(
            "{{db_client_connection_pool_name=\"{pool}\",db_client_connection_state=\"{state}\"}}"
        ),
        None => format!("{{db_client_connection_pool_name=\"{pool}\"}}"),
    };
    samples(exposition, metric)
        .into_iter()
        .find(|(l, _)| *l == labels)
        .map(|(_, v)| v)
}

/// Scrapes until `pending_requests` of `pool` is at least `at_least` (bounded), and returns the
/// scraped value.
pub async fn await_waiting(obs: &Obs, pool: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = obs.render_metrics();
        let waiting = pool_gauge(&text, "db_client_connection_pending_requests", pool, None)
            .expect("the pending requests gauge is exported");
        if waiting >= at_least {
            return waiting;
        }
        assert!(
            Instant::now() < deadline,
            "pending requests of {pool} stayed at {waiting} (< {at_least}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Scrapes until the pool `main` has `used` connections in use and `waiting` requests waiting
/// for one (bounded). A request whose connection is being opened is waiting, and its
/// connection already counts as used.
pub async fn await_pool(obs: &Obs, used: f64, waiting: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = obs.render_metrics();
        let now = (
            pool_gauge(&text, "db_client_connections_usage", "main", Some("used")),
            pool_gauge(&text, "db_client_connection_pending_requests", "main", None),
        );
        if now == (Some(used), Some(waiting)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never had {used} connections in use and {waiting} requests waiting:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the kit's rules (`monitoring/alert.rules.yml`) in `promtool test rules` on the series
/// `db_client_connection_pending_requests{pool}` holding `before` for 5 minutes then `during`
/// for 10, and says whether `DatabasePoolRequestsWaiting` fires for the pool after 12 minutes
/// (and, as it must, not after 6: its `for` is 2 minutes).
pub fn pool_alert_fires(before: f64, during: f64) -> bool {
    let dir = temp_dir("sqlx-promtool");
    let rules = repo().join("monitoring/alert.rules.yml");
    let series = "db_client_connection_pending_requests{job=\"mercenary-api\",instance=\"app:9000\",db_client_connection_pool_name=\"main\"}";
    let firing = "count(ALERTS{alertname=\"DatabasePoolRequestsWaiting\",alertstate=\"firing\",db_client_connection_pool_name=\"main\"})";
    let test = |expect_at_12m: &str| {
        format!(
            "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: '{series}'\n        values: '{before}x5 {during}x10'\n    promql_expr_test:\n      - expr: '{firing}'\n        eval_time: 6m\n        exp_samples: []\n      - expr: '{firing}'\n        eval_time: 12m\n        exp_samples:{expect_at_12m}\n",
            rules = rules.display(),
        )
    };
    let run = |name: &str, text: String| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let out = Command::new("promtool")
            .args(["test", "rules"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool is needed for this test ({e}); scripts/test.sh installs it")
            });
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (fires, fires_out) = run(
        "fires.test.yml",
        test("\n          - labels: '{}'\n            value: 1"),
    );
    let (silent, silent_out) = run("silent.test.yml", test(" []"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        fires != silent,
        "exactly one of the two rule tests passes:\n{fires_out}\n{silent_out}"
    );
    fires
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL server of the test's own

/// A PostgreSQL server in a temporary directory, on a free port, stopped and removed on drop.
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    /// Run the server's programs as `postgres` (the tests run as root, which PostgreSQL
    /// refuses).
    as_postgres: bool,
    pub port: u16,
}

fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(dir) = dirs.pop() {
        return dir;
    }
    let which = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match which.as_deref().and_then(Path::parent) {
        Some(dir) if dir.join("pg_ctl").exists() => dir.to_path_buf(),
        _ => panic!(
            "a PostgreSQL server is needed for this test (initdb, pg_ctl, postgres): install it \
             with `apt-get install -y postgresql`, as scripts/test.sh does"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// initdb into a fresh directory, then starts the server on a free loopback port (its
    /// socket in the same directory) and waits until it accepts connections.
    pub fn start() -> PgServer {
        let bin = pg_bin_dir();
        let dir = temp_dir("pg");
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown of {} to postgres", dir.display());
        }
        let port = free_port();
        let server = PgServer {
            dir,
            bin,
            as_postgres,
            port,
        };
        let data = server.dir.join("data");
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            server.dir.display()
        );
        let out = server
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
        );
        server
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    /// The URL of the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
