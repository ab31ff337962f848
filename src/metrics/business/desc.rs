//! What a call site declares, checked at compile time for literal names.

use super::MAX_SERIES_CAP;

/// The three kinds of business metric.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
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
    pub(super) kind: Kind,
    /// Empty when the name is an expression (resolved at run time).
    pub(super) name: &'static str,
    pub(super) labels: &'static [&'static str],
    pub(super) help: &'static str,
    pub(super) buckets: &'static [f64],
    pub(super) max_series: usize,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
