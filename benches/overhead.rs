//! Per-request overhead of the mercenary_obs layer against the off-the-shelf stack (DESIGN §13).
//!
//! Every benchmark sends `GET /users/42` through an axum `Router` with one route, on a tokio
//! current-thread runtime, and reads the response body to the end (as hyper would):
//!
//! - `bare`: no layers;
//! - `mercenary_obs`: `Obs::layer()` of an instance built with `build()`;
//! - `off_the_shelf`: tower-http `SetRequestId` (UUID v4) + `PropagateRequestId` + `TraceLayer`
//!   at INFO (one line per request) with a tracing-subscriber JSON subscriber, plus the
//!   axum-prometheus layer;
//! - `…+handler_info`: the handler also logs one `tracing::info!`.
//!
//! The `tail_sampling` group (issue 3, DESIGN §7 and §13) measures the trace pipeline in one
//! run. Its handler is a realistic one: two child spans (`db.query` entered around nothing,
//! `cache.get` instrumenting a trivial future) and one `tracing::info!`:
//!
//! - `bare`: no layers;
//! - `mercenary_obs/dropped_success`: our layer, 200, success ratio 0 (the sampler drops it);
//! - `mercenary_obs/kept_error`: our layer, the route answers 500 (kept, to the ring of 100);
//! - `off_the_shelf_always_on`: the `off_the_shelf` stack above plus `tracing_opentelemetry`
//!   over an SDK tracer with `Sampler::AlwaysOn` and a `SimpleSpanProcessor` over an exporter
//!   that drops every batch at once;
//! - `off_the_shelf_ratio_0.1`: the same with `ParentBased(TraceIdRatioBased(0.1))`;
//! - `mercenary_obs/traces_off/success` (a diagnostic): our layer with `traces(false)`.
//!
//! After the group, the same cases run round-robin in short batches (40 rounds of 2,000
//! requests each) and the medians, the added costs and the ratios to the AlwaysOn stack are
//! printed ("interleaved check"): a burst of load from other processes then hits every case
//! alike, so the ratios hold on a busy machine. It is skipped under `--profile-time`, under
//! `cargo test`, and when a filter excludes the group (the filter `interleaved` runs only it).
//!
//! Every stack writes its JSON lines to the same real sink: one file (in the system's temporary
//! directory), emptied before each timed run; a timed run of this crate ends when its writer
//! thread has written every line of the run (`Obs::flush`), so the writing is inside the time
//! like the off-the-shelf stack's synchronous writes. `BENCH_LOG_SINK=null` sends both to
//! `io::sink()` instead (no write at all), for comparison.
//!
//! The `span_recording` report measures, interleaved like the check above, a root span with
//! N = 0, 4 and 16 child spans under this crate's subscriber (trace dropped, and kept to the
//! ring) and under the off-the-shelf AlwaysOn subscriber, and prints the cost per child span
//! (the slope between N = 0 and N = 16) and per root.
//!
//! At the end it prints the memory per buffered span: the resident set growth (from
//! `/proc/self/statm`, measured before any benchmark ran) while 10,000 local roots each hold one
//! ended child span in the tail sampler's buffer.
//!
//! Run with `cargo bench --bench overhead -- --noplot`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum_prometheus::PrometheusMetricLayer;
use axum_prometheus::metrics_exporter_prometheus::PrometheusHandle;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use mercenary_obs::Obs;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, SimpleSpanProcessor, SpanData, SpanExporter,
};
use tower::ServiceExt;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::{Instrument, Level};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

async fn user(Path(id): Path<u64>) -> &'static str {
    black_box(id);
    "user 42"
}

async fn user_info(Path(id): Path<u64>) -> &'static str {
    tracing::info!(user_id = %id, "user fetched");
    "user 42"
}

/// The handler of the `tail_sampling` group: two child spans and one log line, like a
/// handler that queries a database and a cache.
async fn user_traced(Path(id): Path<u64>) -> &'static str {
    traced_work(id).await;
    "user 42"
}

/// [`user_traced`], answering 500.
async fn user_traced_error(Path(id): Path<u64>) -> (StatusCode, &'static str) {
    traced_work(id).await;
    (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable")
}

async fn traced_work(id: u64) {
    {
        let _query = tracing::info_span!("db.query", "db.system.name" = "postgresql").entered();
        black_box(id);
    }
    async { black_box(id) }
        .instrument(tracing::info_span!("cache.get", "cache.key" = id))
        .await;
    tracing::info!(user_id = %id, "user fetched");
}

fn traced_router(error: bool) -> Router {
    if error {
        Router::new().route("/users/{id}", get(user_traced_error))
    } else {
        Router::new().route("/users/{id}", get(user_traced))
    }
}

fn router(handler_info: bool) -> Router {
    if handler_info {
        Router::new().route("/users/{id}", get(user_info))
    } else {
        Router::new().route("/users/{id}", get(user))
    }
}

/// `PrometheusMetricLayer::pair()` installs a global recorder (once per process) and spawns its
/// upkeep task on `rt` (as in a real server).
fn prometheus_layer(rt: &tokio::runtime::Runtime) -> PrometheusMetricLayer<'static> {
    static PAIR: OnceLock<(PrometheusMetricLayer<'static>, PrometheusHandle)> = OnceLock::new();
    let _runtime = rt.enter();
    PAIR.get_or_init(PrometheusMetricLayer::pair).0.clone()
}

fn off_the_shelf(rt: &tokio::runtime::Runtime, handler_info: bool) -> Router {
    off_the_shelf_layers(rt, router(handler_info))
}

fn off_the_shelf_layers(rt: &tokio::runtime::Runtime, router: Router) -> Router {
    router
        .layer(prometheus_layer(rt))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The shared log sink: a file in the temporary directory, or nothing (`BENCH_LOG_SINK=null`).
fn log_file() -> Option<&'static std::sync::Arc<std::fs::File>> {
    static FILE: OnceLock<Option<std::sync::Arc<std::fs::File>>> = OnceLock::new();
    FILE.get_or_init(|| {
        if std::env::var("BENCH_LOG_SINK").is_ok_and(|v| v == "null") {
            return None;
        }
        let path =
            std::env::temp_dir().join(format!("mercenary-obs-bench-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .expect("opening the bench log file");
        // Unlinked at once: the file lives as long as the process.
        let _ = std::fs::remove_file(&path);
        Some(std::sync::Arc::new(file))
    })
    .as_ref()
}

/// Empties the shared log file (before a timed run, so that it stays small).
fn empty_log_file() {
    if let Some(file) = log_file() {
        let _ = file.set_len(0);
    }
}

/// A writer for this crate's instances.
fn obs_log_writer() -> Box<dyn std::io::Write + Send> {
    match log_file() {
        Some(file) => Box::new(file.try_clone().expect("a second handle on the log file")),
        None => Box::new(std::io::sink()),
    }
}

/// The off-the-shelf JSON subscriber's writer.
fn ots_make_writer() -> tracing_subscriber::fmt::writer::BoxMakeWriter {
    match log_file() {
        Some(file) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(file.clone()),
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::sink),
    }
}

fn obs_instance() -> Obs {
    Obs::builder()
        .service_name("bench")
        .log_writer(obs_log_writer())
        .process_metrics(false)
        .build()
        .expect("building the Obs instance")
}

fn request() -> Request<Body> {
    Request::get("/users/42")
        .header(header::USER_AGENT, "bench/1.0")
        .body(Body::empty())
        .expect("a valid request")
}

/// Drops every batch at once: the cheapest processor tail of an SDK pipeline.
#[derive(Debug)]
struct DiscardExporter;

impl SpanExporter for DiscardExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        drop(black_box(batch));
        std::future::ready(Ok(()))
    }
}

/// The off-the-shelf subscriber: tracing-subscriber JSON to `io::sink` at INFO, plus
/// tracing-opentelemetry over an SDK tracer with `sampler`.
fn otel_subscriber(
    sampler: Sampler,
) -> (impl tracing::Subscriber + Send + Sync, SdkTracerProvider) {
    let provider = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(SimpleSpanProcessor::new(DiscardExporter))
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(ots_make_writer()),
        )
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    (subscriber, provider)
}

/// Sends one request through a clone of `app` and reads the response to the end.
async fn one_request(app: &Router) {
    let response = app.clone().oneshot(request()).await.expect("infallible");
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.expect("body");
    black_box(body.to_bytes());
}

/// [`one_request`] for a route answering `expected`.
async fn one_request_expecting(app: &Router, expected: StatusCode) {
    let response = app.clone().oneshot(request()).await.expect("infallible");
    assert_eq!(response.status(), expected);
    let body = response.into_body().collect().await.expect("body");
    black_box(body.to_bytes());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `iters` requests inside one `block_on`, timed, until `obs` (if any) has written its lines.
fn run(rt: &tokio::runtime::Runtime, app: &Router, obs: Option<&Obs>, iters: u64) -> Duration {
    empty_log_file();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            one_request(app).await;
        }
        if let Some(obs) = obs {
            obs.flush();
        }
        start.elapsed()
    })
}

/// `iters` requests expecting `expected` inside one `block_on`, timed, until `obs` (if any)
/// has written its lines.
fn run_expecting(
    rt: &tokio::runtime::Runtime,
    app: &Router,
    expected: StatusCode,
    obs: Option<&Obs>,
    iters: u64,
) -> Duration {
    empty_log_file();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            one_request_expecting(app, expected).await;
        }
        if let Some(obs) = obs {
            obs.flush();
        }
        start.elapsed()
    })
}

/// The instance of the `tail_sampling` group: every success dropped, no forced traces, kept
/// traces to a ring of 100.
fn sampling_instance(traces: bool) -> Obs {
    Obs::builder()
        .service_name("bench")
        .log_writer(obs_log_writer())
        .process_metrics(false)
        .traces(traces)
        .success_ratio(0.0)
        .forced_per_second(0.0)
        .trace_ring_size(100)
        .build()
        .expect("building the Obs instance")
}

/// The value of an unlabelled metric in `obs`'s exposition.
fn metric_value(obs: &Obs, name: &str) -> Option<f64> {
    obs.render_metrics().lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// One configuration of the `tail_sampling` group.
struct Case {
    name: &'static str,
    app: Router,
    expected: StatusCode,
    /// The dispatcher made current around the requests (`None`: no subscriber).
    dispatch: Option<tracing::Dispatch>,
    /// This crate's instance, whose lines a timed run waits for.
    obs: Option<Obs>,
}

impl Case {
    /// `iters` requests, timed, with the case's dispatcher current.
    fn run(&self, rt: &tokio::runtime::Runtime, iters: u64) -> Duration {
        let obs = self.obs.as_ref();
        match &self.dispatch {
            Some(d) => tracing::dispatcher::with_default(d, || {
                run_expecting(rt, &self.app, self.expected, obs, iters)
            }),
            None => run_expecting(rt, &self.app, self.expected, obs, iters),
        }
    }
}

fn tail_sampling(c: &mut Criterion) {
    let rt = runtime();
    let mut cases = vec![Case {
        name: "bare",
        app: traced_router(false),
        expected: StatusCode::OK,
        dispatch: None,
        obs: None,
    }];
    let mut instances = Vec::new();
    for (name, traces, error) in [
        ("mercenary_obs/dropped_success", true, false),
        ("mercenary_obs/kept_error", true, true),
    ] {
        let obs = sampling_instance(traces);
        cases.push(Case {
            name,
            app: traced_router(error).layer(obs.layer()),
            expected: if error {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            },
            dispatch: Some(obs.dispatch().expect("a JSON log pipeline").clone()),
            obs: Some(obs.clone()),
        });
        instances.push((name, obs));
    }
    let mut providers = Vec::new();
    for (name, sampler) in [
        ("off_the_shelf_always_on", Sampler::AlwaysOn),
        (
            "off_the_shelf_ratio_0.1",
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.1))),
        ),
    ] {
        let (subscriber, provider) = otel_subscriber(sampler);
        cases.push(Case {
            name,
            app: off_the_shelf_layers(&rt, traced_router(false)),
            expected: StatusCode::OK,
            dispatch: Some(tracing::Dispatch::new(subscriber)),
            obs: None,
        });
        providers.push(provider);
    }
    // A diagnostic: what the layer costs with the trace pipeline off.
    let obs = sampling_instance(false);
    cases.push(Case {
        name: "mercenary_obs/traces_off/success",
        app: traced_router(false).layer(obs.layer()),
        expected: StatusCode::OK,
        dispatch: Some(obs.dispatch().expect("a JSON log pipeline").clone()),
        obs: Some(obs.clone()),
    });
    instances.push(("mercenary_obs/traces_off/success", obs));
    // The first issue's comparison (no handler spans or logs), in the same interleaved run:
    // our whole layer against tower-http request id + TraceLayer JSON + axum-prometheus.
    cases.push(Case {
        name: "plain/bare",
        app: router(false),
        expected: StatusCode::OK,
        dispatch: None,
        obs: None,
    });
    let obs = obs_instance();
    cases.push(Case {
        name: "plain/mercenary_obs",
        app: router(false).layer(obs.layer()),
        expected: StatusCode::OK,
        dispatch: Some(obs.dispatch().expect("a JSON log pipeline").clone()),
        obs: Some(obs.clone()),
    });
    instances.push(("plain/mercenary_obs", obs));
    let obs = Obs::builder()
        .log_writer(obs_log_writer())
        .process_metrics(false)
        .traces(false)
        .build()
        .expect("building the Obs instance");
    cases.push(Case {
        name: "plain/mercenary_obs/traces_off",
        app: router(false).layer(obs.layer()),
        expected: StatusCode::OK,
        dispatch: Some(obs.dispatch().expect("a JSON log pipeline").clone()),
        obs: Some(obs.clone()),
    });
    instances.push(("plain/mercenary_obs/traces_off", obs));
    cases.push(Case {
        name: "plain/off_the_shelf",
        app: off_the_shelf(&rt, false),
        expected: StatusCode::OK,
        dispatch: Some(tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .json()
                .with_writer(ots_make_writer())
                .finish(),
        )),
        obs: None,
    });

    let mut group = c.benchmark_group("tail_sampling");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(40);
    for case in &cases {
        group.bench_function(case.name, |b| b.iter_custom(|iters| case.run(&rt, iters)));
    }
    group.finish();

    let interleaved = interleaved_enabled().then(|| interleaved(&rt, &cases));

    for (name, obs) in &instances {
        obs.flush();
        let kept = obs
            .recent_traces_json()
            .map_or(0, |json| json.matches("\"trace_id\"").count());
        println!(
            "{name}: log lines dropped = {}, traces in the ring = {kept}, spans still buffered = {}",
            obs.log_lines_dropped(),
            metric_value(obs, "mercenary_obs_trace_buffer_spans").unwrap_or(0.0),
        );
    }
    for provider in providers {
        provider
            .shutdown()
            .expect("shutting the tracer provider down");
    }
    if let Some(report) = interleaved {
        println!("{report}");
    }
    if let Some(note) = BUFFERED_SPAN_MEMORY.get() {
        println!("{note}");
    }
}

/// Whether to run the interleaved check: in `cargo bench` runs (not `cargo test`, not
/// `--profile-time`), unless a filter excludes the `tail_sampling` group.
fn interleaved_enabled() -> bool {
    report_enabled("tail_sampling")
}

/// Whether to run the report `name` (see [`interleaved_enabled`]).
fn report_enabled(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--profile-time") {
        return false;
    }
    // Criterion's options that take a value: their value is not a filter.
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--format",
        "--color",
        "-c",
    ];
    let mut filters = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
        } else if WITH_VALUE.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            filters.push(a.as_str());
        }
    }
    filters.is_empty()
        || filters
            .iter()
            .any(|f| name.contains(f) || f.contains("interleaved"))
}

/// A root span with `children` child spans, under the current dispatcher.
fn root_with_children(children: usize) {
    let root = tracing::info_span!("job.root", job = "bench");
    let _entered = root.enter();
    for i in 0..children {
        tracing::info_span!("job.step", step = i).in_scope(|| black_box(i));
    }
}

/// The cost of recording spans: a root with N children, per stack, measured round-robin.
fn span_recording(_: &mut Criterion) {
    if !report_enabled("span_recording") {
        return;
    }
    const ROUNDS: usize = 30;
    const BATCH: usize = 2_000;
    const SIZES: [usize; 3] = [0, 4, 16];
    let dropped = sampling_instance(true);
    let kept = Obs::builder()
        .service_name("bench")
        .log_writer(obs_log_writer())
        .process_metrics(false)
        .success_ratio(1.0)
        .trace_ring_size(100)
        .build()
        .expect("building the Obs instance");
    let (subscriber, provider) = otel_subscriber(Sampler::AlwaysOn);
    let stacks: [(&str, tracing::Dispatch); 3] = [
        (
            "mercenary_obs (dropped)",
            dropped.dispatch().expect("logs").clone(),
        ),
        (
            "mercenary_obs (kept, ring)",
            kept.dispatch().expect("logs").clone(),
        ),
        (
            "off_the_shelf_always_on",
            tracing::Dispatch::new(subscriber),
        ),
    ];
    let run = |dispatch: &tracing::Dispatch, children: usize| {
        tracing::dispatcher::with_default(dispatch, || {
            let start = Instant::now();
            for _ in 0..BATCH {
                root_with_children(children);
            }
            start.elapsed().as_nanos() as f64 / BATCH as f64
        })
    };
    let mut samples = vec![Vec::with_capacity(ROUNDS); stacks.len() * SIZES.len()];
    for round in 0..ROUNDS {
        for k in 0..samples.len() {
            let i = (round + k) % samples.len();
            let (stack, size) = (i / SIZES.len(), SIZES[i % SIZES.len()]);
            samples[i].push(run(&stacks[stack].1, size));
        }
    }
    let medians: Vec<f64> = samples
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    let mut out = format!(
        "span_recording ({ROUNDS} rounds x {BATCH} roots per case, median per root; N = children):"
    );
    for (s, (name, _)) in stacks.iter().enumerate() {
        let at = |n: usize| medians[s * SIZES.len() + n];
        out.push_str(&format!(
            "\n  {name:<28} N=0 {:8.0} ns, N=4 {:8.0} ns, N=16 {:8.0} ns; per child span {:6.0} ns",
            at(0),
            at(1),
            at(2),
            (at(2) - at(0)) / 16.0,
        ));
    }
    println!("{out}");
    drop(provider.shutdown());
}

/// The cases of the group measured round-robin, in short batches, so that a burst of noise from
/// other processes hits every case alike; the ratios of the medians are robust on a busy machine.
fn interleaved(rt: &tokio::runtime::Runtime, cases: &[Case]) -> String {
    const ROUNDS: usize = 40;
    const BATCH: u64 = 2_000;
    for case in cases {
        case.run(rt, BATCH / 4);
    }
    let mut per_request: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); cases.len()];
    for round in 0..ROUNDS {
        // Rotate the order, so no case always follows the same one.
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let elapsed = cases[i].run(rt, BATCH);
            per_request[i].push(elapsed.as_nanos() as f64 / BATCH as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] / 1000.0
    };
    let medians: Vec<f64> = per_request.iter_mut().map(median).collect();
    let by_name = |name: &str| {
        cases
            .iter()
            .position(|c| c.name == name)
            .map(|i| medians[i])
    };
    let mut out = format!(
        "interleaved check ({ROUNDS} rounds x {BATCH} requests per case, median per request):"
    );
    for (case, m) in cases.iter().zip(&medians) {
        out.push_str(&format!("\n  {:<34} {m:7.2} us", case.name));
    }
    if let (Some(bare), Some(dropped), Some(kept), Some(always_on)) = (
        by_name("bare"),
        by_name("mercenary_obs/dropped_success"),
        by_name("mercenary_obs/kept_error"),
        by_name("off_the_shelf_always_on"),
    ) {
        let added = always_on - bare;
        out.push_str(&format!(
            "\n  added over bare: dropped_success {:.2} us, kept_error {:.2} us, always_on {added:.2} us\n  \
             dropped_success / always_on = {:.3} (target <= 0.17), kept_error / always_on = {:.3}",
            dropped - bare,
            kept - bare,
            (dropped - bare) / added,
            (kept - bare) / added,
        ));
    }
    if let (Some(bare), Some(ours), Some(theirs)) = (
        by_name("plain/bare"),
        by_name("plain/mercenary_obs"),
        by_name("plain/off_the_shelf"),
    ) {
        out.push_str(&format!(
            "\n  plain layer (no handler spans): ours adds {:.2} us, off_the_shelf adds {:.2} us, \
             ratio {:.3} (target < 0.333)",
            ours - bare,
            theirs - bare,
            (ours - bare) / (theirs - bare),
        ));
        if let Some(off) = by_name("plain/mercenary_obs/traces_off") {
            out.push_str(&format!(
                "\n  plain layer without trace recording (the first issue's layer): adds {:.2} us, ratio {:.3}",
                off - bare,
                (off - bare) / (theirs - bare),
            ));
        }
    }
    out
}

/// Printed at the end of the run; measured first, on a heap no benchmark has churned yet.
static BUFFERED_SPAN_MEMORY: OnceLock<String> = OnceLock::new();

/// Resident set size in bytes, from `/proc/self/statm` (pages × 4 KiB; `None` off Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Memory per span buffered in the tail sampler: `N` local roots stay open, each with one child
/// span that has ended and waits for its root's decision.
fn buffered_span_memory(_: &mut Criterion) {
    const N: usize = 10_000;
    let obs = Obs::builder()
        .service_name("bench")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .success_ratio(0.0)
        .forced_per_second(0.0)
        .max_buffered_traces(4 * N)
        .build()
        .expect("building the Obs instance");
    let dispatch = obs.dispatch().expect("a JSON log pipeline").clone();
    let note = tracing::dispatcher::with_default(&dispatch, || {
        // Warm the registry, the sampler's maps and the allocator's small-object pools once.
        {
            let root = tracing::info_span!("warmup.root");
            tracing::info_span!(parent: &root, "warmup.child", "db.system.name" = "postgresql")
                .in_scope(|| ());
        }
        let mut roots = Vec::with_capacity(N);
        let before_roots = resident_bytes();
        for _ in 0..N {
            roots.push(tracing::info_span!("job.root"));
        }
        let with_roots = resident_bytes();
        for root in &roots {
            tracing::info_span!(parent: root, "db.query", "db.system.name" = "postgresql")
                .in_scope(|| ());
        }
        let with_children = resident_bytes();
        let buffered = metric_value(&obs, "mercenary_obs_trace_buffer_spans").unwrap_or(0.0);
        let traces = metric_value(&obs, "mercenary_obs_trace_buffer_traces").unwrap_or(0.0);
        drop(roots);
        let after_drop = resident_bytes();
        let left = metric_value(&obs, "mercenary_obs_trace_buffer_spans").unwrap_or(-1.0);
        match (before_roots, with_roots, with_children, after_drop) {
            (Some(a), Some(b), Some(c), Some(d)) => format!(
                "buffered_span_memory (N = {N}, RSS from /proc/self/statm): \
                 {:.0} bytes per buffered child span (first span of its trace, so including the \
                 trace's buffer entry); {:.0} bytes per open local root; \
                 sampler gauges with children buffered: {buffered} spans, {traces} traces; \
                 after dropping the roots: {left} spans buffered, RSS {:+.1} MiB vs. before the roots",
                (c as f64 - b as f64) / N as f64,
                (b as f64 - a as f64) / N as f64,
                (d as f64 - a as f64) / (1 << 20) as f64,
            ),
            _ => "buffered_span_memory: /proc/self/statm unavailable".to_string(),
        }
    });
    let _ = BUFFERED_SPAN_MEMORY.set(note);
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("overhead");
    group
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);

    let bare = router(false);
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| run(&rt, &bare, None, iters))
    });

    let mut dropped = Vec::new();
    for (name, handler_info) in [
        ("mercenary_obs", false),
        ("mercenary_obs+handler_info", true),
    ] {
        let obs = obs_instance();
        let app = router(handler_info).layer(obs.layer());
        let dispatch = obs.dispatch().expect("a JSON log pipeline").clone();
        tracing::dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| run(&rt, &app, Some(&obs), iters))
            });
        });
        obs.flush();
        dropped.push((name, obs.log_lines_dropped()));
    }

    for (name, handler_info) in [
        ("off_the_shelf", false),
        ("off_the_shelf+handler_info", true),
    ] {
        let app = off_the_shelf(&rt, handler_info);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(ots_make_writer())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            group.bench_function(name, |b| b.iter_custom(|iters| run(&rt, &app, None, iters)));
        });
    }
    group.finish();

    for (name, n) in dropped {
        println!("{name}: log lines dropped = {n}");
    }
}

criterion_group!(
    benches,
    buffered_span_memory,
    overhead,
    tail_sampling,
    span_recording
);
criterion_main!(benches);
