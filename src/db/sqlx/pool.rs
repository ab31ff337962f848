//! The gauges of watched pools, read from the pools when the registry is gathered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ::sqlx::{Database, Pool};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

use crate::core::names::{
    DB_CONNECTION_MAX, DB_CONNECTIONS_USAGE, DB_PENDING_REQUESTS, DB_POOL_LABEL, DB_STATE_LABEL,
};
use crate::db::{COUNT_HELP, MAX_HELP, PENDING_HELP};

/// The name of the collector's descriptor. It only identifies the collector in the registry:
/// what the collector returns are the three `db_client_*` pool gauge families, merged with
/// [`crate::db::DbPool`]'s at gathering.
const COLLECTOR_NAME: &str = "mercenary_obs_sqlx_pools";

/// One watched pool: how to read it, and the requests waiting through its handles.
pub(crate) struct PoolSource {
    name: String,
    /// `(size, idle, max)`, or `None` once the pool is closed.
    read: Box<dyn Fn() -> Option<(u32, usize, u32)> + Send + Sync>,
    /// Acquisitions in flight through the pool's [`super::WatchedPool`] handles.
    waiting: AtomicI64,
}

impl PoolSource {
    pub(crate) fn new<DB: Database>(name: &str, pool: Pool<DB>) -> Self {
        PoolSource {
            name: name.to_string(),
            read: Box::new(move || {
                (!pool.is_closed()).then(|| {
                    (
                        pool.size(),
                        pool.num_idle(),
                        pool.options().get_max_connections(),
                    )
                })
            }),
            waiting: AtomicI64::new(0),
        }
    }

    /// Counts one request waiting for a connection until the guard is dropped.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.waiting)
    }
}

/// One request waiting for a connection (see [`PoolSource::wait`]).
pub(crate) struct Waiting<'a>(&'a AtomicI64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The watched pools of an instance, and the gauge vectors their values are written into
/// at each gathering (not registered themselves: the collector returns what they collect).
pub(crate) struct PoolTable {
    pools: Mutex<Vec<Arc<PoolSource>>>,
    /// One gathering at a time: each resets the vectors and writes every pool's values.
    gauges: Mutex<Gauges>,
}

/// `None`: the family's name is taken by another metric (reported once when the pool gauges
/// were made), so it is not exported.
struct Gauges {
    usage: Option<GaugeVec>,
    max: Option<GaugeVec>,
    pending: Option<GaugeVec>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PoolTable {
    /// A table exporting the families that are free (`usage`, `max`, `pending`).
    pub(crate) fn new(usage: bool, max: bool, pending: bool) -> Self {
        let vec = |on: bool, name: &str, help: &str, labels: &[&str]| {
            on.then(|| GaugeVec::new(Opts::new(name, help), labels).ok())
                .flatten()
        };
        PoolTable {
            pools: Mutex::new(Vec::new()),
            gauges: Mutex::new(Gauges {
                usage: vec(
                    usage,
                    DB_CONNECTIONS_USAGE,
                    COUNT_HELP,
                    &[DB_POOL_LABEL, DB_STATE_LABEL],
                ),
                max: vec(max, DB_CONNECTION_MAX, MAX_HELP, &[DB_POOL_LABEL]),
                pending: vec(pending, DB_PENDING_REQUESTS, PENDING_HELP, &[DB_POOL_LABEL]),
            }),
        }
    }

    /// Watches `source`, in place of a pool watched under the same name.
    pub(crate) fn watch(&self, source: Arc<PoolSource>) {
        let mut pools = lock(&self.pools);
        pools.retain(|p| p.name != source.name);
        pools.push(source);
    }

    /// The collector to register (the table is shared with the instance).
    pub(crate) fn collector(self: &Arc<Self>) -> PoolCollector {
        PoolCollector {
            table: self.clone(),
            desc: vec![
                Desc::new(
                    COLLECTOR_NAME.to_string(),
                    "Watched sqlx pools (identifies the collector; not exported).".to_string(),
                    Vec::new(),
                    HashMap::new(),
                )
                .expect("a valid descriptor"),
            ],
        }
    }

    fn gather(&self) -> Vec<MetricFamily> {
        let gauges = lock(&self.gauges);
        for vec in [&gauges.usage, &gauges.max, &gauges.pending]
            .into_iter()
            .flatten()
        {
            vec.reset();
        }
        let pools: Vec<Arc<PoolSource>> = {
            let mut pools = lock(&self.pools);
            // A closed pool is forgotten (and its handle released).
            pools.retain(|p| (p.read)().is_some());
            pools.clone()
        };
        for pool in &pools {
            let Some((size, idle, max)) = (pool.read)() else {
                continue;
            };
            let name = pool.name.as_str();
            if let Some(usage) = &gauges.usage {
                let used = u64::from(size).saturating_sub(idle as u64);
                usage.with_label_values(&[name, "used"]).set(used as f64);
                usage.with_label_values(&[name, "idle"]).set(idle as f64);
            }
            if let Some(m) = &gauges.max {
                m.with_label_values(&[name]).set(f64::from(max));
            }
            if let Some(p) = &gauges.pending {
                let waiting = pool.waiting.load(Ordering::Relaxed).max(0);
                p.with_label_values(&[name]).set(waiting as f64);
            }
        }
        [&gauges.usage, &gauges.max, &gauges.pending]
            .into_iter()
            .flatten()
            .flat_map(|vec| vec.collect())
            .collect()
    }
}

/// Reads the watched pools when the registry is gathered.
pub(crate) struct PoolCollector {
    table: Arc<PoolTable>,
    desc: Vec<Desc>,
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.desc.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.table.gather()
    }
}
