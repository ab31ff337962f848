//! Structured logs: the JSON formatter, the non-blocking writer, redaction and escaping.

pub(crate) mod context;
pub(crate) mod entries;
pub(crate) mod escape;
pub(crate) mod events;
pub(crate) mod filter;
pub(crate) mod json;
pub(crate) mod pretty;
pub(crate) mod redact;
pub(crate) mod time;
pub(crate) mod writer;

use std::io::Write;
use std::sync::Arc;

use tracing_core::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

use self::context::{ContextLayer, RenderSettings};
use self::filter::ObsFilter;
use self::json::JsonLayer;
use self::redact::Redactor;
use self::writer::LineWriter;

pub use self::redact::DEFAULT_SENSITIVE;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// One JSON object per line (DESIGN §6). The default.
    #[default]
    Json,
    /// tracing-subscriber's human-readable format, with ANSI colours when writing to a terminal.
    Pretty,
}

/// What the log pipeline is built from.
pub(crate) struct LogConfig {
    pub(crate) format: LogFormat,
    pub(crate) filter: EnvFilter,
    pub(crate) sink: Box<dyn Write + Send>,
    pub(crate) sink_is_terminal: bool,
    pub(crate) queue_bytes: usize,
    pub(crate) value_cap: usize,
    pub(crate) redact: Vec<String>,
    pub(crate) service: String,
    pub(crate) audit_sink: crate::builder::AuditSink,
    /// Where `audit_events_total` and `security_events_total` are counted.
    pub(crate) business: Arc<crate::metrics::business::BusinessMetrics>,
    /// Whether to add the Sentry layer (events and breadcrumbs).
    #[cfg(feature = "sentry")]
    pub(crate) sentry: bool,
}

/// The running log pipeline of one instance.
pub(crate) struct LogPipeline {
    pub(crate) writer: LineWriter,
    /// The audit sink's own writer, when it is not `writer`.
    pub(crate) audit: Option<LineWriter>,
    pub(crate) dispatch: Dispatch,
    pub(crate) settings: Arc<RenderSettings>,
}

impl LogPipeline {
    /// Waits until every line so far (application and audit) is written.
    pub(crate) fn flush(&self, timeout: std::time::Duration) -> bool {
        let logs = self.writer.flush(timeout);
        self.audit.as_ref().is_none_or(|a| a.flush(timeout)) && logs
    }

    /// Writes what is queued and stops the writer threads.
    pub(crate) fn shutdown(&self, timeout: std::time::Duration) -> bool {
        let audit = self.audit.as_ref().is_none_or(|a| a.shutdown(timeout));
        self.writer.shutdown(timeout) && audit
    }
}

pub(crate) fn start(
    config: LogConfig,
    on_drop: Box<dyn Fn() + Send + Sync>,
    sampler: Option<Arc<crate::tracing::sampler::TailSampler>>,
) -> std::io::Result<LogPipeline> {
    let settings = Arc::new(RenderSettings {
        redactor: Redactor::new(&config.redact),
        value_cap: config.value_cap,
        json: config.format == LogFormat::Json,
    });
    let writer = LineWriter::spawn(config.sink, config.queue_bytes, on_drop)?;
    let own_audit = match config.audit_sink {
        crate::builder::AuditSink::SameAsLogs => None,
        // Audit lines never drop (they wait for room), so `on_drop` is never called.
        crate::builder::AuditSink::Own(sink) => Some(LineWriter::spawn(
            sink,
            config.queue_bytes,
            Box::new(|| {}),
        )?),
    };
    let audit = own_audit.clone().unwrap_or_else(|| writer.clone());
    let events = events::EventsLayer::new(&config.business);
    let context = ContextLayer {
        settings: settings.clone(),
        sampler,
    };
    let filter = ObsFilter { env: config.filter };
    #[cfg(feature = "sentry")]
    let sentry = || config.sentry.then(crate::sentry::events_layer);
    #[cfg(not(feature = "sentry"))]
    let sentry = tracing_subscriber::layer::Identity::new;
    let dispatch = match config.format {
        LogFormat::Json => {
            let json = JsonLayer::new(
                settings.clone(),
                &config.service,
                writer.clone(),
                audit,
                false,
            );
            Dispatch::new(
                tracing_subscriber::registry()
                    .with(filter)
                    .with(context)
                    .with(events)
                    .with(json)
                    .with(sentry()),
            )
        }
        LogFormat::Pretty => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_ansi(config.sink_is_terminal)
                .fmt_fields(pretty::PrettyFields {
                    settings: settings.clone(),
                })
                .with_writer(pretty::PrettySinkMaker(writer.clone()))
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target() != events::AUDIT_TARGET
                }));
            // Audit lines stay JSON whatever the application format.
            let audit_json = JsonLayer::new(
                settings.clone(),
                &config.service,
                writer.clone(),
                audit,
                true,
            );
            Dispatch::new(
                tracing_subscriber::registry()
                    .with(filter)
                    .with(context)
                    .with(events)
                    .with(audit_json)
                    .with(fmt)
                    .with(sentry()),
            )
        }
    };
    Ok(LogPipeline {
        writer,
        audit: own_audit,
        dispatch,
        settings,
    })
}
