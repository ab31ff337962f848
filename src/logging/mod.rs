//! Structured logs: the JSON formatter, the pretty format, the non-blocking writers, the
//! `RUST_LOG` filter with its exceptions, the counting of audit and security events, and the
//! JSON panic hook.
//!
//! [`start`] spawns the writer threads and returns a [`LogPipeline`], whose methods make the
//! `tracing` layers; the composition root stacks them with the span context layer (and Sentry's)
//! into the instance's subscriber.

pub(crate) mod access;
pub(crate) mod audit;
pub(crate) mod events;
pub(crate) mod filter;
pub(crate) mod json;
pub(crate) mod options;
pub(crate) mod panic;
pub(crate) mod pretty;
pub(crate) mod writer;

use std::sync::Arc;
use std::time::Duration;

use tracing_core::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

pub use self::options::LogFormat;

use self::audit::AuditFallback;
use self::filter::ObsFilter;
use self::json::JsonLayer;
use self::options::{AuditSink, LogConfig};
use self::writer::LineWriter;
use crate::core::names::AUDIT_TARGET;
use crate::core::redact::Redactor;
use crate::core::render::RenderSettings;

/// The fallback's queue (audit lines only, so small).
const FALLBACK_QUEUE: usize = 1 << 20;

/// The running log pipeline of one instance: its writer threads and rendering settings.
pub(crate) struct LogPipeline {
    pub(crate) writer: LineWriter,
    /// The audit sink's own writer, when it is not `writer`.
    pub(crate) audit: Option<LineWriter>,
    /// Where audit lines go when their sink is stalled.
    pub(crate) audit_fallback: Arc<AuditFallback>,
    audit_max_wait: Duration,
    pub(crate) settings: Arc<RenderSettings>,
    pub(crate) format: LogFormat,
    sink_is_terminal: bool,
    /// Whether `RUST_LOG` has span directives (filtering then depends on the entered spans).
    span_directives: bool,
    service: String,
    /// `Some(chain)` when `init()` is to install the panic hook.
    panic_hook: Option<bool>,
}

/// The counters of audit lines that missed their sink:
/// `mercenary_obs_audit_lines_failed_total{outcome="diverted"|"lost"}`.
pub(crate) struct AuditCounters {
    pub(crate) diverted: prometheus::IntCounter,
    pub(crate) lost: prometheus::IntCounter,
}

/// Spawns the writer threads. `on_drop` is called for each application line dropped on a full
/// queue. Returns the pipeline and the `RUST_LOG` filter layer.
pub(crate) fn start(
    config: LogConfig,
    service: &str,
    on_drop: Box<dyn Fn() + Send + Sync>,
    audit_counters: AuditCounters,
) -> std::io::Result<(LogPipeline, ObsFilter)> {
    let settings = Arc::new(RenderSettings {
        redactor: Redactor::new(&config.redact),
        value_cap: config.value_cap,
        json: config.format == LogFormat::Json,
    });
    let writer = LineWriter::spawn(config.sink, config.queue_bytes, on_drop)?;
    let audit = match config.audit_sink {
        AuditSink::SameAsLogs => None,
        // Audit lines never drop (they wait, then go to the fallback): `on_drop` is not called.
        AuditSink::Own(sink) => Some(LineWriter::spawn(
            sink,
            config.queue_bytes,
            Box::new(|| {}),
        )?),
    };
    let (fallback_sink, fallback_name) = config.audit_fallback;
    let lost = audit_counters.lost;
    let fallback = LineWriter::spawn(fallback_sink, FALLBACK_QUEUE, Box::new(move || lost.inc()))?;
    let audit_fallback = Arc::new(AuditFallback::new(
        fallback,
        fallback_name,
        service,
        audit_counters.diverted,
    ));
    let pipeline = LogPipeline {
        writer,
        audit,
        audit_fallback,
        audit_max_wait: config.audit_max_wait,
        settings,
        format: config.format,
        sink_is_terminal: config.sink_is_terminal,
        span_directives: config.span_directives,
        service: service.to_string(),
        panic_hook: config.panic_hook.then_some(config.chain_panic_hook),
    };
    Ok((
        pipeline,
        ObsFilter {
            env: config.filter,
            span_directives: config.span_directives,
        },
    ))
}

impl LogPipeline {
    /// The JSON formatter; with `audit_only`, it writes audit lines only (for `pretty` mode,
    /// where audit lines stay JSON).
    pub(crate) fn json_layer(&self, audit_only: bool) -> JsonLayer {
        let audit = self.audit.clone().unwrap_or_else(|| self.writer.clone());
        JsonLayer::new(
            self.settings.clone(),
            &self.service,
            self.writer.clone(),
            json::AuditOut {
                writer: audit,
                max_wait: self.audit_max_wait,
                fallback: self.audit_fallback.clone(),
            },
            audit_only,
        )
    }

    /// The writer of INFO access lines, when lines are JSON and the filter does not depend on
    /// the entered spans (see [`access`]).
    pub(crate) fn access_lines(&self) -> Option<access::AccessLines> {
        self.access_lines_enabled().then(|| {
            access::AccessLines::new(self.settings.clone(), &self.service, self.writer.clone())
        })
    }

    /// Whether nothing in the instance's subscriber but the span context layer and the JSON
    /// formatter reads what spans and access events carry: JSON lines, and no span directives
    /// in the filter (whose answer depends on the entered spans and their fields).
    pub(crate) fn access_lines_enabled(&self) -> bool {
        self.format == LogFormat::Json && !self.span_directives
    }

    /// The human-readable formatter (`pretty` mode), without audit lines.
    pub(crate) fn pretty_layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_subscriber::fmt::layer()
            .with_ansi(self.sink_is_terminal)
            .fmt_fields(pretty::PrettyFields {
                settings: self.settings.clone(),
            })
            .with_writer(pretty::PrettySinkMaker(self.writer.clone()))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target() != AUDIT_TARGET
            }))
    }

    /// Installs the JSON panic hook writing to this pipeline's writer, unless it is turned off
    /// (see [`panic::install`] for `also`). `shutdown_timeout` bounds the hook's wait for its
    /// line with `panic = "abort"`.
    pub(crate) fn install_panic_hook(&self, also: Option<fn()>, shutdown_timeout: Duration) {
        let Some(chain) = self.panic_hook else {
            return;
        };
        let mut service_json = String::from(",\"service\":");
        crate::core::escape::push_json_str(
            &mut service_json,
            &self.service,
            self.settings.value_cap,
        );
        let wait = if cfg!(panic = "abort") {
            shutdown_timeout
        } else {
            panic::HOOK_WAIT
        };
        let lines = panic::PanicLines {
            writer: self.writer.clone(),
            service_json,
            value_cap: self.settings.value_cap,
            wait,
        };
        panic::install(lines, chain, also);
    }

    /// Waits until every line so far (application and audit) is written.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let logs = self.writer.flush(timeout);
        let fallback = self.audit_fallback.flush(timeout);
        self.audit.as_ref().is_none_or(|a| a.flush(timeout)) && logs && fallback
    }

    /// Writes what is queued and stops the writer threads.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        let audit = self.audit.as_ref().is_none_or(|a| a.shutdown(timeout));
        let fallback = self.audit_fallback.shutdown(timeout);
        self.writer.shutdown(timeout) && audit && fallback
    }

    /// Application lines dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.writer.dropped()
    }
}
