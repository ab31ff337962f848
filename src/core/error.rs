//! The crate's one error type: bad configuration, named.

use std::fmt;

/// What can go wrong when building or installing an instance.
///
/// Every variant names the setting or environment variable at fault and says what is allowed.
/// Nothing on the request path returns this type: at run time the crate counts and logs its
/// trouble instead.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An environment variable holds a value that does not parse.
    InvalidEnv {
        /// The variable, for example `MERCENARY_OBS_LOG_FORMAT`.
        variable: &'static str,
        /// The value found (cut to 200 bytes in the message).
        value: String,
        /// What the variable accepts.
        expected: String,
    },
    /// A builder setting was given a value that is not allowed.
    InvalidSetting {
        /// The setting, for example `ObsBuilder::duration_buckets`.
        setting: &'static str,
        /// The value given, as text.
        value: String,
        /// What the setting accepts.
        expected: String,
    },
    /// A metric could not be registered, usually because a user-supplied registry already has a
    /// metric of that name.
    MetricRegistration {
        /// The metric's name.
        metric: String,
        /// The registry's reason.
        reason: String,
    },
    /// `init()` was called while an instance was already installed globally.
    AlreadyInitialized,
    /// A global `tracing` subscriber was already installed by something else.
    GlobalSubscriberAlreadySet,
    /// The log writer thread could not be started.
    WriterThread(std::io::Error),
    /// `ObsGuard::shutdown` could not flush everything within the shutdown timeout.
    ShutdownTimedOut {
        /// The timeout that passed.
        timeout: std::time::Duration,
    },
}

fn cut(value: &str) -> String {
    let mut end = value.len().min(200);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let shown: String = value[..end].escape_debug().collect();
    if end < value.len() {
        format!("{shown}…")
    } else {
        shown
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidEnv {
                variable,
                value,
                expected,
            } => write!(
                f,
                "environment variable {variable} has an invalid value \"{}\": expected {expected}",
                cut(value)
            ),
            Error::InvalidSetting {
                setting,
                value,
                expected,
            } => {
                write!(
                    f,
                    "{setting} has an invalid value \"{}\": expected {expected}",
                    cut(value)
                )
            }
            Error::MetricRegistration { metric, reason } => {
                write!(f, "metric {metric} could not be registered: {reason}")
            }
            Error::AlreadyInitialized => f.write_str(
                "mercenary_obs is already initialized: init() may be called once per process \
                 (use build() for more instances)",
            ),
            Error::GlobalSubscriberAlreadySet => f.write_str(
                "a global tracing subscriber is already installed: call init() before any other \
                 subscriber is set, or use build() and install obs.dispatch() yourself",
            ),
            Error::WriterThread(e) => write!(f, "could not start the log writer thread: {e}"),
            Error::ShutdownTimedOut { timeout } => {
                write!(f, "shutdown did not finish flushing within {timeout:?}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::WriterThread(e) => Some(e),
            _ => None,
        }
    }
}
