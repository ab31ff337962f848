//! The instance's `tracing` subscriber, stacked from the components' layers.
//!
//! Order matters: the filter first (request spans, audit and security events always pass),
//! then the span context layer (every span's IDs and fields, and span recording for the
//! sampler), the audit/security counters, the formatter, and Sentry's layer last, so that it
//! sees events the formatter has already written.

use tracing_core::Dispatch;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

use crate::context::layer::ContextLayer;
use crate::logging::events::EventsLayer;
use crate::logging::{LogFormat, LogPipeline};

/// Stacks the layers into a dispatcher. `filter` is the log pipeline's `ObsFilter` (wrapped, with
/// feature `sqlx`, to let sqlx's query events through to the database instrumentation).
pub(super) fn compose(
    logs: &LogPipeline,
    filter: impl Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    context: ContextLayer,
    events: EventsLayer,
    sentry: bool,
) -> Dispatch {
    #[cfg(feature = "sentry")]
    let sentry = || sentry.then(crate::sentry::events_layer);
    #[cfg(not(feature = "sentry"))]
    let sentry = {
        let _ = sentry;
        tracing_subscriber::layer::Identity::new
    };
    let base = tracing_subscriber::registry()
        .with(filter)
        .with(context)
        .with(events);
    match logs.format {
        LogFormat::Pretty => Dispatch::new(
            base.with(logs.json_layer(true))
                .with(logs.pretty_layer())
                .with(sentry()),
        ),
        _ => Dispatch::new(base.with(logs.json_layer(false)).with(sentry())),
    }
}
