//! The process resource alerts, on the runtime metrics: CPU, resident memory and open file
//! descriptors.

use crate::monitoring::names::{
    PROCESS_CPU_SECONDS, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY,
};
use crate::monitoring::text::{humanize_1024, num, prom_duration, secs};
use crate::monitoring::{MonitoringConfig, Severity};

use super::series::{INSTANCE, Series, timing};
use super::template::{Fmt, label, percent, tpl};
use super::{Alert, AlertTest};

/// The resources family: `HighCpuUsage`, `HighMemoryUsage`, `FileDescriptorsNearLimit`.
pub(super) fn process(c: &MonitoringConfig) -> Vec<Alert> {
    vec![cpu(c), memory(c), file_descriptors(c)]
}

/// `HighCpuUsage`: CPU cores used over the rate window above `cpu_cores`.
fn cpu(c: &MonitoringConfig) -> Alert {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let rw = prom_duration(c.rate_window);
    let (step, eval) = timing(secs(c.rate_window), c.resource_for);
    let n = eval / step + 2;
    let t = c.cpu_cores;
    let cpu = |cores: f64| vec![s.counter(PROCESS_CPU_SECONDS, &[], cores * step as f64, n)];
    Alert {
        name: "HighCpuUsage".into(),
        severity: Severity::Ticket,
        expr: format!(
            "sum by ({svc}, instance) (rate({PROCESS_CPU_SECONDS}{{{sel}}}[{rw}])) > {}",
            num(t)
        ),
        hold: c.resource_for,
        labels: vec![],
        summary: tpl!["High CPU usage on ", label(svc)],
        description: tpl![
            label("instance"),
            " of ",
            label(svc),
            " uses ",
            Fmt::Fixed2,
            format!(" CPU cores over the last {rw} (threshold {}).", num(t)),
        ],
        runbook: "resource-usage",
        test: AlertTest {
            interval: step,
            eval,
            fire: cpu(1.5 * t),
            quiet: cpu(0.95 * t),
            labels: s.out(&[("instance", INSTANCE)]),
            value: 1.5 * t,
            more: vec![],
        },
    }
}

/// `HighMemoryUsage`: resident memory above `memory_bytes`.
fn memory(c: &MonitoringConfig) -> Alert {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let (step, eval) = timing(0, c.resource_for);
    let n = eval / step + 2;
    let t = c.memory_bytes;
    Alert {
        name: "HighMemoryUsage".into(),
        severity: Severity::Ticket,
        expr: format!(
            "max by ({svc}, instance) ({PROCESS_RESIDENT_MEMORY}{{{sel}}}) > {}",
            num(t)
        ),
        hold: c.resource_for,
        labels: vec![],
        summary: tpl!["High memory usage on ", label(svc)],
        description: tpl![
            label("instance"),
            " of ",
            label(svc),
            " has ",
            Fmt::Bytes,
            format!(" resident (threshold {}B).", humanize_1024(t)),
        ],
        runbook: "resource-usage",
        test: AlertTest {
            interval: step,
            eval,
            fire: vec![s.gauge(PROCESS_RESIDENT_MEMORY, &[], (1.5 * t).round(), n)],
            quiet: vec![s.gauge(PROCESS_RESIDENT_MEMORY, &[], (0.95 * t).round(), n)],
            labels: s.out(&[("instance", INSTANCE)]),
            value: (1.5 * t).round(),
            more: vec![],
        },
    }
}

/// `FileDescriptorsNearLimit`: open / max file descriptors above `fds_ratio`.
fn file_descriptors(c: &MonitoringConfig) -> Alert {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let (step, eval) = timing(0, c.resource_for);
    let n = eval / step + 2;
    let t = c.fds_ratio;
    let max = 1000.0;
    let fds = |open: f64| {
        vec![
            s.gauge(PROCESS_OPEN_FDS, &[], open, n),
            s.gauge(PROCESS_MAX_FDS, &[], max, n),
        ]
    };
    let fire = (t * max).floor() + 1.0;
    let under = (t * max).ceil() - 1.0;
    Alert {
        name: "FileDescriptorsNearLimit".into(),
        severity: Severity::Ticket,
        expr: format!(
            "max by ({svc}, instance) ({PROCESS_OPEN_FDS}{{{sel}}})\n/\nmax by ({svc}, instance) ({PROCESS_MAX_FDS}{{{sel}}} > 0)\n> {}",
            num(t)
        ),
        hold: c.resource_for,
        labels: vec![],
        summary: tpl!["File descriptors near the limit on ", label(svc)],
        description: tpl![
            label("instance"),
            " of ",
            label(svc),
            " has ",
            Fmt::Percent,
            format!(
                " of its file descriptor limit open (threshold {}).",
                percent(t)
            ),
        ],
        runbook: "resource-usage",
        test: AlertTest {
            interval: step,
            eval,
            fire: fds(fire),
            quiet: fds(under),
            labels: s.out(&[("instance", INSTANCE)]),
            value: fire / max,
            more: vec![],
        },
    }
}
