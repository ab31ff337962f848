//! The database connection pool alerts: the pool nearly exhausted, and requests already
//! waiting for a connection.

use crate::monitoring::names::{
    CONNECTION_COUNT, CONNECTION_MAX, PENDING_REQUESTS, POOL_LABEL, STATE_LABEL,
};
use crate::monitoring::text::{num, prom_duration};
use crate::monitoring::{MonitoringConfig, Severity};

use super::series::{INSTANCE, POOL, Series, timing};
use super::template::{Fmt, label, percent, tpl};
use super::{Alert, AlertTest};

/// The database pool family: `DatabasePoolNearExhaustion`, `DatabasePoolRequestsWaiting`.
pub(super) fn pool(c: &MonitoringConfig) -> Vec<Alert> {
    vec![near_exhaustion(c), requests_waiting(c)]
}

/// `DatabasePoolNearExhaustion`: used / max connections of a pool above `pool_usage_ratio`.
fn near_exhaustion(c: &MonitoringConfig) -> Alert {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let (step, eval) = timing(0, c.pool_usage_for);
    let n = eval / step + 2;
    let t = c.pool_usage_ratio;
    let max = 1000.0;
    let fire = (t * max).floor() + 1.0;
    let under = (t * max).ceil() - 1.0;
    let pool = |used: f64| {
        vec![
            s.gauge(
                CONNECTION_COUNT,
                &[(POOL_LABEL, POOL), (STATE_LABEL, "used")],
                used,
                n,
            ),
            s.gauge(
                CONNECTION_COUNT,
                &[(POOL_LABEL, POOL), (STATE_LABEL, "idle")],
                max - used,
                n,
            ),
            s.gauge(CONNECTION_MAX, &[(POOL_LABEL, POOL)], max, n),
        ]
    };
    let by = format!("{svc}, instance, {POOL_LABEL}");
    Alert {
        name: "DatabasePoolNearExhaustion".into(),
        severity: Severity::Ticket,
        expr: format!(
            "sum by ({by}) ({CONNECTION_COUNT}{{{sel}, {STATE_LABEL}=\"used\"}})\n/\nsum by ({by}) ({CONNECTION_MAX}{{{sel}}} > 0)\n> {}",
            num(t)
        ),
        hold: c.pool_usage_for,
        labels: vec![],
        summary: tpl![
            "Database pool ",
            label(POOL_LABEL),
            " of ",
            label(svc),
            " nearly exhausted"
        ],
        description: tpl![
            "Pool ",
            label(POOL_LABEL),
            " on ",
            label("instance"),
            " has ",
            Fmt::Percent,
            format!(" of its connections in use (threshold {}).", percent(t)),
        ],
        runbook: "database-connections",
        test: AlertTest {
            interval: step,
            eval,
            fire: pool(fire),
            quiet: pool(under),
            labels: s.out(&[("instance", INSTANCE), (POOL_LABEL, POOL)]),
            value: fire / max,
            more: vec![],
        },
    }
}

/// `DatabasePoolRequestsWaiting`: requests waiting for a connection from a pool.
fn requests_waiting(c: &MonitoringConfig) -> Alert {
    let s = Series { c };
    let sel = c.selector();
    let svc = c.service_label.as_str();
    let (step, eval) = timing(0, c.pool_waiting_for);
    let n = eval / step + 2;
    let by = format!("{svc}, instance, {POOL_LABEL}");
    Alert {
        name: "DatabasePoolRequestsWaiting".into(),
        severity: Severity::Page,
        expr: format!("max by ({by}) ({PENDING_REQUESTS}{{{sel}}}) > 0"),
        hold: c.pool_waiting_for,
        labels: vec![],
        summary: tpl!["Requests wait for database connections on ", label(svc)],
        description: tpl![
            Fmt::Int,
            " requests on ",
            label("instance"),
            " are waiting for a connection from pool ",
            label(POOL_LABEL),
            format!(
                " (for more than {}): the pool is exhausted.",
                prom_duration(c.pool_waiting_for)
            ),
        ],
        runbook: "database-connections",
        test: AlertTest {
            interval: step,
            eval,
            fire: vec![s.gauge(PENDING_REQUESTS, &[(POOL_LABEL, POOL)], 3.0, n)],
            quiet: vec![s.gauge(PENDING_REQUESTS, &[(POOL_LABEL, POOL)], 0.0, n)],
            labels: s.out(&[("instance", INSTANCE), (POOL_LABEL, POOL)]),
            value: 3.0,
            more: vec![],
        },
    }
}
