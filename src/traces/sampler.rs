//! The tail sampler: buffers each trace's spans until its local root ends, then keeps or drops
//! the whole trace by the sampling rules (error, forced, parent, slow, ratio).
//!
//! Keep the trace if any rule matches, in this order; the first match is the reason:
//! `error`, `forced` (admitted within a token-bucket budget when the request started), `parent` (trusted upstream sampled flag),
//! `slow`, `ratio` (decided from the trace ID like `TraceIdRatioBased`, so every replica and
//! service agrees), `downstream` (a service this trace called answered with a `traceresponse`
//! saying it kept its part, so this part is kept too and the trace stays whole). Every bound (buffered traces, spans per trace, root timeout) is counted when
//! hit, and spans that end after their trace was decided follow the decision.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::record::{FinishedSpan, QueuedSpan, RequestAttrs};
use super::ring::TraceRing;
use crate::core::error::Error;
use crate::core::exemplar::{Exemplars, RootExemplars};
use crate::core::names::{
    BUFFERED_SPANS, BUFFERED_TRACES, DECIDED_EARLY, SPANS_DROPPED, TRACES_TOTAL,
};

/// Sampling settings (see the builder for defaults and env variables).
#[derive(Clone, Debug)]
pub(crate) struct SamplingConfig {
    pub(crate) success_ratio: f64,
    pub(crate) forced_per_second: f64,
    pub(crate) sample_client_errors: bool,
    pub(crate) keep_slower_than: Option<Duration>,
    pub(crate) trust_parent: bool,
    pub(crate) max_traces: usize,
    pub(crate) max_spans_per_trace: usize,
    pub(crate) root_timeout: Duration,
}

/// What is known about a local root: from the request when it started (`forced`, the
/// upstream's sampled flag and `tracestate`), and learnt while it runs (a downstream kept the
/// trace, an ERROR was logged somewhere in it).
#[derive(Clone, Debug, Default)]
pub(crate) struct RootInfo {
    pub(crate) forced: bool,
    pub(crate) remote_sampled: Option<bool>,
    /// The upstream's validated `tracestate`, passed on to outgoing calls.
    pub(crate) tracestate: Option<std::sync::Arc<str>>,
    /// A downstream service answered with a sampled `traceresponse` for this trace.
    pub(crate) downstream: bool,
    /// An ERROR event was logged in a span of this local trace, or a span of it ended with an
    /// error status (for `traceresponse`; the sampler reads the spans themselves).
    pub(crate) error_seen: bool,
    /// Observations that become exemplars if the trace is kept and exported.
    pub(crate) exemplars: RootExemplars,
}

/// Publishes a kept trace's exemplars.
pub(crate) fn publish_exemplars(to: &Exemplars, t: &TraceExemplars) {
    for p in t.exemplars.iter() {
        to.publish(t.trace_id, t.timestamp, p);
    }
}

/// The reasons a trace is kept, in rule order.
pub(crate) const REASONS: [&str; 6] = ["error", "forced", "parent", "slow", "ratio", "downstream"];

struct Pending {
    spans: Vec<FinishedSpan>,
    error: bool,
}

/// Hashes trace IDs with a per-process random seed. Clients choose trace IDs (`traceparent`),
/// so an unkeyed hash would let them pile every buffered trace into one bucket; both halves go
/// through a keyed SplitMix64 finalizer, which costs a few multiplications instead of SipHash.
#[derive(Clone, Copy)]
struct TraceIdHashBuilder {
    seed: (u64, u64),
}

impl Default for TraceIdHashBuilder {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
        Self {
            seed: *SEED.get_or_init(|| (fastrand::u64(..), fastrand::u64(..))),
        }
    }
}

impl std::hash::BuildHasher for TraceIdHashBuilder {
    type Hasher = TraceIdHasher;

    fn build_hasher(&self) -> TraceIdHasher {
        TraceIdHasher {
            seed: self.seed,
            state: 0,
        }
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct TraceIdHasher {
    seed: (u64, u64),
    state: u64,
}

impl std::hash::Hasher for TraceIdHasher {
    fn finish(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = mix(self.state ^ u64::from_le_bytes(word) ^ self.seed.0);
        }
    }

    fn write_u128(&mut self, v: u128) {
        let low = mix((v as u64) ^ self.seed.0);
        self.state = mix(low ^ ((v >> 64) as u64) ^ self.seed.1);
    }
}

type TraceMap<V> = HashMap<u128, V, TraceIdHashBuilder>;

/// The buffer key of a span: its trace ID with its local root's span ID folded into the high
/// half. One process may hold several local roots of a trace (a service calling itself); each
/// is buffered and decided on its own. The span ID is random and ours, so a client choosing
/// trace IDs still cannot choose keys. The low half is the trace ID's, so the ratio rule (which
/// reads the low 64 bits, as `TraceIdRatioBased` does) decides the same from the key.
#[inline]
fn buffer_key(trace_id: u128, local_root: u64) -> u128 {
    trace_id ^ (u128::from(local_root) << 64)
}

struct State {
    pending: TraceMap<Pending>,
    /// Buffer keys in arrival order (entries of decided traces are skipped when met).
    order: VecDeque<(u128, Instant)>,
    /// Recent decisions, for spans that end after their trace was decided: a direct-mapped
    /// cache indexed by the trace ID's low bits (a colliding newer trace overwrites an older one).
    decided: Vec<(u64, Option<&'static str>)>,
    /// Spans in `pending`.
    spans: usize,
}

/// Slots of the recent-decisions cache (16 bytes each: 64 KiB, cache-friendly).
const DECIDED_CACHE: usize = 4096;

struct TokenBucket {
    tokens: f64,
    last: Instant,
}

/// Where kept traces go.
pub(crate) struct Sinks {
    pub(crate) ring: Option<TraceRing>,
    #[cfg(feature = "otlp")]
    pub(crate) export: Option<super::export::SpanExportQueue>,
    /// Where the exemplars of kept traces are published (once exported, or at once for the
    /// ring).
    pub(crate) exemplars: Arc<Exemplars>,
}

/// A local trace's exemplars: its trace ID, when its root ended (Unix seconds), and what the
/// root collected.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TraceExemplars {
    pub(crate) trace_id: u128,
    pub(crate) timestamp: f64,
    pub(crate) exemplars: RootExemplars,
}

/// Sampling and drop counters.
pub(crate) struct TraceMetrics {
    kept: [IntCounter; 6],
    dropped: IntCounter,
    pub(crate) spans_dropped: IntCounterVec,
    buffered_traces: IntGauge,
    buffered_spans: IntGauge,
    early_buffer_full: IntCounter,
    early_root_timeout: IntCounter,
}

impl TraceMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, Error> {
        let err = |name: &str, e: prometheus::Error| Error::MetricRegistration {
            metric: name.to_string(),
            reason: e.to_string(),
        };
        let traces = IntCounterVec::new(
            Opts::new(
                TRACES_TOTAL,
                "Sampling decisions on traces, by decision and reason.",
            ),
            &["decision", "reason"],
        )
        .map_err(|e| err(TRACES_TOTAL, e))?;
        registry
            .register(Box::new(traces.clone()))
            .map_err(|e| err(TRACES_TOTAL, e))?;
        let spans_dropped = IntCounterVec::new(
            Opts::new(
                SPANS_DROPPED,
                "Spans lost to a bound or an export failure, by reason.",
            ),
            &["reason"],
        )
        .map_err(|e| err(SPANS_DROPPED, e))?;
        registry
            .register(Box::new(spans_dropped.clone()))
            .map_err(|e| err(SPANS_DROPPED, e))?;
        for reason in [
            "buffer_full",
            "queue_full",
            "export_failed",
            "rejected",
            "too_many_spans",
        ] {
            spans_dropped.with_label_values(&[reason]);
        }
        let kept = REASONS.map(|r| traces.with_label_values(&["kept", r]));
        let dropped = traces.with_label_values(&["dropped", "none"]);
        let gauge = |name: &str, help: &str| -> Result<IntGauge, Error> {
            let g = IntGauge::new(name, help).map_err(|e| err(name, e))?;
            registry
                .register(Box::new(g.clone()))
                .map_err(|e| err(name, e))?;
            Ok(g)
        };
        let buffered_traces = gauge(
            BUFFERED_TRACES,
            "Traces buffered until their local root ends.",
        )?;
        let buffered_spans = gauge(
            BUFFERED_SPANS,
            "Ended spans buffered until their trace is decided.",
        )?;
        let early = IntCounterVec::new(
            Opts::new(
                DECIDED_EARLY,
                "Traces decided before their root ended, by cause.",
            ),
            &["cause"],
        )
        .map_err(|e| err(DECIDED_EARLY, e))?;
        registry
            .register(Box::new(early.clone()))
            .map_err(|e| err(DECIDED_EARLY, e))?;
        Ok(Self {
            kept,
            dropped,
            spans_dropped,
            buffered_traces,
            buffered_spans,
            early_buffer_full: early.with_label_values(&["buffer_full"]),
            early_root_timeout: early.with_label_values(&["root_timeout"]),
        })
    }
}

/// The tail sampler of one instance.
pub(crate) struct TailSampler {
    config: SamplingConfig,
    ratio_bound: u64,
    state: Mutex<State>,
    bucket: Mutex<TokenBucket>,
    metrics: TraceMetrics,
    sinks: Sinks,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `trace_id` falls in `ratio`, exactly as the OTel SDK's `TraceIdRatioBased` decides:
/// the low 64 bits shifted right by one, compared with `ratio * 2^63`.
pub(crate) fn ratio_bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * (1u64 << 63) as f64) as u64
    }
}

pub(crate) fn in_ratio(trace_id: u128, bound: u64) -> bool {
    ((trace_id as u64) >> 1) < bound
}

impl TailSampler {
    pub(crate) fn new(config: SamplingConfig, metrics: TraceMetrics, sinks: Sinks) -> Self {
        let tokens = config.forced_per_second.max(1.0);
        Self {
            ratio_bound: ratio_bound(config.success_ratio),
            state: Mutex::new(State {
                pending: TraceMap::default(),
                order: VecDeque::new(),
                decided: vec![(0, None); DECIDED_CACHE],
                spans: 0,
            }),
            bucket: Mutex::new(TokenBucket {
                tokens,
                last: Instant::now(),
            }),
            config,
            metrics,
            sinks,
        }
    }

    pub(crate) fn sinks(&self) -> &Sinks {
        &self.sinks
    }

    /// The sampled flag to propagate downstream: the ratio decision, known at the start.
    pub(crate) fn ratio_sampled(&self, trace_id: u128) -> bool {
        in_ratio(trace_id, self.ratio_bound)
    }

    /// The sampled flag an outgoing call sends (and the first guess of `traceresponse`): what
    /// this service knows up front will keep its trace (forced within the budget, a trusted
    /// upstream sampled it, or the ratio keeps it).
    pub(crate) fn propagated_sampled(&self, trace_id: u128, root: &RootInfo) -> bool {
        self.known_kept(trace_id, root.forced, root.remote_sampled)
    }

    /// See [`TailSampler::propagated_sampled`].
    pub(crate) fn known_kept(
        &self,
        trace_id: u128,
        forced: bool,
        remote_sampled: Option<bool>,
    ) -> bool {
        forced
            || (self.config.trust_parent && remote_sampled == Some(true))
            || self.ratio_sampled(trace_id)
    }

    /// Admits a request sent with `trace: true` within the forced-trace budget (a token
    /// bucket); the request then counts as forced. Taken when the request starts, so the
    /// flags it sends downstream and answers with never claim a trace the budget refuses.
    pub(crate) fn admit_forced(&self) -> bool {
        let rate = self.config.forced_per_second;
        if rate <= 0.0 {
            return false;
        }
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * rate).min(rate.max(1.0));
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A span ended. `local_root` is the span ID of its local root (its own for a root);
    /// `root` is `Some` when it is that local root; `request`, a request span's own fields kept
    /// as they are, which become its first attributes if its trace is kept.
    pub(crate) fn on_span_end(
        &self,
        span: FinishedSpan,
        local_root: u64,
        root: Option<(RootInfo, Duration)>,
        request: Option<RequestAttrs>,
    ) {
        let trace_id = span.trace_id;
        let key = buffer_key(trace_id, local_root);
        let mut emit: Vec<(Option<&'static str>, Vec<FinishedSpan>)> = Vec::new();
        // Read only when a trace is buffered: the common request (a root without buffered
        // children, nothing else waiting) needs no clock.
        let now = std::cell::OnceCell::new();
        // The root's exemplars go with the emission of the root span, if its trace is kept.
        let mut root_emission = None;
        let exemplars = root
            .as_ref()
            .map(|(info, _)| info.exemplars)
            .filter(|e| !e.is_empty())
            .map(|exemplars| TraceExemplars {
                trace_id,
                timestamp: span
                    .end
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                exemplars,
            });
        {
            let mut state = lock(&self.state);
            self.sweep_timeouts(&mut state, &mut emit, &now);
            if let Some(decision) = Self::recall(&state, key) {
                // A late span follows its trace's decision.
                if decision.is_some() {
                    if root.is_some() {
                        root_emission = Some(emit.len());
                    }
                    emit.push((decision, vec![span]));
                }
            } else if root.is_some() && !state.pending.contains_key(&key) {
                // A root without buffered children (the common request): decide at once.
                let error = self.is_error(&span, request.as_ref());
                let decision = self.decide(trace_id, error, root);
                Self::remember(&mut state, key, decision);
                // A dropped root's span is dropped here: no emission to make.
                if decision.is_some() {
                    root_emission = Some(emit.len());
                    emit.push((decision, vec![span]));
                }
            } else {
                if !state.pending.contains_key(&key) {
                    while state.pending.len() >= self.config.max_traces {
                        match self.evict_oldest(&mut state) {
                            Some(decided) => emit.push(decided),
                            None => break,
                        }
                    }
                    state.order.push_back((key, *now.get_or_init(Instant::now)));
                    if state.order.len() > 4 * self.config.max_traces.max(1024) {
                        // Entries of decided traces wait behind a long-running one: compact.
                        let State { order, pending, .. } = &mut *state;
                        order.retain(|(id, _)| pending.contains_key(id));
                    }
                }
                let entry = state.pending.entry(key).or_insert_with(|| Pending {
                    spans: Vec::with_capacity(2),
                    error: false,
                });
                entry.error |= self.is_error(&span, request.as_ref());
                if entry.spans.len() < self.config.max_spans_per_trace {
                    entry.spans.push(span);
                    state.spans += 1;
                } else {
                    self.metrics
                        .spans_dropped
                        .with_label_values(&["too_many_spans"])
                        .inc();
                }
                if let Some((info, duration)) = root {
                    let pending = state.pending.remove(&key);
                    state.spans = state
                        .spans
                        .saturating_sub(pending.as_ref().map_or(0, |p| p.spans.len()));
                    let (error, spans) =
                        pending.map_or((false, Vec::new()), |p| (p.error, p.spans));
                    let decision = self.decide(trace_id, error, Some((info, duration)));
                    Self::remember(&mut state, key, decision);
                    root_emission = Some(emit.len());
                    emit.push((decision, spans));
                }
            }
            self.metrics.buffered_traces.set(state.pending.len() as i64);
            self.metrics.buffered_spans.set(state.spans as i64);
        }
        // The request span's own fields go with the root's emission, to become attributes
        // where the spans become the SDK's form.
        let mut request = request.map(|r| (local_root, r));
        for (i, (decision, spans)) in emit.into_iter().enumerate() {
            let (exemplars, request) = if root_emission == Some(i) {
                (exemplars, request.take())
            } else {
                (None, None)
            };
            self.emit(decision, spans, exemplars, request);
        }
    }

    /// Whether a span makes its trace an error trace: error status, an ERROR event, a 5xx
    /// response (and a 4xx one when client errors count).
    /// `request`: the fields of a request span kept as they are (its status among them).
    fn is_error(&self, span: &FinishedSpan, request: Option<&RequestAttrs>) -> bool {
        let status = span
            .http_status()
            .or_else(|| request.and_then(RequestAttrs::status));
        span.error
            || span.error_event
            || status.is_some_and(|s| s >= 500)
            || (self.config.sample_client_errors && status.is_some_and(|s| (400..500).contains(&s)))
    }

    /// Decides, with what is known, the traces whose root has not ended within the timeout.
    fn sweep_timeouts(
        &self,
        state: &mut State,
        emit: &mut Vec<(Option<&'static str>, Vec<FinishedSpan>)>,
        now: &std::cell::OnceCell<Instant>,
    ) {
        while let Some(&(id, at)) = state.order.front() {
            if !state.pending.contains_key(&id) {
                state.order.pop_front();
                continue;
            }
            let now = *now.get_or_init(Instant::now);
            if now.saturating_duration_since(at) < self.config.root_timeout {
                break;
            }
            state.order.pop_front();
            if let Some(p) = state.pending.remove(&id) {
                state.spans = state.spans.saturating_sub(p.spans.len());
                self.metrics.early_root_timeout.inc();
                let decision = self.decide(id, p.error, None);
                Self::remember(state, id, decision);
                emit.push((decision, p.spans));
            }
        }
    }

    fn evict_oldest(&self, state: &mut State) -> Option<(Option<&'static str>, Vec<FinishedSpan>)> {
        while let Some((id, _)) = state.order.pop_front() {
            if let Some(p) = state.pending.remove(&id) {
                state.spans = state.spans.saturating_sub(p.spans.len());
                self.metrics.early_buffer_full.inc();
                let decision = self.decide(id, p.error, None);
                Self::remember(state, id, decision);
                if decision.is_none() {
                    self.metrics
                        .spans_dropped
                        .with_label_values(&["buffer_full"])
                        .inc_by(p.spans.len() as u64);
                }
                return Some((decision, p.spans));
            }
        }
        None
    }

    fn slot(trace_id: u128) -> usize {
        // Trace IDs are random: their low bits index the cache well.
        (trace_id as usize) % DECIDED_CACHE
    }

    /// The tag stored for a trace: its high 64 bits (the low ones chose the slot).
    fn tag(trace_id: u128) -> u64 {
        ((trace_id >> 64) as u64) | 1
    }

    fn remember(state: &mut State, trace_id: u128, decision: Option<&'static str>) {
        state.decided[Self::slot(trace_id)] = (Self::tag(trace_id), decision);
    }

    fn recall(state: &State, trace_id: u128) -> Option<Option<&'static str>> {
        let (tag, decision) = state.decided[Self::slot(trace_id)];
        (tag == Self::tag(trace_id)).then_some(decision)
    }

    /// The rules, in order. `root` is `None` when the trace is decided without its root.
    fn decide(
        &self,
        trace_id: u128,
        error: bool,
        root: Option<(RootInfo, Duration)>,
    ) -> Option<&'static str> {
        let reason = if error {
            Some("error")
        } else if root.as_ref().is_some_and(|(i, _)| i.forced) {
            Some("forced")
        } else if self.config.trust_parent
            && root
                .as_ref()
                .is_some_and(|(i, _)| i.remote_sampled == Some(true))
        {
            Some("parent")
        } else if let (Some(limit), Some((_, d))) = (self.config.keep_slower_than, &root)
            && *d > limit
        {
            Some("slow")
        } else if in_ratio(trace_id, self.ratio_bound) {
            Some("ratio")
        } else if root.as_ref().is_some_and(|(i, _)| i.downstream) {
            Some("downstream")
        } else {
            None
        };
        match reason {
            Some(r) => {
                let idx = REASONS
                    .iter()
                    .position(|x| *x == r)
                    .unwrap_or(REASONS.len() - 1);
                self.metrics.kept[idx].inc();
            }
            None => self.metrics.dropped.inc(),
        }
        reason
    }

    /// Sends a kept trace's spans where they go, with its exemplars (published once the spans
    /// are exported, or at once when they go to the ring).
    fn emit(
        &self,
        decision: Option<&'static str>,
        spans: Vec<FinishedSpan>,
        exemplars: Option<TraceExemplars>,
        mut request: Option<(u64, RequestAttrs)>,
    ) {
        let Some(reason) = decision else { return };
        if spans.is_empty() {
            return;
        }
        let queued = spans.into_iter().map(|span| {
            let request = match &request {
                Some((id, _)) if *id == span.span_id => request.take().map(|(_, r)| r),
                _ => None,
            };
            QueuedSpan::Finished {
                span,
                reason,
                request,
            }
        });
        // The ring is used only when there is no exporter: each gets the spans it needs. The
        // export thread makes them the SDK's form; the ring, here.
        #[cfg(feature = "otlp")]
        if let Some(export) = &self.sinks.export {
            export.push_with(queued.collect(), exemplars);
            return;
        }
        if let Some(ring) = &self.sinks.ring {
            let data = queued.map(QueuedSpan::into_span_data).collect();
            ring.push(reason, data);
            if let Some(exemplars) = exemplars {
                publish_exemplars(&self.sinks.exemplars, &exemplars);
            }
        }
    }

    /// Decides every buffered trace now (at shutdown), with what is known.
    pub(crate) fn decide_all(&self) {
        let drained: Vec<(u128, Pending)> = {
            let mut state = lock(&self.state);
            state.order.clear();
            state.spans = 0;
            self.metrics.buffered_traces.set(0);
            self.metrics.buffered_spans.set(0);
            state.pending.drain().collect()
        };
        for (id, p) in drained {
            let decision = self.decide(id, p.error, None);
            self.emit(decision, p.spans, None, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio rule decides as OpenTelemetry's own `TraceIdRatioBased` (the oracle, called
    /// through `ShouldSample` for a root span), on spread-out trace IDs and on the IDs at the
    /// bound, where an off-by-one would show.
    #[test]
    fn ratio_matches_trace_id_ratio_based() {
        use opentelemetry::trace::{SpanKind, TraceId};
        use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
        for ratio in [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0, 1.5, -1.0] {
            let bound = ratio_bound(ratio);
            let oracle = Sampler::TraceIdRatioBased(ratio);
            let otel = |id: u128| {
                oracle
                    .should_sample(None, TraceId::from(id), "x", &SpanKind::Server, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample
            };
            let at_bound = [
                u128::from(bound.saturating_sub(1)) << 1,
                u128::from(bound) << 1,
                (u128::from(bound) << 1) | 1,
            ];
            let spread =
                (0..20_000u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
            let mut kept = 0;
            for id in at_bound.into_iter().chain([0, u128::MAX]).chain(spread) {
                let ours = in_ratio(id, bound);
                assert_eq!(ours, otel(id), "ratio {ratio}, trace id {id:032x}");
                kept += usize::from(ours);
            }
            if ratio == 0.1 {
                assert!((1_800..2_200).contains(&kept), "{kept}");
            }
        }
    }
}
