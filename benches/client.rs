//! Added cost per outgoing call of the client instrumentation, against `reqwest-tracing` with
//! the OpenTelemetry propagator, in one run.
//!
//! Every call is a `GET /users/42` made inside a fresh parent span (`handler`, with a
//! `correlation_id` field, as a request span has), opened under the case's subscriber, so
//! there is a current trace to continue. The stacks:
//!
//! - `bare`: a `reqwest_middleware` client with no middleware, no subscriber;
//! - `ours/no_middleware`: the same client, under the `tracing` dispatcher of an instance built
//!   with `Obs::builder()…build()` (logs to `io::sink()`, traces on at the default success
//!   ratio), so the parent span is recorded by the tail sampler: the baseline of `ours`;
//! - `ours`: that instance's `Obs::reqwest_middleware()` added (a CLIENT span, `traceparent`,
//!   `x-request-id`, the client duration histogram);
//! - `reqwest_tracing/no_middleware`: the same client under a registry with an INFO filter
//!   and a `tracing-opentelemetry` 0.33 layer over an `opentelemetry_sdk` 0.32 tracer
//!   provider (`Sampler::AlwaysOn`, a `SimpleSpanProcessor` over an exporter dropping every
//!   batch at once), with `TraceContextPropagator` as the global propagator: the baseline of
//!   `reqwest_tracing`;
//! - `reqwest_tracing`: `reqwest_tracing::TracingMiddleware::default()` added (its span, and
//!   `traceparent` injected through the propagator).
//!
//! The groups:
//!
//! - `loopback`: the stacks above against an axum server on `127.0.0.1` in the same process
//!   and on the same tokio current-thread runtime (keep-alive connection, body read to the
//!   end);
//! - `no_network/reqwest`: the same stacks, the network replaced by a last middleware that
//!   answers 200 at once without calling the next one (so reqwest-tracing is measured
//!   without the network too);
//! - `no_network/tower`: a tower `service_fn` client answering at once: `bare` (no
//!   subscriber), `ours/no_layer` (under the instance's dispatcher, no layer) and `ours`
//!   (wrapped in `Obs::client_layer()`).
//!
//! After the groups, each group's cases run round-robin in short batches and the medians and
//! the ratios are printed ("interleaved check"): a burst of load from other processes then
//! hits every case alike. Two ratios are printed for the reqwest groups:
//! `(ours - bare) / (reqwest_tracing - bare)` (each stack's whole added cost, its subscriber
//! recording the parent span included), and the middleware's own cost,
//! `(ours - ours/no_middleware) / (reqwest_tracing - reqwest_tracing/no_middleware)`. The
//! check is skipped under `--profile-time` and `--test` and under `cargo test`; with a filter,
//! it runs for the groups the filter matches (the filter `interleaved` runs only the check,
//! for every group).
//!
//! Before measuring, one call through each stack checks what it sent: `traceparent` from
//! `ours` and `reqwest_tracing`, nothing from the bare ones.
//!
//! Run with `cargo bench --features reqwest --bench client -- --noplot`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Extensions;
use mercenary_obs::Obs;
use opentelemetry_0_32::trace::TracerProvider as _;
use opentelemetry_sdk_0_32::error::OTelSdkResult;
use opentelemetry_sdk_0_32::propagation::TraceContextPropagator;
use opentelemetry_sdk_0_32::trace::{
    Sampler, SdkTracerProvider, SimpleSpanProcessor, SpanData, SpanExporter,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
use tracing::{Dispatch, Instrument};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

const BODY: &str = "user 42";

/// The route of every call.
const PATH: &str = "/users/42";

/// A `correlation_id` for the parent spans (our layer would give each request its own).
const CORRELATION_ID: &str = "4f1c2a9e-bench-0000-0000-000000000042";

/// The `traceparent` each stack sent on its last call (`None`: it sent none).
type Seen = Arc<Mutex<Option<String>>>;

fn note_traceparent(seen: &Seen, headers: &http::HeaderMap) {
    let value = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    *seen.lock().expect("not poisoned") = value;
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The loopback server: `GET /users/42` answers 200 `user 42`; `GET /echo` answers with the
/// `traceparent` it received (the setup check). Spawned on `rt`; returns its base URL.
fn serve(rt: &Runtime) -> String {
    let app = Router::new().route(PATH, get(|| async { BODY })).route(
        "/echo",
        get(|headers: HeaderMap| async move {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binding a loopback port");
    let addr = listener.local_addr().expect("the bound address");
    rt.spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
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

/// The subscriber `reqwest-tracing` is commonly run under: a registry at INFO with a
/// `tracing-opentelemetry` layer over an AlwaysOn SDK tracer; the global propagator is
/// W3C trace context.
fn otel_dispatch() -> (Dispatch, SdkTracerProvider) {
    opentelemetry_0_32::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::AlwaysOn)
        .with_span_processor(SimpleSpanProcessor::new(DiscardExporter))
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(LevelFilter::INFO)
        .with(tracing_opentelemetry_0_33::layer().with_tracer(provider.tracer("bench")));
    (Dispatch::new(subscriber), provider)
}

/// Our instance: logs to `io::sink()`, traces on at the default success ratio.
fn obs_instance() -> Obs {
    Obs::builder()
        .service_name("bench")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .expect("building the Obs instance")
}

/// The span a handler's code runs in when it makes the call.
fn parent_span() -> tracing::Span {
    tracing::info_span!("handler", correlation_id = CORRELATION_ID)
}

/// The last middleware of the `no_network/reqwest` clients: answers 200 at once, noting the
/// `traceparent` it was given.
struct Answer {
    seen: Seen,
    check: bool,
}

#[async_trait::async_trait]
impl Middleware for Answer {
    async fn handle(
        &self,
        req: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        if self.check {
            note_traceparent(&self.seen, req.headers());
        }
        black_box(&req);
        Ok(reqwest::Response::from(http::Response::new(BODY)))
    }
}

/// Runs `iters` calls, timed. Called with the case's dispatcher current.
type Runner = Box<dyn Fn(&Runtime, u64) -> Duration>;

/// One configuration of a group.
struct Case {
    name: &'static str,
    /// The dispatcher made current around the calls (`None`: no subscriber).
    dispatch: Option<Dispatch>,
    runner: Runner,
}

impl Case {
    fn run(&self, rt: &Runtime, iters: u64) -> Duration {
        match &self.dispatch {
            Some(d) => tracing::dispatcher::with_default(d, || (self.runner)(rt, iters)),
            None => (self.runner)(rt, iters),
        }
    }
}

/// One call through a reqwest client, its body read to the end.
async fn reqwest_call(client: &ClientWithMiddleware, url: &reqwest::Url) {
    let response = client.get(url.clone()).send().await.expect("the call");
    assert!(response.status().is_success());
    black_box(response.bytes().await.expect("the body"));
}

fn reqwest_runner(client: ClientWithMiddleware, url: reqwest::Url) -> Runner {
    Box::new(move |rt, iters| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                reqwest_call(&client, &url).instrument(parent_span()).await;
            }
            start.elapsed()
        })
    })
}

/// What one reqwest stack adds to a client.
enum Stack<'a> {
    Bare,
    Ours(&'a Obs),
    ReqwestTracing,
}

impl Stack<'_> {
    fn client(&self, inner: &reqwest::Client, last: Option<Answer>) -> ClientWithMiddleware {
        let builder = ClientBuilder::new(inner.clone());
        let builder = match self {
            Stack::Bare => builder,
            Stack::Ours(obs) => builder.with(obs.reqwest_middleware()),
            Stack::ReqwestTracing => builder.with(reqwest_tracing::TracingMiddleware::default()),
        };
        match last {
            Some(answer) => builder.with(answer).build(),
            None => builder.build(),
        }
    }
}

/// The five reqwest cases: `(name, stack, dispatcher)`.
fn reqwest_stacks<'a>(
    obs: &'a Obs,
    obs_dispatch: &Dispatch,
    otel: &Dispatch,
) -> Vec<(&'static str, Stack<'a>, Option<Dispatch>)> {
    vec![
        ("bare", Stack::Bare, None),
        (
            "ours/no_middleware",
            Stack::Bare,
            Some(obs_dispatch.clone()),
        ),
        ("ours", Stack::Ours(obs), Some(obs_dispatch.clone())),
        (
            "reqwest_tracing/no_middleware",
            Stack::Bare,
            Some(otel.clone()),
        ),
        ("reqwest_tracing", Stack::ReqwestTracing, Some(otel.clone())),
    ]
}

/// Whether a stack must send `traceparent`.
fn propagates(name: &str) -> bool {
    name == "ours" || name == "reqwest_tracing"
}

/// Checks what one call of `name`'s stack sent.
fn check_sent(group: &str, name: &str, traceparent: Option<&str>) {
    match traceparent.filter(|t| !t.is_empty()) {
        Some(t) => {
            assert!(propagates(name), "{group}/{name} sent traceparent {t}");
            assert_eq!(t.len(), 55, "{group}/{name}: malformed traceparent {t}");
        }
        None => assert!(!propagates(name), "{group}/{name} sent no traceparent"),
    }
}

fn loopback_cases(rt: &Runtime, obs: &Obs, otel: &Dispatch) -> Vec<Case> {
    let base = serve(rt);
    let url: reqwest::Url = format!("{base}{PATH}").parse().expect("a valid URL");
    let echo: reqwest::Url = format!("{base}/echo").parse().expect("a valid URL");
    let inner = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    let obs_dispatch = obs.dispatch().expect("a JSON log pipeline");
    let mut cases = Vec::new();
    for (name, stack, dispatch) in reqwest_stacks(obs, obs_dispatch, otel) {
        let client = stack.client(&inner, None);
        let run_check = || {
            rt.block_on(async {
                let response = client
                    .get(echo.clone())
                    .send()
                    .instrument(parent_span())
                    .await
                    .expect("the echo call");
                response.text().await.expect("the echo body")
            })
        };
        let sent = match &dispatch {
            Some(d) => tracing::dispatcher::with_default(d, run_check),
            None => run_check(),
        };
        check_sent("loopback", name, Some(&sent));
        cases.push(Case {
            name,
            dispatch,
            runner: reqwest_runner(client, url.clone()),
        });
    }
    cases
}

fn no_network_reqwest_cases(rt: &Runtime, obs: &Obs, otel: &Dispatch) -> Vec<Case> {
    // Never used to connect: the last middleware answers.
    let inner = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client");
    let url: reqwest::Url = format!("http://127.0.0.1:9{PATH}")
        .parse()
        .expect("a valid URL");
    let obs_dispatch = obs.dispatch().expect("a JSON log pipeline");
    let mut cases = Vec::new();
    for (name, stack, dispatch) in reqwest_stacks(obs, obs_dispatch, otel) {
        let seen = Seen::default();
        let checking = stack.client(
            &inner,
            Some(Answer {
                seen: seen.clone(),
                check: true,
            }),
        );
        let run_check = || rt.block_on(reqwest_call(&checking, &url).instrument(parent_span()));
        match &dispatch {
            Some(d) => tracing::dispatcher::with_default(d, run_check),
            None => run_check(),
        }
        let sent = seen.lock().expect("not poisoned").clone();
        check_sent("no_network/reqwest", name, sent.as_deref());
        let client = stack.client(&inner, Some(Answer { seen, check: false }));
        cases.push(Case {
            name,
            dispatch,
            runner: reqwest_runner(client, url.clone()),
        });
    }
    cases
}

/// A tower client answering 200 at once.
fn instant_client(
    seen: Option<Seen>,
) -> impl Service<http::Request<()>, Response = http::Response<&'static str>, Error = std::io::Error>
+ Clone
+ 'static {
    tower::service_fn(move |req: http::Request<()>| {
        if let Some(seen) = &seen {
            note_traceparent(seen, req.headers());
        }
        black_box(&req);
        std::future::ready(Ok::<_, std::io::Error>(http::Response::new(BODY)))
    })
}

fn tower_runner<S, B>(client: S) -> Runner
where
    S: Service<http::Request<()>, Response = http::Response<B>> + Clone + 'static,
    S::Error: std::fmt::Debug,
{
    Box::new(move |rt, iters| {
        let mut client = client.clone();
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                tower_call(&mut client).instrument(parent_span()).await;
            }
            start.elapsed()
        })
    })
}

async fn tower_call<S, B>(client: &mut S)
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
{
    let request = http::Request::get("http://127.0.0.1:9/users/42")
        .body(())
        .expect("a valid request");
    let response = client
        .ready()
        .await
        .expect("ready")
        .call(request)
        .await
        .expect("the call");
    assert!(response.status().is_success());
    black_box(response.into_body());
}

fn no_network_tower_cases(rt: &Runtime, obs: &Obs) -> Vec<Case> {
    use tower::Layer;

    let obs_dispatch = obs.dispatch().expect("a JSON log pipeline");
    let check = |name: &str, dispatch: Option<&Dispatch>, ours: bool| {
        let seen = Seen::default();
        let run_check = || {
            let mut client = instant_client(Some(seen.clone()));
            rt.block_on(async {
                if ours {
                    let mut client = obs.client_layer().layer(client);
                    tower_call(&mut client).instrument(parent_span()).await;
                } else {
                    tower_call(&mut client).instrument(parent_span()).await;
                }
            });
        };
        match dispatch {
            Some(d) => tracing::dispatcher::with_default(d, run_check),
            None => run_check(),
        }
        let sent = seen.lock().expect("not poisoned").clone();
        check_sent("no_network/tower", name, sent.as_deref());
    };
    check("bare", None, false);
    check("ours/no_middleware", Some(obs_dispatch), false);
    check("ours", Some(obs_dispatch), true);
    vec![
        Case {
            name: "bare",
            dispatch: None,
            runner: tower_runner(instant_client(None)),
        },
        Case {
            name: "ours/no_layer",
            dispatch: Some(obs_dispatch.clone()),
            runner: tower_runner(instant_client(None)),
        },
        Case {
            name: "ours",
            dispatch: Some(obs_dispatch.clone()),
            runner: tower_runner(obs.client_layer().layer(instant_client(None))),
        },
    ]
}

/// The groups whose interleaved check runs: none under `cargo test`, `--test` or
/// `--profile-time`; else every group a filter matches (by substring, as criterion's filter
/// does, or the filter naming a benchmark of the group), all of them without a filter or with
/// the filter `interleaved`.
fn interleaved_groups() -> impl Fn(&str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let enabled = args.iter().any(|a| a == "--bench")
        && !args.iter().any(|a| a == "--profile-time" || a == "--test");
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
    for a in args {
        if skip {
            skip = false;
        } else if WITH_VALUE.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    move |group: &str| {
        enabled
            && (filters.is_empty()
                || filters.iter().any(|f| {
                    f.contains("interleaved") || group.contains(f.as_str()) || f.starts_with(group)
                }))
    }
}

/// The cases of one group measured round-robin, in short batches; returns the median time per
/// call of each case, in µs.
fn interleaved_medians(rt: &Runtime, cases: &[Case], rounds: usize, batch: u64) -> Vec<f64> {
    for case in cases {
        case.run(rt, batch / 4);
    }
    let mut per_call: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
    for round in 0..rounds {
        // Rotate the order, so no case always follows the same one.
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let elapsed = cases[i].run(rt, batch);
            per_call[i].push(elapsed.as_nanos() as f64 / batch as f64);
        }
    }
    per_call
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] / 1000.0
        })
        .collect()
}

/// The interleaved report of one group.
fn interleaved_report(
    group: &str,
    rt: &Runtime,
    cases: &[Case],
    rounds: usize,
    batch: u64,
) -> String {
    let medians = interleaved_medians(rt, cases, rounds, batch);
    let by_name = |name: &str| {
        cases
            .iter()
            .position(|c| c.name == name)
            .map(|i| medians[i])
    };
    let mut out = format!(
        "interleaved check, {group} ({rounds} rounds x {batch} calls per case, median per call):"
    );
    for (case, m) in cases.iter().zip(&medians) {
        out.push_str(&format!("\n  {:<32} {m:8.3} us", case.name));
    }
    if let (Some(bare), Some(ours_base), Some(ours), Some(rt_base), Some(theirs)) = (
        by_name("bare"),
        by_name("ours/no_middleware"),
        by_name("ours"),
        by_name("reqwest_tracing/no_middleware"),
        by_name("reqwest_tracing"),
    ) {
        out.push_str(&format!(
            "\n  added over bare: ours {:.3} us, reqwest_tracing {:.3} us, \
             ratio (ours - bare) / (reqwest_tracing - bare) = {:.3} (target <= 0.5)\
             \n  middleware only (over its own stack without it): ours {:.3} us, \
             reqwest_tracing {:.3} us, ratio = {:.3} (target <= 0.5)",
            ours - bare,
            theirs - bare,
            (ours - bare) / (theirs - bare),
            ours - ours_base,
            theirs - rt_base,
            (ours - ours_base) / (theirs - rt_base),
        ));
    }
    if let (Some(bare), Some(base), Some(ours)) =
        (by_name("bare"), by_name("ours/no_layer"), by_name("ours"))
    {
        out.push_str(&format!(
            "\n  client_layer adds {:.3} us over the same subscriber without it \
             ({:.3} us over bare, the parent span's recording included)",
            ours - base,
            ours - bare,
        ));
    }
    out
}

fn client(c: &mut Criterion) {
    let rt = runtime();
    let obs = obs_instance();
    let (otel, provider) = otel_dispatch();

    let groups = [
        ("loopback", loopback_cases(&rt, &obs, &otel), 40, 500),
        (
            "no_network/reqwest",
            no_network_reqwest_cases(&rt, &obs, &otel),
            40,
            4_000,
        ),
        (
            "no_network/tower",
            no_network_tower_cases(&rt, &obs),
            40,
            10_000,
        ),
    ];

    for (name, cases, _, _) in &groups {
        let mut group = c.benchmark_group(*name);
        group.sample_size(50);
        for case in cases {
            group.bench_function(case.name, |b| b.iter_custom(|iters| case.run(&rt, iters)));
        }
        group.finish();
    }

    let wanted = interleaved_groups();
    for (name, cases, rounds, batch) in &groups {
        if wanted(name) {
            println!("{}", interleaved_report(name, &rt, cases, *rounds, *batch));
        }
    }

    obs.flush();
    println!(
        "ours: log lines dropped = {}, kept traces in the ring = {}",
        obs.log_lines_dropped(),
        obs.recent_traces_json()
            .map_or(0, |json| json.matches("\"trace_id\"").count()),
    );
    provider
        .shutdown()
        .expect("shutting the tracer provider down");
}

criterion_group!(benches, client);
criterion_main!(benches);
