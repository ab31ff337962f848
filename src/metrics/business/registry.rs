//! The business-metric families of one instance: created on first use, checked against the
//! first use of the same name, and the problems reported once.

use std::collections::{HashMap, HashSet};
use std::fmt::{self, Display};
use std::sync::{Arc, Mutex, RwLock};

use prometheus::core::Collector;
use prometheus::{IntCounterVec, Opts, Registry};

use super::DEFAULT_SERIES_CAP;
use super::desc::{Desc, Kind, valid_label_name, valid_metric_name};
use super::handles::{CounterKind, GaugeKind, HistogramKind, MetricKind};
use super::table::{Family, LabelRef};
use crate::core::error::Error;
use crate::core::exemplar::Exemplars;
use crate::core::names::METRIC_OVERFLOW;

/// At most this many business metric families per instance (runtime names could otherwise grow
/// the registry without bound).
const MAX_FAMILIES: usize = 10_000;

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
            AnyFamily::Counter(f) => f.labels(),
            AnyFamily::Gauge(f) => f.labels(),
            AnyFamily::Histogram(f) => f.labels(),
        }
    }
}

/// The business-metric families of one instance.
pub(crate) struct BusinessMetrics {
    registry: Registry,
    families: RwLock<HashMap<String, AnyFamily>>,
    overflow: IntCounterVec,
    default_cap: usize,
    caps: HashMap<String, usize>,
    /// Problems already reported, so each is logged once.
    reported: Mutex<HashSet<String>>,
    /// The instance's exemplar tables (the RED histogram's too).
    exemplars: Arc<Exemplars>,
}

/// Exemplar slots of a business family (a histogram's buckets times its busiest series).
const BUSINESS_EXEMPLAR_SLOTS: usize = 1024;

impl BusinessMetrics {
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
            exemplars: Arc::default(),
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
            exemplars: Arc::default(),
        }
    }

    /// The instance's exemplar tables.
    pub(crate) fn exemplars(&self) -> &Arc<Exemplars> {
        &self.exemplars
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
        let exemplars = K::exemplar_bounds(desc.buckets).and_then(|bounds| {
            self.exemplars
                .register(name, bounds, BUSINESS_EXEMPLAR_SLOTS)
        });
        let family = Arc::new(Family::<K>::new(
            labels,
            vec,
            cap,
            self.overflow.with_label_values(&[name]),
            exemplars,
        ));
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
                    .labels()
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

#[cfg(test)]
pub(super) mod tests {
    use prometheus::IntCounter;

    use super::*;

    /// A fresh table with a default cap of 3 series (also used by the series table's tests).
    pub(in crate::metrics::business) fn table() -> (Registry, BusinessMetrics) {
        let registry = Registry::new();
        let b = BusinessMetrics::new(&registry, 3, HashMap::new()).unwrap();
        (registry, b)
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
}
