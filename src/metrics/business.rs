//! Support for the business-metric macros: families registered on first use, one per name.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::{self, Display, Write as _};
use std::sync::Mutex;

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// A counter handle returned by [`crate::counter!`]. A no-op when the call was invalid.
#[derive(Clone, Debug)]
pub struct Counter(Option<prometheus::IntCounter>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        if let Some(c) = &self.0 {
            c.inc();
        }
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        if let Some(c) = &self.0 {
            c.inc_by(n);
        }
    }

    /// The current value (0 for a no-op handle).
    pub fn get(&self) -> u64 {
        self.0.as_ref().map_or(0, |c| c.get())
    }
}

/// A gauge handle returned by [`crate::gauge!`]. A no-op when the call was invalid.
#[derive(Clone, Debug)]
pub struct Gauge(Option<prometheus::Gauge>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        if let Some(g) = &self.0 {
            g.set(v);
        }
    }

    /// Adds `v`.
    pub fn add(&self, v: f64) {
        if let Some(g) = &self.0 {
            g.add(v);
        }
    }

    /// Subtracts `v`.
    pub fn sub(&self, v: f64) {
        if let Some(g) = &self.0 {
            g.sub(v);
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts one.
    pub fn dec(&self) {
        self.sub(1.0);
    }

    /// The current value (0 for a no-op handle).
    pub fn get(&self) -> f64 {
        self.0.as_ref().map_or(0.0, |g| g.get())
    }
}

/// A histogram handle returned by [`crate::histogram!`]. A no-op when the call was invalid.
#[derive(Clone, Debug)]
pub struct Histogram(Option<prometheus::Histogram>);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, v: f64) {
        if let Some(h) = &self.0 {
            h.observe(v);
        }
    }

    /// Starts a timer that observes the elapsed seconds when dropped (or on `observe_duration`).
    pub fn start_timer(&self) -> Option<prometheus::HistogramTimer> {
        self.0.as_ref().map(|h| h.start_timer())
    }
}

enum Family {
    Counter(IntCounterVec, Vec<String>),
    Gauge(GaugeVec, Vec<String>),
    Histogram(HistogramVec, Vec<String>),
}

impl Family {
    fn kind(&self) -> &'static str {
        match self {
            Family::Counter(..) => "counter",
            Family::Gauge(..) => "gauge",
            Family::Histogram(..) => "histogram",
        }
    }

    fn labels(&self) -> &[String] {
        match self {
            Family::Counter(_, l) | Family::Gauge(_, l) | Family::Histogram(_, l) => l,
        }
    }
}

/// The business-metric families of one instance.
#[derive(Default)]
pub(crate) struct BusinessMetrics {
    families: Mutex<HashMap<String, Family>>,
    /// Names already reported as misused, so each problem is logged once.
    reported: Mutex<std::collections::HashSet<String>>,
}

/// Default buckets of business histograms (prometheus' defaults).
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl BusinessMetrics {
    fn report(&self, name: &str, problem: fmt::Arguments<'_>) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.len() < 10_000 && reported.insert(name.to_string()) {
            tracing::warn!(target: "mercenary_obs::metrics", metric = name, "metric call ignored: {problem}");
        }
    }

    fn resolve<T>(
        &self,
        registry: &Registry,
        kind: &'static str,
        name: &str,
        labels: &[(&str, &dyn Display)],
        make: impl FnOnce(&[&str]) -> Result<Family, prometheus::Error>,
        pick: impl FnOnce(&Family, &[&str]) -> Option<T>,
    ) -> Option<T> {
        let keys: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let values: Vec<String> = labels
            .iter()
            .map(|(_, v)| {
                let mut s = String::new();
                let _ = write!(s, "{v}");
                s
            })
            .collect();
        let value_refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = match families.entry(name.to_string()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                let family = match make(&keys) {
                    Ok(f) => f,
                    Err(e) => {
                        drop(families);
                        self.report(name, format_args!("invalid {kind} `{name}`: {e}"));
                        return None;
                    }
                };
                let collector: Box<dyn prometheus::core::Collector> = match &family {
                    Family::Counter(c, _) => Box::new(c.clone()),
                    Family::Gauge(g, _) => Box::new(g.clone()),
                    Family::Histogram(h, _) => Box::new(h.clone()),
                };
                if let Err(e) = registry.register(collector) {
                    drop(families);
                    self.report(name, format_args!("cannot register {kind} `{name}`: {e}"));
                    return None;
                }
                v.insert(family)
            }
        };
        if family.kind() != kind
            || family
                .labels()
                .iter()
                .map(String::as_str)
                .ne(keys.iter().copied())
        {
            let existing = format!("{} with labels {:?}", family.kind(), family.labels());
            drop(families);
            self.report(
                name,
                format_args!(
                    "`{name}` is already a {existing}; used as a {kind} with labels {keys:?}"
                ),
            );
            return None;
        }
        pick(family, &value_refs)
    }

    pub(crate) fn counter(
        &self,
        registry: &Registry,
        name: &str,
        labels: &[(&str, &dyn Display)],
    ) -> Counter {
        Counter(self.resolve(
            registry,
            "counter",
            name,
            labels,
            |keys| {
                let help = format!("Business counter {name}.");
                Ok(Family::Counter(
                    IntCounterVec::new(Opts::new(name, help), keys)?,
                    own(keys),
                ))
            },
            |f, v| match f {
                Family::Counter(c, _) => c.get_metric_with_label_values(v).ok(),
                _ => None,
            },
        ))
    }

    pub(crate) fn gauge(
        &self,
        registry: &Registry,
        name: &str,
        labels: &[(&str, &dyn Display)],
    ) -> Gauge {
        Gauge(self.resolve(
            registry,
            "gauge",
            name,
            labels,
            |keys| {
                let help = format!("Business gauge {name}.");
                Ok(Family::Gauge(
                    GaugeVec::new(Opts::new(name, help), keys)?,
                    own(keys),
                ))
            },
            |f, v| match f {
                Family::Gauge(g, _) => g.get_metric_with_label_values(v).ok(),
                _ => None,
            },
        ))
    }

    pub(crate) fn histogram(
        &self,
        registry: &Registry,
        name: &str,
        labels: &[(&str, &dyn Display)],
    ) -> Histogram {
        Histogram(self.resolve(
            registry,
            "histogram",
            name,
            labels,
            |keys| {
                let help = format!("Business histogram {name}.");
                let opts = HistogramOpts::new(name, help).buckets(DEFAULT_BUCKETS.to_vec());
                Ok(Family::Histogram(HistogramVec::new(opts, keys)?, own(keys)))
            },
            |f, v| match f {
                Family::Histogram(h, _) => h.get_metric_with_label_values(v).ok(),
                _ => None,
            },
        ))
    }
}

fn own(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}
