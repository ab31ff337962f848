//! The chained panic hook that records the panicking thread's stack, only while that thread is
//! polling a request of an instance with Sentry on (see [`RequestSentry::run`]), and the trimming
//! of the panic machinery's frames from that stack.
//!
//! [`RequestSentry::run`]: super::RequestSentry::run

use std::cell::{Cell, RefCell};
use std::sync::Once;

use ::sentry::protocol::{Frame, Stacktrace};

thread_local! {
    /// Whether this thread is polling a request of an instance with Sentry on.
    pub(super) static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The stack of the last panic on this thread while armed.
    pub(super) static PANIC_STACK: RefCell<Option<Stacktrace>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

pub(super) fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            record_panic_stack();
            previous(info);
        }));
    });
}

/// What the hook does before running the previous one: records the panicking thread's stack
/// when it is polling a request of an instance with Sentry on.
fn record_panic_stack() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        let stack = ::sentry::integrations::backtrace::current_stacktrace().map(trim_panic_frames);
        let _ = PANIC_STACK.try_with(|slot| {
            if let Ok(mut slot) = slot.try_borrow_mut() {
                *slot = stack;
            }
        });
    }
}

/// The stack recorder, when this module's hook is installed: a hook installed after it that
/// does not run it (the JSON panic hook, unless chained) runs this instead.
pub(crate) fn panic_stack_recorder() -> Option<fn()> {
    PANIC_HOOK
        .is_completed()
        .then_some(record_panic_stack as fn())
}

/// Removes the frames of the panic machinery (and of this hook) from the top of the stack.
fn trim_panic_frames(mut stack: Stacktrace) -> Stacktrace {
    // Frames are outermost first: the machinery is at the end.
    let is_machinery = |f: &Frame| {
        f.function.as_deref().is_some_and(|name| {
            [
                "core::panicking::",
                "std::panicking::begin_panic",
                "std::panicking::panic_",
                "std::panicking::rust_panic",
                "rust_begin_unwind",
                "__rustc::rust_begin_unwind",
                "std::sys::backtrace::__rust_end_short_backtrace",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        })
    };
    if let Some(first) = stack.frames.iter().position(is_machinery) {
        stack.frames.truncate(first);
    }
    stack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_machinery_is_trimmed() {
        let frame = |f: &str| Frame {
            function: Some(f.into()),
            ..Default::default()
        };
        let stack = Stacktrace {
            frames: vec![
                frame("main"),
                frame("app::handler"),
                frame("std::panicking::begin_panic"),
                frame("mercenary_obs::sentry::panic::install_panic_hook"),
            ],
            ..Default::default()
        };
        let trimmed = trim_panic_frames(stack);
        assert_eq!(trimmed.frames.len(), 2);
    }
}
