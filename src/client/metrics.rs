//! `http_client_request_duration_seconds`, a business-metric family (so `server_address` is
//! bounded by the series cap, with overflow folded into `_other` and counted).

use std::sync::{Arc, OnceLock};

use crate::core::exemplar::PendingExemplar;
use crate::core::names::{
    CLIENT_REQUEST_DURATION, ERROR_TYPE_LABEL, METHOD_LABEL, SERVER_ADDRESS_LABEL,
    SERVER_PORT_LABEL, STATUS_LABEL,
};
use crate::metrics::business::{
    BusinessMetrics, Desc, Family, Histogram, HistogramKind, Kind, LabelRef, MetricKind,
};
use crate::metrics::options::DEFAULT_DURATION_BUCKETS;

/// Distinct label sets before new ones fold into `_other` (a per-name cap set on the builder
/// overrides it).
const MAX_SERIES: usize = 1000;

static DURATION: Desc = Desc::new(
    Kind::Histogram,
    CLIENT_REQUEST_DURATION,
    &[
        METHOD_LABEL,
        SERVER_ADDRESS_LABEL,
        SERVER_PORT_LABEL,
        STATUS_LABEL,
        ERROR_TYPE_LABEL,
    ],
)
.with_help("Duration of outgoing HTTP requests, to the response head.")
.with_buckets(DEFAULT_DURATION_BUCKETS)
.with_max_series(MAX_SERIES);

/// The client histogram of one instance, created on the first call.
pub(crate) struct ClientMetrics {
    business: Arc<BusinessMetrics>,
    duration: OnceLock<Option<Arc<Family<HistogramKind>>>>,
}

/// The labels of one observation.
pub(crate) struct CallLabels<'a> {
    pub(crate) method: &'static str,
    pub(crate) address: &'a str,
    pub(crate) port: &'a str,
    pub(crate) status: &'static str,
    pub(crate) error_type: &'a str,
}

impl ClientMetrics {
    pub(crate) fn new(business: &Arc<BusinessMetrics>) -> Self {
        Self {
            business: business.clone(),
            duration: OnceLock::new(),
        }
    }

    /// Records one call (found without allocating when the series exists); returns the
    /// exemplar to attach to the call's trace.
    pub(crate) fn observe(&self, labels: &CallLabels<'_>, seconds: f64) -> PendingExemplar {
        let family = self
            .duration
            .get_or_init(|| {
                self.business
                    .family::<HistogramKind>(&DURATION, CLIENT_REQUEST_DURATION)
            })
            .as_deref();
        let values = [
            LabelRef::Str(labels.method),
            LabelRef::Str(labels.address),
            LabelRef::Str(labels.port),
            LabelRef::Str(labels.status),
            LabelRef::Str(labels.error_type),
        ];
        let noop: &Histogram = HistogramKind::noop();
        family
            .and_then(|f| f.series_ref(&values))
            .unwrap_or(noop)
            .observe_pending(seconds)
    }
}
