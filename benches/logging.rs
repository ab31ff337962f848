//! The cost of one handler log event (DESIGN §13: at most half of tracing-subscriber's JSON).
//!
//! One `tracing::info!(user_id = 42u64, plan = "pro", "user signed up")` inside an entered span
//! shaped like a request span, through:
//!
//! - `mercenary_obs_json`: the JSON formatter of an instance built with `build()`, writing to
//!   `io::sink()` through its bounded queue and writer thread;
//! - `tracing_subscriber_json`: `fmt().json()` writing synchronously to `io::sink` (the
//!   cheapest sink it can have; a non-blocking `tracing-appender` writer is not measured).
//!
//! Run with `cargo bench --bench logging -- --noplot`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mercenary_obs::Obs;

const CORRELATION_ID: &str = "3f0c2a4e-6a7b-4c1d-9e8f-0123456789ab";

fn request_span() -> tracing::Span {
    tracing::info_span!(
        "request",
        correlation_id = CORRELATION_ID,
        http.route = "/users/{id}"
    )
}

fn emit() {
    tracing::info!(user_id = 42u64, plan = "pro", "user signed up");
}

fn logging(c: &mut Criterion) {
    let mut group = c.benchmark_group("log_event");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);

    let obs = Obs::builder()
        .service_name("bench")
        .log_writer(std::io::sink())
        // A flood of millions of lines per second outruns a thread that is not scheduled for
        // a few milliseconds on a busy 2-core machine; a large queue keeps drops (which are
        // cheaper than appends) out of the measurement.
        .log_queue_bytes(256 << 20)
        .process_metrics(false)
        .build()
        .expect("building the Obs instance");
    let dispatch = obs.dispatch().expect("a JSON log pipeline").clone();
    tracing::dispatcher::with_default(&dispatch, || {
        let span = request_span();
        let _entered = span.enter();
        group.bench_function("mercenary_obs_json", |b| b.iter(emit));
    });
    obs.flush();

    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let span = request_span();
        let _entered = span.enter();
        group.bench_function("tracing_subscriber_json", |b| b.iter(emit));
    });
    group.finish();

    println!(
        "mercenary_obs_json: log lines dropped = {}",
        obs.log_lines_dropped()
    );
}

criterion_group!(benches, logging);
criterion_main!(benches);
