//! The handles the business-metric calls return, and the three kinds as types.

use std::sync::Arc;

use prometheus::core::{MetricVec, MetricVecBuilder};
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use super::desc::Kind;
use super::registry::AnyFamily;
use super::table::Family;
use crate::core::exemplar::{PendingExemplar, SeriesExemplar, attach_to_current};

/// Default buckets of business histograms (the `prometheus` crate's defaults).
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// ---------------------------------------------------------------------------------------------
// Handles

/// A counter handle, from [`crate::counter!`] or [`crate::Obs::counter`]. A no-op when the call
/// was invalid (the problem was logged once).
#[derive(Clone, Debug, Default)]
pub struct Counter(Option<IntCounter>, Option<SeriesExemplar>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        if let Some(c) = &self.0 {
            c.inc();
        }
    }

    /// Adds `n`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        if let Some(c) = &self.0 {
            c.inc_by(n);
        }
    }

    /// Adds one, and offers the current trace as the series' exemplar: it appears on
    /// `/metrics` (OpenMetrics) if, and once, the trace is kept and exported.
    ///
    /// ```
    /// mercenary_obs::counter!("orders_total").inc_with_exemplar();
    /// ```
    #[inline]
    pub fn inc_with_exemplar(&self) {
        self.inc_by_with_exemplar(1);
    }

    /// Adds `n`, offering the current trace as the exemplar (see
    /// [`Counter::inc_with_exemplar`]); the exemplar's value is `n`.
    #[inline]
    pub fn inc_by_with_exemplar(&self, n: u64) {
        self.inc_by(n);
        if let Some(ex) = &self.1 {
            attach_to_current(ex.pending(n as f64));
        }
    }

    /// The current value (0 for a no-op handle).
    pub fn get(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.get())
    }

    /// Whether this handle records anything (`false` after an invalid call).
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

/// A gauge handle, from [`crate::gauge!`] or [`crate::Obs::gauge`]. A no-op when the call was
/// invalid.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Option<prometheus::Gauge>);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: f64) {
        if let Some(g) = &self.0 {
            g.set(v);
        }
    }

    /// Adds `v`.
    #[inline]
    pub fn add(&self, v: f64) {
        if let Some(g) = &self.0 {
            g.add(v);
        }
    }

    /// Subtracts `v`.
    #[inline]
    pub fn sub(&self, v: f64) {
        if let Some(g) = &self.0 {
            g.sub(v);
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.sub(1.0);
    }

    /// The current value (0 for a no-op handle).
    pub fn get(&self) -> f64 {
        self.0.as_ref().map_or(0.0, |g| g.get())
    }

    /// Whether this handle records anything (`false` after an invalid call).
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

/// A histogram handle, from [`crate::histogram!`] or [`crate::Obs::histogram`]. A no-op when
/// the call was invalid.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Option<prometheus::Histogram>, Option<SeriesExemplar>);

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: f64) {
        if let Some(h) = &self.0 {
            h.observe(v);
        }
    }

    /// Records one observation and offers the current trace as the exemplar of the bucket it
    /// falls in: it appears on `/metrics` (OpenMetrics) if, and once, the trace is kept and
    /// exported, and the most recent such trace of each bucket wins. Outside a traced request
    /// it is [`Histogram::observe`].
    ///
    /// ```
    /// mercenary_obs::histogram!("checkout_amount_eur", buckets: [10, 50, 100])
    ///     .observe_with_exemplar(42.0);
    /// ```
    #[inline]
    pub fn observe_with_exemplar(&self, v: f64) {
        self.observe(v);
        if let Some(ex) = &self.1 {
            attach_to_current(ex.pending(v));
        }
    }

    /// Records one observation and returns the exemplar to attach to a trace (for the crate's
    /// own histograms, which attach it to a span they know).
    #[inline]
    pub(crate) fn observe_pending(&self, v: f64) -> PendingExemplar {
        self.observe(v);
        self.1.as_ref().map(|ex| ex.pending(v)).unwrap_or_default()
    }

    /// Starts a timer that records the elapsed seconds when dropped, or on
    /// [`HistogramTimer::observe_duration`].
    ///
    /// ```
    /// let timer = mercenary_obs::histogram!("report_render_seconds").start_timer();
    /// // ... work ...
    /// drop(timer); // observed here
    /// ```
    pub fn start_timer(&self) -> HistogramTimer {
        HistogramTimer(self.0.as_ref().map(|h| h.start_timer()))
    }

    /// Observations so far (0 for a no-op handle).
    pub fn sample_count(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.get_sample_count())
    }

    /// Whether this handle records anything (`false` after an invalid call).
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

/// Observes the time since [`Histogram::start_timer`] when dropped.
#[derive(Debug)]
#[must_use = "a timer observes when it is dropped; dropping it at once records ~0 s"]
pub struct HistogramTimer(Option<prometheus::HistogramTimer>);

impl HistogramTimer {
    /// Observes the elapsed seconds now and consumes the timer.
    pub fn observe_duration(self) {
        if let Some(t) = self.0 {
            t.observe_duration();
        }
    }

    /// Observes the elapsed seconds now and returns them (0 for a no-op timer).
    pub fn stop_and_record(self) -> f64 {
        self.0.map_or(0.0, |t| t.stop_and_record())
    }

    /// Discards the timer without observing; returns the elapsed seconds.
    pub fn stop_and_discard(self) -> f64 {
        self.0.map_or(0.0, |t| t.stop_and_discard())
    }
}

// ---------------------------------------------------------------------------------------------
// Kinds as types

/// Ties a [`Kind`] to its Prometheus vector and handle types.
#[doc(hidden)]
pub trait MetricKind: Sized + Send + Sync + 'static {
    /// The Prometheus vector builder.
    type Builder: MetricVecBuilder<M = Self::Metric>;
    /// One series.
    type Metric: Clone + Send + Sync + 'static;
    /// The handle the macros return.
    type Handle: Clone + Default + Send + Sync + 'static;
    /// The kind tag.
    const KIND: Kind;
    /// Makes the vector.
    fn new_vec(
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<MetricVec<Self::Builder>, prometheus::Error>;
    /// Wraps a series (or nothing) into a handle, with its exemplar slot when the family has
    /// exemplars.
    fn handle(metric: Option<Self::Metric>, exemplar: Option<SeriesExemplar>) -> Self::Handle;
    /// The bucket bounds of the family's exemplar table (`Some(&[])` for a counter), or `None`
    /// for a kind without exemplars.
    fn exemplar_bounds(buckets: &'static [f64]) -> Option<&'static [f64]>;
    /// A no-op handle that lives forever.
    fn noop() -> &'static Self::Handle;
    /// Stores a family in the instance's table.
    fn wrap(family: Arc<Family<Self>>) -> AnyFamily;
    /// Takes a family of this kind back out.
    fn unwrap(family: &AnyFamily) -> Option<&Arc<Family<Self>>>;
}

/// The counter kind.
#[doc(hidden)]
pub struct CounterKind;
/// The gauge kind.
#[doc(hidden)]
pub struct GaugeKind;
/// The histogram kind.
#[doc(hidden)]
pub struct HistogramKind;

impl MetricKind for CounterKind {
    type Builder = <IntCounterVec as KindVec>::B;
    type Metric = IntCounter;
    type Handle = Counter;
    const KIND: Kind = Kind::Counter;
    fn new_vec(
        name: &str,
        help: &str,
        labels: &[&str],
        _: &[f64],
    ) -> Result<IntCounterVec, prometheus::Error> {
        IntCounterVec::new(Opts::new(name, help), labels)
    }
    fn handle(metric: Option<IntCounter>, exemplar: Option<SeriesExemplar>) -> Counter {
        Counter(metric, exemplar)
    }
    fn exemplar_bounds(_: &'static [f64]) -> Option<&'static [f64]> {
        Some(&[])
    }
    fn noop() -> &'static Counter {
        static NOOP: Counter = Counter(None, None);
        &NOOP
    }
    fn wrap(family: Arc<Family<Self>>) -> AnyFamily {
        AnyFamily::Counter(family)
    }
    fn unwrap(family: &AnyFamily) -> Option<&Arc<Family<Self>>> {
        match family {
            AnyFamily::Counter(f) => Some(f),
            _ => None,
        }
    }
}

impl MetricKind for GaugeKind {
    type Builder = <GaugeVec as KindVec>::B;
    type Metric = prometheus::Gauge;
    type Handle = Gauge;
    const KIND: Kind = Kind::Gauge;
    fn new_vec(
        name: &str,
        help: &str,
        labels: &[&str],
        _: &[f64],
    ) -> Result<GaugeVec, prometheus::Error> {
        GaugeVec::new(Opts::new(name, help), labels)
    }
    fn handle(metric: Option<prometheus::Gauge>, _: Option<SeriesExemplar>) -> Gauge {
        Gauge(metric)
    }
    fn exemplar_bounds(_: &'static [f64]) -> Option<&'static [f64]> {
        None
    }
    fn noop() -> &'static Gauge {
        static NOOP: Gauge = Gauge(None);
        &NOOP
    }
    fn wrap(family: Arc<Family<Self>>) -> AnyFamily {
        AnyFamily::Gauge(family)
    }
    fn unwrap(family: &AnyFamily) -> Option<&Arc<Family<Self>>> {
        match family {
            AnyFamily::Gauge(f) => Some(f),
            _ => None,
        }
    }
}

impl MetricKind for HistogramKind {
    type Builder = <HistogramVec as KindVec>::B;
    type Metric = prometheus::Histogram;
    type Handle = Histogram;
    const KIND: Kind = Kind::Histogram;
    fn new_vec(
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, prometheus::Error> {
        let buckets = if buckets.is_empty() {
            DEFAULT_BUCKETS
        } else {
            buckets
        };
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
    }
    fn handle(
        metric: Option<prometheus::Histogram>,
        exemplar: Option<SeriesExemplar>,
    ) -> Histogram {
        Histogram(metric, exemplar)
    }
    fn exemplar_bounds(buckets: &'static [f64]) -> Option<&'static [f64]> {
        Some(if buckets.is_empty() {
            DEFAULT_BUCKETS
        } else {
            buckets
        })
    }
    fn noop() -> &'static Histogram {
        static NOOP: Histogram = Histogram(None, None);
        &NOOP
    }
    fn wrap(family: Arc<Family<Self>>) -> AnyFamily {
        AnyFamily::Histogram(family)
    }
    fn unwrap(family: &AnyFamily) -> Option<&Arc<Family<Self>>> {
        match family {
            AnyFamily::Histogram(f) => Some(f),
            _ => None,
        }
    }
}

/// Names the builder type inside a `MetricVec` alias.
#[doc(hidden)]
pub trait KindVec {
    type B: MetricVecBuilder;
}

impl<T: MetricVecBuilder> KindVec for MetricVec<T> {
    type B = T;
}
