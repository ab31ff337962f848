//! The local stack of the monitoring kit (`compose.yaml` and the configurations it mounts),
//! checked as far as this machine allows: `promtool` and a real Prometheus on the Prometheus
//! configuration and flags; the structure of every other file (YAML through PyYAML, the Alloy
//! configuration through a small parser of its syntax) and the links between them: images
//! pinned, mounts that exist, service names and ports that match, datasource UIDs that resolve,
//! dashboards provisioned, stream labels of low cardinality, the guide's retention.
//!
//! Loki, Alloy, Tempo and the Collector are not installed here (they are not Debian packages)
//! and Docker has no registry: their files are checked for structure, not run.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::processes::{free_port, temp_dir};
use mercenary_obs::monitoring::{GeneratedFile, MonitoringConfig, generate, write_to};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kit of `config`, written to a fresh directory.
struct Kit {
    dir: PathBuf,
    files: Vec<GeneratedFile>,
}

impl Kit {
    fn new(config: &MonitoringConfig) -> Kit {
        let dir = temp_dir("stack");
        write_to(config, &dir).unwrap();
        Kit {
            dir,
            files: generate(config).unwrap(),
        }
    }

    fn text(&self, path: &str) -> &str {
        &self
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("the kit has {path}"))
            .contents
    }

    fn yaml(&self, path: &str) -> Value {
        yaml(&self.dir.join(path))
    }

    /// Whether `path` (relative, maybe `./`-prefixed) is a file of the kit or a directory
    /// holding some.
    fn has(&self, path: &str) -> bool {
        let path = path.trim_start_matches("./").trim_end_matches('/');
        self.files
            .iter()
            .any(|f| f.path == path || f.path.starts_with(&format!("{path}/")))
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A YAML file parsed by PyYAML, as JSON.
fn yaml(path: &Path) -> Value {
    let script = "import json, sys, yaml\n\
                  json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout, default=str)";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 with PyYAML is needed for this test ({e}); `apt-get install -y python3-yaml`")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'yaml'"),
        "PyYAML is needed for this test: `apt-get install -y python3-yaml` (or `pip install pyyaml`)"
    );
    assert!(
        out.status.success(),
        "{} is not YAML:\n{stderr}",
        path.display()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("a string, not {v}"))
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("a list, not {v}"))
}

/// Hours in a Prometheus/Go duration of whole hours or days (`168h`, `30d`).
fn hours(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("a duration: {d}"));
    match unit {
        "h" => n,
        "d" => n * 24,
        _ => panic!("a duration in hours or days: {d}"),
    }
}

/// `host:port` of `http://host:port[/path]`.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').unwrap();
    (host.to_string(), port.parse().unwrap())
}

// ----------------------------------------------------------------------------------------------
// The Alloy configuration syntax: blocks, attributes and expressions (strings, numbers, bools,
// lists, objects, references such as `discovery.docker.containers.targets`). Enough to read the
// kit's file exactly; anything else (operators, unbalanced braces) is a parse error.

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Expr>),
    Obj(Vec<(String, Expr)>),
    Ref(String),
}

#[derive(Debug)]
struct Block {
    name: String,
    label: Option<String>,
    attrs: Vec<(String, Expr)>,
    blocks: Vec<Block>,
}

impl Block {
    fn attr(&self, name: &str) -> Option<&Expr> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// This block and every block inside it.
    fn walk<'a>(&'a self, out: &mut Vec<&'a Block>) {
        out.push(self);
        for b in &self.blocks {
            b.walk(out);
        }
    }
}

struct AlloyParser<'a> {
    src: &'a [u8],
    at: usize,
}

impl AlloyParser<'_> {
    fn parse(text: &str) -> Result<Vec<Block>, String> {
        let mut p = AlloyParser {
            src: text.as_bytes(),
            at: 0,
        };
        let root = p.body(false)?;
        if !root.attrs.is_empty() {
            return Err(format!("attributes at the top level: {:?}", root.attrs));
        }
        Ok(root.blocks)
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        let line = self.src[..self.at].iter().filter(|&&b| b == b'\n').count() + 1;
        Err(format!("line {line}: {what}"))
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.at).copied()
    }

    fn skip(&mut self) {
        loop {
            while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                self.at += 1;
            }
            let rest = &self.src[self.at..];
            if rest.starts_with(b"//") || rest.starts_with(b"#") {
                while self.peek().is_some_and(|b| b != b'\n') {
                    self.at += 1;
                }
            } else if rest.starts_with(b"/*") {
                match rest.windows(2).position(|w| w == b"*/") {
                    Some(end) => self.at += end + 2,
                    None => return,
                }
            } else {
                return;
            }
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        self.skip();
        if self.peek() == Some(b) {
            self.at += 1;
            Ok(())
        } else {
            self.err(&format!("expected `{}`", b as char))
        }
    }

    /// An identifier, with dots when `dotted` (block names and references).
    fn ident(&mut self, dotted: bool) -> Result<String, String> {
        self.skip();
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || (dotted && b == b'.'))
        {
            self.at += 1;
        }
        if start == self.at || self.src[start].is_ascii_digit() {
            return self.err("expected an identifier");
        }
        Ok(String::from_utf8_lossy(&self.src[start..self.at]).into_owned())
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip();
        let raw = match self.peek() {
            Some(b'"') => false,
            Some(b'`') => true,
            _ => return self.err("expected a string"),
        };
        let quote = self.src[self.at];
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return self.err("unterminated string");
            };
            self.at += 1;
            match b {
                b if b == quote => break,
                b'\n' if !raw => return self.err("newline in a string"),
                b'\\' if !raw => {
                    let Some(e) = self.peek() else {
                        return self.err("unterminated escape");
                    };
                    self.at += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'"' | b'\\' => e,
                        _ => return self.err("unknown escape"),
                    });
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).or_else(|_| self.err("a string that is not UTF-8"))
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.skip();
        match self.peek() {
            Some(b'"' | b'`') => Ok(Expr::Str(self.string()?)),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    self.skip();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        return Ok(Expr::List(items));
                    }
                    items.push(self.expr()?);
                    self.skip();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {}
                        _ => return self.err("expected `,` or `]`"),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                loop {
                    self.skip();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        return Ok(Expr::Obj(fields));
                    }
                    let key = if self.peek() == Some(b'"') {
                        self.string()?
                    } else {
                        self.ident(false)?
                    };
                    self.expect(b'=')?;
                    fields.push((key, self.expr()?));
                    self.skip();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {}
                        _ => return self.err("expected `,` or `}`"),
                    }
                }
            }
            Some(b) if b.is_ascii_digit() || b == b'-' => {
                let start = self.at;
                self.at += 1;
                while self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'.') {
                    self.at += 1;
                }
                let text = String::from_utf8_lossy(&self.src[start..self.at]).into_owned();
                text.parse()
                    .map(Expr::Num)
                    .or_else(|_| self.err("a number"))
            }
            _ => {
                let name = self.ident(true)?;
                match name.as_str() {
                    "true" => Ok(Expr::Bool(true)),
                    "false" => Ok(Expr::Bool(false)),
                    _ => Ok(Expr::Ref(name)),
                }
            }
        }
    }

    /// Attributes and blocks up to a `}` (`nested`) or the end of the text.
    fn body(&mut self, nested: bool) -> Result<Block, String> {
        let mut block = Block {
            name: String::new(),
            label: None,
            attrs: Vec::new(),
            blocks: Vec::new(),
        };
        loop {
            self.skip();
            match self.peek() {
                None if nested => return self.err("unclosed block"),
                None => return Ok(block),
                Some(b'}') if nested => {
                    self.at += 1;
                    return Ok(block);
                }
                _ => {}
            }
            let name = self.ident(true)?;
            self.skip();
            match self.peek() {
                Some(b'=') if !name.contains('.') => {
                    self.at += 1;
                    let value = self.expr()?;
                    block.attrs.push((name, value));
                }
                Some(b'"' | b'{') => {
                    let label = if self.peek() == Some(b'"') {
                        Some(self.string()?)
                    } else {
                        None
                    };
                    self.expect(b'{')?;
                    let mut inner = self.body(true)?;
                    inner.name = name;
                    inner.label = label;
                    block.blocks.push(inner);
                }
                _ => return self.err(&format!("expected `=` or a block after `{name}`")),
            }
        }
    }
}

fn alloy(text: &str) -> Vec<Block> {
    AlloyParser::parse(text).unwrap_or_else(|e| panic!("config.alloy does not parse: {e}"))
}

fn strs(e: &Expr) -> Vec<String> {
    match e {
        Expr::List(items) => items
            .iter()
            .map(|i| match i {
                Expr::Str(s) => s.clone(),
                other => panic!("a string, not {other:?}"),
            })
            .collect(),
        other => panic!("a list, not {other:?}"),
    }
}

fn keys(e: &Expr) -> Vec<String> {
    match e {
        Expr::Obj(fields) => fields.iter().map(|(k, _)| k.clone()).collect(),
        other => panic!("an object, not {other:?}"),
    }
}

#[test]
fn the_alloy_parser_rejects_what_is_not_alloy() {
    assert!(
        AlloyParser::parse("a.b \"x\" {\n  y = [\"1\", 2,]\n  c { d = { e = true, } }\n}\n")
            .is_ok()
    );
    for bad in [
        "a.b \"x\" {\n  y = 1\n",
        "a.b \"x\" {\n  y = \"1\" + \"2\"\n}\n",
        "y = 1\n",
        "a.b { y = [1 2] }",
        "a.b { y = \"unterminated }",
    ] {
        assert!(AlloyParser::parse(bad).is_err(), "{bad}");
    }
}

// ----------------------------------------------------------------------------------------------

/// The compose file's services.
fn services(kit: &Kit) -> BTreeMap<String, Value> {
    let compose = kit.yaml("compose.yaml");
    compose["services"]
        .as_object()
        .expect("compose.yaml has services")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `(source, target)` of a service's volumes.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|m| {
                    let parts: Vec<&str> = s(m).split(':').collect();
                    (parts[0].to_string(), parts[1].to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The kit file mounted at `target` in `service`.
fn mounted_at(service: &Value, target: &str) -> String {
    mounts(service)
        .into_iter()
        .find(|(_, t)| t == target)
        .unwrap_or_else(|| panic!("something is mounted at {target}: {service}"))
        .0
        .trim_start_matches("./")
        .to_string()
}

/// The value of `--flag=value` in a service's command.
fn flag(service: &Value, name: &str) -> Option<String> {
    list(&service["command"])
        .iter()
        .find_map(|a| s(a).strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// Every string in a JSON value, with its path.
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, item) in fields {
                strings(item, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every `datasourceUid` in a JSON value, with its path.
fn datasource_uids(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                datasource_uids(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(fields) => {
            for (k, item) in fields {
                if k == "datasourceUid" {
                    out.push((path.clone(), s(item).to_string()));
                } else {
                    datasource_uids(item, format!("{path}.{k}"), out);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn every_file_of_the_stack_parses() {
    let kit = Kit::new(&MonitoringConfig::default());
    for f in &kit.files {
        if f.path.ends_with(".yml") || f.path.ends_with(".yaml") {
            let v = kit.yaml(&f.path);
            assert!(v.is_object(), "{} is a YAML mapping", f.path);
        } else if f.path.ends_with(".json") {
            serde_json::from_str::<Value>(&f.contents)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", f.path));
        } else if f.path.ends_with(".alloy") {
            assert!(!alloy(&f.contents).is_empty());
        }
    }
    for path in [
        "compose.yaml",
        "prometheus.yml",
        "loki.yml",
        "tempo.yml",
        "otel-collector.yml",
        "alloy/config.alloy",
        "grafana/datasources.yml",
        "grafana/dashboards.yml",
        "demo.Dockerfile",
        "demo.Dockerfile.dockerignore",
    ] {
        assert!(kit.has(path), "the kit has {path}");
    }
}

/// `promtool check config` in the kit's directory: the rule file the configuration names
/// resolves and passes `promtool check rules` too.
#[test]
fn promtool_accepts_the_prometheus_configuration() {
    for config in [MonitoringConfig::default(), {
        let mut c = MonitoringConfig::default();
        c.service = "billing-api".into();
        c.service_label = "service".into();
        c.extra_matchers = "namespace=\"prod\"".into();
        c
    }] {
        let kit = Kit::new(&config);
        let out = Command::new("promtool")
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&kit.dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "`promtool` is needed for this test ({e}); install it with `apt-get install -y \
                     prometheus` or run `bash scripts/test.sh`, which does"
                )
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "promtool check config failed:\n{text}"
        );
        assert!(text.contains("1 rule files found"), "{text}");
        assert!(text.contains("alert.rules.yml"), "{text}");

        // The job is the service, and every label the rules select by is on the target.
        let prom = kit.yaml("prometheus.yml");
        let job = &list(&prom["scrape_configs"])[0];
        assert_eq!(s(&job["job_name"]), config.service);
        let labels = &list(&job["static_configs"])[0]["labels"];
        if config.service_label != "job" {
            assert_eq!(s(&labels[&config.service_label]), config.service);
            assert_eq!(s(&labels["namespace"]), "prod");
        } else {
            assert!(labels.is_null(), "{labels}");
        }
    }
}

/// A child process killed when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on loopback: the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

/// Prometheus started the way `compose.yaml` starts it, its container paths mapped to the kit
/// through the compose mounts: it accepts every flag, loads the kit's rules, and reports the
/// retention and exemplar storage the guide and the crate need.
#[test]
fn a_real_prometheus_runs_with_the_compose_flags() {
    let kit = Kit::new(&MonitoringConfig::default());
    let services = services(&kit);
    let prometheus = &services["prometheus"];
    let data = kit.dir.join("data");
    let port = free_port();
    let mut args = Vec::new();
    for arg in list(&prometheus["command"]) {
        let arg = s(arg);
        let arg = match arg.split_once('=') {
            Some(("--config.file", path)) => format!(
                "--config.file={}",
                kit.dir.join(mounted_at(prometheus, path)).display()
            ),
            Some(("--storage.tsdb.path", _)) => {
                format!("--storage.tsdb.path={}", data.display())
            }
            _ => arg.to_string(),
        };
        args.push(arg);
    }
    args.push(format!("--web.listen-address=127.0.0.1:{port}"));
    args.push("--log.level=warn".into());
    let child = Command::new("prometheus")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "the prometheus server is needed for this test ({e}); install it with \
                 `apt-get install -y prometheus` or run `bash scripts/test.sh`, which does"
            )
        });
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/-/ready").is_none() {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("prometheus {args:?} exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "prometheus is not ready after 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let get = |path: &str| -> Value {
        serde_json::from_str(&http_get(port, path).unwrap_or_else(|| panic!("GET {path}"))).unwrap()
    };
    let flags = get("/api/v1/status/flags");
    assert_eq!(flags["data"]["storage.tsdb.retention.time"], "30d");
    assert!(
        s(&flags["data"]["enable-feature"]).contains("exemplar-storage"),
        "{flags}"
    );
    assert_eq!(flags["data"]["web.enable-remote-write-receiver"], "true");
    let runtime = get("/api/v1/status/runtimeinfo");
    assert_eq!(runtime["data"]["storageRetention"], "30d", "{runtime}");
    let rules = get("/api/v1/rules");
    let groups = list(&rules["data"]["groups"]);
    assert!(
        !groups.is_empty(),
        "the rule file named by prometheus.yml is loaded: {rules}"
    );
    let config = get("/api/v1/status/config");
    assert!(s(&config["data"]["yaml"]).contains("demo:8080"));
}

#[test]
fn compose_pins_every_image_and_mounts_files_of_the_kit() {
    let kit = Kit::new(&MonitoringConfig::default());
    let compose = kit.yaml("compose.yaml");
    let services = services(&kit);
    let named_volumes: BTreeSet<&String> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().collect())
        .unwrap_or_default();
    let pinned = |image: &str| {
        // name:version with three numeric parts (Debian's point releases have two: `12.13`);
        // no `latest`, no floating `3` or `3.7`.
        let Some((name, tag)) = image.rsplit_once(':') else {
            return false;
        };
        let version = tag.trim_start_matches('v');
        let core = version.split('-').next().unwrap();
        let parts = if name == "debian" { 2 } else { 3 };
        core.split('.').count() == parts
            && core
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    for bad in [
        "grafana/loki:latest",
        "grafana/loki",
        "grafana/loki:3.7",
        "prom/prometheus:v3",
        "debian:12",
        "debian:bookworm-slim",
    ] {
        assert!(!pinned(bad), "{bad}");
    }
    for (name, service) in &services {
        match (&service["image"], &service["build"]) {
            (Value::String(image), Value::Null) => {
                assert!(
                    pinned(image),
                    "{name}: image {image} is not pinned to a version"
                );
            }
            (Value::Null, build @ Value::Object(_)) => {
                // The demo builds with the repository as the context and the kit's Dockerfile.
                assert_eq!(s(&build["context"]), "..", "{name}");
                assert_eq!(
                    s(&build["dockerfile"]),
                    "monitoring/demo.Dockerfile",
                    "{name}"
                );
                let text = kit.text("demo.Dockerfile");
                let target = s(&build["target"]);
                assert!(
                    text.contains(&format!(" AS {target}\n")),
                    "{name}: demo.Dockerfile has a stage {target}"
                );
                for line in text.lines().filter(|l| l.starts_with("FROM ")) {
                    let image = line.split_whitespace().nth(1).unwrap();
                    assert!(pinned(image), "demo.Dockerfile: {line} is not pinned");
                }
            }
            other => panic!("{name}: an image or a build, not {other:?}"),
        }
        for (source, target) in mounts(service) {
            if source.starts_with("./") {
                assert!(
                    kit.has(&source),
                    "{name} mounts {source} at {target}, which the kit does not have"
                );
            } else if !source.starts_with('/') {
                assert!(
                    named_volumes.contains(&source),
                    "{name}: volume {source} is declared"
                );
            }
        }
        for port in service["ports"].as_array().into_iter().flatten() {
            assert!(
                s(port).starts_with("127.0.0.1:"),
                "{name}: port {port} is published on loopback only"
            );
        }
        for dep in service["depends_on"].as_array().into_iter().flatten() {
            assert!(services.contains_key(s(dep)), "{name} depends on {dep}");
        }
    }
    // The checked-in kit sits in the repository's monitoring/, where the build finds it.
    assert!(repo().join("monitoring/demo.Dockerfile").is_file());
    assert!(
        repo()
            .join("monitoring/demo.Dockerfile.dockerignore")
            .is_file()
    );
    // Compose expands `$NAME`: a literal dollar sign would have to be `$$`.
    assert!(!kit.text("compose.yaml").contains('$'));
}

/// Each service names the others by their compose names and the ports they listen on.
#[test]
fn the_services_reach_each_other() {
    let config = MonitoringConfig::default();
    let kit = Kit::new(&config);
    let services = services(&kit);
    let (tempo, loki, collector, prom) = (
        kit.yaml("tempo.yml"),
        kit.yaml("loki.yml"),
        kit.yaml("otel-collector.yml"),
        kit.yaml("prometheus.yml"),
    );
    let endpoint_port = |v: &Value| host_port(s(v)).1;
    // The port `service` listens on for `role`, as its own configuration says.
    let port_of = |service: &str, role: &str| -> u16 {
        match (service, role) {
            ("tempo", "http") => tempo["server"]["http_listen_port"].as_u64().unwrap() as u16,
            ("tempo", "otlp_grpc") => endpoint_port(
                &tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
            ),
            ("loki", "http") => loki["server"]["http_listen_port"].as_u64().unwrap() as u16,
            ("otel-collector", "otlp_grpc" | "otlp_http") => {
                endpoint_port(&collector["receivers"]["otlp"]["protocols"][&role[5..]]["endpoint"])
            }
            // The demo is reached through the forwarder in its network namespace, which
            // forwards to the port the demo listens on.
            ("demo", "http") => {
                let forward = services
                    .values()
                    .find(|s| s["network_mode"] == "service:demo")
                    .expect("a service in the demo's network namespace");
                let command = list(&forward["command"]);
                let demo_port = s(&services["demo"]["environment"]["PORT"]);
                assert_eq!(s(&command[1]), format!("TCP:127.0.0.1:{demo_port}"));
                let listen = s(&command[0]).strip_prefix("TCP-LISTEN:").unwrap();
                listen.split(',').next().unwrap().parse().unwrap()
            }
            // Their images' defaults.
            ("prometheus", "http") => 9090,
            ("alertmanager", "http") => 9093,
            other => panic!("which port does {other:?} listen on?"),
        }
    };
    let reaches = |url: &str, service: &str, role: &str| {
        assert!(
            services.contains_key(service),
            "a compose service {service}"
        );
        assert_eq!(
            host_port(url),
            (service.to_string(), port_of(service, role)),
            "{url} is {service}'s {role} port"
        );
    };

    // Prometheus scrapes the demo and sends to Alertmanager.
    let job = &list(&prom["scrape_configs"])[0];
    reaches(
        s(&list(&job["static_configs"])[0]["targets"][0]),
        "demo",
        "http",
    );
    let am = &list(&prom["alerting"]["alertmanagers"])[0];
    reaches(
        s(&list(&am["static_configs"])[0]["targets"][0]),
        "alertmanager",
        "http",
    );
    // The configuration and the rule file it names are where Prometheus looks in its
    // container: the rule file beside the configuration.
    let prometheus = &services["prometheus"];
    let config_path = flag(prometheus, "--config.file").unwrap();
    assert_eq!(mounted_at(prometheus, &config_path), "prometheus.yml");
    let config_dir = Path::new(&config_path).parent().unwrap();
    for rule_file in list(&prom["rule_files"]) {
        let in_container = config_dir.join(s(rule_file));
        assert_eq!(
            mounted_at(prometheus, in_container.to_str().unwrap()),
            s(rule_file)
        );
    }

    // The demo exports to the Collector over OTLP/HTTP, the Collector to Tempo over gRPC,
    // Tempo's metrics generator to Prometheus (whose remote-write receiver is on).
    let demo_env = &services["demo"]["environment"];
    assert_eq!(s(&demo_env["OTEL_SERVICE_NAME"]), config.service);
    assert_eq!(demo_env["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
    reaches(
        s(&demo_env["OTEL_EXPORTER_OTLP_ENDPOINT"]),
        "otel-collector",
        "otlp_http",
    );
    let pipeline = &collector["service"]["pipelines"]["traces"];
    assert_eq!(list(&pipeline["receivers"]), &vec![Value::from("otlp")]);
    for exporter in list(&pipeline["exporters"]) {
        let name = s(exporter);
        assert!(
            name.starts_with("otlp_grpc"),
            "{name}: Tempo's receiver is gRPC"
        );
        reaches(
            s(&collector["exporters"][name]["endpoint"]),
            "tempo",
            "otlp_grpc",
        );
    }
    for processor in list(&pipeline["processors"]) {
        assert!(
            collector["processors"]
                .as_object()
                .unwrap()
                .contains_key(s(processor)),
            "{processor} is configured"
        );
    }
    for rw in list(&tempo["metrics_generator"]["storage"]["remote_write"]) {
        reaches(s(&rw["url"]), "prometheus", "http");
    }
    assert!(
        list(&prometheus["command"]).contains(&Value::from("--web.enable-remote-write-receiver"))
    );

    // Grafana's datasources and Alloy's Loki.
    let ds = kit.yaml("grafana/datasources.yml");
    for d in list(&ds["datasources"]) {
        let service = s(&d["type"]);
        reaches(s(&d["url"]), service, "http");
    }
    let blocks = alloy(kit.text("alloy/config.alloy"));
    let mut all = Vec::new();
    blocks.iter().for_each(|b| b.walk(&mut all));
    let endpoint = all
        .iter()
        .find(|b| b.name == "endpoint")
        .expect("loki.write's endpoint");
    let Some(Expr::Str(url)) = endpoint.attr("url") else {
        panic!("loki.write has a url")
    };
    reaches(url, "loki", "http");
    assert!(url.ends_with("/loki/api/v1/push"), "{url}");
}

#[test]
fn grafana_provisions_every_dashboard_and_links_the_datasources_both_ways() {
    let kit = Kit::new(&MonitoringConfig::default());
    let services = services(&kit);
    let grafana = &services["grafana"];

    // The provisioning files are where Grafana reads them.
    let provisioned: Vec<(String, String)> = mounts(grafana);
    for (file, dir) in [
        (
            "grafana/datasources.yml",
            "/etc/grafana/provisioning/datasources/",
        ),
        (
            "grafana/dashboards.yml",
            "/etc/grafana/provisioning/dashboards/",
        ),
    ] {
        assert!(
            provisioned
                .iter()
                .any(|(from, to)| from == &format!("./{file}")
                    && to.starts_with(dir)
                    && to.ends_with(".yml")),
            "compose mounts {file} in {dir}: {provisioned:?}"
        );
    }

    // Every dashboard of the kit is in the directory the provider loads.
    let providers = kit.yaml("grafana/dashboards.yml");
    let provider = &list(&providers["providers"])[0];
    assert_eq!(provider["type"], "file");
    let path = s(&provider["options"]["path"]);
    let source = mounted_at(grafana, path);
    let dashboards: Vec<&GeneratedFile> = kit
        .files
        .iter()
        .filter(|f| f.path.ends_with(".json"))
        .collect();
    assert_eq!(dashboards.len(), 4);
    for d in &dashboards {
        assert!(
            d.path.starts_with(&format!("{source}/")),
            "{} is not under {source}, which compose mounts at the provider's path {path}",
            d.path
        );
    }

    // Datasources: UIDs and types, and every link naming one of them.
    let ds = kit.yaml("grafana/datasources.yml");
    let by_uid: BTreeMap<String, String> = list(&ds["datasources"])
        .iter()
        .map(|d| (s(&d["uid"]).to_string(), s(&d["type"]).to_string()))
        .collect();
    assert_eq!(by_uid.len(), 3, "{by_uid:?}");
    let of_type = |uid: &Value| {
        by_uid
            .get(s(uid))
            .cloned()
            .unwrap_or_else(|| panic!("{uid} is not a provisioned datasource uid ({by_uid:?})"))
    };
    let mut links = Vec::new();
    datasource_uids(&ds, String::new(), &mut links);
    for (path, uid) in &links {
        assert!(
            by_uid.contains_key(uid),
            "{path} names {uid}, not a provisioned datasource"
        );
    }
    let find = |kind: &str| {
        list(&ds["datasources"])
            .iter()
            .find(|d| d["type"] == kind)
            .unwrap_or_else(|| panic!("a {kind} datasource"))
            .clone()
    };
    let (prom, tempo, loki) = (find("prometheus"), find("tempo"), find("loki"));
    // Prometheus → Tempo (exemplars), Tempo → Loki and Prometheus, Loki → Tempo.
    let exemplars = list(&prom["jsonData"]["exemplarTraceIdDestinations"]);
    assert_eq!(
        exemplars[0]["name"], "trace_id",
        "the crate's exemplar label"
    );
    assert_eq!(of_type(&exemplars[0]["datasourceUid"]), "tempo");
    let t = &tempo["jsonData"];
    assert_eq!(of_type(&t["tracesToLogsV2"]["datasourceUid"]), "loki");
    assert_eq!(
        of_type(&t["tracesToMetrics"]["datasourceUid"]),
        "prometheus"
    );
    assert_eq!(of_type(&t["serviceMap"]["datasourceUid"]), "prometheus");
    let derived = list(&loki["jsonData"]["derivedFields"]);
    assert_eq!(of_type(&derived[0]["datasourceUid"]), "tempo");
    assert!(s(&derived[0]["matcherRegex"]).contains("\"trace_id\""));

    // The spans' service maps to the labels the other side has: Loki's stream label (set by the
    // shipper), Prometheus's service label (the rules' `job`).
    let logs_tag = &list(&t["tracesToLogsV2"]["tags"])[0];
    assert_eq!(logs_tag["key"], "service.name");
    assert!(shipper_labels(&kit).contains(s(&logs_tag["value"])));
    let metrics_tag = &list(&t["tracesToMetrics"]["tags"])[0];
    assert_eq!(metrics_tag["key"], "service.name");
    assert_eq!(metrics_tag["value"], "job");
    let queries = list(&t["tracesToMetrics"]["queries"]);
    assert!(!queries.is_empty());
    for q in queries {
        assert!(
            s(&q["query"]).contains("{$$__tags}") || s(&q["query"]).contains(", $$__tags}"),
            "{q}"
        );
        assert!(
            s(&q["query"]).contains("http_server_request_duration_seconds"),
            "{q}"
        );
    }

    // Grafana expands `$NAME` and `${NAME}` in provisioning files: every literal `$` is doubled.
    let mut all = Vec::new();
    strings(&ds, String::new(), &mut all);
    for (path, text) in all {
        let single = text.split("$$").any(|part| part.contains('$'));
        assert!(!single, "{path}: {text:?} has a `$` Grafana would expand");
    }

    // The dashboards' datasource variables select the provisioned datasources, and every
    // panel's datasource is one of them.
    for d in &dashboards {
        let json: Value = serde_json::from_str(&d.contents).unwrap();
        let mut vars = BTreeMap::new();
        for var in list(&json["templating"]["list"]) {
            if var["type"] == "datasource" {
                let uid = &var["current"]["value"];
                assert_eq!(
                    of_type(uid),
                    s(&var["query"]),
                    "{}: ${{{}}} selects a provisioned {} datasource",
                    d.path,
                    s(&var["name"]),
                    s(&var["query"])
                );
                vars.insert(
                    format!("${{{}}}", s(&var["name"])),
                    s(&var["query"]).to_string(),
                );
            }
        }
        for panel in list(&json["panels"]) {
            let ds = &panel["datasource"];
            let kind = vars
                .get(s(&ds["uid"]))
                .unwrap_or_else(|| panic!("{}: panel datasource {ds} is a variable", d.path));
            assert_eq!(kind, s(&ds["type"]), "{}: {ds}", d.path);
        }
    }
}

/// The Loki stream labels the Alloy configuration can set: relabel targets, `stage.labels`,
/// `stage.static_labels`, a source's `labels`; and the `stage.label_keep` list.
fn label_setters(blocks: &[Block]) -> (BTreeSet<String>, Option<BTreeSet<String>>) {
    let mut all = Vec::new();
    blocks.iter().for_each(|b| b.walk(&mut all));
    let mut set = BTreeSet::new();
    let mut keep = None;
    for b in all {
        match b.name.as_str() {
            "rule" => {
                let action = match b.attr("action") {
                    Some(Expr::Str(a)) => a.as_str(),
                    _ => "replace",
                };
                match action {
                    "replace" | "lowercase" | "uppercase" | "hashmod" => {
                        if let Some(Expr::Str(l)) = b.attr("target_label") {
                            set.insert(l.clone());
                        }
                    }
                    "labelmap" => panic!("a labelmap rule can create any label"),
                    _ => {}
                }
            }
            "stage.labels" | "stage.static_labels" => {
                set.extend(keys(b.attr("values").expect("values")));
            }
            "stage.label_keep" => {
                keep = Some(
                    strs(b.attr("values").expect("values"))
                        .into_iter()
                        .collect(),
                );
            }
            "stage.structured_metadata" | "stage.pack" => {}
            name if name.starts_with("loki.source.") => {
                if let Some(labels) = b.attr("labels") {
                    set.extend(keys(labels));
                }
            }
            _ => {}
        }
    }
    (set, keep)
}

/// The labels the shipper's streams end up with at most.
fn shipper_labels(kit: &Kit) -> BTreeSet<String> {
    let (set, keep) = label_setters(&alloy(kit.text("alloy/config.alloy")));
    let keep = keep.expect("stage.label_keep bounds the label set");
    set.intersection(&keep).cloned().collect()
}

#[test]
fn the_shipper_sets_only_low_cardinality_labels() {
    let config = MonitoringConfig::default();
    let kit = Kit::new(&config);
    let blocks = alloy(kit.text("alloy/config.alloy"));
    let (set, keep) = label_setters(&blocks);
    let allowed: BTreeSet<String> = ["service", "level", "audit", "environment"]
        .map(String::from)
        .into();
    assert_eq!(
        keep.as_ref(),
        Some(&allowed),
        "stage.label_keep keeps exactly {allowed:?}"
    );
    assert_eq!(set, allowed, "the labels set are the low-cardinality ones");
    for id in ["correlation_id", "trace_id", "span_id"] {
        assert!(
            !set.contains(id) && !keep.as_ref().unwrap().contains(id),
            "{id} is a label"
        );
    }

    // The pipeline: docker → JSON → Loki, and the JSON stage reads the crate's field names.
    let component = |name: &str| {
        blocks
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("a {name} component"))
    };
    let source = component("loki.source.docker");
    let process = component("loki.process");
    let write = component("loki.write");
    let refs = |b: &Block, attr: &str| match b.attr(attr) {
        Some(Expr::List(items)) => items.clone(),
        other => panic!("{}.{attr}: {other:?}", b.name),
    };
    assert_eq!(
        refs(source, "forward_to"),
        vec![Expr::Ref(format!(
            "loki.process.{}.receiver",
            process.label.as_ref().unwrap()
        ))]
    );
    assert_eq!(
        refs(process, "forward_to"),
        vec![Expr::Ref(format!(
            "loki.write.{}.receiver",
            write.label.as_ref().unwrap()
        ))]
    );
    let json = process
        .blocks
        .iter()
        .find(|b| b.name == "stage.json")
        .expect("a JSON stage");
    let extracted = keys(json.attr("expressions").unwrap());
    for field in ["timestamp", "level", "service", "audit"] {
        assert!(
            extracted.contains(&field.to_string()),
            "{field} is extracted"
        );
    }
    let order: Vec<&str> = process.blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        order.last(),
        Some(&"stage.label_keep"),
        "label_keep comes last: {order:?}"
    );

    // The containers it reads are the ones compose labels, and their environment is read from
    // the label compose sets.
    let services = services(&kit);
    let demo_labels = &services["demo"]["labels"];
    let docker = component("discovery.docker");
    let filter = docker.blocks.iter().find(|b| b.name == "filter").unwrap();
    for value in strs(filter.attr("values").unwrap()) {
        let (label, wanted) = value.split_once('=').unwrap();
        assert_eq!(s(&demo_labels[label]), wanted, "the demo carries {value}");
    }
    // Every container label a relabel rule reads is one compose sets on the demo (or compose's
    // own service label), and the demo's labels name its service and environment.
    let relabel = component("discovery.relabel");
    let meta = |label: &str| {
        format!(
            "__meta_docker_container_label_{}",
            label.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        )
    };
    let demo_meta: BTreeMap<String, &str> = demo_labels
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (meta(k), s(v)))
        .collect();
    let mut read = BTreeMap::new();
    for rule in &relabel.blocks {
        let Some(Expr::Str(target)) = rule.attr("target_label") else {
            continue;
        };
        for source in rule.attr("source_labels").map(strs).unwrap_or_default() {
            if source != meta("com.docker.compose.service") {
                assert!(
                    demo_meta.contains_key(&source),
                    "{source} is a label compose sets on the demo: {demo_meta:?}"
                );
                read.insert(target.clone(), demo_meta[&source]);
            }
        }
    }
    assert_eq!(
        read.get("service"),
        Some(&config.service.as_str()),
        "{read:?}"
    );
    assert_eq!(
        read.get("environment"),
        Some(&"development"),
        "the demo runs in development: {read:?}"
    );
}

/// The guide: application logs 7 days (30 in production, never over 90), audit logs a year,
/// metrics 30 days, high-cardinality data (traces) 7 days.
#[test]
fn retention_is_the_guides() {
    let kit = Kit::new(&MonitoringConfig::default());
    let loki = kit.yaml("loki.yml");
    let compactor = &loki["compactor"];
    assert_eq!(
        compactor["retention_enabled"], true,
        "the compactor applies retention"
    );
    assert!(compactor["delete_request_store"].is_string());
    for schema in list(&loki["schema_config"]["configs"]) {
        assert_eq!(
            schema["index"]["period"], "24h",
            "retention needs daily index tables"
        );
    }
    let limits = &loki["limits_config"];
    assert_eq!(hours(s(&limits["retention_period"])), 7 * 24);
    let streams: BTreeMap<String, (u64, u64)> = list(&limits["retention_stream"])
        .iter()
        .map(|r| {
            (
                s(&r["selector"]).to_string(),
                (hours(s(&r["period"])), r["priority"].as_u64().unwrap()),
            )
        })
        .collect();
    let audit = streams[r#"{audit="true"}"#];
    let production = streams[r#"{environment="production"}"#];
    assert_eq!(audit.0, 365 * 24, "audit logs: a year");
    assert_eq!(production.0, 30 * 24, "production logs: 30 days");
    assert!(
        audit.1 > production.1,
        "a production audit line is kept a year"
    );
    for (selector, (period, _)) in &streams {
        if !selector.contains("audit") {
            assert!(
                *period <= 90 * 24,
                "{selector}: application logs at most 90 days"
            );
        }
        // The selectors use labels the shipper sets.
        let label = selector.trim_start_matches('{').split('=').next().unwrap();
        assert!(shipper_labels(&kit).contains(label), "{selector}");
    }
    assert_eq!(limits["discover_service_name"], Value::Array(vec![]));

    let services = services(&kit);
    assert_eq!(
        hours(&flag(&services["prometheus"], "--storage.tsdb.retention.time").unwrap()),
        30 * 24
    );

    let tempo = kit.yaml("tempo.yml");
    assert_eq!(
        hours(s(&tempo["backend_worker"]["compaction"]["block_retention"])),
        7 * 24
    );
    assert_eq!(
        hours(s(
            &tempo["backend_scheduler"]["provider"]["compaction"]["compaction"]["block_retention"]
        )),
        7 * 24
    );
}

#[test]
fn retention_settings_shape_the_stack_and_keep_the_ceiling() {
    let mut config = MonitoringConfig::default();
    config.retention.production_logs = Duration::from_secs(60 * 86_400);
    config.retention.production_environment = "prod".into();
    config.retention.metrics = Duration::from_secs(15 * 86_400);
    let kit = Kit::new(&config);
    let loki = kit.yaml("loki.yml");
    let streams = list(&loki["limits_config"]["retention_stream"]);
    assert!(
        streams
            .iter()
            .any(|r| r["selector"] == r#"{environment="prod"}"# && r["period"] == "1440h"),
        "{streams:?}"
    );
    let services = services(&kit);
    assert_eq!(
        flag(&services["prometheus"], "--storage.tsdb.retention.time").as_deref(),
        Some("15d")
    );

    config.retention.production_logs = Duration::from_secs(91 * 86_400);
    let err = generate(&config).unwrap_err().to_string();
    assert!(err.contains("retention.production_logs"), "{err}");
    assert!(err.contains("application_logs_max"), "{err}");
}
