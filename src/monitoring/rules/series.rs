//! The input series of the `promtool` unit tests (counters, gauges, request histograms with the
//! labels a real scrape carries) and the timing of each test.

use std::time::Duration;

use crate::monitoring::MonitoringConfig;
use crate::monitoring::names;
use crate::monitoring::text::{num, promql_str, secs};

use super::extra_matcher_labels;

/// The `instance` label of the test series.
pub(super) const INSTANCE: &str = "10.0.0.1:3000";
/// The database pool name of the test series.
pub(super) const POOL: &str = "main";

/// Series-building helpers bound to a configuration.
pub(super) struct Series<'a> {
    pub(super) c: &'a MonitoringConfig,
}

impl Series<'_> {
    /// The labels every test series carries: the service, an instance, the extra matchers.
    pub(super) fn base(&self) -> Vec<(String, String)> {
        let mut l = vec![
            (self.c.service_label.clone(), self.c.service.clone()),
            ("instance".to_string(), INSTANCE.to_string()),
        ];
        l.extend(extra_matcher_labels(&self.c.extra_matchers));
        l
    }

    /// `metric{<base labels>, extra...}` as a series selector.
    fn name(&self, metric: &str, extra: &[(&str, &str)]) -> String {
        let mut labels = self.base();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let inner: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", promql_str(v)))
            .collect();
        format!("{metric}{{{}}}", inner.join(", "))
    }

    /// A counter growing by `per_step` each step.
    pub(super) fn counter(
        &self,
        metric: &str,
        extra: &[(&str, &str)],
        per_step: f64,
        steps: u64,
    ) -> (String, String) {
        (
            self.name(metric, extra),
            format!("0+{}x{steps}", num(per_step)),
        )
    }

    /// A gauge holding `v`.
    pub(super) fn gauge(
        &self,
        metric: &str,
        extra: &[(&str, &str)],
        v: f64,
        steps: u64,
    ) -> (String, String) {
        (self.name(metric, extra), format!("{}+0x{steps}", num(v)))
    }

    /// Output labels of an alert aggregated `by (<service label>, more...)`.
    pub(super) fn out(&self, more: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut l = vec![(self.c.service_label.clone(), self.c.service.clone())];
        l.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    }

    /// A request-duration histogram: `per_step[i]` observations per step in bucket `i`
    /// (`buckets.len()` is the +Inf bucket), for one route returning `status`.
    pub(super) fn histogram(
        &self,
        per_step: &[f64],
        status: &str,
        steps: u64,
    ) -> Vec<(String, String)> {
        self.histogram_of(Traffic::Http, per_step, status, steps)
    }

    /// A duration histogram of `kind` (`per_step` as in [`Series::histogram`]), for one route
    /// or method answering `status`.
    pub(super) fn histogram_of(
        &self,
        kind: Traffic,
        per_step: &[f64],
        status: &str,
        steps: u64,
    ) -> Vec<(String, String)> {
        let call = call_labels(kind, status, "");
        let (bucket, count) = match kind {
            Traffic::Http => (names::bucket(), names::count()),
            Traffic::Rpc => (names::rpc_bucket(), names::rpc_count()),
        };
        let mut out = Vec::new();
        let mut cumulative = 0.0;
        let buckets = &self.c.duration_buckets;
        for (i, per) in per_step.iter().enumerate() {
            cumulative += per;
            let le = buckets.get(i).map_or("+Inf".to_string(), |b| num(*b));
            let mut labels = call.clone();
            labels.push(("le", &le));
            out.push(self.counter(&bucket, &labels, cumulative, steps));
        }
        out.push(self.counter(&count, &call, cumulative, steps));
        out
    }

    /// Request counts: `ok` 200s and `errors` 500s per step.
    pub(super) fn requests(&self, ok: f64, errors: f64, steps: u64) -> Vec<(String, String)> {
        vec![
            self.counter(
                &names::count(),
                &call_labels(Traffic::Http, "200", ""),
                ok,
                steps,
            ),
            self.counter(
                &names::count(),
                &call_labels(Traffic::Http, "500", ""),
                errors,
                steps,
            ),
        ]
    }

    /// gRPC calls of one method per step: `ok` answered OK, `not_found` NOT_FOUND (the
    /// client's fault: no `error_type`) and `internal` INTERNAL (a server fault:
    /// `error_type="INTERNAL"`). Kinds with no calls have no series.
    pub(super) fn calls(
        &self,
        ok: f64,
        not_found: f64,
        internal: f64,
        steps: u64,
    ) -> Vec<(String, String)> {
        [
            ("OK", "", ok),
            ("NOT_FOUND", "", not_found),
            ("INTERNAL", "INTERNAL", internal),
        ]
        .into_iter()
        .filter(|(_, _, per_step)| *per_step > 0.0)
        .map(|(status, error_type, per_step)| {
            self.counter(
                &names::rpc_count(),
                &call_labels(Traffic::Rpc, status, error_type),
                per_step,
                steps,
            )
        })
        .collect()
    }
}

/// What a test series counts: HTTP requests or gRPC calls served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Traffic {
    Http,
    Rpc,
}

/// The gRPC method of the test series.
pub(super) const RPC_METHOD: &str = "shop.v1.Items/GetItem";

/// The labels of the one HTTP route or gRPC method of the test series, answering `status`,
/// with `error_type` when it is not empty.
fn call_labels<'a>(kind: Traffic, status: &'a str, error_type: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut labels = match kind {
        Traffic::Http => vec![
            ("http_request_method", "GET"),
            ("http_route", "/items/{id}"),
            ("http_response_status_code", status),
        ],
        Traffic::Rpc => vec![
            ("rpc_system_name", "grpc"),
            ("rpc_method", RPC_METHOD),
            ("rpc_response_status_code", status),
        ],
    };
    if !error_type.is_empty() {
        labels.push(("error_type", error_type));
    }
    labels
}

/// A per-step count rounded to a millionth, so the series read well in the test file.
pub(super) fn tidy(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The step and evaluation time of a unit test: a step of a tenth of the window (at least
/// 1 s), and an evaluation after the window, the `for` duration and three more steps.
pub(super) fn timing(window: u64, hold: Duration) -> (u64, u64) {
    let base = if window > 0 {
        window
    } else {
        secs(hold).max(150)
    };
    let step = (base / 10).max(1);
    let eval = window + secs(hold) + 3 * step;
    let eval = eval.div_ceil(step) * step;
    (step, eval)
}
