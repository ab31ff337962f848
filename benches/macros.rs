//! The business-metric macros against the `prometheus` crate, in one run (issue 4's budget):
//!
//! - `counter!(..).inc()` with no labels, with two literal labels, and with one run-time
//!   `String` label;
//! - the `prometheus` crate's `IntCounterVec::with_label_values(..).inc()` (one `String` label);
//! - a cached `IntCounter` handle's `inc()`, the floor.
//!
//! Targets: no-label and literal-label calls within 2× the cached handle; the run-time label
//! call faster than `with_label_values`. The last step prints the ratios from medians of
//! interleaved samples.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use prometheus::{IntCounter, IntCounterVec, Opts};

fn no_labels() {
    mercenary_obs::counter!("bench_plain_total").inc();
}

fn static_labels() {
    mercenary_obs::counter!("bench_static_total", "currency" => "EUR", "outcome" => "ok").inc();
}

fn dynamic_label(user: &String) {
    mercenary_obs::counter!("bench_dynamic_total", "plan" => user).inc();
}

fn fixtures() -> (IntCounterVec, IntCounter, String) {
    let vec = IntCounterVec::new(Opts::new("bench_vec_total", "vec"), &["plan"]).unwrap();
    let cached = IntCounter::new("bench_cached_total", "cached").unwrap();
    let plan = String::from("enterprise");
    // Create every series once, so all variants measure the existing-series path.
    vec.with_label_values(&[plan.as_str()]).inc();
    no_labels();
    static_labels();
    dynamic_label(&plan);
    (vec, cached, plan)
}

fn bench(c: &mut Criterion) {
    let (vec, cached, plan) = fixtures();
    let mut g = c.benchmark_group("macros");
    g.bench_function("cached IntCounter inc", |b| {
        b.iter(|| black_box(&cached).inc())
    });
    g.bench_function("counter! no labels", |b| b.iter(no_labels));
    g.bench_function("counter! two literal labels", |b| b.iter(static_labels));
    g.bench_function("counter! one String label", |b| {
        b.iter(|| dynamic_label(black_box(&plan)))
    });
    g.bench_function("IntCounterVec with_label_values", |b| {
        b.iter(|| vec.with_label_values(&[black_box(plan.as_str())]).inc())
    });
    g.finish();
}

/// Medians of interleaved batches, so the ratios compare like with like on a noisy machine.
fn interleaved(_: &mut Criterion) {
    let (vec, cached, plan) = fixtures();
    const BATCH: u32 = 20_000;
    const ROUNDS: usize = 41;
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        for _ in 0..BATCH {
            f();
        }
        t.elapsed().as_nanos() as f64 / f64::from(BATCH)
    };
    let variants: [(&str, &dyn Fn()); 5] = [
        ("cached", &|| black_box(&cached).inc()),
        ("no labels", &no_labels),
        ("literal labels", &static_labels),
        ("String label", &|| dynamic_label(black_box(&plan))),
        ("with_label_values", &|| {
            vec.with_label_values(&[black_box(plan.as_str())]).inc()
        }),
    ];
    let mut samples = vec![Vec::with_capacity(ROUNDS); variants.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..ROUNDS {
        for (i, (_, f)) in variants.iter().enumerate() {
            samples[i].push(time(*f));
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m: Vec<f64> = samples.iter_mut().map(median).collect();
    println!("\ninterleaved medians (ns per call):");
    for ((name, _), t) in variants.iter().zip(&m) {
        println!("  {name:<18} {t:8.2}");
    }
    println!(
        "ratios: no labels / cached = {:.2} (target ≤ 2), literal labels / cached = {:.2} (target ≤ 2), String label / with_label_values = {:.2} (target < 1)",
        m[1] / m[0],
        m[2] / m[0],
        m[3] / m[4]
    );
}

criterion_group!(benches, bench, interleaved);
criterion_main!(benches);
