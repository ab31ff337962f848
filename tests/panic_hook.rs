//! The JSON panic hook `init()` installs: one panic, one CRITICAL line in the log schema, and
//! nothing on standard error.
//!
//! A panic hook is process-wide and `init()` is once per process, so every scenario runs in a
//! fresh process: this test binary run again with `MERCENARY_PANIC_SCENARIO` naming the
//! scenario and only the test [`scenario`] selected. The parent asserts on the child's whole
//! standard output (less the one header line of the test harness) and standard error.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mercenary_obs::{Error, Obs, ObsBuilder};
use serde_json::Value;

/// Names the scenario a child runs.
const SCENARIO: &str = "MERCENARY_PANIC_SCENARIO";
/// What the test harness writes on standard output before the scenario runs.
const HARNESS_HEADER: &str = "\nrunning 1 test\n";

// ---------------------------------------------------------------------------------------------
// The child side

/// The child's entry point; without `MERCENARY_PANIC_SCENARIO` (the parent run) it does nothing.
/// The scenario ends the process itself, so the harness writes nothing after it.
#[test]
fn scenario() {
    let Ok(name) = std::env::var(SCENARIO) else {
        return;
    };
    match name.as_str() {
        "threads" => threads(Obs::builder()),
        "chained" => threads(Obs::builder().chain_panic_hook(true)),
        "env-off" => threads(Obs::builder().from_env()),
        "code-wins" => threads(Obs::builder().panic_hook(true).from_env()),
        "request" => request(),
        "backtrace" => backtrace(),
        "foreign-code" => foreign_code(),
        "abort" => abort(),
        #[cfg(feature = "sentry")]
        "sentry" => sentry(),
        other => panic!("no scenario {other}"),
    }
    std::process::exit(0);
}

/// Runs of the hook installed before `init()`.
static PREVIOUS_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Installs a hook that counts its runs, then runs Rust's default hook (text on stderr).
fn count_previous_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PREVIOUS_RUNS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// The builder every child starts from: stdout, as in production.
fn base(builder: ObsBuilder) -> ObsBuilder {
    builder
        .service_name("panic-test")
        .process_metrics(false)
        .shutdown_timeout(Duration::from_secs(5))
}

/// Logs the count of previous-hook runs, then flushes and shuts down.
fn finish(guard: mercenary_obs::ObsGuard) {
    tracing::info!(
        previous_hook_runs = PREVIOUS_RUNS.load(Ordering::SeqCst) as u64,
        "scenario done"
    );
    guard.shutdown().unwrap();
}

/// Three threads panic: a `String` payload on a named thread, a `&str` payload on an unnamed
/// one, and a payload that is neither.
fn threads(builder: ObsBuilder) {
    count_previous_hook();
    let guard = base(builder).init().unwrap();
    let named = std::thread::Builder::new()
        .name("worker-1".into())
        .spawn(|| panic!("boom at line {}", line!()))
        .unwrap();
    assert!(named.join().is_err());
    let unnamed = std::thread::spawn(|| {
        if std::hint::black_box(true) {
            panic!("static payload");
        }
    });
    assert!(unnamed.join().is_err());
    let opaque = std::thread::Builder::new()
        .name("worker-3".into())
        .spawn(|| std::panic::panic_any(42u8))
        .unwrap();
    assert!(opaque.join().is_err());
    finish(guard);
}

/// A handler panics inside its request.
fn request() {
    count_previous_hook();
    let guard = base(Obs::builder()).init().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/panic",
                axum::routing::get(|| async {
                    if std::hint::black_box(true) {
                        panic!("handler boom");
                    }
                    "unreachable"
                }),
            )
            .layer(mercenary_obs::layer());
        let addr = common::serve(app).await;
        let resp = common::get(addr, "/panic", &["x-request-id: panic-req-1"]).await;
        assert_eq!(resp.status, 500);
    });
    drop(rt);
    finish(guard);
}

/// Panics in a named function, so the backtrace can be checked for it.
#[inline(never)]
fn deep_function() {
    if std::hint::black_box(true) {
        panic!("deep boom");
    }
}

/// One panic with backtraces asked for (`RUST_BACKTRACE=1` is set by the parent).
fn backtrace() {
    let guard = base(Obs::builder()).init().unwrap();
    let t = std::thread::Builder::new()
        .name("deep".into())
        .spawn(deep_function)
        .unwrap();
    assert!(t.join().is_err());
    finish(guard);
}

/// A value whose `Debug` panics.
struct PanickingDebug;

impl std::fmt::Debug for PanickingDebug {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("Debug panicked")
    }
}

/// A panic inside the subscriber: an ERROR event in a span whose field's `Debug` panics, while
/// the span context layer holds the span's extensions locked. The hook must neither lock them
/// again (a deadlock) nor panic (an abort without the line). The process then aborts anyway:
/// closing the span while unwinding, tracing-subscriber finds its lock poisoned and panics in a
/// destructor; each of those panics gets its line too.
fn foreign_code() {
    let guard = base(Obs::builder()).init().unwrap();
    let t = std::thread::Builder::new()
        .name("foreign".into())
        .spawn(|| {
            let span = tracing::info_span!("work");
            let _entered = span.enter();
            tracing::error!(value = ?PanickingDebug, "logging a value");
        })
        .unwrap();
    let _ = t.join();
    finish(guard);
}

/// Lines queued just before the panic in [`abort`].
const QUEUED: usize = 200;

/// The process ends the moment the hook returns, as with `panic = "abort"` (the hook installed
/// before `init()`, chained, aborts), while the writer thread still has lines queued.
fn abort() {
    std::panic::set_hook(Box::new(|_| std::process::abort()));
    let _guard = base(Obs::builder()).chain_panic_hook(true).init().unwrap();
    for i in 0..QUEUED {
        tracing::info!(i, "queued before the panic");
    }
    let t = std::thread::Builder::new()
        .name("doomed".into())
        .spawn(|| panic!("last words"))
        .unwrap();
    let _ = t.join();
    unreachable!("the process aborted");
}

/// With a Sentry DSN, `init()` puts the JSON hook over Sentry's: the panic's event still has
/// the panicking thread's stack.
#[cfg(feature = "sentry")]
fn sentry() {
    let transport = sentry::test::TestTransport::new();
    let guard = base(Obs::builder())
        .sentry_dsn("https://public@sentry.invalid/42")
        .sentry_transport(std::sync::Arc::new(transport.clone()))
        .init()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/explode",
                axum::routing::get(|| async {
                    deep_function();
                    "unreachable"
                }),
            )
            .layer(mercenary_obs::layer());
        let addr = common::serve(app).await;
        assert_eq!(common::get(addr, "/explode", &[]).await.status, 500);
    });
    let events = transport.fetch_and_clear_events();
    let frames: Vec<String> = events
        .iter()
        .flat_map(|e| e.exception.values.iter())
        .filter_map(|x| x.stacktrace.as_ref())
        .flat_map(|s| s.frames.iter())
        .filter_map(|f| f.function.clone())
        .collect();
    tracing::info!(
        sentry_events = events.len() as u64,
        innermost_frame = frames.last().map_or("", String::as_str),
        "sentry events"
    );
    finish(guard);
}

// ---------------------------------------------------------------------------------------------
// The parent side

/// What a child wrote.
struct Output {
    status: std::process::ExitStatus,
    /// Standard output, each line parsed as JSON.
    lines: Vec<Value>,
    stderr: String,
}

impl Output {
    fn critical(&self) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l["level"] == "CRITICAL")
            .collect()
    }

    fn done(&self) -> &Value {
        self.lines
            .iter()
            .find(|l| l["message"] == "scenario done")
            .unwrap_or_else(|| panic!("the child finished: {:#?}", self.lines))
    }
}

/// Runs `scenario` in a child with `envs` (no `RUST_BACKTRACE`, `RUST_LIB_BACKTRACE`,
/// `RUST_LOG` or `MERCENARY_OBS_*` of the parent's), bounded by 60 s. Every line of its standard
/// output must be a JSON object in the log schema.
fn run(scenario: &str, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "scenario",
        "--nocapture",
        "--quiet",
        "--test-threads=1",
    ])
    .env(SCENARIO, scenario)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("MERCENARY_OBS_") || k.starts_with("RUST_") && k.contains("BACKTRACE") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "scenario {scenario} hung; stdout so far: {:?}",
                stdout.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap();
    let stderr = stderr.join().unwrap();
    let logs = stdout.strip_prefix(HARNESS_HEADER).unwrap_or_else(|| {
        panic!(
            "scenario {scenario}: the harness header, then log lines: {stdout:?}\nstderr: {stderr}"
        )
    });
    let lines = logs
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "scenario {scenario}: not JSON ({e}): {l:?}\nstdout: {stdout}\nstderr: {stderr}"
                )
            });
            common::assert_schema(&v);
            v
        })
        .collect();
    Output {
        status,
        lines,
        stderr,
    }
}

/// The fields every panic line has.
fn assert_panic_line(line: &Value) {
    assert_eq!(line["level"], "CRITICAL", "{line}");
    assert_eq!(line["target"], mercenary_obs::names::PANIC_TARGET, "{line}");
    assert_eq!(line["message"], "thread panicked", "{line}");
    assert_eq!(line["service"], "panic-test", "{line}");
    assert!(line["exception.message"].is_string(), "{line}");
    assert_eq!(line["code.filepath"], "tests/panic_hook.rs", "{line}");
    assert!(line["code.lineno"].as_u64().unwrap() > 0, "{line}");
    assert!(line["code.column"].as_u64().unwrap() > 0, "{line}");
}

#[test]
fn each_panic_is_one_critical_json_line_and_rusts_text_is_gone() {
    let out = run("threads", &[]);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "", "nothing on standard error");
    let critical = out.critical();
    assert_eq!(critical.len(), 3, "one line per panic: {:#?}", out.lines);
    assert_eq!(out.lines.len(), 4, "and nothing else: {:#?}", out.lines);
    for line in &critical {
        assert_panic_line(line);
        // Outside any span: no IDs.
        for k in ["correlation_id", "trace_id", "span_id"] {
            assert!(line.get(k).is_none(), "{k} in {line}");
        }
        assert!(
            line.get("exception.stacktrace").is_none(),
            "no backtrace unless asked: {line}"
        );
    }
    let named = critical
        .iter()
        .find(|l| l["thread.name"] == "worker-1")
        .expect("the named thread's line");
    assert_eq!(
        named["exception.message"],
        format!("boom at line {}", named["code.lineno"]),
        "the payload, and the panic's own line: {named}"
    );
    let unnamed = critical
        .iter()
        .find(|l| l["exception.message"] == "static payload")
        .expect("the &str payload");
    assert!(
        unnamed.get("thread.name").is_none(),
        "an unnamed thread has no name: {unnamed}"
    );
    let opaque = critical
        .iter()
        .find(|l| l["thread.name"] == "worker-3")
        .unwrap();
    assert_eq!(opaque["exception.message"], "Box<dyn Any>");
    assert_eq!(
        out.done()["previous_hook_runs"],
        0,
        "the hook installed before init() does not run"
    );
}

#[test]
fn chaining_runs_the_previous_hook_too() {
    let out = run("chained", &[]);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.critical().len(), 3);
    assert_eq!(out.done()["previous_hook_runs"], 3);
    // The previous hook ends in Rust's default one: its text, once per panic.
    assert_eq!(
        out.stderr.matches("panicked at").count(),
        3,
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("boom at line"), "{}", out.stderr);
}

#[test]
fn the_environment_turns_the_hook_off_and_code_wins_over_it() {
    let off = [(mercenary_obs::env::MERCENARY_OBS_PANIC_HOOK, "false")];
    let out = run("env-off", &off);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert!(out.critical().is_empty(), "{:#?}", out.lines);
    assert_eq!(out.done()["previous_hook_runs"], 3);
    assert_eq!(out.stderr.matches("panicked at").count(), 3);

    let out = run("code-wins", &off);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.critical().len(), 3);
    assert_eq!(out.done()["previous_hook_runs"], 0);
    assert_eq!(out.stderr, "");
}

#[test]
fn a_bad_environment_value_is_an_error_naming_the_variable() {
    let err = Obs::builder()
        .log_writer(std::io::sink())
        .from_vars([(mercenary_obs::env::MERCENARY_OBS_PANIC_HOOK, "sometimes")])
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidEnv {
                variable: "MERCENARY_OBS_PANIC_HOOK",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("MERCENARY_OBS_PANIC_HOOK"),
        "{err}"
    );
}

#[test]
fn a_handler_panic_gives_the_hook_line_and_the_access_line_of_its_request() {
    let out = run("request", &[]);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "", "nothing on standard error");
    let request: Vec<&Value> = out
        .lines
        .iter()
        .filter(|l| l["correlation_id"] == "panic-req-1")
        .collect();
    assert_eq!(request.len(), 2, "{:#?}", out.lines);
    assert_eq!(
        out.lines.len(),
        3,
        "the request's two lines and the last one: {:#?}",
        out.lines
    );
    let (hook, access) = (request[0], request[1]);
    assert_panic_line(hook);
    assert_eq!(hook["exception.message"], "handler boom");
    assert_eq!(access["message"], "request completed");
    assert_eq!(access["level"], "ERROR");
    assert_eq!(access["error.type"], "panic");
    assert_eq!(access["exception.message"], "handler boom");
    assert!(hook["trace_id"].is_string(), "{hook}");
    assert_eq!(hook["trace_id"], access["trace_id"], "the request's trace");
    assert_eq!(hook["span_id"], access["span_id"], "the request span");
    assert_eq!(out.done()["previous_hook_runs"], 0);
}

#[test]
fn with_rust_backtrace_the_backtrace_is_one_field() {
    let out = run("backtrace", &[("RUST_BACKTRACE", "1")]);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "", "nothing on standard error");
    assert_eq!(out.lines.len(), 2, "{:#?}", out.lines);
    let line = out.critical()[0];
    assert_panic_line(line);
    assert_eq!(line["exception.message"], "deep boom");
    let stack = line["exception.stacktrace"]
        .as_str()
        .unwrap_or_else(|| panic!("a stacktrace string: {line}"));
    assert!(stack.lines().count() > 2, "several frames: {stack}");
    let first = stack.lines().next().unwrap();
    assert!(
        first.contains("deep_function"),
        "the panicking function first, not the panic machinery: {stack}"
    );
}

#[test]
fn a_panic_inside_the_subscriber_neither_hangs_nor_loses_its_line() {
    let out = run("foreign-code", &[]);
    let line = out
        .critical()
        .into_iter()
        .find(|l| l["exception.message"] == "Debug panicked")
        .unwrap_or_else(|| {
            panic!(
                "the panic's line ({}): {:#?}\n{}",
                out.status, out.lines, out.stderr
            )
        });
    assert_panic_line(line);
    assert_eq!(line["thread.name"], "foreign");
}

#[test]
fn a_panic_that_ends_the_process_at_once_still_leaves_its_line() {
    let out = run("abort", &[]);
    assert!(!out.status.success(), "the child aborted");
    assert_eq!(out.stderr, "", "nothing on standard error");
    // The hook waited for its line, and so for every line queued before it.
    assert_eq!(out.lines.len(), QUEUED + 1, "{:#?}", out.lines.last());
    let line = out.critical().first().copied().expect("the panic's line");
    assert_panic_line(line);
    assert_eq!(line["exception.message"], "last words");
}

#[cfg(feature = "sentry")]
#[test]
fn sentry_still_gets_the_panicking_stack() {
    let out = run("sentry", &[]);
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    assert_eq!(out.stderr, "", "nothing on standard error");
    assert_eq!(out.critical().len(), 1, "{:#?}", out.lines);
    let sentry = out
        .lines
        .iter()
        .find(|l| l["message"] == "sentry events")
        .unwrap();
    assert_eq!(sentry["sentry_events"], 1, "{sentry}");
    let innermost = sentry["innermost_frame"].as_str().unwrap();
    assert!(
        innermost.contains("deep_function"),
        "the event's stack ends in the panicking function: {sentry}"
    );
}
