//! One business metric family: the Prometheus vector plus its capped series table, read without
//! a lock, and the hashing and comparison of label values that find a series in it.

use std::cell::RefCell;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::IntCounter;
use prometheus::core::MetricVec;

use super::handles::MetricKind;
use crate::core::exemplar::{ExemplarTable, SeriesExemplar, series_key};
use crate::core::names::OTHER;

/// Label values are cut to this many bytes (at a character boundary).
const MAX_LABEL_VALUE: usize = 1024;

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
    /// The family's exemplar table (histograms and counters).
    exemplars: Option<Arc<ExemplarTable>>,
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
    /// A family over `vec` (registered by the caller) holding at most `cap` series; `overflow`
    /// counts the resolutions folded into `_other`.
    pub(super) fn new(
        labels: &[&str],
        vec: MetricVec<K::Builder>,
        cap: usize,
        overflow: IntCounter,
        exemplars: Option<Arc<ExemplarTable>>,
    ) -> Self {
        Family {
            labels: labels.iter().map(|l| Box::<str>::from(*l)).collect(),
            vec,
            cap,
            seed: fastrand::u64(..) | 1,
            table: SeriesTable::with_cap(cap),
            insert: Mutex::new(()),
            len: AtomicUsize::new(0),
            other: OnceLock::new(),
            overflow,
            exemplars,
        }
    }

    /// The label keys, in order.
    pub(super) fn labels(&self) -> &[Box<str>] {
        &self.labels
    }

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
                handle: K::handle(Some(metric), self.exemplar(values)),
            })
        });
        self.len.fetch_add(1, Ordering::Relaxed);
        &series.handle
    }

    fn other(&self) -> &K::Handle {
        self.other.get_or_init(|| {
            let values = vec![OTHER; self.labels.len()];
            K::handle(
                self.vec.get_metric_with_label_values(&values).ok(),
                self.exemplar(&values),
            )
        })
    }

    /// The exemplar slot of the series with these label values, when the family has a table.
    fn exemplar(&self, values: &[&str]) -> Option<SeriesExemplar> {
        let table = self.exemplars.as_ref()?;
        let labels = self.labels.iter().map(|l| &**l).zip(values.iter().copied());
        Some(SeriesExemplar {
            table: table.clone(),
            series: series_key(labels),
        })
    }

    /// Series created so far (not counting `_other`).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::business::registry::tests::table;
    use crate::metrics::business::{CounterKind, Desc, Kind};

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
