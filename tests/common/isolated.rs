//! Tests that need a process of their own (they install the global instance with `init()`),
//! run in a child process of their test binary.
//!
//! `init()` is once per process, so tests sharing a process share one global instance and its
//! queues: under `cargo test` (the tests of a binary are threads of one process) one test's
//! traffic can fill a queue another test waits on, while under nextest (a process per test) it
//! cannot. [`run`] gives every such test a process of its own under both runners, and keeps it
//! so whatever binary the test ends up in: the test runs this very executable again with
//! `--exact <its own name>`, and only the child, told by an environment variable, runs the
//! body. The parent fails with the child's output when the child fails, hangs, or did not run
//! exactly that one test.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child to the harness name of the test it is to run.
const CHILD: &str = "MERCENARY_OBS_ISOLATED_TEST";

/// How long a child may run.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `body` in a child process of this test binary. `module` is the caller's
/// `module_path!()` and `test` the name of the `#[test]` function calling `run`, so the child
/// runs that test alone, and `body` there.
pub fn run(module: &str, test: &str, body: impl FnOnce()) {
    let name = harness_name(module, test);
    if std::env::var(CHILD).as_deref() == Ok(name.as_str()) {
        body();
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let report = format!("--- the child's stdout:\n{stdout}\n--- its stderr:\n{stderr}");
    let Some(status) = status else {
        panic!("{name} did not finish within {TIMEOUT:?} in its own process\n{report}");
    };
    assert!(
        status.success(),
        "{name} failed in its own process ({status})\n{report}"
    );
    assert!(
        stdout.contains(&format!("test {name} ..."))
            && stdout.contains("test result: ok. 1 passed;"),
        "the child ran {name}, and only it\n{report}"
    );
}

/// The name the test harness knows a test by: its module path without the crate's name.
fn harness_name(module: &str, test: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    }
}
