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

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::{self, Display, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::core::error::Error;
use crate::core::names::{METRIC_OVERFLOW, OTHER};

/// Default number of series per business metric.
pub const DEFAULT_SERIES_CAP: usize = 1000;

/// The largest series cap a metric may have (its table takes 32–64 bytes per series of cap).
pub const MAX_SERIES_CAP: usize = 100_000;

/// At most this many business metric families per instance (runtime names could otherwise grow
/// the registry without bound).
const MAX_FAMILIES: usize = 10_000;

/// Label values are cut to this many bytes (at a character boundary).
const MAX_LABEL_VALUE: usize = 1024;

/// Default buckets of business histograms (the `prometheus` crate's defaults).
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

// ---------------------------------------------------------------------------------------------
// Handles

/// A counter handle, from [`crate::counter!`] or [`crate::Obs::counter`]. A no-op when the call
/// was invalid (the problem was logged once).
#[derive(Clone, Debug, Default)]
pub struct Counter(Option<IntCounter>);

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
pub struct Histogram(Option<prometheus::Histogram>);

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, v: f64) {
        if let Some(h) = &self.0 {
            h.observe(v);
        }
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
// Descriptions, checked at compile time for literal names

/// The three kinds of business metric.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// What a macro call site declares. Built in a `static` by the macros, so its `const fn`
/// checks turn an invalid literal name, label or bucket list into a compile error.
#[doc(hidden)]
#[derive(Debug)]
pub struct Desc {
    kind: Kind,
    /// Empty when the name is an expression (resolved at run time).
    name: &'static str,
    labels: &'static [&'static str],
    help: &'static str,
    buckets: &'static [f64],
    max_series: usize,
}

const fn is_name_char(b: u8, first: bool, colon: bool) -> bool {
    b == b'_' || b.is_ascii_alphabetic() || (!first && b.is_ascii_digit()) || (colon && b == b':')
}

/// Whether `name` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub(crate) const fn valid_metric_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !is_name_char(b[i], i == 0, true) {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`).
pub(crate) const fn valid_label_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || (b.len() >= 2 && b[0] == b'_' && b[1] == b'_') {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if !is_name_char(b[i], i == 0, false) {
            return false;
        }
        i += 1;
    }
    true
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Desc {
    /// A description; panics (at compile time, in a `static`) on an invalid literal name or
    /// label name, or a repeated label.
    pub const fn new(kind: Kind, name: &'static str, labels: &'static [&'static str]) -> Self {
        if !name.is_empty() && !valid_metric_name(name) {
            panic!(
                "invalid metric name: a Prometheus metric name matches [a-zA-Z_:][a-zA-Z0-9_:]*"
            );
        }
        let mut i = 0;
        while i < labels.len() {
            if !valid_label_name(labels[i]) {
                panic!(
                    "invalid label name: a Prometheus label name matches [a-zA-Z_][a-zA-Z0-9_]* and does not start with __"
                );
            }
            if str_eq(labels[i], "le") && matches!(kind, Kind::Histogram) {
                panic!("a histogram cannot have a label named `le`");
            }
            let mut j = 0;
            while j < i {
                if str_eq(labels[i], labels[j]) {
                    panic!("the same label key is given twice");
                }
                j += 1;
            }
            i += 1;
        }
        Desc {
            kind,
            name,
            labels,
            help: "",
            buckets: &[],
            max_series: 0,
        }
    }

    /// Sets the HELP text.
    pub const fn with_help(mut self, help: &'static str) -> Self {
        self.help = help;
        self
    }

    /// Sets histogram buckets; panics (at compile time) unless the metric is a histogram and
    /// the bounds are finite and strictly increasing.
    pub const fn with_buckets(mut self, buckets: &'static [f64]) -> Self {
        if !matches!(self.kind, Kind::Histogram) {
            panic!("`buckets:` is only for histogram!");
        }
        if buckets.is_empty() {
            panic!("`buckets:` needs at least one bound");
        }
        let mut i = 0;
        while i < buckets.len() {
            if !buckets[i].is_finite() {
                panic!("bucket bounds must be finite (+Inf is added automatically)");
            }
            if i > 0 && buckets[i] <= buckets[i - 1] {
                panic!("bucket bounds must be strictly increasing");
            }
            i += 1;
        }
        self.buckets = buckets;
        self
    }

    /// Sets this metric's series cap.
    pub const fn with_max_series(mut self, max: usize) -> Self {
        if max == 0 || max > MAX_SERIES_CAP {
            panic!("`max_series:` must be from 1 to 100000");
        }
        self.max_series = max;
        self
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
    /// Wraps a series (or nothing) into a handle.
    fn handle(metric: Option<Self::Metric>) -> Self::Handle;
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
    fn handle(metric: Option<IntCounter>) -> Counter {
        Counter(metric)
    }
    fn noop() -> &'static Counter {
        static NOOP: Counter = Counter(None);
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
    fn handle(metric: Option<prometheus::Gauge>) -> Gauge {
        Gauge(metric)
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
    fn handle(metric: Option<prometheus::Histogram>) -> Histogram {
        Histogram(metric)
    }
    fn noop() -> &'static Histogram {
        static NOOP: Histogram = Histogram(None);
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

// ---------------------------------------------------------------------------------------------
// Families

/// A fast keyed hash of the label values. Collisions only cost comparisons, and a family holds
/// at most `cap` series, so the work per lookup stays bounded whatever clients send.
#[inline]
fn hash_values(seed: u64, values: &[&str]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    #[inline(always)]
    fn mix(h: u64, w: u64) -> u64 {
        (h.rotate_left(5) ^ w).wrapping_mul(K)
    }
    #[inline(always)]
    fn read8(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
    }
    #[inline(always)]
    fn read4(b: &[u8], at: usize) -> u64 {
        u64::from(u32::from_le_bytes(
            b[at..at + 4].try_into().unwrap_or([0; 4]),
        ))
    }
    let mut h = seed;
    for v in values {
        let b = v.as_bytes();
        let n = b.len();
        // The length first, so ("ab", "c") and ("a", "bc") differ; then the bytes, the last
        // ones in overlapping reads.
        h = mix(h, n as u64);
        let (first, last) = if n >= 8 {
            let mut at = 0;
            while at + 16 <= n {
                h = mix(h, read8(b, at));
                at += 8;
            }
            (read8(b, at), read8(b, n - 8))
        } else if n >= 4 {
            (read4(b, 0), read4(b, n - 4))
        } else if n > 0 {
            (
                (u64::from(b[0]) << 16) | (u64::from(b[n / 2]) << 8) | u64::from(b[n - 1]),
                0,
            )
        } else {
            (0, 0)
        };
        h = mix(mix(h, first), last);
    }
    h ^ (h >> 29)
}

/// `a == b`, without a `memcmp` call for the short strings label values usually are.
#[inline(always)]
fn bytes_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        // Two overlapping reads cover every byte.
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// Label values held inline (more go through a `Vec`).
const INLINE: usize = 8;

/// `s` cut to [`MAX_LABEL_VALUE`] bytes at a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_LABEL_VALUE {
        return s;
    }
    let mut end = MAX_LABEL_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The series of a family: an open-addressing table at least twice the series cap, whose
/// slots are set once (under `insert`) and read without a lock.
struct SeriesTable<M> {
    slots: Box<[OnceLock<Box<Series<M>>>]>,
    mask: usize,
}

impl<M> SeriesTable<M> {
    fn with_cap(cap: usize) -> Self {
        let size = cap.saturating_mul(2).max(8).next_power_of_two();
        Self {
            slots: (0..size).map(|_| OnceLock::new()).collect(),
            mask: size - 1,
        }
    }

    /// The series with these values, or the first free slot of their probe sequence.
    fn probe(&self, h: u64, values: &[&str]) -> Result<&Series<M>, Option<usize>> {
        let mut i = h as usize & self.mask;
        for _ in 0..self.slots.len() {
            match self.slots[i].get() {
                None => return Err(Some(i)),
                Some(s)
                    if s.hash == h
                        && s.values.len() == values.len()
                        && s.values.iter().zip(values).all(|(a, b)| bytes_eq(a, b)) =>
                {
                    return Ok(s);
                }
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        Err(None)
    }
}

struct Series<H> {
    hash: u64,
    values: Box<[Box<str>]>,
    handle: H,
}

/// One business metric family: the Prometheus vector plus the capped series index.
#[doc(hidden)]
pub struct Family<K: MetricKind> {
    labels: Box<[Box<str>]>,
    vec: MetricVec<K::Builder>,
    cap: usize,
    seed: u64,
    table: SeriesTable<K::Handle>,
    /// Held while a series is added.
    insert: Mutex<()>,
    len: AtomicUsize,
    other: OnceLock<K::Handle>,
    overflow: IntCounter,
}

/// A family of any kind, as stored in the instance's table.
#[doc(hidden)]
pub enum AnyFamily {
    Counter(Arc<Family<CounterKind>>),
    Gauge(Arc<Family<GaugeKind>>),
    Histogram(Arc<Family<HistogramKind>>),
}

impl AnyFamily {
    fn kind(&self) -> Kind {
        match self {
            AnyFamily::Counter(_) => Kind::Counter,
            AnyFamily::Gauge(_) => Kind::Gauge,
            AnyFamily::Histogram(_) => Kind::Histogram,
        }
    }

    fn labels(&self) -> &[Box<str>] {
        match self {
            AnyFamily::Counter(f) => &f.labels,
            AnyFamily::Gauge(f) => &f.labels,
            AnyFamily::Histogram(f) => &f.labels,
        }
    }
}

/// One label value as the macros pass it: text as it is, anything else through `Display`.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum LabelRef<'a> {
    /// `&str`, `String`, `Cow<str>`...: copied without formatting.
    Str(&'a str),
    /// Anything else that is `Display`.
    Display(&'a dyn Display),
}

/// Picks [`LabelRef::Str`] for text and [`LabelRef::Display`] for the rest (autoref
/// specialization: the macros call `(&Wrap(&value)).label_ref()` with both traits in scope).
#[doc(hidden)]
pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// The text case of [`Wrap`].
#[doc(hidden)]
pub trait ViaStr {
    /// The label value.
    fn label_ref(&self) -> LabelRef<'_>;
}

impl<T: AsRef<str> + ?Sized> ViaStr for Wrap<'_, T> {
    #[inline]
    fn label_ref(&self) -> LabelRef<'_> {
        LabelRef::Str(self.0.as_ref())
    }
}

/// The `Display` case of [`Wrap`].
#[doc(hidden)]
pub trait ViaDisplay {
    /// The label value.
    fn label_ref(&self) -> LabelRef<'_>;
}

impl<T: Display> ViaDisplay for &Wrap<'_, T> {
    #[inline]
    fn label_ref(&self) -> LabelRef<'_> {
        LabelRef::Display(self.0)
    }
}

/// Formatted label values: one string, with the end offset of each value.
#[derive(Default)]
struct Scratch {
    buf: String,
    ends: Vec<usize>,
}

impl Scratch {
    fn fill(&mut self, values: &[LabelRef<'_>]) {
        self.buf.clear();
        self.ends.clear();
        for v in values {
            let start = self.buf.len();
            match v {
                LabelRef::Str(s) => self.buf.push_str(cut(s)),
                LabelRef::Display(d) => {
                    let _ = write!(self.buf, "{d}");
                    let kept = cut(&self.buf[start..]).len();
                    self.buf.truncate(start + kept);
                }
            }
            self.ends.push(self.buf.len());
        }
    }

    fn value(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl<K: MetricKind> Family<K> {
    /// The handle of the series for these label values (in key order); `None` on a wrong value
    /// count. Borrowed from the family: series are never removed.
    #[inline]
    pub(crate) fn series_ref(&self, values: &[LabelRef<'_>]) -> Option<&K::Handle> {
        if values.len() != self.labels.len() {
            return None;
        }
        // Text values (the common case) are hashed and compared in place, without copying.
        if let [LabelRef::Str(s)] = values {
            return Some(self.lookup(&[cut(s)]));
        }
        if values.len() <= INLINE && values.iter().all(|v| matches!(v, LabelRef::Str(_))) {
            let mut strs = [""; INLINE];
            for (slot, v) in strs.iter_mut().zip(values) {
                if let LabelRef::Str(s) = v {
                    *slot = cut(s);
                }
            }
            return Some(self.lookup(&strs[..values.len()]));
        }
        let formatted = |scratch: &mut Scratch| {
            scratch.fill(values);
            let strs: Vec<&str> = (0..scratch.ends.len()).map(|i| scratch.value(i)).collect();
            self.lookup(&strs)
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => Some(formatted(&mut scratch)),
            // A label value's `Display` used a metric macro itself: fresh buffers.
            Err(_) => Some(formatted(&mut Scratch::default())),
        })
    }

    /// [`Self::series_ref`], cloned (a no-op handle on a wrong value count).
    pub(crate) fn series(&self, values: &[LabelRef<'_>]) -> K::Handle {
        self.series_ref(values).cloned().unwrap_or_default()
    }

    #[inline]
    fn lookup(&self, values: &[&str]) -> &K::Handle {
        let h = hash_values(self.seed, values);
        if let Ok(s) = self.table.probe(h, values) {
            return &s.handle;
        }
        self.insert(h, values)
    }

    #[cold]
    fn insert(&self, h: u64, values: &[&str]) -> &K::Handle {
        let _insert = self.insert.lock().unwrap_or_else(|e| e.into_inner());
        let free = match self.table.probe(h, values) {
            Ok(s) => return &s.handle,
            Err(free) => free,
        };
        let Some(free) = free.filter(|_| self.len.load(Ordering::Relaxed) < self.cap) else {
            drop(_insert);
            self.overflow.inc();
            return self.other();
        };
        let metric = match self.vec.get_metric_with_label_values(values) {
            Ok(m) => m,
            // Only a wrong value count can fail here, which `series_ref` excludes.
            Err(_) => return self.other(),
        };
        let series = self.table.slots[free].get_or_init(|| {
            Box::new(Series {
                hash: h,
                values: values.iter().map(|v| Box::<str>::from(*v)).collect(),
                handle: K::handle(Some(metric)),
            })
        });
        self.len.fetch_add(1, Ordering::Relaxed);
        &series.handle
    }

    fn other(&self) -> &K::Handle {
        self.other.get_or_init(|| {
            let values = vec![OTHER; self.labels.len()];
            K::handle(self.vec.get_metric_with_label_values(&values).ok())
        })
    }

    /// Series created so far (not counting `_other`).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// The table of one instance

/// The business-metric families of one instance.
pub(crate) struct BusinessMetrics {
    registry: Registry,
    families: RwLock<HashMap<String, AnyFamily>>,
    overflow: IntCounterVec,
    default_cap: usize,
    caps: HashMap<String, usize>,
    /// Problems already reported, so each is logged once.
    reported: Mutex<HashSet<String>>,
}

impl BusinessMetrics {
    /// The registry the families are registered in.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers `mercenary_obs_metric_overflow_total` in `registry`.
    pub(crate) fn new(
        registry: &Registry,
        default_cap: usize,
        caps: HashMap<String, usize>,
    ) -> Result<Self, Error> {
        let overflow = IntCounterVec::new(
            Opts::new(
                METRIC_OVERFLOW,
                "Resolutions of a new label set folded into the `_other` series because the metric reached its series cap.",
            ),
            &["metric"],
        )
        .map_err(|e| Error::MetricRegistration {
            metric: METRIC_OVERFLOW.into(),
            reason: e.to_string(),
        })?;
        registry
            .register(Box::new(overflow.clone()))
            .map_err(|e| Error::MetricRegistration {
                metric: METRIC_OVERFLOW.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            registry: registry.clone(),
            families: RwLock::new(HashMap::new()),
            overflow,
            default_cap,
            caps,
            reported: Mutex::new(HashSet::new()),
        })
    }

    /// A table whose overflow counter is not registered (only if registering failed).
    pub(crate) fn unregistered(registry: &Registry) -> Self {
        Self {
            registry: registry.clone(),
            families: RwLock::new(HashMap::new()),
            overflow: IntCounterVec::new(Opts::new(METRIC_OVERFLOW, "unregistered"), &["metric"])
                .expect("a valid name and help"),
            default_cap: DEFAULT_SERIES_CAP,
            caps: HashMap::new(),
            reported: Mutex::new(HashSet::new()),
        }
    }

    fn report(&self, key: String, problem: fmt::Arguments<'_>) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.len() < 10_000 && reported.insert(key) {
            drop(reported);
            tracing::warn!(target: crate::core::names::METRICS_TARGET, "metric call ignored: {problem}");
        }
    }

    /// The family `name` of kind `K` with these label keys, registering it on first use.
    /// `None` (logged once) when the call conflicts with an existing metric or is invalid.
    pub(crate) fn family<K: MetricKind>(&self, desc: &Desc, name: &str) -> Option<Arc<Family<K>>> {
        self.family_with::<K>(desc, name, desc.labels)
    }

    /// [`Self::family`] with label keys that need not be `'static`.
    fn family_with<K: MetricKind>(
        &self,
        desc: &Desc,
        name: &str,
        labels: &[&str],
    ) -> Option<Arc<Family<K>>> {
        {
            let families = self.families.read().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = families.get(name) {
                return self.check::<K>(f, labels, name);
            }
        }
        let mut families = self.families.write().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = families.get(name) {
            return self.check::<K>(f, labels, name);
        }
        let kind = K::KIND.as_str();
        if !valid_metric_name(name) {
            drop(families);
            self.report(
                format!("name:{name}"),
                format_args!(
                    "`{}` is not a valid Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
                    name.escape_debug()
                ),
            );
            return None;
        }
        if let Some(bad) = labels.iter().find(|l| !valid_label_name(l)) {
            drop(families);
            self.report(
                format!("label:{name}"),
                format_args!(
                    "{kind} `{name}`: `{}` is not a valid label name",
                    bad.escape_debug()
                ),
            );
            return None;
        }
        if families.len() >= MAX_FAMILIES {
            drop(families);
            self.report(
                "families".into(),
                format_args!("more than {MAX_FAMILIES} business metrics; `{name}` not created"),
            );
            return None;
        }
        let help = if desc.help.is_empty() {
            format!("Business {kind} {name}.")
        } else {
            desc.help.to_string()
        };
        let vec = match K::new_vec(name, &help, labels, desc.buckets) {
            Ok(v) => v,
            Err(e) => {
                drop(families);
                self.report(format!("new:{name}"), format_args!("{kind} `{name}`: {e}"));
                return None;
            }
        };
        if let Err(e) = self
            .registry
            .register(Box::new(vec.clone()) as Box<dyn Collector>)
        {
            drop(families);
            self.report(
                format!("register:{name}"),
                format_args!("cannot register {kind} `{name}`: {e}"),
            );
            return None;
        }
        let cap = self
            .caps
            .get(name)
            .copied()
            .or((desc.max_series > 0).then_some(desc.max_series))
            .unwrap_or(self.default_cap);
        let family = Arc::new(Family::<K> {
            labels: labels.iter().map(|l| Box::<str>::from(*l)).collect(),
            vec,
            cap,
            seed: fastrand::u64(..) | 1,
            table: SeriesTable::with_cap(cap),
            insert: Mutex::new(()),
            len: AtomicUsize::new(0),
            other: OnceLock::new(),
            overflow: self.overflow.with_label_values(&[name]),
        });
        families.insert(name.to_string(), K::wrap(family.clone()));
        Some(family)
    }

    fn check<K: MetricKind>(
        &self,
        f: &AnyFamily,
        labels: &[&str],
        name: &str,
    ) -> Option<Arc<Family<K>>> {
        match K::unwrap(f) {
            Some(family)
                if family
                    .labels
                    .iter()
                    .map(|l| &**l)
                    .eq(labels.iter().copied()) =>
            {
                Some(family.clone())
            }
            _ => {
                let existing = format!("{} with labels {:?}", f.kind().as_str(), f.labels());
                self.report(
                    format!("conflict:{name}:{}:{labels:?}", K::KIND.as_str()),
                    format_args!(
                        "`{name}` is already a {existing}; this call uses it as a {} with labels {labels:?}",
                        K::KIND.as_str(),
                    ),
                );
                None
            }
        }
    }

    /// One call of `Obs::counter` and friends: family by name, then the series.
    pub(crate) fn resolve<K: MetricKind>(
        &self,
        name: &str,
        labels: &[(&str, &dyn Display)],
    ) -> K::Handle {
        const DESC: Desc = Desc::new(Kind::Counter, "", &[]);
        let desc = Desc {
            kind: K::KIND,
            ..DESC
        };
        let keys: smallkeys::Keys<'_> = smallkeys::Keys::new(labels);
        let family = self.family_with::<K>(&desc, name, keys.as_slice());
        let values: smallkeys::Values<'_> = smallkeys::Values::new(labels);
        family
            .map(|f| f.series(values.as_slice()))
            .unwrap_or_default()
    }
}

/// Label keys and values split from `(key, value)` pairs without allocating for up to 8 labels.
mod smallkeys {
    use std::fmt::Display;

    use super::LabelRef;

    const N: usize = 8;

    pub(super) struct Keys<'a> {
        inline: [&'a str; N],
        heap: Vec<&'a str>,
        len: usize,
    }

    impl<'a> Keys<'a> {
        pub(super) fn new(labels: &[(&'a str, &dyn Display)]) -> Self {
            let mut k = Keys {
                inline: [""; N],
                heap: Vec::new(),
                len: labels.len(),
            };
            if labels.len() <= N {
                for (i, (key, _)) in labels.iter().enumerate() {
                    k.inline[i] = key;
                }
            } else {
                k.heap = labels.iter().map(|(key, _)| *key).collect();
            }
            k
        }

        pub(super) fn as_slice(&self) -> &[&'a str] {
            if self.len <= N {
                &self.inline[..self.len]
            } else {
                &self.heap
            }
        }
    }

    pub(super) struct Values<'a> {
        inline: [LabelRef<'a>; N],
        heap: Vec<LabelRef<'a>>,
        len: usize,
    }

    impl<'a> Values<'a> {
        pub(super) fn new(labels: &[(&str, &'a dyn Display)]) -> Self {
            let mut v = Values {
                inline: [LabelRef::Str(""); N],
                heap: Vec::new(),
                len: labels.len(),
            };
            if labels.len() <= N {
                for (i, (_, value)) in labels.iter().enumerate() {
                    v.inline[i] = LabelRef::Display(*value);
                }
            } else {
                v.heap = labels
                    .iter()
                    .map(|(_, value)| LabelRef::Display(*value))
                    .collect();
            }
            v
        }

        pub(super) fn as_slice(&self) -> &[LabelRef<'a>] {
            if self.len <= N {
                &self.inline[..self.len]
            } else {
                &self.heap
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Call sites

/// The business metrics of the instance `init()` installed.
static GLOBAL: OnceLock<Arc<BusinessMetrics>> = OnceLock::new();

/// Makes `metrics` the target of the macros from now on (`init()`); `false` when an instance
/// was installed already.
pub(crate) fn install_global(metrics: Arc<BusinessMetrics>) -> bool {
    GLOBAL.set(metrics).is_ok()
}

/// The business metrics the macros use before `init()`, in the default instance's registry.
pub(crate) fn default_metrics() -> &'static Arc<BusinessMetrics> {
    &super::default_handle().business
}

/// The call-site slot of the instance the macros use now (0: default, 1: global).
#[inline]
fn slot() -> usize {
    usize::from(GLOBAL.get().is_some())
}

/// Which instance the macros target now, and its slot index (0: default, 1: global).
#[inline]
pub(crate) fn target() -> (usize, &'static BusinessMetrics) {
    match GLOBAL.get() {
        Some(metrics) => (1, metrics),
        None => (0, default_metrics()),
    }
}

/// A macro call site whose label values are all literals: the slot holds the series handle.
#[doc(hidden)]
pub struct StaticSite<K: MetricKind> {
    desc: Desc,
    values: &'static [&'static (dyn Display + Sync)],
    slots: [OnceLock<K::Handle>; 2],
}

impl<K: MetricKind> StaticSite<K> {
    /// A call site (in a `static`).
    pub const fn new(desc: Desc, values: &'static [&'static (dyn Display + Sync)]) -> Self {
        if values.len() != desc.labels.len() {
            panic!("label values do not match the label keys");
        }
        Self {
            desc,
            values,
            slots: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The handle of this call site's series in the current target instance.
    #[inline]
    pub fn get(&'static self) -> &'static K::Handle {
        self.slots[slot()].get_or_init(|| {
            let family = target().1.family::<K>(&self.desc, self.desc.name);
            let values: Vec<LabelRef<'_>> = self
                .values
                .iter()
                .map(|v| LabelRef::Display(*v as &dyn Display))
                .collect();
            family.map(|f| f.series(&values)).unwrap_or_default()
        })
    }
}

/// A macro call site with a literal name and run-time label values: the slot holds the family.
#[doc(hidden)]
pub struct DynSite<K: MetricKind> {
    desc: Desc,
    slots: [OnceLock<Option<Arc<Family<K>>>>; 2],
}

impl<K: MetricKind> DynSite<K> {
    /// A call site (in a `static`).
    pub const fn new(desc: Desc) -> Self {
        Self {
            desc,
            slots: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The handle of the series for `values` in the current target instance.
    #[inline]
    pub fn get(&'static self, values: &[LabelRef<'_>]) -> &'static K::Handle {
        let family =
            self.slots[slot()].get_or_init(|| target().1.family::<K>(&self.desc, self.desc.name));
        family
            .as_deref()
            .and_then(|f| f.series_ref(values))
            .unwrap_or_else(K::noop)
    }
}

/// A macro call with a run-time name: the family is looked up by name on every call.
#[doc(hidden)]
pub fn by_name<K: MetricKind>(desc: &Desc, name: &str, values: &[LabelRef<'_>]) -> K::Handle {
    let family = target().1.family::<K>(desc, name);
    family.map(|f| f.series(values)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Registry, BusinessMetrics) {
        let registry = Registry::new();
        let b = BusinessMetrics::new(&registry, 3, HashMap::new()).unwrap();
        (registry, b)
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_metric_name("user_signups_total"));
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("9lives"));
        assert!(!valid_metric_name("with-dash"));
        assert!(!valid_metric_name(""));
        assert!(valid_label_name("currency"));
        assert!(!valid_label_name("__reserved"));
        assert!(!valid_label_name("a:b"));
    }

    #[test]
    fn the_cap_folds_new_label_sets_into_other() {
        let (registry, b) = table();
        let desc = Desc::new(Kind::Counter, "", &["user"]);
        let f = b.family::<CounterKind>(&desc, "logins_total").unwrap();
        for i in 0..10 {
            f.series(&[LabelRef::Display(&i)]).inc();
        }
        // Existing series still resolve to themselves after the cap.
        f.series(&[LabelRef::Display(&0)]).inc();
        assert_eq!(f.len(), 3);
        let text = crate::metrics::exposition::render(&registry);
        assert!(text.contains("logins_total{user=\"_other\"} 7"), "{text}");
        assert!(text.contains("logins_total{user=\"0\"} 2"), "{text}");
        assert!(
            text.contains("mercenary_obs_metric_overflow_total{metric=\"logins_total\"} 7"),
            "{text}"
        );
    }

    #[test]
    fn conflicts_give_no_op_handles_and_keep_the_first_family() {
        let (registry, b) = table();
        let c = Desc::new(Kind::Counter, "", &["a"]);
        let g = Desc::new(Kind::Gauge, "", &["a"]);
        let c2 = Desc::new(Kind::Counter, "", &["b"]);
        let f = b.family::<CounterKind>(&c, "jobs_total").unwrap();
        f.series(&[LabelRef::Str("x")]).inc();
        assert!(b.family::<GaugeKind>(&g, "jobs_total").is_none());
        assert!(b.family::<CounterKind>(&c2, "jobs_total").is_none());
        assert!(b.family::<CounterKind>(&c, "not valid").is_none());
        // A name the RED catalogue already took in the registry.
        let red = Desc::new(Kind::Counter, "", &[]);
        let _ = registry.register(Box::new(IntCounter::new("taken_total", "x").unwrap()));
        assert!(b.family::<CounterKind>(&red, "taken_total").is_none());
        let text = crate::metrics::exposition::render(&registry);
        assert!(text.contains("jobs_total{a=\"x\"} 1"), "{text}");
    }

    #[test]
    fn short_string_comparison_is_exact() {
        for len in 0..40 {
            let base = "a".repeat(len);
            assert!(bytes_eq(&base, &base.clone()));
            assert!(!bytes_eq(&base, &format!("{base}a")));
            for i in 0..len {
                let mut changed = base.clone().into_bytes();
                changed[i] = b'b';
                assert!(!bytes_eq(&base, std::str::from_utf8(&changed).unwrap()));
            }
        }
    }

    #[test]
    fn the_hash_sees_every_byte_and_every_boundary() {
        assert_ne!(hash_values(7, &["ab", "c"]), hash_values(7, &["a", "bc"]));
        assert_eq!(hash_values(7, &["same"]), hash_values(7, &["same"]));
        assert_ne!(hash_values(7, &["same"]), hash_values(8, &["same"]));
        for len in 1..48 {
            let base = vec![b'a'; len];
            let h = hash_values(1, &[std::str::from_utf8(&base).unwrap()]);
            for i in 0..len {
                let mut changed = base.clone();
                changed[i] = b'b';
                let other = hash_values(1, &[std::str::from_utf8(&changed).unwrap()]);
                assert_ne!(
                    h, other,
                    "a change at byte {i} of {len} must change the hash"
                );
            }
        }
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let (_registry, b) = table();
        let desc = Desc::new(Kind::Counter, "", &["v"]);
        let f = b.family::<CounterKind>(&desc, "long_total").unwrap();
        let long = "é".repeat(2000);
        f.series(&[LabelRef::Str(&long)]).inc();
        let s = f.table.slots.iter().find_map(|s| s.get()).unwrap();
        assert!(s.values[0].len() <= MAX_LABEL_VALUE);
    }
}
