//! The JSON panic hook `init()` installs: a panic becomes one CRITICAL line in the log schema,
//! written through the instance's writer, instead of Rust's multi-line text on standard error.
//!
//! `{"timestamp":…,"level":"CRITICAL","target":"mercenary_obs::panic","message":"thread panicked",
//! "service":…,"correlation_id":…,"trace_id":…,"span_id":…,"exception.message":…,
//! "code.filepath":…,"code.lineno":…,"code.column":…,"thread.name":…,"exception.stacktrace":…}`
//!
//! The IDs are those of the current span (inside a request: the request's), left out elsewhere;
//! `thread.name` is left out for unnamed threads; `exception.stacktrace` is there only when
//! `RUST_BACKTRACE` / `RUST_LIB_BACKTRACE` ask for backtraces (the panic machinery's frames cut
//! from its top), one string however many frames.
//!
//! A panic inside a panic hook aborts the process, so nothing here may panic: no `RefCell`
//! borrows, thread-locals only through `try_with`, the writer's lock only tried, span
//! extensions not read when this thread may hold them locked (see
//! [`ForeignCode`](crate::context::current::ForeignCode)). And nothing blocks for long: the line
//! is pushed to the writer thread, and the hook waits for it to be written at most
//! [`HOOK_WAIT`] (the instance's shutdown timeout with `panic = "abort"`, where the process
//! ends right after the hook), so a panic that ends the process still leaves its line.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::fmt::Write as _;
use std::panic::PanicHookInfo;
use std::time::Duration;

use super::writer::LineWriter;
use crate::context::current::panic_ids;
use crate::core::escape::{JsonStr, push_hex, push_json_str, push_u64};
use crate::core::names::PANIC_TARGET;
use crate::core::time::push_now;

/// How long the hook waits for its line to be written (with `panic = "unwind"`).
pub(crate) const HOOK_WAIT: Duration = Duration::from_millis(100);

/// What a payload that is neither `&str` nor `String` is written as (Rust's own placeholder).
const OPAQUE_PAYLOAD: &str = "Box<dyn Any>";

/// The functions of the panic machinery (and of this hook) that head a captured backtrace.
const MACHINERY: &[&str] = &[
    "std::backtrace::",
    "std::backtrace_rs::",
    "mercenary_obs::logging::panic::",
    "std::panicking::",
    "core::panicking::",
    "std::sys::backtrace::__rust_end_short_backtrace",
    "rust_begin_unwind",
    "__rustc::rust_begin_unwind",
];

/// What the hook writes with: the instance's writer and rendering settings.
pub(crate) struct PanicLines {
    pub(crate) writer: LineWriter,
    /// `,"service":"…"`
    pub(crate) service_json: String,
    pub(crate) value_cap: usize,
    /// How long the hook waits for its line to be written.
    pub(crate) wait: Duration,
}

impl PanicLines {
    /// Renders the panic's line and writes it, waiting at most `self.wait`.
    fn write(&self, info: &PanicHookInfo<'_>) {
        let mut line = String::with_capacity(512);
        self.render(info, &mut line);
        self.writer.push_from_hook(line.as_bytes(), self.wait);
    }

    fn render(&self, info: &PanicHookInfo<'_>, line: &mut String) {
        let cap = self.value_cap;
        line.push_str("{\"timestamp\":\"");
        push_now(line);
        line.push_str("\",\"level\":\"CRITICAL\",\"target\":");
        push_json_str(line, PANIC_TARGET, cap);
        line.push_str(",\"message\":\"thread panicked\"");
        line.push_str(&self.service_json);
        if let Some((correlation_id, trace_id, span_id)) = panic_ids() {
            if let Some(cid) = correlation_id {
                line.push_str(",\"correlation_id\":");
                push_json_str(line, &cid, cap);
            }
            line.push_str(",\"trace_id\":\"");
            push_hex(line, &trace_id.to_be_bytes());
            line.push_str("\",\"span_id\":\"");
            push_hex(line, &span_id.to_be_bytes());
            line.push('"');
        }
        line.push_str(",\"exception.message\":");
        push_json_str(line, payload_text(info), cap);
        if let Some(location) = info.location() {
            line.push_str(",\"code.filepath\":");
            push_json_str(line, location.file(), cap);
            line.push_str(",\"code.lineno\":");
            push_u64(line, u64::from(location.line()));
            line.push_str(",\"code.column\":");
            push_u64(line, u64::from(location.column()));
        }
        if let Some(name) = std::thread::current().name() {
            line.push_str(",\"thread.name\":");
            push_json_str(line, name, cap);
        }
        let backtrace = Backtrace::capture();
        if backtrace.status() == BacktraceStatus::Captured {
            let mut text = String::new();
            let _ = write!(text, "{backtrace}");
            line.push_str(",\"exception.stacktrace\":\"");
            let mut w = JsonStr::new(line, cap);
            let _ = w.write_str(trim_machinery(&text));
            w.finish();
            line.push('"');
        }
        line.push_str("}\n");
    }
}

/// The payload as text: a `&str` or `String` (what `panic!` makes), else a placeholder.
fn payload_text<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
    let payload = info.payload();
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        OPAQUE_PAYLOAD
    }
}

/// Installs the hook. `chain`: the hook installed before runs after ours (else it is dropped,
/// Rust's default hook among them). `also` runs on every panic when the previous hook does not
/// (the Sentry integration's stack recorder, when its hook is that previous hook).
pub(crate) fn install(lines: PanicLines, chain: bool, also: Option<fn()>) {
    let previous = std::panic::take_hook();
    let previous = chain.then_some(previous);
    let also = if chain { None } else { also };
    std::panic::set_hook(Box::new(move |info| {
        lines.write(info);
        if let Some(also) = also {
            also();
        }
        if let Some(previous) = &previous {
            previous(info);
        }
    }));
}

/// `text` (a backtrace as `std` displays it: `  N: function` lines, each followed by its
/// `at file:line` lines) without the frames of the panic machinery at its top.
fn trim_machinery(text: &str) -> &str {
    let mut seen_machinery = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let Some(function) = frame_function(line) else {
            continue;
        };
        // The boxed hook's call shim too (`<alloc::boxed::Box<dyn … Fn<(&PanicHookInfo,)> …>::call`).
        let hook_shim =
            function.starts_with("<alloc::boxed::Box<") && function.contains("PanicHookInfo");
        if hook_shim || MACHINERY.iter().any(|m| function.starts_with(m)) {
            seen_machinery = true;
        } else if seen_machinery {
            return text.get(start..).unwrap_or(text);
        } else {
            break;
        }
    }
    // Nothing to cut, or nothing but machinery: all of it rather than nothing.
    text
}

/// The function of a frame's first line (`  12: my_app::handler`), else `None`.
fn frame_function(line: &str) -> Option<&str> {
    let (number, function) = line.trim_start().split_once(": ")?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then(|| function.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machinery_is_cut_from_the_top_only() {
        let text = "   0: std::backtrace::Backtrace::capture\n             at /rustc/x/std/src/backtrace.rs:1:1\n   1: mercenary_obs::logging::panic::install::{{closure}}\n   2: <alloc::boxed::Box<dyn for<'a, 'b> core::ops::function::Fn<(&'a std::panic::PanicHookInfo<'b>,), Output = ()>> as core::ops::function::Fn<(&std::panic::PanicHookInfo,)>>::call\n   2: std::panicking::panic_with_hook\n   3: core::panicking::panic_fmt\n             at /rustc/x/core/src/panicking.rs:75:14\n   4: my_app::handler\n             at ./src/main.rs:3:5\n   5: std::panicking::catch_unwind\n   6: main\n";
        assert_eq!(
            trim_machinery(text),
            "   4: my_app::handler\n             at ./src/main.rs:3:5\n   5: std::panicking::catch_unwind\n   6: main\n"
        );
        // Nothing recognisable at the top: everything stays.
        let text = "   0: my_app::handler\n   1: std::panicking::catch_unwind\n";
        assert_eq!(trim_machinery(text), text);
        assert_eq!(trim_machinery(""), "");
        assert_eq!(
            trim_machinery("   0: std::panicking::x\n"),
            "   0: std::panicking::x\n"
        );
    }
}
