//! Child processes the tests drive: the demo service and a Prometheus server.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client;

/// Builds the demo (a no-op when it is up to date) and returns the executable's path.
pub fn demo_binary() -> PathBuf {
    example_binary("demo")
}

/// Builds the example `name` (a no-op when it is up to date) and returns the executable's path.
pub fn example_binary(name: &str) -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--example",
            name,
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(out.status.success(), "building the example {name} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {name} executable"))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the system temp dir, removed by the owner's `Drop`.
pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "mercenary-obs-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running demo; killed when dropped.
pub struct Demo {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The threads reading stdout and stderr; they end when the process has exited.
    readers: Vec<JoinHandle<()>>,
}

impl Demo {
    /// Builds and starts the demo on a free port with `envs`, and waits (bounded) until it
    /// listens.
    pub async fn start(envs: &[(&str, &str)]) -> Demo {
        Demo::start_example("demo", envs).await
    }

    /// The stdout lines so far (all of them once [`Demo::stop`] returned).
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The stderr lines so far (all of them once [`Demo::stop`] returned).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (bounded) for a clean exit and for the last of its output.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipes end with the process: the readers finish with its last lines.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.readers.iter().all(JoinHandle::is_finished) {
            assert!(
                Instant::now() < deadline,
                "the demo's output did not end within 5 s of its exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        status
    }
}

/// The address in a `"listening"` log line (`server.address`, `server.port`), if `line` is one.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["message"] != "listening" {
        return None;
    }
    let ip: std::net::IpAddr = v["server.address"].as_str()?.parse().ok()?;
    let port = u16::try_from(v["server.port"].as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

impl Demo {
    /// Like [`Demo::start`], for the example `name` (`PORT`, stdout, stderr and the wait for
    /// it to listen handled the same way). The example gets `PORT=0`, picks a free port, and
    /// says which in its `"listening"` log line, where this reads it.
    pub async fn start_example(name: &str, envs: &[(&str, &str)]) -> Demo {
        let mut cmd = Command::new(example_binary(name));
        cmd.env("PORT", "0")
            .env_remove("RUST_LOG")
            .env_remove("MERCENARY_OBS_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("the example {name} starts: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        let pipe = child.stdout.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let prefix = name.to_string();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{prefix} stderr: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let found = stdout
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| listening_address(l));
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the example {name} exited early with {status}; stderr: {:#?}",
                    stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the example {name} did not log its \"listening\" line within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Demo {
            child,
            addr,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus server started by the test (1 s scrape and evaluation); killed and cleaned up
/// when dropped.
pub struct Prometheus {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` as job `job`, with the rule files `rules`
    /// (`(file name, contents)`, written next to its configuration).
    pub fn start(job: &str, target: SocketAddr, rules: &[(&str, &str)]) -> Prometheus {
        Self::start_with(job, target, rules, &[])
    }

    /// [`Prometheus::start`] with more command-line flags (`--enable-feature=...`).
    pub fn start_with(
        job: &str,
        target: SocketAddr,
        rules: &[(&str, &str)],
        flags: &[&str],
    ) -> Prometheus {
        let dir = temp_dir("prom");
        let mut rule_files = String::new();
        for (name, contents) in rules {
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            rule_files.push_str(&format!("  - '{}'\n", path.display()));
        }
        let rule_files = if rule_files.is_empty() {
            String::new()
        } else {
            format!("rule_files:\n{rule_files}")
        };
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rule_files}scrape_configs:\n  - job_name: '{job}'\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the prometheus server is needed for this test ({e}); install it with \
                     `apt-get install -y prometheus` or run `bash scripts/test.sh`, which does"
                )
            });
        Prometheus { child, port, dir }
    }

    /// `GET path_and_query` on the HTTP API, parsed as JSON (`None` on any failure, bounded by
    /// 5 s).
    pub async fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
        use http_body_util::BodyExt;
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.port);
        let req = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), client().request(req))
            .await
            .ok()?
            .ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }

    /// An instant query.
    pub async fn query(&self, promql: &str) -> Option<serde_json::Value> {
        self.get(&format!("/api/v1/query?query={}", url_encode(promql)))
            .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
