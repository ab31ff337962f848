//! The handler-side macros: business metrics, audit and security events, `critical!`.
//!
//! Laid out like metrics-rs (`metrics/src/macros.rs`): each call site declares a `static` with
//! its description, the macros use only `$crate::` paths, and the per-call work is a cached
//! lookup.

/// A business counter: `counter!("name", "label" => value, ..., help: "...", max_series: N)`.
///
/// Returns a handle with `inc()`, `inc_by(n)` and `get()`. The metric lives in the instance
/// that [`ObsBuilder::init`](crate::ObsBuilder::init) installed, or in the metrics-only default
/// before `init`.
///
/// - **Name**: a literal is checked at compile time (`[a-zA-Z_:][a-zA-Z0-9_:]*`); an
///   expression is checked at run time (an invalid one is logged once and the call is a no-op).
/// - **Labels**: `"key" => value` pairs, keys literal, values `&str`, `String` or anything
///   `Display`. With a literal name the call returns `&'static Counter` (series are never
///   removed): with only literal values it costs one atomic load plus the increment; with
///   run-time values, a hash and a lock-free table probe, with no allocation and no reference
///   counting when the series exists. With a run-time name it returns an owned
///   [`Counter`](crate::Counter).
/// - **Options**, after the labels: `help: "text"` (the `# HELP` line; the first call site to
///   register the name decides), `max_series: N` (this metric's series cap; default 1000, see
///   [`ObsBuilder::series_cap`](crate::ObsBuilder::series_cap)).
///
/// The same name with other label keys or another type: logged once, no-op handle, the first
/// family is kept. Past the series cap, new label sets go to one series whose values are all
/// `_other`, counted in `mercenary_obs_metric_overflow_total{metric}`.
///
/// ```
/// let plan = String::from("pro");
/// mercenary_obs::counter!("user_signups_total", "plan" => plan, help: "Sign-ups by plan.").inc();
/// mercenary_obs::counter!("payments_total", "currency" => "EUR", "outcome" => "ok").inc_by(1);
/// let user_id = 42;
/// mercenary_obs::counter!("logins_total", "user" => user_id, max_series: 100).inc();
/// let name = "jobs_total";
/// mercenary_obs::counter!(name).inc(); // a run-time name
/// ```
///
/// An invalid literal name does not compile:
///
/// ```compile_fail
/// mercenary_obs::counter!("user-signups").inc();
/// ```
#[macro_export]
macro_rules! counter {
    ($($args:tt)+) => {
        $crate::__metric!(CounterKind, Counter; $($args)+)
    };
}

/// A business gauge: `gauge!("name", "label" => value, ..., help: "...", max_series: N)`.
///
/// Returns a handle with `set`, `add`, `sub`, `inc`, `dec` and `get`. Names, labels and options
/// as for [`counter!`](crate::counter!).
///
/// ```
/// mercenary_obs::gauge!("active_sessions", help: "Signed-in sessions.").set(12.0);
/// mercenary_obs::gauge!("queue_depth", "queue" => "mail").inc();
/// ```
#[macro_export]
macro_rules! gauge {
    ($($args:tt)+) => {
        $crate::__metric!(GaugeKind, Gauge; $($args)+)
    };
}

/// A business histogram:
/// `histogram!("name", "label" => value, ..., help: "...", buckets: [..], max_series: N)`.
///
/// Returns a handle with `observe(v)` and `start_timer()`. `buckets:` takes finite, strictly
/// increasing bounds (checked at compile time; `+Inf` is added); the default is the
/// `prometheus` crate's latency buckets (5 ms to 10 s). Names, labels and other options as for
/// [`counter!`](crate::counter!).
///
/// ```
/// let currency = "USD";
/// mercenary_obs::histogram!(
///     "payment_amount_dollars",
///     "currency" => currency,
///     help: "Payment amounts.",
///     buckets: [1.0, 10.0, 100.0, 1000.0, 10000.0],
/// )
/// .observe(49.0);
/// let _timer = mercenary_obs::histogram!("report_render_seconds").start_timer();
/// ```
#[macro_export]
macro_rules! histogram {
    ($($args:tt)+) => {
        $crate::__metric!(HistogramKind, Histogram; $($args)+)
    };
}

/// The shared body of the metric macros (a token muncher: name, labels, then options).
#[doc(hidden)]
#[macro_export]
macro_rules! __metric {
    // Options.
    (@parse $k:ident, $K:ident; $n:tt; $mode:ident; [$($l:tt)*]; [$($o:tt)*]; help: $h:expr $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; $n; $mode; [$($l)*]; [$($o)* .with_help($h)]; $($($rest)*)?)
    };
    (@parse $k:ident, $K:ident; $n:tt; $mode:ident; [$($l:tt)*]; [$($o:tt)*]; buckets: [$($b:expr),+ $(,)?] $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; $n; $mode; [$($l)*]; [$($o)* .with_buckets(&[$(($b) as f64),+])]; $($($rest)*)?)
    };
    (@parse $k:ident, $K:ident; $n:tt; $mode:ident; [$($l:tt)*]; [$($o:tt)*]; max_series: $m:expr $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; $n; $mode; [$($l)*]; [$($o)* .with_max_series($m)]; $($($rest)*)?)
    };
    // Labels: a literal value keeps the call site static, anything else makes it dynamic.
    (@parse $k:ident, $K:ident; $n:tt; $mode:ident; [$($l:tt)*]; [$($o:tt)*]; $key:literal => $v:literal $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; $n; $mode; [$($l)* ($key ($v))]; [$($o)*]; $($($rest)*)?)
    };
    (@parse $k:ident, $K:ident; $n:tt; $mode:ident; [$($l:tt)*]; [$($o:tt)*]; $key:literal => $v:expr $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; $n; dynamic; [$($l)* ($key ($v))]; [$($o)*]; $($($rest)*)?)
    };
    // Done: emit.
    (@parse $k:ident, $K:ident; (lit $name:literal); static; [$(($key:literal ($v:expr)))*]; [$($o:tt)*];) => {{
        static __MERCENARY_OBS_SITE: $crate::__private::StaticSite<$crate::__private::$k> =
            $crate::__private::StaticSite::new(
                $crate::__private::Desc::new($crate::__private::Kind::$K, $name, &[$($key),*]) $($o)*,
                &[$(&$v),*],
            );
        __MERCENARY_OBS_SITE.get()
    }};
    (@parse $k:ident, $K:ident; (lit $name:literal); dynamic; [$(($key:literal ($v:expr)))*]; [$($o:tt)*];) => {{
        static __MERCENARY_OBS_SITE: $crate::__private::DynSite<$crate::__private::$k> =
            $crate::__private::DynSite::new(
                $crate::__private::Desc::new($crate::__private::Kind::$K, $name, &[$($key),*]) $($o)*,
            );
        #[allow(unused_imports)]
        use $crate::__private::{ViaDisplay as _, ViaStr as _};
        __MERCENARY_OBS_SITE.get(&[$((&$crate::__private::Wrap(&$v)).label_ref()),*])
    }};
    (@parse $k:ident, $K:ident; (expr $name:expr); $mode:ident; [$(($key:literal ($v:expr)))*]; [$($o:tt)*];) => {{
        static __MERCENARY_OBS_DESC: $crate::__private::Desc =
            $crate::__private::Desc::new($crate::__private::Kind::$K, "", &[$($key),*]) $($o)*;
        #[allow(unused_imports)]
        use $crate::__private::{ViaDisplay as _, ViaStr as _};
        $crate::__private::by_name::<$crate::__private::$k>(
            &__MERCENARY_OBS_DESC,
            ::std::convert::AsRef::<str>::as_ref(&$name),
            &[$((&$crate::__private::Wrap(&$v)).label_ref()),*],
        )
    }};
    (@parse $k:ident, $K:ident; $n:tt; $mode:ident; [$($l:tt)*]; [$($o:tt)*]; $($bad:tt)+) => {
        ::std::compile_error!(
            "malformed metric arguments: expected `\"key\" => value` labels (key a string literal), then options `help: \"...\"`, `buckets: [..]` (histograms), `max_series: N`, separated by commas"
        )
    };
    // Entry: a literal name is checked at compile time, an expression at run time.
    ($k:ident, $K:ident; $name:literal $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; (lit $name); static; []; []; $($($rest)*)?)
    };
    ($k:ident, $K:ident; $name:expr $(, $($rest:tt)*)?) => {
        $crate::__metric!(@parse $k, $K; (expr $name); dynamic; []; []; $($($rest)*)?)
    };
}

/// An audit event: one JSON line with `"audit": true` on the audit sink, never dropped.
///
/// `audit!(actor = .., action = .., outcome = .., resource = .., other = .., ...)`: the named
/// fields in any order among the others, `actor`, `action` and `outcome` required (a missing
/// one does not compile, and the error names it), `resource` optional; other fields in
/// `tracing` syntax (`key = value`, `key = %display`, `key = ?debug`). The line writes them in
/// one order whatever the call's: `actor`, `action`, `resource`, `outcome`, then the others.
/// Values are anything `tracing` records (`&str`, `String`, numbers, `bool`); wrap others in
/// `tracing::field::display(..)`.
///
/// The line carries the request's `correlation_id` and `trace_id` when logged inside a request,
/// goes through the same redaction as every log line (a `password` field is written
/// `[REDACTED]`), and is written to [`ObsBuilder::audit_writer`](crate::ObsBuilder::audit_writer)
/// (standard output by default) even when `RUST_LOG` would filter it out and even when the
/// application log queue is full: the caller then waits for room. `audit_events_total{action,
/// outcome}` counts audit lines in the instance that wrote them.
///
/// Before `init()` (or outside [`Obs::in_scope`](crate::Obs::in_scope) for a built instance)
/// the event goes to whatever `tracing` subscriber is current, as an ordinary INFO event.
///
/// ```
/// let user_id = 42;
/// mercenary_obs::audit!(
///     actor = user_id,
///     action = "permission.grant",
///     resource = "project:42",
///     outcome = "success",
///     role = "admin",
/// );
/// // Any order; `resource` optional.
/// mercenary_obs::audit!(action = "login", actor = user_id, outcome = "success");
/// ```
#[macro_export]
macro_rules! audit {
    ($($args:tt)*) => {
        $crate::__audit!(@munch [] [] [] [] []; $($args)*)
    };
}

/// The body of [`audit!`]: a token muncher filling the slots `[actor] [action] [resource]
/// [outcome] [other fields]` from named fields in any order.
#[doc(hidden)]
#[macro_export]
macro_rules! __audit {
    // The four named fields, each once.
    (@munch [$a:tt] [$($b:tt)*] [$($r:tt)*] [$($o:tt)*] [$($x:tt)*]; actor = $($rest:tt)*) => {
        ::std::compile_error!("audit!: `actor` is given twice")
    };
    (@munch [] [$($b:tt)*] [$($r:tt)*] [$($o:tt)*] [$($x:tt)*]; actor = $v:expr $(, $($rest:tt)*)?) => {
        $crate::__audit!(@munch [($v)] [$($b)*] [$($r)*] [$($o)*] [$($x)*]; $($($rest)*)?)
    };
    (@munch [$($a:tt)*] [$b:tt] [$($r:tt)*] [$($o:tt)*] [$($x:tt)*]; action = $($rest:tt)*) => {
        ::std::compile_error!("audit!: `action` is given twice")
    };
    (@munch [$($a:tt)*] [] [$($r:tt)*] [$($o:tt)*] [$($x:tt)*]; action = $v:expr $(, $($rest:tt)*)?) => {
        $crate::__audit!(@munch [$($a)*] [($v)] [$($r)*] [$($o)*] [$($x)*]; $($($rest)*)?)
    };
    (@munch [$($a:tt)*] [$($b:tt)*] [$r:tt] [$($o:tt)*] [$($x:tt)*]; resource = $($rest:tt)*) => {
        ::std::compile_error!("audit!: `resource` is given twice")
    };
    (@munch [$($a:tt)*] [$($b:tt)*] [] [$($o:tt)*] [$($x:tt)*]; resource = $v:expr $(, $($rest:tt)*)?) => {
        $crate::__audit!(@munch [$($a)*] [$($b)*] [($v)] [$($o)*] [$($x)*]; $($($rest)*)?)
    };
    (@munch [$($a:tt)*] [$($b:tt)*] [$($r:tt)*] [$o:tt] [$($x:tt)*]; outcome = $($rest:tt)*) => {
        ::std::compile_error!("audit!: `outcome` is given twice")
    };
    (@munch [$($a:tt)*] [$($b:tt)*] [$($r:tt)*] [] [$($x:tt)*]; outcome = $v:expr $(, $($rest:tt)*)?) => {
        $crate::__audit!(@munch [$($a)*] [$($b)*] [$($r)*] [($v)] [$($x)*]; $($($rest)*)?)
    };
    // Any other field, in `tracing` syntax.
    (@munch $a:tt $b:tt $r:tt $o:tt [$($x:tt)*]; $($rest:tt)+) => {
        $crate::__field!(@one (__audit $a $b $r $o) [$($x)*] []; $($rest)+)
    };
    // Done: every required field present.
    (@munch [($a:expr)] [($b:expr)] [($r:expr)] [($o:expr)] [$($x:tt)*];) => {
        $crate::__private::tracing::event!(
            target: "mercenary_obs::audit",
            $crate::__private::tracing::Level::INFO,
            { audit = true, actor = $a, action = $b, resource = $r, outcome = $o, $($x)* },
            "audit"
        )
    };
    (@munch [($a:expr)] [($b:expr)] [] [($o:expr)] [$($x:tt)*];) => {
        $crate::__private::tracing::event!(
            target: "mercenary_obs::audit",
            $crate::__private::tracing::Level::INFO,
            { audit = true, actor = $a, action = $b, outcome = $o, $($x)* },
            "audit"
        )
    };
    (@munch [] $b:tt $r:tt $o:tt $x:tt;) => {
        ::std::compile_error!("audit!: `actor = ..` is missing (who did it)")
    };
    (@munch $a:tt [] $r:tt $o:tt $x:tt;) => {
        ::std::compile_error!("audit!: `action = ..` is missing (what was done)")
    };
    (@munch $a:tt $b:tt $r:tt [] $x:tt;) => {
        ::std::compile_error!("audit!: `outcome = ..` is missing (`success`, `failure`, ...)")
    };
    // Back from `__field!` with one more field.
    (@back ($a:tt $b:tt $r:tt $o:tt) [$($x:tt)*]; $($rest:tt)*) => {
        $crate::__audit!(@munch $a $b $r $o [$($x)*]; $($rest)*)
    };
}

/// Takes one field in `tracing` syntax (up to the next top-level comma) into the list of
/// other fields, and hands back to the caller's muncher.
#[doc(hidden)]
#[macro_export]
macro_rules! __field {
    (@one ($caller:ident $($state:tt)*) [$($x:tt)*] [$($f:tt)*]; , $($rest:tt)*) => {
        $crate::$caller!(@back ($($state)*) [$($x)* $($f)*,]; $($rest)*)
    };
    (@one ($caller:ident $($state:tt)*) [$($x:tt)*] [$($f:tt)*]; $t:tt $($rest:tt)*) => {
        $crate::__field!(@one ($caller $($state)*) [$($x)*] [$($f)* $t]; $($rest)*)
    };
    (@one ($caller:ident $($state:tt)*) [$($x:tt)*] [$($f:tt)*];) => {
        $crate::$caller!(@back ($($state)*) [$($x)* $($f)*,];)
    };
}

/// A security event: a WARNING line (target `mercenary_obs::security`) and
/// `security_events_total{kind}`.
///
/// `security_event!(kind = .., other = .., ...)`: `kind` (`failed_login`, `unauthorized`,
/// `suspicious_usage`, ... — keep it to a fixed set, it is a label) required, anywhere among
/// the other fields (`tracing` syntax); the line writes `kind` first. Redaction applies; the event is written even when `RUST_LOG` filters
/// WARNING out. The tower layer records one of kind `unauthorized` for every 401 and 403
/// response (see [`ObsBuilder::unauthorized_events`](crate::ObsBuilder::unauthorized_events)).
///
/// ```
/// let email_hash = "5f2b…";
/// mercenary_obs::security_event!(kind = "failed_login", actor = email_hash, attempts = 3);
/// mercenary_obs::security_event!(actor = email_hash, kind = "failed_login");
/// ```
#[macro_export]
macro_rules! security_event {
    ($($args:tt)*) => {
        $crate::__security_event!(@munch [] []; $($args)*)
    };
}

/// The body of [`security_event!`]: `kind` anywhere among the fields.
#[doc(hidden)]
#[macro_export]
macro_rules! __security_event {
    (@munch [$k:tt] [$($x:tt)*]; kind = $($rest:tt)*) => {
        ::std::compile_error!("security_event!: `kind` is given twice")
    };
    (@munch [] [$($x:tt)*]; kind = $v:expr $(, $($rest:tt)*)?) => {
        $crate::__security_event!(@munch [($v)] [$($x)*]; $($($rest)*)?)
    };
    (@munch $k:tt [$($x:tt)*]; $($rest:tt)+) => {
        $crate::__field!(@one (__security_event $k) [$($x)*] []; $($rest)+)
    };
    (@munch [($k:expr)] [$($x:tt)*];) => {
        $crate::__private::tracing::event!(
            target: "mercenary_obs::security",
            $crate::__private::tracing::Level::WARN,
            { kind = $k, $($x)* },
            "security event"
        )
    };
    (@munch [] $x:tt;) => {
        ::std::compile_error!("security_event!: `kind = ..` is missing (`failed_login`, `unauthorized`, ...)")
    };
    (@back ($k:tt) [$($x:tt)*]; $($rest:tt)*) => {
        $crate::__security_event!(@munch $k [$($x)*]; $($rest)*)
    };
}

/// Logs an ERROR event that is written with level `CRITICAL` (it carries `critical = true`).
///
/// Takes what `tracing::error!` takes after the target:
///
/// ```
/// mercenary_obs::critical!(db = "primary", "database unreachable, serving from cache");
/// ```
#[macro_export]
macro_rules! critical {
    ($($arg:tt)+) => {
        $crate::__private::tracing::error!(critical = true, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// An event's target and its fields in order, as `name=value`.
    type Captured = (String, Vec<String>);

    /// Each event captured.
    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<Captured>>>);

    struct Fields(Vec<String>);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push(format!("{}={value:?}", field.name()));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.push(format!("{}={value}", field.name()));
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            let mut f = Fields(Vec::new());
            e.record(&mut f);
            self.0
                .lock()
                .unwrap()
                .push((e.metadata().target().to_string(), f.0));
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<Captured> {
        let events = Events::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        tracing::subscriber::with_default(subscriber, f);
        events.0.lock().unwrap().clone()
    }

    #[test]
    fn audit_takes_its_fields_in_any_order_and_writes_them_in_one() {
        let user = "u-7";
        let events = capture(|| {
            crate::audit!(action = "login", actor = user, outcome = "success");
            crate::audit!(
                outcome = "failure",
                ip = "10.0.0.1",
                resource = "project:42",
                actor = user,
                note = %format_args!("{}-{}", 1, 2),
                action = "permission.grant",
                debug = ?(1, 2),
            );
            crate::audit!(actor = user, action = "a", resource = "r", outcome = "o",);
        });
        let fields: Vec<Vec<String>> = events.iter().map(|(_, f)| f.clone()).collect();
        assert!(events.iter().all(|(t, _)| t == "mercenary_obs::audit"));
        assert_eq!(
            fields[0],
            [
                "message=audit",
                "audit=true",
                "actor=u-7",
                "action=login",
                "outcome=success"
            ]
        );
        assert_eq!(
            fields[1],
            [
                "message=audit",
                "audit=true",
                "actor=u-7",
                "action=permission.grant",
                "resource=project:42",
                "outcome=failure",
                "ip=10.0.0.1",
                "note=1-2",
                "debug=(1, 2)"
            ]
        );
        assert_eq!(
            fields[2],
            [
                "message=audit",
                "audit=true",
                "actor=u-7",
                "action=a",
                "resource=r",
                "outcome=o"
            ]
        );
    }

    #[test]
    fn security_event_takes_kind_anywhere() {
        let user = "u-7";
        let events = capture(|| {
            crate::security_event!(actor = user, kind = "failed_login");
            crate::security_event!(kind = "unauthorized");
            crate::security_event!(attempts = 3, kind = "suspicious_usage", password = %"x");
        });
        let fields: Vec<Vec<String>> = events.iter().map(|(_, f)| f.clone()).collect();
        assert!(events.iter().all(|(t, _)| t == "mercenary_obs::security"));
        assert_eq!(
            fields[0],
            ["message=security event", "kind=failed_login", "actor=u-7"]
        );
        assert_eq!(fields[1], ["message=security event", "kind=unauthorized"]);
        assert_eq!(
            fields[2],
            [
                "message=security event",
                "kind=suspicious_usage",
                "attempts=3",
                "password=x"
            ]
        );
    }
}
