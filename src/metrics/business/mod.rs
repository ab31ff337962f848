//! Support for the business-metric macros ([`crate::counter!`], [`crate::gauge!`],
//! [`crate::histogram!`]) and for `Obs::counter`/`gauge`/`histogram`.
//!
//! # How a call is resolved
//!
//! - Each macro call site holds a `static` with its description (name, label keys, help,
//!   buckets, series cap), checked at compile time when the name is a literal.
//! - The family (one Prometheus metric vector) is resolved once per call site and per target
//!   instance: the metrics-only default before `init()`, the global instance after. There are
//!   only these two, so a call site has two slots, each a `OnceLock`.
//! - When every label value is a literal, the slot holds the series handle itself: the call is
//!   one atomic load plus the increment, and returns `&'static Counter`.
//! - Otherwise text values (`&str`, `String`, ...) are hashed in place with a seeded hash and
//!   other values formatted into a reused thread-local buffer first; the series is found in an
//!   open-addressing table of set-once slots, read without a lock (a new series is added under
//!   a mutex). An existing series costs no allocation, and the call returns a reference into
//!   the table (`&'static Counter`), so no reference count is touched either.
//! - A family holds at most `cap` series (default 1000). Past it, a new label set is folded into
//!   one series whose values are all `_other`, and `mercenary_obs_metric_overflow_total{metric}`
//!   counts the folded resolution. Every update still lands in some series, so sums stay exact.
//! - A name used again with another type or other label keys, a name or label that Prometheus
//!   refuses, or a name already taken in the registry: the problem is logged once (a WARNING
//!   with target `mercenary_obs::metrics`) and the call gets a no-op handle. The first family
//!   is untouched. Nothing panics.
//!
//! # Files
//!
//! - `handles`: the handles the calls return ([`Counter`], [`Gauge`], [`Histogram`]) and the
//!   kinds as types (`MetricKind`).
//! - `desc`: what a call site declares ([`Desc`]) and the name and label checks.
//! - `table`: one family ([`Family`]): its lock-free series table, the label-value hashing and
//!   the folding into `_other` past the cap.
//! - `registry`: the families of one instance ([`BusinessMetrics`]) and conflict reporting.
//! - `sites`: the macro call sites and the instance they target (default or global).

mod desc;
mod handles;
mod registry;
mod sites;
mod table;

pub use desc::{Desc, Kind};
pub use handles::{
    Counter, CounterKind, Gauge, GaugeKind, Histogram, HistogramKind, HistogramTimer, MetricKind,
};
pub(crate) use registry::BusinessMetrics;
pub(crate) use sites::{default_metrics, install_global, target_shared};
// Linked from the documentation of `crate::metrics`.
#[allow(unused_imports)]
pub(crate) use sites::target;
pub use sites::{DynSite, StaticSite, ViaDisplay, ViaStr, Wrap, by_name};
pub use table::{Family, LabelRef};

/// Default number of series per business metric.
pub const DEFAULT_SERIES_CAP: usize = 1000;

/// The largest series cap a metric may have (its table takes 32–64 bytes per series of cap).
pub const MAX_SERIES_CAP: usize = 100_000;
