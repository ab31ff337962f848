//! The business-metric macros as a handler author uses them, checked on the exposition a
//! Prometheus would scrape (and with `promtool check metrics`).
//!
//! No `init()` here: the macros write to the metrics-only default instance, which
//! `Obs::global()` returns. Every test uses its own metric names.

mod common;

use std::sync::Arc;

use common::{Capture, promtool_check, samples};
use mercenary_obs::Obs;

fn exposition() -> String {
    Obs::global().render_metrics()
}

fn sum(samples: &[(String, f64)]) -> f64 {
    samples.iter().map(|(_, v)| v).sum()
}

#[test]
fn every_macro_form_produces_the_expected_exposition() {
    // No labels; literal labels; a `String`, a `&str` variable and a `Display` value.
    mercenary_obs::counter!("form_signups_total").inc();
    mercenary_obs::counter!("form_payments_total", "currency" => "EUR", "outcome" => "ok")
        .inc_by(3);
    let currency = String::from("USD");
    let outcome: &str = "declined";
    let user_id: u32 = 7;
    mercenary_obs::counter!(
        "form_payments_total",
        "currency" => currency,
        "outcome" => outcome,
    )
    .inc();
    mercenary_obs::counter!(
        "form_logins_total",
        "user" => user_id,
        help: "Logins by user.",
        max_series: 10,
    )
    .inc();
    // Gauges.
    let g = mercenary_obs::gauge!("form_active_sessions", help: "Signed-in sessions.");
    g.set(10.0);
    g.inc();
    g.sub(3.0);
    mercenary_obs::gauge!("form_queue_depth", "queue" => "mail").add(2.5);
    // Histograms: custom buckets, default buckets, a timer.
    let amount_currency = "USD";
    mercenary_obs::histogram!(
        "form_payment_amount_dollars",
        "currency" => amount_currency,
        help: "Payment amounts in dollars.",
        buckets: [1, 10.0, 100.0, 1000.0],
    )
    .observe(49.0);
    mercenary_obs::histogram!("form_render_seconds").observe(0.02);
    let timer = mercenary_obs::histogram!("form_timed_seconds").start_timer();
    // A known minimum: a timer that recorded 0 (or nothing) must not pass.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let elapsed = timer.stop_and_record();
    assert!(
        (0.02..10.0).contains(&elapsed),
        "the timer returned {elapsed} s"
    );
    // A run-time name.
    let name = format!("form_{}_total", "dynamic");
    mercenary_obs::counter!(name, "kind" => "a").inc();
    mercenary_obs::counter!(name.as_str(), "kind" => "a").inc();

    let text = exposition();
    promtool_check(&text);

    assert_eq!(
        samples(&text, "form_signups_total"),
        vec![(String::new(), 1.0)]
    );
    assert!(
        text.contains("# HELP form_signups_total Business counter form_signups_total."),
        "{text}"
    );
    assert!(text.contains("# TYPE form_signups_total counter"), "{text}");
    let payments = samples(&text, "form_payments_total");
    assert!(
        payments.contains(&("{currency=\"EUR\",outcome=\"ok\"}".into(), 3.0)),
        "{payments:?}"
    );
    assert!(
        payments.contains(&("{currency=\"USD\",outcome=\"declined\"}".into(), 1.0)),
        "{payments:?}"
    );
    assert!(
        text.contains("# HELP form_logins_total Logins by user."),
        "{text}"
    );
    assert_eq!(
        samples(&text, "form_logins_total"),
        vec![("{user=\"7\"}".into(), 1.0)]
    );

    assert!(
        text.contains("# HELP form_active_sessions Signed-in sessions."),
        "{text}"
    );
    assert!(text.contains("# TYPE form_active_sessions gauge"), "{text}");
    assert_eq!(
        samples(&text, "form_active_sessions"),
        vec![(String::new(), 8.0)]
    );
    assert_eq!(
        samples(&text, "form_queue_depth"),
        vec![("{queue=\"mail\"}".into(), 2.5)]
    );

    assert!(
        text.contains("# TYPE form_payment_amount_dollars histogram"),
        "{text}"
    );
    let buckets = samples(&text, "form_payment_amount_dollars_bucket");
    let les: Vec<&str> = buckets
        .iter()
        .map(|(l, _)| l.split("le=\"").nth(1).unwrap().trim_end_matches("\"}"))
        .collect();
    assert_eq!(les, ["1", "10", "100", "1000", "+Inf"], "{buckets:?}");
    let counts: Vec<f64> = buckets.iter().map(|(_, v)| *v).collect();
    assert_eq!(counts, [0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!(
        samples(&text, "form_payment_amount_dollars_sum"),
        vec![("{currency=\"USD\"}".into(), 49.0)]
    );
    // Default buckets: the prometheus crate's 5 ms .. 10 s.
    assert_eq!(samples(&text, "form_render_seconds_bucket").len(), 12);
    assert_eq!(
        samples(&text, "form_timed_seconds_count"),
        vec![(String::new(), 1.0)]
    );
    // The timer observed exactly the seconds it returned (at least the 20 ms slept).
    assert_eq!(
        samples(&text, "form_timed_seconds_sum"),
        vec![(String::new(), elapsed)]
    );
    assert_eq!(
        samples(&text, "form_dynamic_total"),
        vec![("{kind=\"a\"}".into(), 2.0)]
    );
}

#[test]
fn handles_from_static_and_dynamic_call_sites_are_the_same_series() {
    for _ in 0..5 {
        mercenary_obs::counter!("same_series_total", "plan" => "pro").inc();
    }
    let plan = "pro".to_string();
    for _ in 0..5 {
        mercenary_obs::counter!("same_series_total", "plan" => plan).inc();
    }
    Obs::global()
        .counter("same_series_total", &[("plan", &"pro")])
        .inc();
    let c = mercenary_obs::counter!("same_series_total", "plan" => "pro");
    assert_eq!(c.get(), 11);
}

#[test]
fn sixteen_threads_count_exactly_on_one_and_on_many_series() {
    const THREADS: usize = 16;
    const N: u64 = 100_000;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                for _ in 0..N {
                    mercenary_obs::counter!("threads_same_total", "kind" => "x").inc();
                    mercenary_obs::counter!("threads_each_total", "thread" => t).inc();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let text = exposition();
    assert_eq!(
        samples(&text, "threads_same_total"),
        vec![("{kind=\"x\"}".into(), (THREADS as u64 * N) as f64)]
    );
    let each = samples(&text, "threads_each_total");
    assert_eq!(each.len(), THREADS);
    assert!(each.iter().all(|(_, v)| *v == N as f64), "{each:?}");
}

#[test]
fn the_series_cap_folds_new_label_sets_into_other_and_keeps_the_sum_exact() {
    for i in 0..5_000 {
        mercenary_obs::counter!("capped_logins_total", "user" => i, max_series: 100).inc();
    }
    let text = exposition();
    promtool_check(&text);
    let series = samples(&text, "capped_logins_total");
    assert_eq!(series.len(), 101, "100 series plus _other");
    let other: Vec<_> = series
        .iter()
        .filter(|(l, _)| l == "{user=\"_other\"}")
        .collect();
    assert_eq!(other, vec![&("{user=\"_other\"}".to_string(), 4_900.0)]);
    assert_eq!(sum(&series), 5_000.0);
    // Other tests of this binary share the default instance (under `cargo test`, one process):
    // only this metric's overflow series is this test's.
    let overflow: Vec<_> = samples(&text, "mercenary_obs_metric_overflow_total")
        .into_iter()
        .filter(|(labels, _)| labels.contains("capped_logins_total"))
        .collect();
    assert_eq!(
        overflow,
        vec![("{metric=\"capped_logins_total\"}".into(), 4_900.0)]
    );
    // A label set that existed before the cap still counts in its own series.
    mercenary_obs::counter!("capped_logins_total", "user" => 0, max_series: 100).inc();
    let text = exposition();
    assert!(
        samples(&text, "capped_logins_total").contains(&("{user=\"0\"}".into(), 2.0)),
        "{text}"
    );
}

/// Without `max_series:` or `series_cap`, a metric holds 1000 series: the macros on the default
/// instance and an instance built with the default settings alike.
#[test]
fn the_default_cap_is_1000_series() {
    let check = |text: &str, name: &str| {
        let series = samples(text, name);
        assert_eq!(series.len(), 1001, "1000 series plus _other");
        assert!(
            series.contains(&("{user=\"999\"}".into(), 1.0)),
            "the first 1000 label sets keep their series"
        );
        assert!(!series.iter().any(|(l, _)| l == "{user=\"1000\"}"));
        assert!(
            series.contains(&("{user=\"_other\"}".into(), 200.0)),
            "{series:?}"
        );
        assert_eq!(sum(&series), 1_200.0);
        assert!(
            samples(text, "mercenary_obs_metric_overflow_total")
                .contains(&(format!("{{metric=\"{name}\"}}"), 200.0)),
            "{text}"
        );
    };
    for i in 0..1_200 {
        mercenary_obs::counter!("default_capped_total", "user" => i).inc();
    }
    check(&exposition(), "default_capped_total");

    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .unwrap();
    for i in 0..1_200 {
        obs.counter("built_capped_total", &[("user", &i)]).inc();
    }
    check(&obs.render_metrics(), "built_capped_total");
}

#[test]
fn hostile_label_values_do_not_blow_up_cardinality_or_the_exposition() {
    let nasty = [
        "a\"b",
        "line\nbreak",
        "back\\slash",
        "\u{1b}[31mred",
        "é✓",
        "",
    ];
    for v in nasty {
        mercenary_obs::counter!("hostile_values_total", "v" => v, max_series: 3).inc();
    }
    let long = "x".repeat(100_000);
    mercenary_obs::counter!("hostile_long_total", "v" => long).inc();
    let text = exposition();
    promtool_check(&text);
    assert_eq!(samples(&text, "hostile_values_total").len(), 4);
    let long_line = text
        .lines()
        .find(|l| l.starts_with("hostile_long_total{"))
        .unwrap();
    assert!(long_line.len() < 1100, "label values are cut to 1 KiB");
}

#[test]
fn conflicting_registrations_are_logged_once_and_leave_the_first_family_intact() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer({
            let c = capture.clone();
            move || c.clone()
        })
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        mercenary_obs::counter!("conflict_jobs_total", "queue" => "mail").inc_by(5);
        for _ in 0..3 {
            let g = mercenary_obs::gauge!("conflict_jobs_total", "queue" => "mail");
            g.set(1.0);
            assert!(!g.is_active());
            let c = mercenary_obs::counter!("conflict_jobs_total", "other" => "x");
            c.inc();
            assert!(!c.is_active());
            let h = mercenary_obs::histogram!("conflict_jobs_total");
            h.observe(1.0);
            let _ = h.start_timer();
            // A run-time name that Prometheus refuses.
            let bad = String::from("not a metric");
            let c = mercenary_obs::counter!(bad);
            c.inc();
            assert!(!c.is_active());
            // A name the RED catalogue already registered.
            mercenary_obs::counter!(mercenary_obs::names::ACTIVE_REQUESTS).inc();
        }
    });
    let text = exposition();
    promtool_check(&text);
    assert_eq!(
        samples(&text, "conflict_jobs_total"),
        vec![("{queue=\"mail\"}".into(), 5.0)]
    );
    assert!(
        text.contains("# TYPE conflict_jobs_total counter"),
        "{text}"
    );
    let logs = capture.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("metric call ignored"))
        .collect();
    // One line per distinct problem (gauge, other labels, histogram, bad name, taken name),
    // however many times each call ran.
    assert_eq!(warnings.len(), 5, "{logs}");
    assert!(
        warnings.iter().any(|l| l.contains("not a metric")),
        "{logs}"
    );
    assert!(
        warnings.iter().any(|l| l.contains("is already a counter")),
        "{logs}"
    );
}

#[test]
fn built_instances_have_their_own_families_and_caps() {
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .series_cap(2)
        .series_cap_for("wide_total", 3)
        .build()
        .unwrap();
    for i in 0..5 {
        obs.counter("narrow_total", &[("i", &i)]).inc();
        obs.counter("wide_total", &[("i", &i)]).inc();
    }
    obs.gauge("inst_queue_depth", &[]).set(2.0);
    obs.histogram("inst_seconds", &[("op", &"read")])
        .observe(0.5);
    let text = obs.render_metrics();
    promtool_check(&text);
    assert_eq!(samples(&text, "narrow_total").len(), 3);
    assert_eq!(samples(&text, "wide_total").len(), 4);
    assert_eq!(sum(&samples(&text, "narrow_total")), 5.0);
    assert_eq!(
        samples(&text, "inst_queue_depth"),
        vec![(String::new(), 2.0)]
    );
    assert_eq!(
        samples(&text, "inst_seconds_count"),
        vec![("{op=\"read\"}".into(), 1.0)]
    );
    // Nothing of it leaked into the global (default) instance.
    assert!(!exposition().contains("narrow_total"));
    let bad = Obs::builder()
        .log_writer(std::io::sink())
        .series_cap(0)
        .build();
    assert!(bad.unwrap_err().to_string().contains("series_cap"));
}

#[test]
fn handles_can_be_kept_and_shared() {
    let c: mercenary_obs::Counter = mercenary_obs::counter!("kept_total", "k" => "v").clone();
    let c = Arc::new(c);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || (0..1000).for_each(|_| c.inc()))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(c.get(), 4000);
}
