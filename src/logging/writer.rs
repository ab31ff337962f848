//! The non-blocking line writer: a bounded in-memory buffer drained by one writer thread.
//!
//! The request path appends a finished line under a short lock and returns; it never performs
//! I/O and never wakes the writer thread per line. The writer is woken once when the buffer goes
//! from empty to non-empty, then waits a short batching window so that every line produced
//! meanwhile is written with one `write_all`. When the buffer is full, application lines are
//! dropped and counted; audit lines (written with [`LineWriter::push_bounded`]) wait for room
//! instead, for a bounded time: the caller diverts a line that did not fit in time (see
//! `logging/audit.rs`), and while the writer has not written since such a timeout (its sink is
//! stalled), later audit lines do not wait at all.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the writer waits after the first line of a batch for more lines to arrive.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// The name of the writer threads.
const THREAD_NAME: &str = "mercenary-obs-log";

struct State {
    buf: Vec<u8>,
    /// Lines appended so far.
    appended: u64,
    /// Lines written and flushed so far.
    written: u64,
    flush_requested: bool,
    shutdown: bool,
    /// The sink, once the writer thread has ended (lines are then written in place).
    orphan: Option<Box<dyn Write + Send>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread.
    wake: Condvar,
    /// Wakes callers waiting for a flush or for room in the buffer.
    done: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    on_drop: Box<dyn Fn() + Send + Sync>,
    /// A bounded push timed out and the writer has not completed a write since.
    stalled: AtomicBool,
}

/// A cloneable handle to the writer thread.
#[derive(Clone)]
pub(crate) struct LineWriter {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl LineWriter {
    /// Starts the writer thread. `capacity` is the buffer size in bytes; `on_drop` is called once
    /// per dropped line (it increments a metric).
    pub(crate) fn spawn(
        sink: Box<dyn Write + Send>,
        capacity: usize,
        on_drop: Box<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(capacity.min(1 << 16)),
                appended: 0,
                written: 0,
                flush_requested: false,
                shutdown: false,
                orphan: None,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
            on_drop,
            stalled: AtomicBool::new(false),
        });
        let worker = shared.clone();
        let handle = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || run(worker, sink))?;
        Ok(Self {
            shared,
            thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Appends one line; drops it (counted) when the buffer is full.
    pub(crate) fn push(&self, line: &[u8]) {
        let mut state = lock(&self.shared.state);
        if let Some(sink) = state.orphan.as_mut() {
            let _ = sink.write_all(line);
            let _ = sink.flush();
            return;
        }
        if state.buf.len() + line.len() > self.shared.capacity {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            (self.shared.on_drop)();
            return;
        }
        self.append(state, line);
    }

    /// Appends one line, waiting for room when the buffer is full, at most `max_wait` (not at
    /// all while the sink is known to be stalled). Returns `false` when the line was not
    /// appended. Used for audit lines.
    pub(crate) fn push_bounded(&self, line: &[u8], max_wait: Duration) -> bool {
        let deadline = Instant::now().checked_add(max_wait);
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(sink) = state.orphan.as_mut() {
                let _ = sink.write_all(line);
                let _ = sink.flush();
                return true;
            }
            // A line larger than the whole buffer is let through on an empty buffer.
            if state.buf.len() + line.len() <= self.shared.capacity || state.buf.is_empty() {
                break;
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() || self.shared.stalled.load(Ordering::Relaxed) {
                self.shared.stalled.store(true, Ordering::Relaxed);
                return false;
            }
            state.flush_requested = true;
            self.shared.wake.notify_one();
            state = self
                .shared
                .done
                .wait_timeout(state, left)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        self.append(state, line);
        true
    }

    /// Appends one line from a panic hook and waits until it is written, all within `wait`.
    ///
    /// Never blocks on the lock (this thread may hold it: a sink that panicked while writing in
    /// place), never waits past `wait`, never panics. A full buffer drops the line (counted).
    /// Returns whether the line was written in time.
    pub(crate) fn push_from_hook(&self, line: &[u8], wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = loop {
            match self.shared.state.try_lock() {
                Ok(state) => break state,
                Err(TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(TryLockError::WouldBlock) => return false,
            }
        };
        if let Some(sink) = state.orphan.as_mut() {
            return sink.write_all(line).and_then(|()| sink.flush()).is_ok();
        }
        if state.buf.len() + line.len() > self.shared.capacity {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            (self.shared.on_drop)();
            return false;
        }
        state.buf.extend_from_slice(line);
        state.appended += 1;
        let target = state.appended;
        if std::thread::current().name() == Some(THREAD_NAME) {
            // The writer thread itself (its sink panicked): nobody else will write the line.
            return false;
        }
        state.flush_requested = true;
        self.shared.wake.notify_one();
        while state.written < target && state.orphan.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.shared.done.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }

    fn append(&self, mut state: MutexGuard<'_, State>, line: &[u8]) {
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        state.appended += 1;
        drop(state);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }

    /// Lines dropped so far because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every line appended before the call has been written and flushed, or until
    /// `timeout` passes. Returns whether everything was written.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.shared.state);
        if state.orphan.is_some() {
            return true;
        }
        let target = state.appended;
        state.flush_requested = true;
        self.shared.wake.notify_one();
        while state.written < target && state.orphan.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .done
                .wait_timeout(state, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        true
    }

    /// Writes what is buffered and stops the thread, waiting at most `timeout`. Lines pushed
    /// afterwards are written synchronously, so nothing logged during shutdown is lost.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        {
            let mut state = lock(&self.shared.state);
            state.shutdown = true;
            self.shared.wake.notify_one();
        }
        let flushed = self.flush(timeout);
        if flushed && let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
        flushed
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(shared: Arc<Shared>, mut sink: Box<dyn Write + Send>) {
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let mut state = lock(&shared.state);
        while state.buf.is_empty() && !state.shutdown && !state.flush_requested {
            state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if !state.flush_requested && !state.shutdown {
            // Batch: let more lines arrive before writing.
            drop(state);
            std::thread::sleep(BATCH_WINDOW);
            state = lock(&shared.state);
        }
        std::mem::swap(&mut batch, &mut state.buf);
        let target = state.appended;
        state.flush_requested = false;
        let shutdown = state.shutdown;
        drop(state);

        if !batch.is_empty() {
            let _ = sink.write_all(&batch);
            // Keep the capacity: both buffers are bounded by the queue size, and giving memory
            // back only to fault it in again on the request side costs more than it saves.
            batch.clear();
        }
        let _ = sink.flush();

        shared.stalled.store(false, Ordering::Relaxed);
        let mut state = lock(&shared.state);
        state.written = target;
        if shutdown && state.buf.is_empty() {
            state.orphan = Some(sink);
            shared.done.notify_all();
            return;
        }
        shared.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_in_order_and_flushes() {
        let sink = Sink::default();
        let w = LineWriter::spawn(Box::new(sink.clone()), 1 << 20, Box::new(|| {})).unwrap();
        for i in 0..1000 {
            w.push(format!("{i}\n").as_bytes());
        }
        assert!(w.flush(Duration::from_secs(5)));
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[999], "999");
        assert!(w.shutdown(Duration::from_secs(5)));
        w.push(b"after\n");
        assert!(
            String::from_utf8(sink.0.lock().unwrap().clone())
                .unwrap()
                .ends_with("after\n")
        );
    }

    /// A sink that blocks until released, to fill the buffer.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Sink);
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (m, c) = &*self.0;
            let mut open = m.lock().unwrap();
            while !*open {
                open = c.wait(open).unwrap();
            }
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn drops_when_full_but_blocking_lines_wait() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let drops = Arc::new(AtomicU64::new(0));
        let d = drops.clone();
        let w = LineWriter::spawn(
            Box::new(Gate(gate.clone(), sink.clone())),
            100,
            Box::new(move || {
                d.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .unwrap();
        for _ in 0..200 {
            w.push(b"0123456789\n");
        }
        assert!(w.dropped() > 0);
        assert_eq!(w.dropped(), drops.load(Ordering::Relaxed));
        let w2 = w.clone();
        let audit = std::thread::spawn(move || {
            for _ in 0..50 {
                assert!(w2.push_bounded(b"audit\n", Duration::from_secs(30)));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        {
            let (m, c) = &*gate;
            *m.lock().unwrap() = true;
            c.notify_all();
        }
        audit.join().unwrap();
        assert!(w.flush(Duration::from_secs(5)));
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().filter(|l| *l == "audit").count(), 50);
        let written = out.lines().filter(|l| *l == "0123456789").count() as u64;
        assert_eq!(written + w.dropped(), 200);
    }
}
