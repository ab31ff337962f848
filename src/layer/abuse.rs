//! Suspicious usage: a client that gets more than `threshold` 401/403 answers, or more than
//! `threshold` answers for unmatched routes (404 with no route: scanning for paths), within one
//! minute gets one `security_event` of kind `suspicious_usage` for that minute and reason.
//!
//! - **Who**: the authenticated principal when the application names one ([`Principal`], in the
//!   request's extensions before this layer or in the response's extensions), else the peer
//!   address (axum's `ConnectInfo<SocketAddr>`, or a `SocketAddr` extension), without its port.
//!   Neither is ever written: the event carries a keyed hash (a per-process random key), so
//!   the line holds no address or user name, and the same client has the same hash within one
//!   process's life.
//! - **Bounded memory**: a fixed table of 4096 sets of 4 entries (about 500 KiB) whatever the
//!   number of clients. A new client takes its set's stale entry, else the least-counted one
//!   (the least recently seen among equals), so one-request addresses churn among themselves
//!   and a client seen twice outlives them. Counts are exact for the clients the table holds:
//!   nobody is reported falsely. The limit: when far more distinct clients than the table holds
//!   arrive within a minute (a scan from about a million addresses), a client that comes back
//!   only now and then may be evicted before its second answer and so go unreported; a client
//!   at a few requests a second is caught.
//! - **Windows** are fixed minutes since the detector started; each (client, reason) is
//!   reported at most once per minute.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::Extensions;

const SETS: usize = 4096;
const WAYS: usize = 4;
const WINDOW_SECS: u64 = 60;

/// The authenticated principal of a request, for the suspicious-usage detector: insert it in
/// the request's extensions before the [`ObsLayer`](crate::ObsLayer) (an authentication layer
/// outside it) or in the response's extensions (a handler or an inner layer). Never written to
/// any log line: only a keyed hash of it is.
///
/// ```
/// let mut response = http::Response::new(());
/// response.extensions_mut().insert(mercenary_obs::Principal::new("user-42"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal(Arc<str>);

impl Principal {
    /// The principal named `id` (a user ID, an API key's ID...).
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }
}

/// Who a request came from, as far as the detector can tell.
#[derive(Clone, Debug)]
pub(crate) enum ClientKey {
    Principal(Arc<str>),
    Address(IpAddr),
}

impl ClientKey {
    /// From a request's or a response's extensions: the principal, else the peer address.
    pub(crate) fn from_extensions(ext: &Extensions) -> Option<Self> {
        if let Some(p) = ext.get::<Principal>() {
            return Some(ClientKey::Principal(p.0.clone()));
        }
        #[cfg(feature = "axum")]
        if let Some(axum::extract::ConnectInfo(addr)) =
            ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
        {
            return Some(ClientKey::Address(addr.ip()));
        }
        ext.get::<SocketAddr>().map(|a| ClientKey::Address(a.ip()))
    }

    fn kind(&self) -> &'static str {
        match self {
            ClientKey::Principal(_) => "principal",
            ClientKey::Address(_) => "address",
        }
    }
}

/// What a client was counted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// 401 or 403.
    Unauthorized,
    /// 404 for a path no route matches.
    UnmatchedRoute,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthorized => "unauthorized",
            Reason::UnmatchedRoute => "unmatched_route",
        }
    }
}

/// A client just crossed the threshold in the current minute.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Report {
    /// `address` or `principal`.
    pub(crate) kind: &'static str,
    /// 16 hex digits.
    pub(crate) hash: String,
    pub(crate) count: u32,
}

#[derive(Clone, Copy, Default)]
struct Entry {
    /// 0: empty.
    key: u64,
    window: u64,
    /// When it was last counted (the detector's tick).
    seen: u64,
    count: u32,
    reported: bool,
}

/// The detector of one instance.
pub(crate) struct AbuseDetector {
    threshold: u32,
    hasher: std::collections::hash_map::RandomState,
    sets: Box<[Mutex<[Entry; WAYS]>]>,
    start: Instant,
    tick: std::sync::atomic::AtomicU64,
}

impl AbuseDetector {
    /// Reports a client at its `threshold`-th counted answer of a minute (at least 1).
    pub(crate) fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            sets: (0..SETS)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect(),
            start: Instant::now(),
            tick: std::sync::atomic::AtomicU64::new(1),
        }
    }

    fn hash(&self, client: &ClientKey, reason: Reason) -> u64 {
        let mut h = self.hasher.build_hasher();
        match client {
            ClientKey::Principal(p) => {
                h.write_u8(1);
                h.write(p.as_bytes());
            }
            ClientKey::Address(IpAddr::V4(a)) => {
                h.write_u8(4);
                h.write(&a.octets());
            }
            ClientKey::Address(IpAddr::V6(a)) => {
                h.write_u8(6);
                h.write(&a.octets());
            }
        }
        h.write_u8(reason as u8);
        h.finish() | 1
    }

    /// Counts one answer; returns a report when it is the client's `threshold`-th of this
    /// minute for this reason.
    pub(crate) fn observe(&self, client: &ClientKey, reason: Reason) -> Option<Report> {
        let window = self.start.elapsed().as_secs() / WINDOW_SECS;
        self.observe_at(client, reason, window)
    }

    fn observe_at(&self, client: &ClientKey, reason: Reason, window: u64) -> Option<Report> {
        let key = self.hash(client, reason);
        let now = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut set = self.sets[(key >> 32) as usize % SETS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let i = match set.iter().position(|e| e.key == key) {
            Some(i) => i,
            None => {
                // An empty or stale entry (older window) first, else the least counted, the
                // least recently seen among equals.
                let victim = (0..WAYS)
                    .min_by_key(|&i| {
                        let e = &set[i];
                        (e.key != 0 && e.window == window, e.count, e.seen)
                    })
                    .unwrap_or(0);
                set[victim] = Entry {
                    key,
                    window,
                    seen: now,
                    count: 0,
                    reported: false,
                };
                victim
            }
        };
        let e = &mut set[i];
        if e.window != window {
            *e = Entry {
                key,
                window,
                seen: now,
                count: 0,
                reported: false,
            };
        }
        e.seen = now;
        e.count = e.count.saturating_add(1);
        if e.count >= self.threshold && !e.reported {
            e.reported = true;
            return Some(Report {
                kind: client.kind(),
                hash: format!("{key:016x}"),
                count: e.count,
            });
        }
        None
    }

    /// Entries in use (for tests: the table never grows).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> ClientKey {
        ClientKey::Address(IpAddr::V4(std::net::Ipv4Addr::from(n)))
    }

    #[test]
    fn one_report_per_client_reason_and_minute() {
        let d = AbuseDetector::new(3);
        let a = addr(1);
        assert_eq!(d.observe_at(&a, Reason::UnmatchedRoute, 0), None);
        assert_eq!(d.observe_at(&a, Reason::UnmatchedRoute, 0), None);
        let r = d.observe_at(&a, Reason::UnmatchedRoute, 0).unwrap();
        assert_eq!((r.kind, r.count, r.hash.len()), ("address", 3, 16));
        assert_eq!(
            d.observe_at(&a, Reason::UnmatchedRoute, 0),
            None,
            "once a minute"
        );
        // Another reason counts on its own.
        assert_eq!(d.observe_at(&a, Reason::Unauthorized, 0), None);
        // The next minute starts over.
        assert_eq!(d.observe_at(&a, Reason::UnmatchedRoute, 1), None);
        assert_eq!(d.observe_at(&a, Reason::UnmatchedRoute, 1), None);
        assert!(d.observe_at(&a, Reason::UnmatchedRoute, 1).is_some());
        let p = ClientKey::Principal("user-1".into());
        let d = AbuseDetector::new(1);
        let r = d.observe_at(&p, Reason::Unauthorized, 0).unwrap();
        assert_eq!(r.kind, "principal");
        assert!(!r.hash.contains("user"));
    }

    #[test]
    fn a_million_addresses_neither_grow_the_table_nor_hide_the_heavy_client() {
        let d = AbuseDetector::new(50);
        let heavy = addr(u32::MAX);
        let mut reports = 0;
        for n in 0..1_000_000u32 {
            if d.observe_at(&addr(n), Reason::UnmatchedRoute, 0).is_some() {
                panic!("a client seen once is never reported");
            }
            if n % 10_000 == 0 && d.observe_at(&heavy, Reason::UnmatchedRoute, 0).is_some() {
                reports += 1;
            }
        }
        for _ in 0..50 {
            if d.observe_at(&heavy, Reason::UnmatchedRoute, 0).is_some() {
                reports += 1;
            }
        }
        assert_eq!(reports, 1, "the heavy client is reported once");
        assert_eq!(d.capacity(), SETS * WAYS);
    }
}
