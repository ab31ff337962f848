//! Structured logs: the JSON formatter, the non-blocking writer, redaction and escaping.

pub(crate) mod context;
pub(crate) mod entries;
pub(crate) mod escape;
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
}

/// The running log pipeline of one instance.
pub(crate) struct LogPipeline {
    pub(crate) writer: LineWriter,
    pub(crate) dispatch: Dispatch,
    pub(crate) settings: Arc<RenderSettings>,
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
    let context = ContextLayer {
        settings: settings.clone(),
        sampler,
    };
    let filter = ObsFilter { env: config.filter };
    let dispatch = match config.format {
        LogFormat::Json => {
            let json = JsonLayer::new(settings.clone(), &config.service, writer.clone());
            Dispatch::new(
                tracing_subscriber::registry()
                    .with(filter)
                    .with(context)
                    .with(json),
            )
        }
        LogFormat::Pretty => {
            let fmt = tracing_subscriber::fmt::layer()
                .with_ansi(config.sink_is_terminal)
                .fmt_fields(pretty::PrettyFields {
                    settings: settings.clone(),
                })
                .with_writer(pretty::PrettySinkMaker(writer.clone()));
            Dispatch::new(
                tracing_subscriber::registry()
                    .with(filter)
                    .with(context)
                    .with(fmt),
            )
        }
    };
    Ok(LogPipeline {
        writer,
        dispatch,
        settings,
    })
}
