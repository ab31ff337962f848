//! Unit tests of the span context layer, the hottest path of the crate: every span of every
//! request goes through it. The oracle is what a log line or an exported span must show: the
//! W3C IDs, the inheritance of the correlation and trace IDs, and the JSON fields.

use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;

use super::current::{current_correlation_id, with_current_context};
use super::handoff::{RequestTrace, take_opened, with_request_trace};
use super::layer::ContextLayer;
use crate::core::names::REQUEST_TARGET;
use crate::core::redact::Redactor;
use crate::core::render::RenderSettings;
use crate::traces::propagation::parse_traceparent;
use crate::traces::ring::TraceRing;
use crate::traces::sampler::{SamplingConfig, Sinks, TailSampler, TraceMetrics};

fn settings(json: bool) -> Arc<RenderSettings> {
    Arc::new(RenderSettings {
        redactor: Redactor::new(["password"]),
        value_cap: 64,
        json,
    })
}

fn sampler() -> Arc<TailSampler> {
    let registry = prometheus::Registry::new();
    let config = SamplingConfig {
        success_ratio: 1.0,
        forced_per_second: 10.0,
        sample_client_errors: false,
        keep_slower_than: None,
        trust_parent: true,
        max_traces: 16,
        max_spans_per_trace: 16,
        root_timeout: std::time::Duration::from_secs(60),
    };
    let sinks = Sinks {
        ring: Some(TraceRing::new(8)),
        #[cfg(feature = "otlp")]
        export: None,
        exemplars: Arc::default(),
    };
    Arc::new(TailSampler::new(
        config,
        TraceMetrics::register(&registry).unwrap(),
        sinks,
    ))
}

/// Runs `f` with a subscriber made of the context layer alone.
fn with_layer<R>(json: bool, sampler: Option<Arc<TailSampler>>, f: impl FnOnce() -> R) -> R {
    let layer = ContextLayer::new(settings(json), sampler, json);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, f)
}

/// (correlation ID, trace ID, span ID, parent span ID, fields JSON, IDs JSON) of the current span.
type Seen = (Option<String>, u128, u64, u64, String, String);

fn seen() -> Seen {
    with_current_context(|c| {
        (
            c.correlation_id.as_deref().map(str::to_string),
            c.trace_id,
            c.span_id,
            c.parent_span_id,
            c.fields().to_string(),
            c.ids().to_string(),
        )
    })
    .expect("a span context")
}

#[test]
fn children_inherit_correlation_and_trace_ids_and_get_their_own_span_id() {
    with_layer(true, None, || {
        let root = tracing::info_span!("root", correlation_id = "req-1", user = 7);
        let _r = root.enter();
        let (cid, trace, root_span, parent, _, ids) = seen();
        assert_eq!(cid.as_deref(), Some("req-1"));
        assert_ne!(trace, 0);
        assert_ne!(root_span, 0);
        assert_eq!(parent, 0, "a local root has no parent");
        assert_eq!(
            ids,
            format!(
                ",\"correlation_id\":\"req-1\",\"trace_id\":\"{trace:032x}\",\"span_id\":\"{root_span:016x}\""
            )
        );

        let child = tracing::info_span!("child", step = "load");
        let _c = child.enter();
        let (cid2, trace2, child_span, parent2, fields, ids2) = seen();
        assert_eq!(cid2.as_deref(), Some("req-1"));
        assert_eq!(trace2, trace, "one trace per request");
        assert_ne!(child_span, root_span);
        assert_eq!(parent2, root_span);
        // Own fields first, then the parent's.
        assert_eq!(fields, ",\"step\":\"load\",\"user\":7");
        assert!(ids2.ends_with(&format!("\"span_id\":\"{child_span:016x}\"")));
        assert_eq!(current_correlation_id().as_deref(), Some("req-1"));
    });
}

#[test]
fn a_child_field_shadows_the_parent_one_and_sensitive_fields_are_redacted() {
    with_layer(true, None, || {
        let root = tracing::info_span!("root", correlation_id = "req-2", stage = "outer");
        let _r = root.enter();
        let child = tracing::info_span!("child", stage = "inner", password = "hunter2");
        let _c = child.enter();
        let (_, _, _, _, fields, _) = seen();
        assert_eq!(fields, ",\"stage\":\"inner\",\"password\":\"[REDACTED]\"");
    });
}

#[test]
fn invalid_correlation_ids_are_not_taken_and_a_new_scope_starts_with_a_valid_one() {
    with_layer(true, None, || {
        let root = tracing::info_span!("root", correlation_id = "bad\nid");
        let _r = root.enter();
        assert_eq!(current_correlation_id(), None);
        let (_, _, _, _, _, ids) = seen();
        assert!(!ids.contains("correlation_id"), "{ids}");
        let scope = tracing::info_span!("scope", correlation_id = "req-3");
        let _s = scope.enter();
        assert_eq!(current_correlation_id().as_deref(), Some("req-3"));
    });
}

#[test]
fn recorded_fields_are_appended_and_a_re_recorded_key_replaces_the_old_value() {
    with_layer(true, None, || {
        let span = tracing::info_span!(
            "work",
            correlation_id = "req-4",
            rows = tracing::field::Empty,
            state = "start"
        );
        let _g = span.enter();
        span.record("rows", 3);
        let (_, _, _, _, fields, _) = seen();
        assert_eq!(fields, ",\"state\":\"start\",\"rows\":3");
        span.record("state", "done");
        let (_, _, _, _, fields, ids) = seen();
        assert_eq!(fields, ",\"state\":\"done\",\"rows\":3");
        assert!(ids.starts_with(",\"correlation_id\":\"req-4\""), "{ids}");
    });
}

#[test]
fn the_request_span_takes_the_ids_the_layer_handed_over() {
    let parent = parse_traceparent(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .expect("a valid traceparent");
    let handed = RequestTrace {
        trace_id: parent.trace_id,
        span_id: 0x1234,
        parent: Some(parent),
        forced: false,
        tracestate: None,
    };
    with_layer(true, Some(sampler()), || {
        let span = with_request_trace(
            handed,
            || tracing::info_span!(target: REQUEST_TARGET, "request", correlation_id = "req-5"),
        );
        assert_eq!(
            take_opened(),
            Some((0x0af7651916cd43dd8448eb211c80319c, 0x1234))
        );
        let _g = span.enter();
        let (cid, trace, span_id, parent_span, _, _) = seen();
        assert_eq!(cid.as_deref(), Some("req-5"));
        assert_eq!(trace, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(span_id, 0x1234);
        assert_eq!(
            parent_span, 0xb7ad6b7169203331,
            "the remote caller is the parent"
        );
        with_current_context(|c| assert!(c.parent_is_remote && c.root.is_some()));
    });
}

#[test]
fn other_spans_ignore_a_hand_over_meant_for_the_request_span() {
    let handed = RequestTrace {
        trace_id: 42,
        span_id: 43,
        parent: None,
        forced: true,
        tracestate: None,
    };
    with_layer(true, None, || {
        let span = with_request_trace(handed, || tracing::info_span!("not_a_request"));
        let _g = span.enter();
        let (_, trace, span_id, _, _, _) = seen();
        assert_ne!((trace, span_id), (42, 43));
        assert_eq!(take_opened(), None);
    });
}

#[test]
fn with_traces_on_fields_are_rendered_lazily_and_the_same() {
    let eager = with_layer(true, None, || {
        let root = tracing::info_span!("root", correlation_id = "req-6", a = 1, b = "x");
        let _r = root.enter();
        let child = tracing::info_span!("child", c = 2.5, ok = true);
        let _c = child.enter();
        seen().4
    });
    let lazy = with_layer(true, Some(sampler()), || {
        let root = tracing::info_span!("root", correlation_id = "req-6", a = 1, b = "x");
        let _r = root.enter();
        let child = tracing::info_span!("child", c = 2.5, ok = true);
        let _c = child.enter();
        let before = with_current_context(|c| c.rendered).unwrap();
        assert!(!before, "not rendered until a line needs it");
        tracing::dispatcher::get_default(|d| {
            let registry = d.downcast_ref::<tracing_subscriber::Registry>().unwrap();
            let id = d.current_span().id().unwrap().clone();
            let span = tracing_subscriber::registry::LookupSpan::span(registry, &id).unwrap();
            super::fields::ensure_rendered(&settings(true), &span, &[]);
        });
        seen().4
    });
    assert_eq!(eager, ",\"c\":2.5,\"ok\":true,\"a\":1,\"b\":\"x\"");
    assert_eq!(lazy, eager);
}

#[test]
fn closed_spans_reach_the_sampler_and_a_kept_trace_has_every_span() {
    let sampler = sampler();
    with_layer(true, Some(sampler.clone()), || {
        let root = tracing::info_span!("root", correlation_id = "req-7");
        let _r = root.enter();
        let child = tracing::info_span!("child");
        drop(child.enter());
        drop(child);
    });
    let json = sampler.sinks().ring.as_ref().unwrap().render_json();
    let kept: serde_json::Value = serde_json::from_str(&json).unwrap();
    let spans = kept["traces"][0]["spans"]
        .as_array()
        .expect("one kept trace");
    let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{json}");
    assert!(
        names.contains(&"root") && names.contains(&"child"),
        "{json}"
    );
}

#[test]
fn pretty_mode_keeps_ids_but_renders_no_json() {
    with_layer(false, None, || {
        let span = tracing::info_span!("root", correlation_id = "req-8", a = 1);
        let _g = span.enter();
        let (cid, _, _, _, fields, ids) = seen();
        assert_eq!(cid.as_deref(), Some("req-8"));
        assert!(fields.is_empty() && ids.is_empty());
    });
}

#[test]
fn request_field_prefixes_are_the_rendered_names() {
    for (i, prefix) in super::fields::REQUEST_FIELD_PREFIXES.iter().enumerate() {
        let mut rendered = String::from(",");
        crate::core::escape::push_json_str(
            &mut rendered,
            crate::traces::record::REQUEST_FIELD_NAMES[i + 1],
            usize::MAX,
        );
        rendered.push(':');
        assert_eq!(*prefix, rendered);
    }
}
