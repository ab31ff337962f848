//! Log settings: format, filter, sinks, queue and value bounds, redaction, the panic hook; from
//! code and from `MERCENARY_OBS_LOG_FORMAT`, `RUST_LOG` and `MERCENARY_OBS_PANIC_HOOK`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::core::env::{self, EnvVars, Setting};
use crate::core::error::Error;
use crate::core::redact::DEFAULT_SENSITIVE;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line. The default.
    #[default]
    Json,
    /// tracing-subscriber's human-readable format, with ANSI colours when writing to a terminal.
    Pretty,
}

/// Log settings as given (`ObsBuilder`'s log setters) and read from the environment.
#[derive(Default)]
pub(crate) struct LogOptions {
    pub(crate) format: Setting<LogFormat>,
    pub(crate) filter: Setting<String>,
    pub(crate) writer: Option<Box<dyn Write + Send>>,
    pub(crate) audit_writer: Option<Box<dyn Write + Send>>,
    pub(crate) queue_bytes: Option<usize>,
    pub(crate) value_max_bytes: Option<usize>,
    pub(crate) redact_fields: Option<Vec<String>>,
    pub(crate) audit_max_wait: Setting<Duration>,
    pub(crate) audit_fallback_writer: Option<Box<dyn Write + Send>>,
    pub(crate) audit_fallback_file: Setting<PathBuf>,
    pub(crate) panic_hook: Setting<bool>,
    pub(crate) chain_panic_hook: Option<bool>,
}

/// How long an audit line waits for a stalled sink by default.
pub(crate) const DEFAULT_AUDIT_MAX_WAIT: Duration = Duration::from_secs(2);

/// Where audit lines go.
pub(crate) enum AuditSink {
    /// The application log writer (both on standard output).
    SameAsLogs,
    /// A writer of their own.
    Own(Box<dyn Write + Send>),
}

/// Validated log settings.
pub(crate) struct LogConfig {
    pub(crate) format: LogFormat,
    pub(crate) filter: EnvFilter,
    /// Whether the filter has span directives (`target[span{field=value}]=level`), the only
    /// ones that need to follow spans as they are entered and closed.
    pub(crate) span_directives: bool,
    pub(crate) sink: Box<dyn Write + Send>,
    pub(crate) sink_is_terminal: bool,
    pub(crate) audit_sink: AuditSink,
    pub(crate) queue_bytes: usize,
    pub(crate) value_cap: usize,
    pub(crate) redact: Vec<String>,
    pub(crate) audit_max_wait: Duration,
    /// Where audit lines go when their sink is stalled, and its name for the CRITICAL line.
    pub(crate) audit_fallback: (Box<dyn Write + Send>, String),
    /// Whether `init()` installs the JSON panic hook.
    pub(crate) panic_hook: bool,
    /// Whether that hook runs the one installed before it too.
    pub(crate) chain_panic_hook: bool,
}

impl LogOptions {
    /// Reads `MERCENARY_OBS_LOG_FORMAT`, `RUST_LOG` and `MERCENARY_OBS_PANIC_HOOK`.
    pub(crate) fn read_env(&mut self, vars: &mut EnvVars) {
        let format = vars.parse(
            env::MERCENARY_OBS_LOG_FORMAT,
            "`json` or `pretty`",
            |v| match v.to_ascii_lowercase().as_str() {
                "json" => Some(LogFormat::Json),
                "pretty" => Some(LogFormat::Pretty),
                _ => None,
            },
        );
        self.format.set_env(format);
        let wait = vars.parse(
            env::MERCENARY_OBS_AUDIT_MAX_WAIT_MS,
            "a number of milliseconds (0: divert at once)",
            |v| v.parse::<u64>().ok().map(Duration::from_millis),
        );
        self.audit_max_wait.set_env(wait);
        let file = vars
            .get(env::MERCENARY_OBS_AUDIT_FALLBACK_FILE)
            .map(PathBuf::from);
        self.audit_fallback_file.set_env(file);
        if let Some(filter) = vars.get(env::RUST_LOG) {
            self.filter.env = Some(filter.to_string());
        }
        let panic_hook = vars.parse(
            env::MERCENARY_OBS_PANIC_HOOK,
            "`true` or `false`",
            |v| match v.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        );
        self.panic_hook.set_env(panic_hook);
    }

    /// Validates the settings and opens the default sink (standard output) when none was given.
    pub(crate) fn resolve(&mut self) -> Result<LogConfig, Error> {
        let (filter_text, from_code) = self.filter.take().unwrap_or_else(|| ("info".into(), false));
        let span_directives = filter_text.contains('[');
        let filter = EnvFilter::builder().parse(&filter_text).map_err(|e| {
            if from_code {
                Error::InvalidSetting {
                    setting: "ObsBuilder::log_filter",
                    value: filter_text.clone(),
                    expected: format!("RUST_LOG directives such as `info,my_crate=debug` ({e})"),
                }
            } else {
                Error::InvalidEnv {
                    variable: env::RUST_LOG,
                    value: filter_text.clone(),
                    expected: format!("directives such as `info,my_crate=debug` ({e})"),
                }
            }
        })?;
        let queue_bytes = self.queue_bytes.unwrap_or(8 << 20);
        if queue_bytes < 1024 {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::log_queue_bytes",
                value: queue_bytes.to_string(),
                expected: "at least 1024 bytes".into(),
            });
        }
        let value_cap = self.value_max_bytes.unwrap_or(8192);
        if value_cap < 16 {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::log_value_max_bytes",
                value: value_cap.to_string(),
                expected: "at least 16 bytes".into(),
            });
        }
        let audit_sink = match (self.audit_writer.take(), self.writer.is_some()) {
            (Some(w), _) => AuditSink::Own(w),
            (None, true) => AuditSink::Own(Box::new(std::io::stdout())),
            (None, false) => AuditSink::SameAsLogs,
        };
        let (sink, sink_is_terminal) = match self.writer.take() {
            Some(w) => (w, false),
            None => (
                Box::new(std::io::stdout()) as Box<dyn Write + Send>,
                std::io::stdout().is_terminal(),
            ),
        };
        let audit_max_wait = self.audit_max_wait.or(DEFAULT_AUDIT_MAX_WAIT);
        if audit_max_wait > Duration::from_secs(60) {
            return Err(Error::InvalidSetting {
                setting: "ObsBuilder::audit_max_wait / MERCENARY_OBS_AUDIT_MAX_WAIT_MS",
                value: format!("{audit_max_wait:?}"),
                expected: "at most 60 s: a request waits this long for a stalled audit sink".into(),
            });
        }
        let audit_fallback = match (
            self.audit_fallback_writer.take(),
            self.audit_fallback_file.take(),
        ) {
            (Some(w), _) => (w, "the configured fallback writer".to_string()),
            (None, Some((path, from_code))) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        let value = path.display().to_string();
                        let expected = format!("a file that can be appended to ({e})");
                        if from_code {
                            Error::InvalidSetting {
                                setting: "ObsBuilder::audit_fallback_file",
                                value,
                                expected,
                            }
                        } else {
                            Error::InvalidEnv {
                                variable: env::MERCENARY_OBS_AUDIT_FALLBACK_FILE,
                                value,
                                expected,
                            }
                        }
                    })?;
                let name = path.display().to_string();
                (Box::new(file) as Box<dyn Write + Send>, name)
            }
            (None, None) => (
                Box::new(std::io::stderr()) as Box<dyn Write + Send>,
                "standard error".to_string(),
            ),
        };
        Ok(LogConfig {
            audit_max_wait,
            audit_fallback,
            format: self.format.or(LogFormat::Json),
            filter,
            span_directives,
            sink,
            sink_is_terminal,
            audit_sink,
            queue_bytes,
            value_cap,
            redact: self
                .redact_fields
                .take()
                .unwrap_or_else(|| DEFAULT_SENSITIVE.iter().map(|s| s.to_string()).collect()),
            panic_hook: self.panic_hook.or(true),
            chain_panic_hook: self.chain_panic_hook.unwrap_or(false),
        })
    }
}
