//! Process and tokio runtime gauges: the names the monitoring kit queries, and (feature `tokio`)
//! a collector that reads the tokio runtime's stable metrics at scrape time.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `tokio_runtime_workers` | gauge | worker threads of the runtime serving `/metrics` (`RuntimeMetrics::num_workers`) |
//! | `tokio_runtime_alive_tasks` | gauge | tasks spawned and not yet finished (`num_alive_tasks`) |
//! | `tokio_runtime_global_queue_depth` | gauge | tasks waiting in the runtime's global (injection) queue (`global_queue_depth`) |
//!
//! The values are read when the registry is gathered, from `Handle::try_current()`: the runtime
//! the scrape runs on, which for `/metrics` served by the application is the application's
//! runtime. Gathered outside any tokio runtime, the collector reports nothing (no series rather
//! than a misleading zero).

#[cfg(feature = "tokio")]
pub(crate) use collector::register_runtime_metrics;

#[cfg(feature = "tokio")]
mod collector {
    use prometheus::core::{Collector, Desc};
    use prometheus::proto::MetricFamily;
    use prometheus::{IntGauge, Registry};

    use crate::core::error::Error;
    use crate::core::names::{TOKIO_ALIVE_TASKS, TOKIO_GLOBAL_QUEUE_DEPTH, TOKIO_WORKERS};

    /// Reads the current tokio runtime's metrics when gathered.
    struct RuntimeCollector {
        workers: IntGauge,
        alive_tasks: IntGauge,
        global_queue_depth: IntGauge,
        descs: Vec<Desc>,
    }

    impl RuntimeCollector {
        fn new() -> Result<Self, prometheus::Error> {
            let workers = IntGauge::new(
                TOKIO_WORKERS,
                "Worker threads of the tokio runtime serving the scrape.",
            )?;
            let alive_tasks = IntGauge::new(
                TOKIO_ALIVE_TASKS,
                "Tasks alive (spawned, not finished) on the tokio runtime.",
            )?;
            let global_queue_depth = IntGauge::new(
                TOKIO_GLOBAL_QUEUE_DEPTH,
                "Tasks waiting in the tokio runtime's global queue.",
            )?;
            let descs = [&workers, &alive_tasks, &global_queue_depth]
                .iter()
                .flat_map(|g| g.desc().into_iter().cloned())
                .collect();
            Ok(Self {
                workers,
                alive_tasks,
                global_queue_depth,
                descs,
            })
        }
    }

    impl Collector for RuntimeCollector {
        fn desc(&self) -> Vec<&Desc> {
            self.descs.iter().collect()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return Vec::new();
            };
            let m = handle.metrics();
            let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.workers.set(as_i64(m.num_workers()));
            self.alive_tasks.set(as_i64(m.num_alive_tasks()));
            self.global_queue_depth.set(as_i64(m.global_queue_depth()));
            let mut out = self.workers.collect();
            out.extend(self.alive_tasks.collect());
            out.extend(self.global_queue_depth.collect());
            out
        }
    }

    /// Registers the tokio runtime gauges in `registry`.
    pub(crate) fn register_runtime_metrics(registry: &Registry) -> Result<(), Error> {
        let err = |e: prometheus::Error| Error::MetricRegistration {
            metric: "tokio_runtime_*".into(),
            reason: e.to_string(),
        };
        let collector = RuntimeCollector::new().map_err(err)?;
        registry.register(Box::new(collector)).map_err(err)
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;
    use crate::core::names::{TOKIO_ALIVE_TASKS, TOKIO_GLOBAL_QUEUE_DEPTH, TOKIO_WORKERS};

    #[test]
    fn runtime_gauges_are_read_at_scrape_time_on_tokio_only() {
        let registry = prometheus::Registry::new();
        register_runtime_metrics(&registry).unwrap();
        // Outside a runtime: no series.
        assert!(registry.gather().is_empty());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .build()
            .unwrap();
        let families = rt.block_on(async { registry.gather() });
        let value = |name: &str| {
            families
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.get_metric()[0].get_gauge().get_value())
        };
        assert_eq!(value(TOKIO_WORKERS), Some(3.0));
        assert!(value(TOKIO_ALIVE_TASKS).is_some());
        assert_eq!(value(TOKIO_GLOBAL_QUEUE_DEPTH), Some(0.0));
    }
}
