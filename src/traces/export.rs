//! OTLP export of kept spans: a bounded queue drained by one thread.
//!
//! Contract (used by the tail sampler in `sampler.rs`):
//!
//! - `SpanExportQueue::start(config, counters)` starts one `std::thread` named
//!   `mercenary-obs-export` running a tokio current-thread runtime, builds the exporter inside
//!   it (`opentelemetry_otlp::SpanExporter` on the crate's hyper client for HTTP/protobuf, the
//!   crate's own tonic call in `grpc.rs` under feature `grpc`), and returns a handle. Bad settings → `crate::Error`.
//! - `push(spans)` never blocks and never wakes the thread per call: spans past
//!   `max_queue_size` are dropped and counted in `counters.queue_full` (per span); the thread is
//!   woken when a full batch is waiting, otherwise every `schedule_delay`.
//! - Each export is bounded by `timeout`; a failure or timeout counts the batch's spans in
//!   `counters.export_failed` and calls `warn` at most once per 10 s.
//! - The thread makes `tracing::Dispatch::none()` its default so the exporter's own tracing
//!   events (hyper, h2, tonic) never feed back into the pipeline.
//! - `flush(timeout)` / `shutdown(timeout)` export what is queued and return whether everything
//!   was handled in time; they never hang, whatever the collector does.
//!
//! How it works:
//!
//! - The queue is a `VecDeque<QueuedSpan>` under a mutex, at most `max_queue_size` spans. `push`
//!   appends under that lock and notifies the thread only when the queue crosses
//!   `max_export_batch_size` (a full batch is waiting); spans that do not fit are dropped after
//!   the lock is released. Memory is bounded by the queue plus the one batch in flight.
//! - The thread waits on a condvar with a timeout (`schedule_delay`), outside the runtime, and
//!   drives the runtime only while one export runs (`block_on`). Each export is wrapped in
//!   `tokio::time::timeout(timeout, ..)`, whatever the exporter's own timeout does.
//! - "Handled" means the collector accepted the spans or their export failed (counted): a flush
//!   against a collector that refuses connections returns `true` quickly, with the spans counted
//!   in `export_failed`; against one that never answers it returns `false` at its deadline.
//! - `shutdown(timeout)` asks the thread to export what is queued and stop. At the deadline it
//!   gives up: the export in flight is cancelled (checked every 20 ms) and what is still queued
//!   is counted in `export_failed`, then the runtime is shut down with a bound of its own
//!   (`shutdown_timeout`), so neither the call nor the thread can hang. Spans pushed after
//!   `shutdown` are dropped and counted in `queue_full`.
//! - `warn` runs on the export thread, where the default `tracing` dispatcher is
//!   `Dispatch::none()`: a `tracing::warn!` inside it is not seen by anybody; it must write to an
//!   explicit dispatch (`tracing::dispatcher::with_default`) or to the log writer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::SpanData;
use prometheus::IntCounter;

use super::options::TlsFiles;
use super::record::QueuedSpan;
use super::sampler::{TraceExemplars, publish_exemplars};
use super::target::Target;
use super::transport::LastError;
use crate::core::error::Error;
use crate::core::exemplar::Exemplars;

/// `warn` is called at most once per this interval.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// How often an export in flight checks whether `shutdown` gave up on it.
const ABANDON_CHECK: Duration = Duration::from_millis(20);
/// How long `shutdown` waits for the thread to stop once it has given up.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// Bound on dropping the runtime (tasks and blocking threads, e.g. a stuck DNS lookup).
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// OTLP/gRPC (tonic); needs the `grpc` feature.
    Grpc,
    /// OTLP/HTTP with a protobuf body (hyper).
    HttpProtobuf,
}

/// Where and how to export, and the batch processor's bounds.
pub(crate) struct ExportConfig {
    /// Full URL. For HTTP it is used as is (the caller has already appended /v1/traces when the
    /// base OTEL_EXPORTER_OTLP_ENDPOINT was given). For gRPC it is the collector's address.
    pub(crate) endpoint: String,
    pub(crate) protocol: Protocol,
    pub(crate) headers: Vec<(String, String)>,
    /// gzip the bodies.
    pub(crate) gzip: bool,
    /// CA bundle and client certificate (read when the exporter starts).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) tls: TlsFiles,
    /// Bound on each export call.
    pub(crate) timeout: Duration,
    /// `OTEL_BSP_SCHEDULE_DELAY`, default 5 s.
    pub(crate) schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, default 2048 (spans).
    pub(crate) max_queue_size: usize,
    /// Default 512.
    pub(crate) max_export_batch_size: usize,
    pub(crate) resource: opentelemetry_sdk::Resource,
    /// Called at most once per 10 s with a human-readable reason when exports fail.
    pub(crate) warn: Box<dyn Fn(&str) + Send + Sync>,
    /// Where the exemplars of exported traces are published.
    pub(crate) exemplars: Arc<Exemplars>,
}

/// What the queue counts.
pub(crate) struct ExportCounters {
    /// Spans dropped because the queue was full (or closed by `shutdown`).
    pub(crate) queue_full: IntCounter,
    /// Spans in batches whose export failed or timed out (and spans still queued when
    /// `shutdown` gave up).
    pub(crate) export_failed: IntCounter,
    /// Spans the collector accepted.
    pub(crate) exported: IntCounter,
    /// Spans the collector rejected in a partial success (OTLP/HTTP).
    pub(crate) rejected: IntCounter,
    /// Export calls (retries inside one call included) the collector accepted.
    pub(crate) requests_success: IntCounter,
    /// Export calls that failed (refused, or no answer after the exporter's retries).
    pub(crate) requests_failed: IntCounter,
    /// Export calls cut by `timeout`, or abandoned by `shutdown`.
    pub(crate) requests_timed_out: IntCounter,
}

struct State {
    queue: VecDeque<QueuedSpan>,
    /// Spans accepted into the queue so far.
    accepted: u64,
    /// Spans taken out of the queue into batches so far.
    taken: u64,
    /// Exemplars of queued traces, with the `accepted` count after their trace's spans: they
    /// are published when the batch holding that span is exported.
    exemplars: VecDeque<(u64, TraceExemplars)>,
    /// Spans whose export has finished, either way (always `accepted` minus the queue minus the
    /// batch in flight).
    handled: u64,
    /// Export without waiting for the schedule until `handled` reaches this.
    flush_upto: u64,
    shutdown: bool,
    /// The thread has ended; nothing is queued.
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread.
    wake: Condvar,
    /// Wakes callers of `flush` and `shutdown`.
    done: Condvar,
    /// Set by `shutdown` at its deadline: cancel the export in flight and stop.
    abandon: AtomicBool,
    max_queue_size: usize,
    batch_size: usize,
    counters: ExportCounters,
    exemplars: Arc<Exemplars>,
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle is gone: the thread exports what is queued and stops on its own.
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.shutdown = true;
        drop(state);
        self.shared.wake.notify_one();
    }
}

/// A cloneable handle to the export thread.
#[derive(Clone)]
pub(crate) struct SpanExportQueue {
    inner: Arc<Inner>,
}

impl SpanExportQueue {
    /// Checks the settings, starts the export thread and builds the exporter in it.
    pub(crate) fn start(config: ExportConfig, counters: ExportCounters) -> Result<Self, Error> {
        check_positive(
            "OTEL_BSP_MAX_QUEUE_SIZE",
            config.max_queue_size as u128,
            "a positive number of spans",
        )?;
        check_positive(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            config.max_export_batch_size as u128,
            "a positive number of spans",
        )?;
        check_positive(
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            config.timeout.as_millis(),
            "a positive number of milliseconds",
        )?;
        check_positive(
            "OTEL_BSP_SCHEDULE_DELAY",
            config.schedule_delay.as_millis(),
            "a positive number of milliseconds",
        )?;
        let target = Target::check(&config)?;

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                accepted: 0,
                taken: 0,
                exemplars: VecDeque::new(),
                handled: 0,
                flush_upto: 0,
                shutdown: false,
                stopped: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            abandon: AtomicBool::new(false),
            max_queue_size: config.max_queue_size,
            batch_size: config.max_export_batch_size.min(config.max_queue_size),
            counters,
            exemplars: config.exemplars.clone(),
        });
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let worker_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("mercenary-obs-export".into())
            .spawn(move || run(worker_shared, config, target, ready_tx))
            .map_err(Error::WriterThread)?;
        let started = ready_rx.recv().unwrap_or_else(|_| {
            Err(Error::WriterThread(std::io::Error::other(
                "the span export thread ended while starting",
            )))
        });
        if let Err(e) = started {
            let _ = handle.join();
            return Err(e);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Queues spans for export. Never blocks on I/O; spans past the queue's bound are dropped
    /// and counted in `queue_full`. `exemplars` are published once the last of these spans is
    /// exported (never when any of them was dropped).
    pub(crate) fn push_with(&self, spans: Vec<QueuedSpan>, exemplars: Option<TraceExemplars>) {
        if spans.is_empty() {
            return;
        }
        let shared = &self.inner.shared;
        let mut spans = spans.into_iter();
        let mut state = lock(&shared.state);
        if !state.shutdown {
            let before = state.queue.len();
            let room = shared.max_queue_size.saturating_sub(before);
            state.queue.extend(spans.by_ref().take(room));
            let after = state.queue.len();
            state.accepted += (after - before) as u64;
            if let Some(exemplars) = exemplars
                && spans.len() == 0
            {
                let end = state.accepted;
                state.exemplars.push_back((end, exemplars));
            }
            drop(state);
            if before < shared.batch_size && after >= shared.batch_size {
                shared.wake.notify_one();
            }
        } else {
            drop(state);
        }
        let rejected = spans.len();
        if rejected > 0 {
            shared.counters.queue_full.inc_by(rejected as u64);
        }
        // The rejected spans are freed here, outside the lock.
    }

    /// [`Self::push_with`] without exemplars.
    #[cfg(test)]
    pub(crate) fn push(&self, spans: Vec<SpanData>) {
        self.push_with(spans.into_iter().map(QueuedSpan::from).collect(), None);
    }

    /// Exports every span queued before the call; returns whether all of them were handled
    /// (accepted by the collector, or failed and counted) within `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let deadline = deadline_after(timeout);
        let mut state = lock(&shared.state);
        let target = state.accepted;
        if state.handled >= target {
            return true;
        }
        state.flush_upto = state.flush_upto.max(target);
        shared.wake.notify_one();
        let (state, ok) = wait_until(&shared.done, state, deadline, |s| s.handled >= target);
        drop(state);
        ok
    }

    /// Exports what is queued and stops the thread. Returns whether everything was handled
    /// within `timeout`; at the deadline the export in flight is cancelled and what is left is
    /// counted in `export_failed`. Returns within `timeout` plus a fraction of a second.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        let shared = &self.inner.shared;
        let deadline = deadline_after(timeout);
        let mut state = lock(&shared.state);
        state.shutdown = true;
        shared.wake.notify_one();
        let (state, finished) = wait_until(&shared.done, state, deadline, |s| s.stopped);
        let stopped = if finished {
            true
        } else {
            shared.abandon.store(true, Ordering::SeqCst);
            shared.wake.notify_one();
            let grace = Instant::now() + STOP_GRACE;
            wait_until(&shared.done, state, grace, |s| s.stopped).1
        };
        if stopped && let Some(handle) = lock(&self.inner.thread).take() {
            let _ = handle.join();
        }
        finished
    }
}

fn check_positive(setting: &'static str, value: u128, expected: &str) -> Result<(), Error> {
    if value == 0 {
        return Err(Error::InvalidSetting {
            setting,
            value: value.to_string(),
            expected: expected.into(),
        });
    }
    Ok(())
}

/// The export thread's body.
fn run(
    shared: Arc<Shared>,
    config: ExportConfig,
    target: Target,
    ready: mpsc::SyncSender<Result<(), Error>>,
) {
    // Declared first, dropped last: nothing this thread does is seen by the host's subscriber.
    let _no_tracing = tracing::dispatcher::set_default(&tracing::Dispatch::none());
    // Dropped after the runtime: accounts for what is left and wakes `shutdown`.
    let _stop = StopOnExit(shared.clone());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("mercenary-obs-export-blocking")
        // Blocking threads (DNS lookups) are silenced too, for their whole life.
        .on_thread_start(|| {
            std::mem::forget(tracing::dispatcher::set_default(&tracing::Dispatch::none()))
        })
        .build();
    let runtime = match runtime {
        Ok(runtime) => RuntimeGuard(Some(runtime)),
        Err(e) => {
            let _ = ready.send(Err(Error::WriterThread(e)));
            return;
        }
    };
    let endpoint = target.endpoint().to_owned();
    let last_error = LastError::default();
    let exporter = {
        let _enter = runtime.get().enter();
        target.build(config.timeout, config.gzip, &last_error)
    };
    let mut exporter = match exporter {
        Ok(exporter) => exporter,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    exporter.set_resource(&config.resource);
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut worker = Worker {
        shared,
        exporter,
        endpoint,
        timeout: config.timeout,
        schedule_delay: config.schedule_delay,
        warn: config.warn,
        last_error,
        last_warn: None,
        suppressed: 0,
    };
    worker.run(runtime.get());
    let _enter = runtime.get().enter();
    drop(worker);
}

/// Marks the thread stopped when it ends, normally or by a panic, counting what is still
/// queued as failed so that every span is accounted for.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        let rest = std::mem::take(&mut state.queue);
        state.exemplars.clear();
        self.0.counters.export_failed.inc_by(rest.len() as u64);
        state.handled += rest.len() as u64;
        state.shutdown = true;
        state.stopped = true;
        drop(state);
        self.0.done.notify_all();
    }
}

/// Shuts the runtime down with a bound, also when the thread unwinds.
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl RuntimeGuard {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("the runtime lives as long as the guard")
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
        }
    }
}

enum Outcome {
    Exported,
    Failed(String),
    TimedOut,
    /// `shutdown` gave up while the export was in flight.
    Abandoned,
}

struct Worker {
    shared: Arc<Shared>,
    exporter: super::target::Exporter,
    endpoint: String,
    timeout: Duration,
    schedule_delay: Duration,
    warn: Box<dyn Fn(&str) + Send + Sync>,
    /// The transport's last failure, with its causes (the exporter's error says less).
    last_error: LastError,
    last_warn: Option<Instant>,
    /// Failed exports not reported since the last warning.
    suppressed: u64,
}

impl Worker {
    fn run(&mut self, runtime: &tokio::runtime::Runtime) {
        let mut next_export = Instant::now() + self.schedule_delay;
        while let Some((batch, exemplars)) = self.next_batch(&mut next_export) {
            let spans = batch.len() as u64;
            // Made the SDK's form here, off the request path and outside the queue's lock.
            let batch = batch.into_iter().map(QueuedSpan::into_span_data).collect();
            let outcome = self.export(runtime, batch);
            next_export = Instant::now() + self.schedule_delay;
            let counters = &self.shared.counters;
            match &outcome {
                Outcome::Exported => {
                    counters.requests_success.inc();
                    let rejected = self.last_error.take_rejected().min(spans);
                    counters.exported.inc_by(spans - rejected);
                    counters.rejected.inc_by(rejected);
                    // A partial success does not say which spans were refused: no exemplar
                    // of this batch is promised then.
                    if rejected == 0 {
                        for e in &exemplars {
                            publish_exemplars(&self.shared.exemplars, e);
                        }
                    }
                }
                Outcome::Failed(reason) => {
                    counters.requests_failed.inc();
                    counters.export_failed.inc_by(spans);
                    let reason = match self.last_error.take() {
                        Some(cause) => format!("{reason} ({cause})"),
                        None => reason.clone(),
                    };
                    self.warn(|| format!("OTLP trace export failed, {spans} spans lost: {reason}"));
                }
                Outcome::TimedOut => {
                    counters.requests_timed_out.inc();
                    counters.export_failed.inc_by(spans);
                    let timeout = self.timeout;
                    self.warn(|| {
                        format!(
                            "OTLP trace export got no answer within {timeout:?}, {spans} spans lost"
                        )
                    });
                }
                Outcome::Abandoned => {
                    counters.requests_timed_out.inc();
                    counters.export_failed.inc_by(spans);
                }
            }
            lock(&self.shared.state).handled += spans;
            self.shared.done.notify_all();
            if let Outcome::Abandoned = outcome {
                return;
            }
        }
    }

    /// Waits until a batch is due and takes it, with the exemplars of the traces it ends;
    /// `None` when the thread should stop.
    fn next_batch(
        &self,
        next_export: &mut Instant,
    ) -> Option<(Vec<QueuedSpan>, Vec<TraceExemplars>)> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        loop {
            if shared.abandon.load(Ordering::SeqCst) {
                return None;
            }
            let now = Instant::now();
            if state.queue.is_empty() {
                if state.shutdown {
                    return None;
                }
                if now >= *next_export {
                    // Nothing to send: start the next period.
                    *next_export = now + self.schedule_delay;
                }
            } else if state.queue.len() >= shared.batch_size
                || state.flush_upto > state.handled
                || state.shutdown
                || now >= *next_export
            {
                let n = state.queue.len().min(shared.batch_size);
                state.taken += n as u64;
                let mut exemplars = Vec::new();
                while let Some((end, _)) = state.exemplars.front()
                    && *end <= state.taken
                {
                    exemplars.extend(state.exemplars.pop_front().map(|(_, e)| e));
                }
                return Some((state.queue.drain(..n).collect(), exemplars));
            }
            state = shared
                .wake
                .wait_timeout(state, next_export.saturating_duration_since(now))
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// One export, bounded by `timeout` and cancelled if `shutdown` gives up.
    fn export(&self, runtime: &tokio::runtime::Runtime, batch: Vec<SpanData>) -> Outcome {
        let abandon = &self.shared.abandon;
        // A failure recorded by an earlier export says nothing about this one.
        self.last_error.take();
        runtime.block_on(async {
            let mut export = pin!(tokio::time::timeout(
                self.timeout,
                self.exporter.export(batch)
            ));
            let mut check = pin!(tokio::time::sleep(ABANDON_CHECK));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(result) = export.as_mut().poll(cx) {
                    return Poll::Ready(match result {
                        Ok(Ok(())) => Outcome::Exported,
                        Ok(Err(e)) => Outcome::Failed(e),
                        Err(_) => Outcome::TimedOut,
                    });
                }
                while check.as_mut().poll(cx).is_ready() {
                    if abandon.load(Ordering::SeqCst) {
                        return Poll::Ready(Outcome::Abandoned);
                    }
                    check
                        .as_mut()
                        .reset(tokio::time::Instant::now() + ABANDON_CHECK);
                }
                Poll::Pending
            })
            .await
        })
    }

    /// Calls `warn` unless it was called less than `WARN_INTERVAL` ago.
    fn warn(&mut self, reason: impl FnOnce() -> String) {
        let now = Instant::now();
        if let Some(last) = self.last_warn
            && now.duration_since(last) < WARN_INTERVAL
        {
            self.suppressed += 1;
            return;
        }
        let mut message = format!("{} (endpoint {})", reason(), self.endpoint);
        if self.suppressed > 0 {
            message.push_str(&format!(
                "; {} more failed exports since the last warning",
                self.suppressed
            ));
        }
        self.suppressed = 0;
        self.last_warn = Some(now);
        (self.warn)(&message);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Waits on `cond` until `done(state)` or `deadline`; returns the guard and whether `done`.
fn wait_until<'a>(
    cond: &Condvar,
    mut state: MutexGuard<'a, State>,
    deadline: Instant,
    done: impl Fn(&State) -> bool,
) -> (MutexGuard<'a, State>, bool) {
    while !done(&state) {
        let now = Instant::now();
        if now >= deadline {
            return (state, false);
        }
        state = cond
            .wait_timeout(state, deadline - now)
            .map(|(s, _)| s)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    (state, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::collections::HashMap;
    use std::time::SystemTime;

    fn span(trace_id: u128, span_id: u64, name: &str) -> SpanData {
        let now = SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: name.to_owned().into(),
            start_time: now,
            end_time: now,
            attributes: vec![KeyValue::new("span.index", span_id as i64)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("mercenary-obs-test").build(),
        }
    }

    /// The trace id of span number `n` (high bits set so that the whole id is checked).
    fn trace_id(n: u64) -> u128 {
        (0xabcd_u128 << 112) | n as u128
    }

    #[derive(Clone)]
    struct Counts {
        queue_full: IntCounter,
        export_failed: IntCounter,
        exported: IntCounter,
    }

    impl Counts {
        fn total(&self) -> u64 {
            self.queue_full.get() + self.export_failed.get() + self.exported.get()
        }
    }

    fn counters() -> (ExportCounters, Counts) {
        let counts = Counts {
            queue_full: IntCounter::new("queue_full", "h").unwrap(),
            export_failed: IntCounter::new("export_failed", "h").unwrap(),
            exported: IntCounter::new("exported", "h").unwrap(),
        };
        let counters = ExportCounters {
            queue_full: counts.queue_full.clone(),
            export_failed: counts.export_failed.clone(),
            exported: counts.exported.clone(),
            rejected: IntCounter::new("rejected", "h").unwrap(),
            requests_success: IntCounter::new("success", "h").unwrap(),
            requests_failed: IntCounter::new("failed", "h").unwrap(),
            requests_timed_out: IntCounter::new("timed_out", "h").unwrap(),
        };
        (counters, counts)
    }

    /// Warnings received, and whether each ran with `Dispatch::none()` as the default.
    type Warnings = Arc<Mutex<Vec<(String, bool)>>>;

    fn config(
        endpoint: String,
        protocol: Protocol,
        timeout: Duration,
        warnings: &Warnings,
    ) -> ExportConfig {
        let warnings = warnings.clone();
        ExportConfig {
            endpoint,
            protocol,
            headers: vec![("x-mercenary-test".into(), "yes".into())],
            gzip: false,
            tls: TlsFiles::default(),
            timeout,
            schedule_delay: Duration::from_secs(5),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            resource: opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("export-test")
                .build(),
            warn: Box::new(move |reason| {
                let silenced = tracing::dispatcher::get_default(|d| {
                    d.is::<tracing::subscriber::NoSubscriber>()
                });
                warnings.lock().unwrap().push((reason.to_owned(), silenced));
            }),
            exemplars: Arc::default(),
        }
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Pushes `total` spans one by one on another thread; fails if that takes over 60 s.
    fn push_many(queue: &SpanExportQueue, total: u64) {
        let queue = queue.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for n in 1..=total {
                queue.push(vec![span(trace_id(n), n, "many")]);
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("push blocked: 5000 pushes did not complete in 60 s");
    }

    /// Waits (bounded) until every span is accounted for.
    fn wait_accounted(counts: &Counts, total: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while counts.total() < total && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    struct Received {
        path: String,
        content_type: Option<String>,
        test_header: Option<String>,
        request: ExportTraceServiceRequest,
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// A minimal OTLP/HTTP receiver: HTTP/1.1 POSTs with a content-length, keep-alive.
    async fn serve_http(listener: tokio::net::TcpListener, received: Arc<Mutex<Vec<Received>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut conn, _)) = listener.accept().await {
            let received = received.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let head_end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let mut lines = head.split("\r\n");
                    let path = lines
                        .next()
                        .unwrap_or("")
                        .split(' ')
                        .nth(1)
                        .unwrap_or("")
                        .to_owned();
                    let headers: HashMap<String, String> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let length: usize = headers
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .expect("the exporter sends a content-length");
                    while buf.len() < head_end + length {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
                    let request = <ExportTraceServiceRequest as prost::Message>::decode(&body[..])
                        .expect("an ExportTraceServiceRequest");
                    received.lock().unwrap().push(Received {
                        path,
                        content_type: headers.get("content-type").cloned(),
                        test_header: headers.get("x-mercenary-test").cloned(),
                        request,
                    });
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    fn string_value(
        value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>,
    ) -> Option<&str> {
        match value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn http_protobuf_exports_every_span_once() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        rt.spawn(serve_http(listener, received.clone()));

        let warnings = Warnings::default();
        let (counters, counts) = counters();
        let queue = SpanExportQueue::start(
            config(
                format!("http://{addr}/v1/traces"),
                Protocol::HttpProtobuf,
                Duration::from_secs(5),
                &warnings,
            ),
            counters,
        )
        .unwrap();
        for chunk in 0..10u64 {
            queue.push(
                (1..=100)
                    .map(|i| {
                        let n = chunk * 100 + i;
                        span(trace_id(n), n, &format!("span-{n}"))
                    })
                    .collect(),
            );
        }
        assert!(queue.flush(Duration::from_secs(10)), "flush timed out");
        assert_eq!(counts.exported.get(), 1000);
        assert_eq!(counts.export_failed.get(), 0);
        assert_eq!(counts.queue_full.get(), 0);

        let received = std::mem::take(&mut *received.lock().unwrap());
        assert!(
            received.len() >= 2,
            "1000 spans come in batches of at most 512"
        );
        let mut seen = HashMap::new();
        for r in &received {
            assert_eq!(r.path, "/v1/traces");
            assert_eq!(r.content_type.as_deref(), Some("application/x-protobuf"));
            assert_eq!(r.test_header.as_deref(), Some("yes"));
            for rs in &r.request.resource_spans {
                let resource = rs.resource.as_ref().expect("a resource");
                let service = resource
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| string_value(&kv.value));
                assert_eq!(service, Some("export-test"));
                for ss in &rs.scope_spans {
                    assert!(ss.spans.len() <= 512);
                    for s in &ss.spans {
                        let index = s
                            .attributes
                            .iter()
                            .find(|kv| kv.key == "span.index")
                            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                                any_value::Value::IntValue(i) => Some(*i as u64),
                                _ => None,
                            })
                            .expect("the span.index attribute");
                        assert_eq!(s.span_id, index.to_be_bytes());
                        assert_eq!(s.trace_id, trace_id(index).to_be_bytes());
                        assert_eq!(s.name, format!("span-{index}"));
                        assert_eq!(s.flags & 0x1, 0x1, "the sampled flag is kept");
                        *seen.entry(index).or_insert(0) += 1;
                    }
                }
            }
        }
        assert_eq!(seen.len(), 1000);
        assert!(seen.values().all(|&c| c == 1), "a span arrived twice");
        assert!((1..=1000).all(|n| seen.contains_key(&n)));
        assert!(warnings.lock().unwrap().is_empty());

        assert!(queue.shutdown(Duration::from_secs(5)));
        // After shutdown, spans are dropped and counted.
        queue.push(vec![span(trace_id(5000), 5000, "late")]);
        assert_eq!(counts.queue_full.get(), 1);
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_exports_to_a_real_otlp_receiver() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut server = rt
            .block_on(fake_opentelemetry_collector::FakeCollectorServer::start())
            .unwrap();
        let warnings = Warnings::default();
        let (counters, counts) = counters();
        let queue = SpanExportQueue::start(
            config(
                server.endpoint(),
                Protocol::Grpc,
                Duration::from_secs(5),
                &warnings,
            ),
            counters,
        )
        .unwrap();
        // The fake collector buffers at most 64 spans until they are read.
        queue.push(
            (1..=30)
                .map(|n| span(trace_id(n), n, &format!("grpc-{n}")))
                .collect(),
        );
        queue.push(
            (31..=50)
                .map(|n| span(trace_id(n), n, &format!("grpc-{n}")))
                .collect(),
        );
        assert!(queue.flush(Duration::from_secs(10)), "flush timed out");
        assert_eq!(counts.exported.get(), 50);
        let spans = rt.block_on(server.exported_spans(50, Duration::from_secs(5)));
        assert_eq!(spans.len(), 50);
        let mut ids: Vec<u64> = spans
            .iter()
            .map(|s| {
                let n = u64::from_str_radix(&s.span_id, 16).unwrap();
                assert_eq!(s.trace_id, format!("{:032x}", trace_id(n)));
                assert_eq!(s.name, format!("grpc-{n}"));
                n
            })
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
        assert!(warnings.lock().unwrap().is_empty());
        assert!(queue.shutdown(Duration::from_secs(5)));
    }

    #[cfg(feature = "grpc")]
    #[test]
    fn grpc_endpoint_without_scheme_is_plaintext() {
        let (counters, _) = counters();
        let mut cfg = config(
            "127.0.0.1:4317".into(),
            Protocol::Grpc,
            Duration::from_secs(1),
            &Warnings::default(),
        );
        cfg.headers.clear();
        let queue = SpanExportQueue::start(cfg, counters).unwrap();
        assert!(queue.shutdown(Duration::from_secs(2)));
    }

    #[cfg(not(feature = "grpc"))]
    #[test]
    fn grpc_without_the_feature_names_the_variable() {
        let (counters, _) = counters();
        let cfg = config(
            "http://127.0.0.1:4317".into(),
            Protocol::Grpc,
            Duration::from_secs(1),
            &Warnings::default(),
        );
        match SpanExportQueue::start(cfg, counters) {
            Err(Error::InvalidEnv {
                variable, value, ..
            }) => {
                assert_eq!(variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
                assert_eq!(value, "grpc");
            }
            _ => panic!("expected InvalidEnv"),
        }
    }

    #[test]
    fn bad_settings_are_errors() {
        let warnings = Warnings::default();
        let start = |cfg: ExportConfig| SpanExportQueue::start(cfg, counters().0).err();
        let setting = |e: Option<Error>| match e {
            Some(Error::InvalidSetting { setting, .. }) => setting,
            other => panic!("expected InvalidSetting, got {other:?}"),
        };
        let http = |endpoint: &str| {
            config(
                endpoint.into(),
                Protocol::HttpProtobuf,
                Duration::from_secs(1),
                &warnings,
            )
        };
        let mut bad = vec!["not a url", "localhost:4318", "ftp://x/"];
        if !cfg!(feature = "tls") {
            // Without TLS, an https:// endpoint is refused up front.
            bad.push("https://collector:4318/v1/traces");
        }
        for endpoint in bad {
            assert_eq!(
                setting(start(http(endpoint))),
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "{endpoint}"
            );
        }
        let mut cfg = http("http://127.0.0.1:4318/v1/traces");
        cfg.headers = vec![("bad header".into(), "v".into())];
        assert_eq!(setting(start(cfg)), "OTEL_EXPORTER_OTLP_HEADERS");
        let mut cfg = http("http://127.0.0.1:4318/v1/traces");
        cfg.headers = vec![("authorization".into(), "secret\nvalue".into())];
        match start(cfg) {
            Some(e @ Error::InvalidSetting { .. }) => assert!(!e.to_string().contains("secret")),
            other => panic!("expected InvalidSetting, got {other:?}"),
        }
        let mut cfg = http("http://127.0.0.1:4318/v1/traces");
        cfg.max_queue_size = 0;
        assert_eq!(setting(start(cfg)), "OTEL_BSP_MAX_QUEUE_SIZE");
        let mut cfg = http("http://127.0.0.1:4318/v1/traces");
        cfg.timeout = Duration::ZERO;
        assert_eq!(setting(start(cfg)), "OTEL_EXPORTER_OTLP_TIMEOUT");
    }

    #[test]
    fn collector_down_never_blocks_and_accounts_for_every_span() {
        let warnings = Warnings::default();
        let (counters, counts) = counters();
        let queue = SpanExportQueue::start(
            config(
                format!("http://127.0.0.1:{}/v1/traces", closed_port()),
                Protocol::HttpProtobuf,
                Duration::from_secs(1),
                &warnings,
            ),
            counters,
        )
        .unwrap();
        push_many(&queue, 5000);
        let started = Instant::now();
        let _ = queue.flush(Duration::from_secs(1));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "flush overran its timeout"
        );
        // Refused connections fail fast: every queued span is handled, as a failure.
        assert!(queue.flush(Duration::from_secs(20)));
        wait_accounted(&counts, 5000, Duration::from_secs(5));
        assert_eq!(counts.total(), 5000);
        assert_eq!(counts.exported.get(), 0);
        assert!(counts.export_failed.get() > 0);
        assert!(counts.queue_full.get() > 0);
        let warnings = warnings.lock().unwrap().clone();
        assert!(!warnings.is_empty() && warnings.len() <= 2, "{warnings:?}");
        assert!(
            warnings.iter().all(|(_, silenced)| *silenced),
            "the thread's default dispatch is none"
        );
        assert!(warnings[0].0.contains("spans lost"), "{warnings:?}");
        let started = Instant::now();
        assert!(queue.shutdown(Duration::from_secs(2)));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn hanging_collector_is_bounded_by_timeouts() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts connections and never reads nor answers.
        rt.spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });

        let warnings = Warnings::default();
        let (counters, counts) = counters();
        let mut cfg = config(
            format!("http://{addr}/v1/traces"),
            Protocol::HttpProtobuf,
            Duration::from_millis(500),
            &warnings,
        );
        cfg.max_export_batch_size = 256;
        let queue = SpanExportQueue::start(cfg, counters).unwrap();
        push_many(&queue, 5000);

        let started = Instant::now();
        assert!(
            !queue.flush(Duration::from_secs(1)),
            "the collector never answers"
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(2),
            "{took:?}"
        );

        let started = Instant::now();
        assert!(
            !queue.shutdown(Duration::from_secs(1)),
            "8 batches of 500 ms do not fit in 1 s"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        // Once shutdown has returned, every span is accounted for.
        assert_eq!(counts.total(), 5000);
        assert_eq!(counts.exported.get(), 0);
        assert!(
            counts.export_failed.get() >= 2048,
            "timed out and abandoned spans are failures"
        );
        let warnings = warnings.lock().unwrap().clone();
        assert!(!warnings.is_empty() && warnings.len() <= 2, "{warnings:?}");
        // Our bound and the exporter's own fire together: either message is right.
        assert!(warnings[0].0.contains("spans lost"), "{warnings:?}");
        // A closed queue stays cheap and bounded.
        queue.push(vec![span(1, 1, "late")]);
        assert_eq!(counts.queue_full.get() + counts.export_failed.get(), 5001);
    }

    /// An HTTP receiver on a runtime of its own thread (for tests that run inside a runtime).
    fn http_receiver_thread() -> (std::net::SocketAddr, Arc<Mutex<Vec<Received>>>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let r = received.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let _ =
                    tokio::time::timeout(Duration::from_secs(60), serve_http(listener, r)).await;
            });
        });
        (rx.recv_timeout(Duration::from_secs(10)).unwrap(), received)
    }

    /// Start, flush and shutdown are called from inside the application's runtime, whose
    /// thread they block: the export thread must not need that runtime.
    fn export_from_inside_a_runtime() {
        let (addr, received) = http_receiver_thread();
        let (counters, counts) = counters();
        let queue = SpanExportQueue::start(
            config(
                format!("http://{addr}/v1/traces"),
                Protocol::HttpProtobuf,
                Duration::from_secs(5),
                &Warnings::default(),
            ),
            counters,
        )
        .unwrap();
        queue.push(
            (1..=10)
                .map(|n| span(trace_id(n), n, "in-runtime"))
                .collect(),
        );
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(counts.exported.get(), 10);
        queue.push(
            (11..=20)
                .map(|n| span(trace_id(n), n, "in-runtime"))
                .collect(),
        );
        assert!(queue.shutdown(Duration::from_secs(10)));
        assert_eq!(counts.exported.get(), 20);
        let spans: usize = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.request.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        assert_eq!(spans, 20);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn works_from_a_current_thread_runtime() {
        export_from_inside_a_runtime();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn works_from_a_single_worker_runtime() {
        export_from_inside_a_runtime();
    }

    #[test]
    fn idle_queue_flushes_and_shuts_down_at_once() {
        let (counters, _) = counters();
        let queue = SpanExportQueue::start(
            config(
                format!("http://127.0.0.1:{}/v1/traces", closed_port()),
                Protocol::HttpProtobuf,
                Duration::from_secs(1),
                &Warnings::default(),
            ),
            counters,
        )
        .unwrap();
        let started = Instant::now();
        assert!(queue.flush(Duration::from_secs(1)));
        assert!(queue.shutdown(Duration::from_secs(1)));
        assert!(
            queue.shutdown(Duration::from_secs(1)),
            "shutdown twice is fine"
        );
        assert!(started.elapsed() < Duration::from_millis(900));
    }

    #[test]
    fn dropping_the_last_handle_stops_the_thread() {
        let (counters, counts) = counters();
        let queue = SpanExportQueue::start(
            config(
                format!("http://127.0.0.1:{}/v1/traces", closed_port()),
                Protocol::HttpProtobuf,
                Duration::from_millis(200),
                &Warnings::default(),
            ),
            counters,
        )
        .unwrap();
        queue.push(vec![span(1, 1, "a"), span(2, 2, "b")]);
        drop(queue);
        wait_accounted(&counts, 2, Duration::from_secs(5));
        assert_eq!(counts.total(), 2);
    }

    /// Queues one trace with an exemplar to `endpoint`, flushes, and returns the table's view.
    fn exemplar_after_export(endpoint: String) -> Option<crate::core::exemplar::Exemplar> {
        let warnings = Warnings::default();
        let (counters, _) = counters();
        let mut config = config(
            endpoint,
            Protocol::HttpProtobuf,
            Duration::from_secs(2),
            &warnings,
        );
        let exemplars = Arc::new(Exemplars::default());
        config.exemplars = exemplars.clone();
        let table = exemplars.register("h", &[0.1, 1.0], 64).unwrap();
        let queue = SpanExportQueue::start(config, counters).unwrap();
        let series = crate::core::exemplar::series_key([("route", "/a")]);
        let mut root = crate::core::exemplar::RootExemplars::default();
        root.push(table.pending(series, 0.5, 7));
        let trace = TraceExemplars {
            trace_id: trace_id(1),
            timestamp: 1_700_000_000.25,
            exemplars: root,
        };
        queue.push_with(vec![span(trace_id(1), 7, "root").into()], Some(trace));
        assert!(queue.flush(Duration::from_secs(10)));
        assert!(queue.shutdown(Duration::from_secs(5)));
        table.get(series, 1)
    }

    #[test]
    fn an_exemplar_is_published_once_its_trace_is_exported() {
        let (addr, received) = http_receiver_thread();
        let e = exemplar_after_export(format!("http://{addr}/v1/traces"))
            .expect("published after the export");
        assert_eq!((e.trace_id, e.span_id, e.value), (trace_id(1), 7, 0.5));
        assert_eq!(e.timestamp, 1_700_000_000.25);
        assert_eq!(received.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_exemplar_of_a_failed_export_is_never_published() {
        let endpoint = format!("http://127.0.0.1:{}/v1/traces", closed_port());
        assert_eq!(exemplar_after_export(endpoint), None);
    }
}
