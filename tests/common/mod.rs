//! Helpers shared by the integration tests: a capturing log writer, a loopback server, and a raw
//! HTTP/1.1 client that can send bytes a well-behaved client would refuse to.
#![allow(dead_code)]

pub mod isolated;
pub mod processes;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A log sink the test can read back.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("log output is UTF-8")
    }

    /// Every line, parsed as JSON (panics with the line when one does not parse).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

/// Serves `app` on a free loopback port until the test ends.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A parsed response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Sends `head` (request line and headers, without the final blank line) with `Connection:
/// close`, and reads the whole response. Bounded by a 10 s timeout.
pub async fn raw(addr: SocketAddr, head: &[u8]) -> RawResponse {
    let mut req = head.to_vec();
    req.extend_from_slice(b"\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&req).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        parse(&buf)
    })
    .await
    .expect("response within 10 s")
}

pub fn parse(buf: &[u8]) -> RawResponse {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = &buf[..split];
    let body = buf[split + 4..].to_vec();
    let mut lines = head.split(|&b| b == b'\n');
    let status_line = String::from_utf8_lossy(lines.next().unwrap()).into_owned();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let i = l.iter().position(|&b| b == b':')?;
            Some((
                String::from_utf8_lossy(&l[..i]).trim().to_string(),
                l[i + 1..].trim_ascii().to_vec(),
            ))
        })
        .collect();
    RawResponse {
        status,
        headers,
        body,
    }
}

/// `GET path` with extra header lines.
pub async fn get(addr: SocketAddr, path: &str, headers: &[&str]) -> RawResponse {
    let mut head = format!("GET {path} HTTP/1.1");
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    raw(addr, head.as_bytes()).await
}

/// A keep-alive HTTP/1.1 client for many requests.
pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends one request through `client` and returns (status, body).
pub async fn send(client: &Client, method: &str, url: &str, body: &str) -> (u16, String) {
    try_send(client, method, url, body, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// [`send`] for a server that may be down: the failure (or timeout) as an error.
pub async fn try_send(
    client: &Client,
    method: &str,
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| format!("no response within {timeout:?}"))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body failed: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Samples of one metric from an exposition: (labels as text, value).
pub fn samples(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            (metric == name).then(|| (labels.to_string(), value.parse().unwrap()))
        })
        .collect()
}

/// Runs `promtool check metrics` on an exposition; fails the test with promtool's output.
pub fn promtool_check(exposition: &str) {
    let (status, report) = run_promtool_check(exposition);
    assert!(status.success(), "promtool check metrics failed:\n{report}");
}

/// `promtool check metrics` on `exposition`: its exit status and its whole output.
fn run_promtool_check(exposition: &str) -> (std::process::ExitStatus, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed for this test ({e}); install it with `apt-get install -y \
                 prometheus` or run the README's test command, which does"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, report)
}

/// A handler's work: two child spans (a `db.query` that logs, and a `cache.get`).
pub async fn two_children() {
    use tracing::Instrument;
    async { tracing::info!("querying") }
        .instrument(tracing::info_span!("db.query", db.system = "postgresql"))
        .await;
    async {}.instrument(tracing::info_span!("cache.get")).await;
}

/// `/ok` (200), `/fail` (500) and `/panic`, each doing [`two_children`] first; no layer yet.
pub fn traced_routes() -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/ok",
            get(|| async {
                two_children().await;
                "ok"
            }),
        )
        .route(
            "/fail",
            get(|| async {
                two_children().await;
                (StatusCode::INTERNAL_SERVER_ERROR, "fail")
            }),
        )
        .route(
            "/panic",
            get(|| async {
                two_children().await;
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                "unreachable"
            }),
        )
}

/// The §6 keys that come first in every log line, in this order (those present).
pub const ORDER: [&str; 8] = [
    "timestamp",
    "level",
    "target",
    "message",
    "service",
    "correlation_id",
    "trace_id",
    "span_id",
];

/// Asserts the §6 keys come first, in order (those present), then the rest.
pub fn assert_schema(line: &serde_json::Value) {
    let obj = line.as_object().expect("a JSON object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let head: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    assert_eq!(&keys[..head.len()], &head[..], "key order of {line}");
    for k in ["timestamp", "level", "target", "message", "service"] {
        assert!(obj.contains_key(k), "{k} missing in {line}");
    }
    let ts = line["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(
        ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
    assert!(
        ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
            .contains(&line["level"].as_str().unwrap())
    );
    if let Some(t) = line.get("trace_id") {
        let t = t.as_str().unwrap();
        assert!(
            t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()),
            "{t}"
        );
        let s = line["span_id"].as_str().unwrap();
        assert!(
            s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()),
            "{s}"
        );
    }
}

/// Parses `exposition` with the official Python client (`prometheus_client`), consuming every
/// family: `parser` is `"openmetrics"` (`prometheus_client.openmetrics.parser`) or `"classic"`
/// (`prometheus_client.parser`). Returns the families as JSON: `[{"name", "type", "help",
/// "samples": [{"name", "labels", "value", "timestamp", "exemplar"}]}]`, every number as
/// Python's `repr` of the float (so NaN and infinities survive JSON). Fails the test with the
/// parser's error, or, when the client is missing, with how to install it.
pub fn python_parse(parser: &str, exposition: &str) -> serde_json::Value {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const SCRIPT: &str = r#"
import json, sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as classic
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
parse = {"openmetrics": om, "classic": classic}[sys.argv[1]]
def num(v):
    return None if v is None else repr(float(v))
out = []
for f in parse(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation, "samples": [
        {"name": s.name, "labels": s.labels, "value": num(s.value), "timestamp": num(s.timestamp),
         "exemplar": None if s.exemplar is None else {"labels": s.exemplar.labels,
             "value": num(s.exemplar.value), "timestamp": num(s.exemplar.timestamp)}}
        for s in f.samples]})
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, parser])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 is needed for this test ({e}); run `bash scripts/test.sh`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    assert_ne!(
        out.status.code(),
        Some(3),
        "the official Python client prometheus_client is needed for this test ({stderr}); \
         run `bash scripts/test.sh`, which installs it"
    );
    assert!(
        out.status.success(),
        "the Python client's {parser} parser rejected the exposition:\n{stderr}\n{exposition}"
    );
    serde_json::from_slice(&out.stdout).expect("the parser script prints JSON")
}

/// [`promtool_check`], except that the lint findings in `allowed` (exact lines of promtool's
/// output, such as `x counter metrics should have "_total" suffix` for a user's counter named
/// so on purpose) do not fail the test. A parse error, or any other finding, still does.
pub fn promtool_check_allowing(exposition: &str, allowed: &[&str]) {
    let (status, report) = run_promtool_check(exposition);
    // promtool exits 3 when it only has lint findings, 1 when the exposition does not parse.
    let only_allowed = status.code() == Some(3)
        && report
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| allowed.contains(&l.trim()));
    assert!(
        status.success() || only_allowed,
        "promtool check metrics failed:\n{report}"
    );
}
