//! The RPC duration histograms (OpenTelemetry RPC conventions, gRPC): business-metric families,
//! so `rpc_method` (read from request paths) is bounded by the series cap, with overflow folded
//! into `_other` and counted.

use std::sync::{Arc, OnceLock};

use super::business::{
    BusinessMetrics, Desc, Family, Histogram, HistogramKind, Kind, LabelRef, MetricKind,
};
use super::options::DEFAULT_DURATION_BUCKETS;
use crate::core::exemplar::PendingExemplar;
use crate::core::names::{
    ERROR_TYPE_LABEL, RPC_CLIENT_DURATION, RPC_METHOD_LABEL, RPC_SERVER_DURATION, RPC_STATUS_LABEL,
    RPC_SYSTEM_LABEL, SERVER_ADDRESS_LABEL, SERVER_PORT_LABEL,
};

/// Distinct label sets before new ones fold into `_other` (a per-name cap set on the builder
/// overrides it).
const MAX_SERIES: usize = 1000;

static SERVER: Desc = Desc::new(
    Kind::Histogram,
    RPC_SERVER_DURATION,
    &[
        RPC_SYSTEM_LABEL,
        RPC_METHOD_LABEL,
        RPC_STATUS_LABEL,
        ERROR_TYPE_LABEL,
    ],
)
.with_help("Duration of RPCs served, to the end of the response stream.")
.with_buckets(DEFAULT_DURATION_BUCKETS)
.with_max_series(MAX_SERIES);

static CLIENT: Desc = Desc::new(
    Kind::Histogram,
    RPC_CLIENT_DURATION,
    &[
        RPC_SYSTEM_LABEL,
        RPC_METHOD_LABEL,
        RPC_STATUS_LABEL,
        ERROR_TYPE_LABEL,
        SERVER_ADDRESS_LABEL,
        SERVER_PORT_LABEL,
    ],
)
.with_help("Duration of RPCs made, to the end of the response stream.")
.with_buckets(DEFAULT_DURATION_BUCKETS)
.with_max_series(MAX_SERIES);

/// One RPC histogram of an instance, created on its first observation.
pub(crate) struct RpcHistogram {
    business: Arc<BusinessMetrics>,
    desc: &'static Desc,
    name: &'static str,
    family: OnceLock<Option<Arc<Family<HistogramKind>>>>,
}

impl RpcHistogram {
    /// `rpc_server_call_duration_seconds{rpc_system_name, rpc_method, rpc_response_status_code,
    /// error_type}`.
    pub(crate) fn server(business: &Arc<BusinessMetrics>) -> Self {
        Self::new(business, &SERVER, RPC_SERVER_DURATION)
    }

    /// `rpc_client_call_duration_seconds{…, server_address, server_port}`.
    pub(crate) fn client(business: &Arc<BusinessMetrics>) -> Self {
        Self::new(business, &CLIENT, RPC_CLIENT_DURATION)
    }

    fn new(business: &Arc<BusinessMetrics>, desc: &'static Desc, name: &'static str) -> Self {
        Self {
            business: business.clone(),
            desc,
            name,
            family: OnceLock::new(),
        }
    }

    /// Records one call; `values` in the order of the labels above (found without allocating
    /// when the series exists). Returns the exemplar to attach to the call's trace.
    pub(crate) fn observe(&self, values: &[&str], seconds: f64) -> PendingExemplar {
        let family = self
            .family
            .get_or_init(|| self.business.family::<HistogramKind>(self.desc, self.name))
            .as_deref();
        let mut refs = [LabelRef::Str(""); 6];
        for (slot, v) in refs.iter_mut().zip(values) {
            *slot = LabelRef::Str(v);
        }
        let noop: &Histogram = HistogramKind::noop();
        family
            .and_then(|f| f.series_ref(&refs[..values.len()]))
            .unwrap_or(noop)
            .observe_pending(seconds)
    }
}
