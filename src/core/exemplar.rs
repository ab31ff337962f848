//! Exemplars: per metric family, the most recent kept trace of each histogram bucket (or of each
//! counter series), published only once that trace is safe (exported, or in the ring).
//!
//! - [`ExemplarTable`]: one per family, a fixed array of slots, direct-mapped by a key made of
//!   the series (a hash of its label pairs, [`series_key`]) and the bucket, two ways per key. A
//!   slot is written under a sequence number (a seqlock on atomics): a writer that finds the
//!   slot being written by another gives up (the other one is as recent), a reader retries. No
//!   lock, no allocation, on any path. A newer key evicts the older of the two slots it maps
//!   to, so a table holds the most recent exemplars of its busiest series; the key (64 bits) is
//!   checked on read, so an evicted or colliding series shows no exemplar rather than another's.
//! - [`PendingExemplar`]: what a request records when it observes (table, series, bucket, value,
//!   span). It travels with its trace's local root to the sampler's decision and, when the
//!   trace is kept, to where the trace goes; [`Exemplars::publish`] writes it then.
//! - [`Exemplars`]: the instance's tables, by family name (found by the `/metrics` renderer)
//!   and by a small id (carried by pending exemplars).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};

/// Families with exemplars per instance at most (the crate's own four histograms and the
/// business families whose call sites ask for exemplars).
pub(crate) const MAX_TABLES: usize = 64;
/// Slots of the table of one of the crate's duration histograms.
pub(crate) const DEFAULT_SLOTS: usize = 2048;

/// A published exemplar: the trace and span, the observed value, when (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) value: f64,
    pub(crate) timestamp: f64,
}

/// An observation that becomes an exemplar if its trace is kept. `table` 0 means none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PendingExemplar {
    /// The table's id + 1.
    pub(crate) table: u16,
    pub(crate) bucket: u16,
    /// The instance whose table it is (an observation of one instance's metric inside another
    /// instance's request is not published in the wrong table).
    pub(crate) owner: u32,
    pub(crate) series: u64,
    pub(crate) value: f64,
    pub(crate) span_id: u64,
}

impl PendingExemplar {
    pub(crate) fn is_some(&self) -> bool {
        self.table != 0
    }
}

/// The pending exemplars of one local root (a request): up to four; a fifth replaces the
/// oldest.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RootExemplars {
    slots: [PendingExemplar; 4],
    next: u8,
}

impl RootExemplars {
    pub(crate) fn push(&mut self, p: PendingExemplar) {
        if !p.is_some() {
            return;
        }
        let i = usize::from(self.next) % self.slots.len();
        self.slots[i] = p;
        self.next = self.next.wrapping_add(1);
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &PendingExemplar> {
        self.slots.iter().filter(|p| p.is_some())
    }

    pub(crate) fn is_empty(&self) -> bool {
        !self.slots.iter().any(PendingExemplar::is_some)
    }
}

/// A series' place in its family's table, kept in the series' handle (public only because
/// the handles' kinds are: the macros name them).
#[doc(hidden)]
#[derive(Clone)]
pub struct SeriesExemplar {
    pub(crate) table: Arc<ExemplarTable>,
    pub(crate) series: u64,
}

impl std::fmt::Debug for SeriesExemplar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesExemplar").finish_non_exhaustive()
    }
}

impl SeriesExemplar {
    /// What to record for an observation of `value` (the span is filled in where it is
    /// attached).
    pub(crate) fn pending(&self, value: f64) -> PendingExemplar {
        self.table.pending(self.series, value, 0)
    }
}

/// How a metric handle (which cannot see spans) attaches a pending exemplar to the current
/// span's local root: installed by the span context layer.
static ATTACH: OnceLock<fn(PendingExemplar)> = OnceLock::new();

/// Installs the function that attaches pending exemplars to the current trace.
pub(crate) fn set_attach(f: fn(PendingExemplar)) {
    let _ = ATTACH.set(f);
}

/// Attaches `p` to the current span's local root, if there is one (and a layer installed the
/// hook).
pub(crate) fn attach_to_current(p: PendingExemplar) {
    if let Some(f) = ATTACH.get() {
        f(p);
    }
}

#[derive(Default)]
struct Slot {
    /// Even: stable; odd: being written.
    seq: AtomicU64,
    /// 0: empty.
    key: AtomicU64,
    trace_hi: AtomicU64,
    trace_lo: AtomicU64,
    span_id: AtomicU64,
    value: AtomicU64,
    timestamp: AtomicU64,
}

/// One family's exemplars.
pub(crate) struct ExemplarTable {
    /// The id carried by pending exemplars (index + 1).
    id: u16,
    owner: u32,
    /// Bucket upper bounds (without `+Inf`); empty for a counter.
    bounds: Box<[f64]>,
    slots: Box<[Slot]>,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix(seed ^ bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(word));
    }
    h
}

/// The identity of a series: a hash of its label pairs, whatever their order (the renderer
/// reads them sorted by name, the recording sites in their declared order).
pub(crate) fn series_key<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    series_key_hashed(
        labels
            .into_iter()
            .map(|(name, value)| (label_name_hash(name), value)),
    )
}

/// A label name's part of [`series_key`], for callers whose names are fixed: hashed once.
pub(crate) fn label_name_hash(name: &str) -> u64 {
    hash_bytes(0x9e37_79b9_7f4a_7c15, name.as_bytes())
}

/// [`series_key`] of labels whose names were hashed by [`label_name_hash`].
pub(crate) fn series_key_hashed<'a>(labels: impl IntoIterator<Item = (u64, &'a str)>) -> u64 {
    labels.into_iter().fold(0u64, |acc, (h, value)| {
        acc.wrapping_add(mix(h ^ hash_bytes(h, value.as_bytes())))
    })
}

fn slot_key(series: u64, bucket: u16) -> u64 {
    mix(series ^ mix(u64::from(bucket) + 1)) | 1
}

impl ExemplarTable {
    fn new(id: u16, owner: u32, bounds: &[f64], slots: usize) -> Self {
        let slots = slots.next_power_of_two().max(2);
        Self {
            id,
            owner,
            bounds: bounds.into(),
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }

    /// The bucket `value` falls in: the first bound it does not exceed, or the `+Inf` bucket.
    pub(crate) fn bucket(&self, value: f64) -> u16 {
        let i = self.bounds.partition_point(|&b| b < value);
        u16::try_from(i).unwrap_or(u16::MAX)
    }

    /// What to record for an observation of `value` in `series`, inside span `span_id`.
    pub(crate) fn pending(&self, series: u64, value: f64, span_id: u64) -> PendingExemplar {
        PendingExemplar {
            table: self.id,
            bucket: self.bucket(value),
            owner: self.owner,
            series,
            value,
            span_id,
        }
    }

    fn ways(&self, key: u64) -> [&Slot; 2] {
        let mask = self.slots.len() - 1;
        let i = (key as usize) & mask;
        [&self.slots[i], &self.slots[i ^ 1]]
    }

    /// Writes `e` as the exemplar of (`series`, `bucket`).
    pub(crate) fn publish(&self, series: u64, bucket: u16, e: Exemplar) {
        let key = slot_key(series, bucket);
        let [a, b] = self.ways(key);
        let slot = if a.key.load(Ordering::Relaxed) == key {
            a
        } else if b.key.load(Ordering::Relaxed) == key {
            b
        } else if a.timestamp.load(Ordering::Relaxed) <= b.timestamp.load(Ordering::Relaxed) {
            a
        } else {
            b
        };
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || slot
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return; // Another writer is here right now.
        }
        fence(Ordering::Release);
        slot.key.store(key, Ordering::Relaxed);
        slot.trace_hi
            .store((e.trace_id >> 64) as u64, Ordering::Relaxed);
        slot.trace_lo.store(e.trace_id as u64, Ordering::Relaxed);
        slot.span_id.store(e.span_id, Ordering::Relaxed);
        slot.value.store(e.value.to_bits(), Ordering::Relaxed);
        slot.timestamp
            .store(e.timestamp.to_bits(), Ordering::Relaxed);
        slot.seq.store(seq + 2, Ordering::Release);
    }

    /// The exemplar of (`series`, `bucket`), if one was published and not evicted since.
    pub(crate) fn get(&self, series: u64, bucket: usize) -> Option<Exemplar> {
        let bucket = u16::try_from(bucket).ok()?;
        let key = slot_key(series, bucket);
        for slot in self.ways(key) {
            for _ in 0..8 {
                let before = slot.seq.load(Ordering::Acquire);
                if before & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let found = slot.key.load(Ordering::Relaxed);
                let e = Exemplar {
                    trace_id: (u128::from(slot.trace_hi.load(Ordering::Relaxed)) << 64)
                        | u128::from(slot.trace_lo.load(Ordering::Relaxed)),
                    span_id: slot.span_id.load(Ordering::Relaxed),
                    value: f64::from_bits(slot.value.load(Ordering::Relaxed)),
                    timestamp: f64::from_bits(slot.timestamp.load(Ordering::Relaxed)),
                };
                fence(Ordering::Acquire);
                if slot.seq.load(Ordering::Relaxed) != before {
                    continue;
                }
                if found == key {
                    return Some(e);
                }
                break;
            }
        }
        None
    }
}

/// A family's name and table.
type Entry = (Box<str>, Arc<ExemplarTable>);

/// The exemplar tables of one instance.
pub(crate) struct Exemplars {
    tables: Box<[OnceLock<Entry>]>,
    register: Mutex<()>,
    owner: u32,
}

impl std::fmt::Debug for Exemplars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exemplars").finish_non_exhaustive()
    }
}

impl Default for Exemplars {
    fn default() -> Self {
        static OWNERS: AtomicU32 = AtomicU32::new(1);
        Self {
            tables: (0..MAX_TABLES).map(|_| OnceLock::new()).collect(),
            register: Mutex::new(()),
            owner: OWNERS.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Exemplars {
    /// The table of `family` (made on first call, with `bounds` and `slots`); `None` when the
    /// instance has [`MAX_TABLES`] already.
    pub(crate) fn register(
        &self,
        family: &str,
        bounds: &[f64],
        slots: usize,
    ) -> Option<Arc<ExemplarTable>> {
        let _one_at_a_time = self.register.lock().unwrap_or_else(|e| e.into_inner());
        for (i, cell) in self.tables.iter().enumerate() {
            match cell.get() {
                Some((name, table)) if &**name == family => return Some(table.clone()),
                Some(_) => {}
                None => {
                    let id = u16::try_from(i + 1).ok()?;
                    let table = Arc::new(ExemplarTable::new(id, self.owner, bounds, slots));
                    let _ = cell.set((family.into(), table.clone()));
                    return Some(table);
                }
            }
        }
        None
    }

    /// The table of `family`, if it has one.
    pub(crate) fn lookup(&self, family: &str) -> Option<&ExemplarTable> {
        self.tables
            .iter()
            .map_while(OnceLock::get)
            .find(|(name, _)| &**name == family)
            .map(|(_, t)| &**t)
    }

    fn by_id(&self, id: u16) -> Option<&ExemplarTable> {
        let i = usize::from(id).checked_sub(1)?;
        self.tables.get(i)?.get().map(|(_, t)| &**t)
    }

    /// Publishes `pending`, observed in trace `trace_id`, at `timestamp` (Unix seconds).
    pub(crate) fn publish(&self, trace_id: u128, timestamp: f64, pending: &PendingExemplar) {
        if pending.owner != self.owner {
            return;
        }
        if let Some(table) = self.by_id(pending.table) {
            table.publish(
                pending.series,
                pending.bucket,
                Exemplar {
                    trace_id,
                    span_id: pending.span_id,
                    value: pending.value,
                    timestamp,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: u64) -> Exemplar {
        Exemplar {
            trace_id: u128::from(n) << 64 | u128::from(n),
            span_id: n,
            value: n as f64 / 1000.0,
            timestamp: 1_700_000_000.0 + n as f64,
        }
    }

    #[test]
    fn series_key_ignores_label_order_but_not_values_or_names() {
        let hashed = series_key_hashed([
            (label_name_hash("method"), "GET"),
            (label_name_hash("route"), "/a"),
        ]);
        assert_eq!(hashed, series_key([("method", "GET"), ("route", "/a")]));
        let a = series_key([("method", "GET"), ("route", "/a")]);
        assert_eq!(a, series_key([("route", "/a"), ("method", "GET")]));
        assert_ne!(a, series_key([("method", "GET"), ("route", "/b")]));
        assert_ne!(a, series_key([("method", "/a"), ("route", "GET")]));
        assert_ne!(
            a,
            series_key([("method", "GET"), ("route", "/a"), ("x", "")])
        );
    }

    #[test]
    fn buckets_follow_prometheus_le_semantics() {
        let t = ExemplarTable::new(1, 1, &[0.1, 0.5, 1.0], 16);
        assert_eq!(t.bucket(0.0), 0);
        assert_eq!(t.bucket(0.1), 0, "le is inclusive");
        assert_eq!(t.bucket(0.10001), 1);
        assert_eq!(t.bucket(1.0), 2);
        assert_eq!(t.bucket(7.0), 3, "+Inf");
    }

    #[test]
    fn publish_then_get_and_the_latest_wins() {
        let x = Exemplars::default();
        let t = x.register("h", &[0.1, 1.0], 64).unwrap();
        let series = series_key([("route", "/a")]);
        assert_eq!(t.get(series, 0), None);
        let p = t.pending(series, 0.05, 7);
        x.publish(42, 1.5, &p);
        let got = t.get(series, 0).unwrap();
        assert_eq!(
            (got.trace_id, got.span_id, got.value, got.timestamp),
            (42, 7, 0.05, 1.5)
        );
        assert_eq!(t.get(series, 1), None, "another bucket has none");
        assert_eq!(t.get(series_key([("route", "/b")]), 0), None);
        x.publish(43, 2.5, &t.pending(series, 0.07, 8));
        assert_eq!(t.get(series, 0).unwrap().trace_id, 43);
        assert!(x.lookup("h").is_some() && x.lookup("other").is_none());
        assert!(Arc::ptr_eq(&t, &x.register("h", &[], 2).unwrap()));
        let other = Exemplars::default();
        let theirs = other.register("h", &[0.1, 1.0], 64).unwrap();
        x.publish(44, 3.5, &theirs.pending(series, 0.06, 9));
        assert_eq!(
            t.get(series, 0).unwrap().trace_id,
            43,
            "another instance's is ignored"
        );
    }

    #[test]
    fn a_full_table_evicts_but_never_answers_with_another_series() {
        let t = ExemplarTable::new(1, 1, &[], 8);
        for n in 1..=200u64 {
            t.publish(n, 0, ex(n));
        }
        let mut found = 0;
        for n in 1..=200u64 {
            if let Some(e) = t.get(n, 0) {
                assert_eq!(e, ex(n), "series {n} answers with its own exemplar");
                found += 1;
            }
        }
        assert!(found > 0 && found <= 8);
        assert_eq!(t.get(200, 0), Some(ex(200)), "the newest survives");
    }

    #[test]
    fn concurrent_writers_and_readers_never_see_a_torn_exemplar() {
        let t = Arc::new(ExemplarTable::new(1, 1, &[], 2));
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for n in 0..50_000u64 {
                        t.publish(1, 0, ex(n * 2 + w));
                    }
                })
            })
            .collect();
        let mut seen = 0;
        while seen < 10_000 {
            if let Some(e) = t.get(1, 0) {
                let n = e.span_id;
                assert_eq!(e, ex(n), "fields from one write");
                seen += 1;
            }
        }
        for w in writers {
            w.join().unwrap();
        }
    }

    #[test]
    fn at_most_max_tables() {
        let x = Exemplars::default();
        for i in 0..MAX_TABLES {
            assert!(x.register(&format!("f{i}"), &[], 2).is_some());
        }
        assert!(x.register("one_more", &[], 2).is_none());
        assert!(
            x.register("f3", &[], 2).is_some(),
            "an existing family is found"
        );
    }

    #[test]
    fn root_exemplars_keep_the_latest_four() {
        let mut r = RootExemplars::default();
        assert!(r.is_empty());
        for n in 1..=6u64 {
            r.push(PendingExemplar {
                table: 1,
                span_id: n,
                ..Default::default()
            });
        }
        let mut ids: Vec<u64> = r.iter().map(|p| p.span_id).collect();
        ids.sort();
        assert_eq!(ids, vec![3, 4, 5, 6]);
        r.push(PendingExemplar::default());
        assert_eq!(
            r.iter().count(),
            4,
            "an empty pending exemplar is not recorded"
        );
    }
}
