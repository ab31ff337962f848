//! The non-blocking HTTP transport: a bounded queue in front of one thread that posts envelopes
//! with `ureq`, honours Sentry's rate limits, and counts every event not delivered by reason.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ::sentry::transports::{RateLimiter, RateLimitingCategory};
use ::sentry::{Envelope, Transport, TransportFactory, TransportOptions};
use prometheus::IntCounterVec;

/// The drop counters, one per reason.
#[derive(Clone)]
pub(super) struct DropCounters {
    queue_full: prometheus::IntCounter,
    rate_limited: prometheus::IntCounter,
    send_failed: prometheus::IntCounter,
    shut_down: prometheus::IntCounter,
}

impl DropCounters {
    pub(super) fn new(vec: &IntCounterVec) -> Self {
        Self {
            queue_full: vec.with_label_values(&["queue_full"]),
            rate_limited: vec.with_label_values(&["rate_limited"]),
            send_failed: vec.with_label_values(&["send_failed"]),
            shut_down: vec.with_label_values(&["shut_down"]),
        }
    }
}

/// Events in an envelope (the unit the counters count).
fn events_in(envelope: &Envelope) -> u64 {
    envelope
        .items()
        .filter(|item| {
            matches!(
                item,
                ::sentry::protocol::EnvelopeItem::Event(_)
                    | ::sentry::protocol::EnvelopeItem::Transaction(_)
            )
        })
        .count() as u64
}

pub(super) struct HttpTransportFactory {
    pub(super) queue_size: usize,
    pub(super) timeout: Duration,
    pub(super) dropped: DropCounters,
}

impl TransportFactory for HttpTransportFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(HttpTransport::start(
            options,
            self.queue_size,
            self.timeout,
            self.dropped.clone(),
        ))
    }
}

/// Envelopes queued or being sent, and a condition variable to wait for none.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Pending {
    fn add(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
    }

    fn done(&self) {
        if let Ok(mut n) = self.count.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.idle.notify_all();
            }
        }
    }

    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut n) = self.count.lock() else {
            return false;
        };
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = match self.idle.wait_timeout(n, left) {
                Ok((n, _)) => n,
                Err(_) => return false,
            };
        }
        true
    }
}

/// A bounded queue in front of one thread that posts envelopes with `ureq`.
struct HttpTransport {
    sender: Mutex<Option<SyncSender<Envelope>>>,
    pending: Arc<Pending>,
    dropped: DropCounters,
}

impl HttpTransport {
    fn start(
        options: TransportOptions,
        queue_size: usize,
        timeout: Duration,
        dropped: DropCounters,
    ) -> Self {
        let (tx, rx) = sync_channel(queue_size);
        let pending = Arc::new(Pending::default());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(options.user_agent.as_ref())
            .max_idle_connections(2)
            .build()
            .into();
        let worker = Worker {
            agent,
            url: options.dsn.envelope_api_url().to_string(),
            auth: options.dsn.to_auth(Some(&options.user_agent)).to_string(),
            pending: pending.clone(),
            dropped: dropped.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("mercenary-obs-sentry".into())
            .spawn(move || worker.run(rx));
        Self {
            // Without a thread, every event is dropped and counted.
            sender: Mutex::new(spawned.ok().map(|_| tx)),
            pending,
            dropped,
        }
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: Envelope) {
        let events = events_in(&envelope);
        let Ok(sender) = self.sender.lock() else {
            return;
        };
        let Some(sender) = sender.as_ref() else {
            self.dropped.shut_down.inc_by(events);
            return;
        };
        self.pending.add();
        match sender.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.pending.done();
                self.dropped.queue_full.inc_by(events);
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.done();
                self.dropped.shut_down.inc_by(events);
            }
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.pending.wait_idle(timeout)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout);
        // The thread ends once the queue is empty; it is not waited for.
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        flushed
    }
}

struct Worker {
    agent: ureq::Agent,
    url: String,
    auth: String,
    pending: Arc<Pending>,
    dropped: DropCounters,
}

impl Worker {
    fn run(self, rx: Receiver<Envelope>) {
        let mut limiter = RateLimiter::new();
        for envelope in rx {
            let events = events_in(&envelope);
            let category = if events > 0 {
                RateLimitingCategory::Error
            } else {
                RateLimitingCategory::Any
            };
            if limiter.is_disabled(category).is_some() {
                self.dropped.rate_limited.inc_by(events);
            } else {
                self.send(&envelope, events, &mut limiter);
            }
            self.pending.done();
        }
    }

    fn send(&self, envelope: &Envelope, events: u64, limiter: &mut RateLimiter) {
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.dropped.send_failed.inc_by(events);
            return;
        }
        let response = self
            .agent
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header("Content-Type", "application/x-sentry-envelope")
            .send(&body[..]);
        let mut response = match response {
            Ok(response) => response,
            Err(_) => {
                self.dropped.send_failed.inc_by(events);
                return;
            }
        };
        let header = |name: &str| response.headers().get(name)?.to_str().ok();
        let status = response.status().as_u16();
        if let Some(limits) = header("x-sentry-rate-limits") {
            limiter.update_from_sentry_header(limits);
        } else if let Some(retry_after) = header("retry-after") {
            limiter.update_from_retry_after(retry_after);
        } else if status == 429 {
            limiter.update_from_429();
        }
        // Read (a bounded amount of) the body so the connection can be reused.
        let _ = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec();
        if status == 429 {
            self.dropped.rate_limited.inc_by(events);
        } else if !(200..300).contains(&status) {
            self.dropped.send_failed.inc_by(events);
        }
    }
}
