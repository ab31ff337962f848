//! The `RUST_LOG` filter, with exceptions: request spans, audit events and security events are
//! always enabled.
//!
//! The correlation ID and trace context travel on the request span. If `RUST_LOG=warn` disabled
//! that span, a WARNING logged by a handler would lose its `correlation_id`. So spans with the
//! request target pass whatever the filter says; events (the access line included) do not,
//! except audit events (which must be complete) and security events.

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, LevelFilter, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::core::names::{AUDIT_TARGET, REQUEST_TARGET, SECURITY_TARGET};

/// [`EnvFilter`] plus the request-span exception.
pub(crate) struct ObsFilter {
    pub(crate) env: EnvFilter,
    /// Whether the filter has span directives (`[span{field=value}]`). Without them
    /// `EnvFilter` has nothing to do when spans are opened, entered, recorded or closed, but
    /// still takes a lock each time: those calls are skipped.
    pub(crate) span_directives: bool,
}

fn always(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.target() == REQUEST_TARGET
    } else {
        meta.target() == AUDIT_TARGET || meta.target() == SECURITY_TARGET
    }
}

impl<S> Layer<S> for ObsFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if always(meta) {
            Interest::always()
        } else {
            Layer::<S>::register_callsite(&self.env, meta)
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        always(meta) || Layer::<S>::enabled(&self.env, meta, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.env).map(|hint| hint.max(LevelFilter::INFO))
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        always(event.metadata()) || Layer::<S>::event_enabled(&self.env, event, ctx)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_new_span(&self.env, attrs, id, ctx)
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_record(&self.env, id, values, ctx)
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_enter(&self.env, id, ctx)
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_exit(&self.env, id, ctx)
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if self.span_directives {
            Layer::<S>::on_close(&self.env, id, ctx)
        }
    }
}
