//! The `tracing` layer: `sentry-tracing`'s error and breadcrumb layers, fed only the events that
//! concern Sentry (ERROR events become Sentry events, INFO and WARNING breadcrumbs; the crate's
//! access line and export warnings are left out).

use ::sentry::Hub;
use ::sentry_tracing::{BreadcrumbLayer, ErrorLayer};
use tracing_core::{Event as TracingEvent, Level as TracingLevel, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::core::names::ACCESS_TARGET;

/// `sentry-tracing`'s error and breadcrumb layers, for the events that concern Sentry.
pub(crate) struct SentryEventsLayer {
    errors: ErrorLayer,
    breadcrumbs: BreadcrumbLayer,
}

/// The layer the log pipeline adds to the subscriber.
pub(crate) fn events_layer() -> SentryEventsLayer {
    SentryEventsLayer {
        errors: ErrorLayer::new(),
        breadcrumbs: BreadcrumbLayer::new(),
    }
}

impl<S> Layer<S> for SentryEventsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &TracingEvent<'_>, ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        if level > TracingLevel::INFO
            || meta.target() == ACCESS_TARGET
            || meta.target() == crate::core::names::EXPORT_TARGET
            || !Hub::with_active(|_| true)
        {
            return;
        }
        if level == TracingLevel::ERROR {
            self.errors.on_event(event, ctx);
        } else {
            self.breadcrumbs.on_event(event, ctx);
        }
    }
}
