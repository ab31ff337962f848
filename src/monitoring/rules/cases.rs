//! The unit-test cases proving that the ratio alerts (error rate, slow calls) count the gRPC
//! calls a service serves as well as its HTTP requests: a service serving only gRPC, and one
//! serving both. Each case is built to fail when the rule loses its RPC half (the alert then
//! stays quiet, fires on HTTP alone, or fires with another value).

use super::Case;
use super::series::{Traffic, tidy};

/// The input series of `good` and `bad` calls per step of one kind of traffic.
pub(super) type Split<'a> = dyn Fn(Traffic, f64, f64) -> Vec<(String, String)> + 'a;

/// The cases of an alert on the bad share of the calls a service serves (failed or slow) whose
/// own pair of cases puts that share at `fire` (fires) and `under` (does not), with `per_step`
/// calls a step in all (`bad` says how they are bad in the cases' comments: `failing`, `slow`):
///
/// - gRPC only, at `fire`: fires (without the RPC half there is no ratio at all);
/// - both, HTTP alone at `under` and the gRPC calls bringing the whole to `fire`: fires
///   (without the RPC half, HTTP alone stays under; without the RPC calls in the denominator,
///   the value is another);
/// - both, HTTP alone over the threshold (at twice `under`) and all-good gRPC calls bringing
///   the whole down to `under`: does not fire (fires when the gRPC calls are not counted).
pub(super) fn rpc_cases(
    bad: &str,
    fire: f64,
    under: f64,
    per_step: f64,
    split: &Split<'_>,
) -> Vec<Case> {
    // Two kinds of traffic, `w` of the calls gRPC: `bad_http` and `bad_rpc` the bad shares.
    let both = |bad_http: f64, bad_rpc: f64, w: f64| {
        let (http, rpc) = (per_step * (1.0 - w), per_step * w);
        let mut series = split(
            Traffic::Http,
            tidy(http * (1.0 - bad_http)),
            tidy(http * bad_http),
        );
        series.extend(split(
            Traffic::Rpc,
            tidy(rpc * (1.0 - bad_rpc)),
            tidy(rpc * bad_rpc),
        ));
        series
    };
    // Fires: HTTP at `under`, gRPC at `bad_rpc`, in the proportion that makes `fire` (half and
    // half unless that needs more than every gRPC call to fail).
    let bad_rpc = (2.0 * fire - under).min(1.0);
    let w_fire = (fire - under) / (bad_rpc - under);
    // Quiet: HTTP at twice `under` (over the threshold alone), gRPC all good.
    let bad_http = (2.0 * under).min(1.0);
    let w_quiet = 1.0 - under / bad_http;
    vec![
        Case {
            what: format!("gRPC only, {bad} over the threshold: fires"),
            series: split(
                Traffic::Rpc,
                tidy(per_step * (1.0 - fire)),
                tidy(per_step * fire),
            ),
            fires: Some(fire),
            samples: vec![],
        },
        Case {
            what: "HTTP under the threshold, gRPC calls bringing the service over it: fires".into(),
            series: both(under, bad_rpc, w_fire),
            fires: Some(fire),
            samples: vec![],
        },
        Case {
            what: "HTTP over the threshold alone, good gRPC calls bringing the service under \
                   it: does not fire"
                .into(),
            series: both(bad_http, 0.0, w_quiet),
            fires: None,
            samples: vec![],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums the per-step counts of the series whose selector contains `pat`.
    fn per_step(series: &[(String, String)], pat: &str) -> f64 {
        series
            .iter()
            .filter(|(s, _)| s.contains(pat))
            .map(|(_, v)| {
                let v = v.strip_prefix("0+").unwrap();
                v[..v.find('x').unwrap()].parse::<f64>().unwrap()
            })
            .sum()
    }

    #[test]
    fn the_cases_hold_their_shares_for_any_threshold() {
        let split = |kind: Traffic, good: f64, bad: f64| {
            let k = if kind == Traffic::Http { "http" } else { "rpc" };
            vec![
                (format!("{k} good"), format!("0+{good}x3")),
                (format!("{k} bad"), format!("0+{bad}x3")),
            ]
        };
        for t in [0.001_f64, 0.02, 0.05, 0.3, 0.6, 0.9] {
            let fire = (2.0 * t).min((1.0 + t) / 2.0);
            let under = 0.95 * t;
            let cases = rpc_cases("failing", fire, under, 100.0, &split);
            let share = |s: &[(String, String)]| per_step(s, "bad") / per_step(s, " ");
            let http = |s: &[(String, String)]| per_step(s, "http bad") / per_step(s, "http");
            // gRPC only.
            assert!((share(&cases[0].series) - fire).abs() < 1e-6, "{t}");
            // Both, firing: HTTP alone under the threshold.
            assert!((share(&cases[1].series) - fire).abs() < 1e-6, "{t}");
            assert!(http(&cases[1].series) <= t, "{t}");
            // Both, quiet: HTTP alone over the threshold.
            assert!((share(&cases[2].series) - under).abs() < 1e-6, "{t}");
            assert!(http(&cases[2].series) > t, "{t}");
        }
    }
}
