//! The OpenMetrics 1.0 text exposition of a registry's families, with the exemplars of an
//! instance's [`Exemplars`] tables.
//!
//! Specification: <https://github.com/prometheus/OpenMetrics/blob/main/specification/OpenMetrics.md>
//! (the "ABNF", "Text format" and "Canonical Numbers" sections). How the classic families map:
//!
//! | proto family | `# TYPE` | samples |
//! | --- | --- | --- |
//! | counter `x_total` | `x counter` | `x_total` (+ exemplar) |
//! | counter `x` (no `_total`) | `x unknown` | `x` |
//! | gauge `x` | `x gauge` | `x` |
//! | histogram `x` | `x histogram` | `x_bucket{le}` (+ exemplars), `x_count`, `x_sum` |
//! | summary `x` | `x summary` | `x{quantile}`, `x_count`, `x_sum` |
//! | untyped `x` | `x unknown` | `x` |
//!
//! No `_created` sample is written (the proto has no creation time), and no `UNIT` line (it has
//! no unit either).
//!
//! What the specification forbids is never written, and nothing here panics on user data:
//!
//! - A family that cannot be expressed is left out whole (rendered into a scratch buffer first,
//!   so nothing of it is written): a name or label name outside the ABNF, an `le` label on a
//!   histogram or a `quantile` label on a summary, histogram buckets that are not strictly
//!   increasing, NaN, decreasing in count or whose `+Inf` count is not the sample count, a
//!   quantile outside [0, 1], a `_total` counter whose value is NaN or negative, a family whose
//!   sample names clash with those of a family written before it (a gauge `x_created` after a
//!   counter `x_total`, say), and a family without a metric (the classic encoder writes none
//!   either).
//! - A well-formed family that holds values the specification forbids in one sample loses only
//!   those samples: a histogram with a negative bucket bound or a negative or NaN sum has no
//!   `_sum` (then no `_count` either, as the specification ties them), a summary with a
//!   negative or NaN sum has no `_sum`, and a negative quantile value is left out.

use std::collections::HashSet;

use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

use crate::core::exemplar::{Exemplar, ExemplarTable, Exemplars, series_key};

/// The content type of [`render_openmetrics`]'s output.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `families` in the OpenMetrics 1.0 text format, ending with `# EOF`.
///
/// Histogram buckets and `_total` counter samples carry the exemplar their family's table in
/// `exemplars` holds for their series and bucket (bucket 0 for a counter), if any.
pub(crate) fn render_openmetrics(families: &[MetricFamily], exemplars: &Exemplars) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let mut taken: HashSet<String> = HashSet::new();
    let mut one = String::new();
    for family in families {
        let Some(kind) = Kind::of(family) else {
            continue;
        };
        let name = kind.family_name(family.name());
        let claimed: Vec<String> = std::iter::once("")
            .chain(kind.suffixes().iter().copied())
            .map(|suffix| format!("{name}{suffix}"))
            .collect();
        if claimed.iter().any(|n| taken.contains(n)) {
            continue;
        }
        one.clear();
        if write_family(&mut one, family, kind, name, exemplars).is_some() {
            out.push_str(&one);
            taken.extend(claimed);
        }
    }
    out.push_str("# EOF\n");
    out
}

/// How a proto family is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A counter named `…_total`: family `…`, sample `…_total`.
    Counter,
    /// A counter whose name does not end in `_total`.
    ///
    /// OpenMetrics requires a counter's sample to end in `_total`. The Go and Python clients
    /// append it, which renames the user's series between the two formats (`jobs` in the
    /// classic exposition, `jobs_total` in this one), so dashboards and alerts written
    /// against one break on the other depending on what the scraper negotiated. Written as
    /// `unknown` instead, the series keeps its name in both; only its type metadata is lost.
    CounterAsUnknown,
    Gauge,
    Histogram,
    Summary,
    /// An untyped family (only hand-made collectors produce one).
    Unknown,
}

impl Kind {
    fn of(family: &MetricFamily) -> Option<Kind> {
        let name = family.name();
        if family.get_metric().is_empty() || !is_metric_name(name) {
            return None;
        }
        let labels_ok = family
            .get_metric()
            .iter()
            .all(|m| m.get_label().iter().all(|l| is_label_name(l.name())));
        if !labels_ok {
            return None;
        }
        Some(match family.get_field_type() {
            MetricType::COUNTER => match name.strip_suffix("_total") {
                Some(base) if is_metric_name(base) => Kind::Counter,
                _ => Kind::CounterAsUnknown,
            },
            MetricType::GAUGE => Kind::Gauge,
            MetricType::HISTOGRAM => Kind::Histogram,
            MetricType::SUMMARY => Kind::Summary,
            MetricType::UNTYPED => Kind::Unknown,
        })
    }

    /// The OpenMetrics family name of the proto family `name`.
    fn family_name(self, name: &str) -> &str {
        match self {
            Kind::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::CounterAsUnknown | Kind::Unknown => "unknown",
        }
    }

    /// The sample-name suffixes the specification gives the type (besides the bare name), all
    /// of which a family of this type makes unavailable to the families after it.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Histogram => &["_bucket", "_count", "_sum", "_created"],
            Kind::Summary => &["_count", "_sum", "_created"],
            Kind::CounterAsUnknown | Kind::Gauge | Kind::Unknown => &[],
        }
    }
}

/// Writes one family into `out`; `None` (with `out` to be discarded) when it cannot be
/// expressed.
fn write_family(
    out: &mut String,
    family: &MetricFamily,
    kind: Kind,
    name: &str,
    exemplars: &Exemplars,
) -> Option<()> {
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind.type_name());
    out.push('\n');
    // An empty HELP means no HELP line: the specification treats both alike, and the classic
    // encoder writes none either.
    if !family.help().is_empty() {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape_into(out, family.help());
        out.push('\n');
    }
    // Tables are registered under the proto family's name (`…_total` for a counter).
    let table = exemplars.lookup(family.name());
    for m in family.get_metric() {
        match kind {
            Kind::Counter => {
                let value = m.get_counter().get_value();
                // A counter's total is never NaN nor negative (a hand-made collector's could
                // be).
                if value.is_nan() || value < 0.0 {
                    return None;
                }
                let exemplar = table.and_then(|t| t.get(series_of(m), 0));
                let sample = Sample::new(m, family.name(), number(value));
                sample.write(out, exemplar.as_ref());
            }
            Kind::CounterAsUnknown => {
                Sample::new(m, name, number(m.get_counter().get_value())).write(out, None);
            }
            Kind::Gauge => Sample::new(m, name, number(m.get_gauge().get_value())).write(out, None),
            Kind::Unknown => {
                #[allow(deprecated)] // The only way to the value of an untyped family.
                let value = m.get_untyped().get_value();
                Sample::new(m, name, number(value)).write(out, None);
            }
            Kind::Histogram => write_histogram(out, name, m, table)?,
            Kind::Summary => write_summary(out, name, m)?,
        }
    }
    Some(())
}

fn write_histogram(
    out: &mut String,
    name: &str,
    m: &Metric,
    table: Option<&ExemplarTable>,
) -> Option<()> {
    if m.get_label().iter().any(|l| l.name() == "le") {
        return None;
    }
    let h = m.get_histogram();
    let buckets = h.get_bucket();
    // The proto may list the `+Inf` bucket or leave it implicit (the sample count).
    let (finite, inf_count) = match buckets.split_last() {
        Some((last, rest)) if last.upper_bound() == f64::INFINITY => {
            (rest, last.cumulative_count())
        }
        _ => (buckets, h.get_sample_count()),
    };
    if inf_count != h.get_sample_count() {
        return None;
    }
    let mut previous: Option<(f64, u64)> = None;
    for b in finite {
        let (bound, count) = (b.upper_bound(), b.cumulative_count());
        if bound.is_nan() || bound == f64::INFINITY {
            return None;
        }
        if let Some((p_bound, p_count)) = previous
            && (bound <= p_bound || count < p_count)
        {
            return None;
        }
        previous = Some((bound, count));
    }
    if previous.is_some_and(|(_, count)| count > inf_count) {
        return None;
    }
    let series = table.map(|_| series_of(m));
    let bucket_name = format!("{name}_bucket");
    let bounds = finite
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .chain(std::iter::once((f64::INFINITY, inf_count)));
    for (i, (bound, count)) in bounds.enumerate() {
        // A bucket covers the values up to its bound: an exemplar above it (a table made
        // with other bounds) is not shown rather than shown where the specification forbids.
        let exemplar = table
            .zip(series)
            .and_then(|(t, series)| t.get(series, i))
            .filter(|e| e.value <= bound);
        Sample::new(m, &bucket_name, count.to_string())
            .with_label("le", number(bound))
            .write(out, exemplar.as_ref());
    }
    // `_sum` is a counter: never negative nor NaN, and absent when a bucket bound is
    // negative; `_count` goes with it.
    let sum = h.get_sample_sum();
    let negative_bound = finite.iter().any(|b| b.upper_bound() < 0.0);
    if sum >= 0.0 && !negative_bound {
        Sample::new(m, &format!("{name}_count"), inf_count.to_string()).write(out, None);
        Sample::new(m, &format!("{name}_sum"), number(sum)).write(out, None);
    }
    Some(())
}

fn write_summary(out: &mut String, name: &str, m: &Metric) -> Option<()> {
    if m.get_label().iter().any(|l| l.name() == "quantile") {
        return None;
    }
    let s = m.get_summary();
    for q in s.get_quantile() {
        if !(0.0..=1.0).contains(&q.quantile()) {
            return None;
        }
        // A quantile's value is never negative in OpenMetrics (NaN is how "no observation" is
        // written, and stays).
        if q.value() < 0.0 {
            continue;
        }
        Sample::new(m, name, number(q.value()))
            .with_label("quantile", number(q.quantile()))
            .write(out, None);
    }
    Sample::new(m, &format!("{name}_count"), s.sample_count().to_string()).write(out, None);
    if s.sample_sum() >= 0.0 {
        Sample::new(m, &format!("{name}_sum"), number(s.sample_sum())).write(out, None);
    }
    Some(())
}

/// The exemplar tables' key of a metric's series: its label pairs.
fn series_of(m: &Metric) -> u64 {
    series_key(m.get_label().iter().map(|l| (l.name(), l.value())))
}

/// One sample line in the making.
struct Sample<'a> {
    metric: &'a Metric,
    name: &'a str,
    extra: Option<(&'static str, String)>,
    value: String,
}

impl<'a> Sample<'a> {
    fn new(metric: &'a Metric, name: &'a str, value: String) -> Self {
        Self {
            metric,
            name,
            extra: None,
            value,
        }
    }

    fn with_label(mut self, name: &'static str, value: String) -> Self {
        self.extra = Some((name, value));
        self
    }

    fn write(&self, out: &mut String, exemplar: Option<&Exemplar>) {
        out.push_str(self.name);
        write_labels(out, self.metric.get_label(), self.extra.as_ref());
        out.push(' ');
        out.push_str(&self.value);
        // The proto's timestamp is in milliseconds, 0 meaning none (as the classic encoder
        // reads it); OpenMetrics timestamps are seconds.
        let ms = self.metric.timestamp_ms();
        if ms != 0 {
            out.push(' ');
            out.push_str(&millis_as_seconds(ms));
        }
        if let Some(e) = exemplar {
            write_exemplar(out, e);
        }
        out.push('\n');
    }
}

fn write_labels(out: &mut String, labels: &[LabelPair], extra: Option<&(&str, String)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let pairs = labels
        .iter()
        .map(|l| (l.name(), l.value()))
        .chain(extra.map(|(n, v)| (*n, v.as_str())));
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_into(out, value);
        out.push('"');
    }
    out.push('}');
}

/// ` # {trace_id="…",span_id="…"} value [timestamp]` (63 characters of label names and
/// values, under the specification's 128).
fn write_exemplar(out: &mut String, e: &Exemplar) {
    out.push_str(&format!(
        " # {{trace_id=\"{:032x}\",span_id=\"{:016x}\"}} {}",
        e.trace_id,
        e.span_id,
        number(e.value)
    ));
    // A timestamp is a real number: a non-finite one is left out.
    if e.timestamp.is_finite() {
        out.push(' ');
        out.push_str(&seconds(e.timestamp));
    }
}

/// Escapes a HELP text or label value as the ABNF's `escaped-string`: `\` as `\\`, a line feed
/// as `\n` and `"` as `\"` (a bare `"` is not a `normal-char`, in HELP either).
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A float in the specification's canonical rendering ("Canonical Numbers"): Go's `%g` (the
/// shortest digits that read back as the same float; exponent notation when the exponent is
/// below -4 or at least 6, with a sign and at least two digits) with `.0` appended when there
/// is neither a decimal point nor an exponent. So `1.0`, `0.005`, `100000.0`, `1e+06`,
/// `1e-05`, `+Inf`, `-Inf`, `NaN`.
///
/// The specification requires it for `le` and `quantile` label values (they are label values,
/// so `1` and `1.0` would be two series), which is why the classic exposition's `le="1"` is
/// `le="1.0"` here. Any rendering is allowed for sample values; this one is used for them
/// too, as the Go and Python clients do, so every float in the exposition reads alike.
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    // `{:e}` is the shortest round-tripping mantissa and the decimal exponent: `1.1e23`.
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        // `{}` is the same shortest digits in positional notation.
        let mut s = format!("{v}");
        if !s.contains('.') {
            s.push_str(".0");
        }
        s
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    }
}

/// Milliseconds since the epoch as OpenMetrics seconds, exactly: `1520879607.789`.
fn millis_as_seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// Unix seconds in positional notation (the specification asks timestamps not to use an
/// exponent): the shortest digits that read back as the same float.
fn seconds(t: f64) -> String {
    format!("{t}")
}

/// `metricname` of the ABNF: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `label-name` of the ABNF: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    #![allow(deprecated)] // The proto's untyped setters, for hand-made families.

    use super::*;
    use crate::core::exemplar::DEFAULT_SLOTS;
    use prometheus::proto::{Bucket, Counter, Gauge, Histogram, Quantile, Summary, Untyped};

    fn label(name: &str, value: &str) -> LabelPair {
        let mut l = LabelPair::default();
        l.set_name(name.to_owned());
        l.set_value(value.to_owned());
        l
    }

    fn family(name: &str, help: &str, ty: MetricType, metrics: Vec<Metric>) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(name.to_owned());
        f.set_help(help.to_owned());
        f.set_field_type(ty);
        f.set_metric(metrics);
        f
    }

    fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
        let mut c = Counter::default();
        c.set_value(value);
        let mut m = Metric::from_label(labels.iter().map(|(n, v)| label(n, v)).collect());
        m.set_counter(c);
        m
    }

    fn gauge(value: f64) -> Metric {
        let mut g = Gauge::default();
        g.set_value(value);
        Metric::from_gauge(g)
    }

    /// A histogram metric: `(bound, cumulative count)` buckets as given (`+Inf` or not).
    fn histogram(labels: &[(&str, &str)], buckets: &[(f64, u64)], count: u64, sum: f64) -> Metric {
        let mut h = Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            buckets
                .iter()
                .map(|&(bound, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        let mut m = Metric::from_label(labels.iter().map(|(n, v)| label(n, v)).collect());
        m.set_histogram(h);
        m
    }

    fn summary(quantiles: &[(f64, f64)], count: u64, sum: f64) -> Metric {
        let mut s = Summary::default();
        s.set_sample_count(count);
        s.set_sample_sum(sum);
        s.set_quantile(
            quantiles
                .iter()
                .map(|&(q, v)| {
                    let mut x = Quantile::default();
                    x.set_quantile(q);
                    x.set_value(v);
                    x
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_summary(s);
        m
    }

    fn untyped(value: f64) -> Metric {
        let mut u = Untyped::default();
        u.set_value(value);
        let mut m = Metric::default();
        m.set_untyped(u);
        m
    }

    fn render(families: &[MetricFamily]) -> String {
        render_openmetrics(families, &Exemplars::default())
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn numbers_follow_the_canonical_rendering_of_the_specification() {
        // The specification's own lists ("Canonical Numbers" and the histogram example).
        for (v, s) in [
            (0.0, "0.0"),
            (0.001, "0.001"),
            (0.002, "0.002"),
            (0.01, "0.01"),
            (0.1, "0.1"),
            (0.9, "0.9"),
            (0.95, "0.95"),
            (0.99, "0.99"),
            (0.999, "0.999"),
            (1.0, "1.0"),
            (1.7, "1.7"),
            (10.0, "10.0"),
            (1e-10, "1e-10"),
            (1e-9, "1e-09"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (100000.0, "100000.0"),
            (1e6, "1e+06"),
            (1e10, "1e+10"),
            (1e23, "1e+23"),
            (1.1e23, "1.1e+23"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            // And what the crate's buckets and Go's %g give.
            (0.005, "0.005"),
            (0.025, "0.025"),
            (2.5, "2.5"),
            (123456.7, "123456.7"),
            (1234567.0, "1.234567e+06"),
            (-2.5, "-2.5"),
            (-0.00001, "-1e-05"),
            (1.7e9, "1.7e+09"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(number(v), s, "{v:?}");
        }
    }

    #[test]
    fn help_and_label_values_are_escaped() {
        let f = family(
            "odd_total",
            "a \\ backslash,\na newline and a \"quote\"",
            MetricType::COUNTER,
            vec![counter(&[("v", "C:\\dir\n\"x\"")], 1.0)],
        );
        assert_eq!(
            lines(&render(&[f])),
            [
                "# TYPE odd counter",
                r#"# HELP odd a \\ backslash,\na newline and a \"quote\""#,
                r#"odd_total{v="C:\\dir\n\"x\""} 1.0"#,
                "# EOF",
            ]
        );
    }

    #[test]
    fn counters_keep_their_sample_name_in_both_formats() {
        let text = render(&[
            family(
                "jobs",
                "Jobs.",
                MetricType::COUNTER,
                vec![counter(&[], 3.0)],
            ),
            family(
                "requests_total",
                "Requests.",
                MetricType::COUNTER,
                vec![counter(&[("code", "200")], 5.0)],
            ),
        ]);
        assert_eq!(
            lines(&text),
            [
                "# TYPE jobs unknown",
                "# HELP jobs Jobs.",
                "jobs 3.0",
                "# TYPE requests counter",
                "# HELP requests Requests.",
                "requests_total{code=\"200\"} 5.0",
                "# EOF",
            ]
        );
        assert!(!text.contains("_created"));
    }

    #[test]
    fn every_type_is_rendered_and_the_output_ends_with_eof() {
        let text = render(&[
            family("temperature", "T.", MetricType::GAUGE, vec![gauge(-3.5)]),
            family(
                "latency_seconds",
                "L.",
                MetricType::HISTOGRAM,
                vec![histogram(&[], &[(0.1, 1), (1.0, 2)], 3, 2.5)],
            ),
            family(
                "rpc_seconds",
                "R.",
                MetricType::SUMMARY,
                vec![summary(&[(0.5, 0.2), (0.99, f64::NAN)], 7, 1.5)],
            ),
            family(
                "legacy",
                "",
                MetricType::UNTYPED,
                vec![untyped(f64::INFINITY)],
            ),
        ]);
        assert_eq!(
            lines(&text),
            [
                "# TYPE temperature gauge",
                "# HELP temperature T.",
                "temperature -3.5",
                "# TYPE latency_seconds histogram",
                "# HELP latency_seconds L.",
                "latency_seconds_bucket{le=\"0.1\"} 1",
                "latency_seconds_bucket{le=\"1.0\"} 2",
                "latency_seconds_bucket{le=\"+Inf\"} 3",
                "latency_seconds_count 3",
                "latency_seconds_sum 2.5",
                "# TYPE rpc_seconds summary",
                "# HELP rpc_seconds R.",
                "rpc_seconds{quantile=\"0.5\"} 0.2",
                "rpc_seconds{quantile=\"0.99\"} NaN",
                "rpc_seconds_count 7",
                "rpc_seconds_sum 1.5",
                "# TYPE legacy unknown",
                "legacy +Inf",
                "# EOF",
            ]
        );
        assert_eq!(render(&[]), "# EOF\n");
    }

    #[test]
    fn an_explicit_inf_bucket_renders_like_an_implicit_one() {
        let implicit = histogram(&[("r", "a")], &[(0.5, 1), (2.0, 4)], 6, 9.0);
        let explicit = histogram(
            &[("r", "a")],
            &[(0.5, 1), (2.0, 4), (f64::INFINITY, 6)],
            6,
            9.0,
        );
        let a = render(&[family("h", "H.", MetricType::HISTOGRAM, vec![implicit])]);
        let b = render(&[family("h", "H.", MetricType::HISTOGRAM, vec![explicit])]);
        assert_eq!(a, b);
        assert_eq!(a.matches("le=\"+Inf\"").count(), 1, "{a}");
        // And a real prometheus histogram (which leaves it implicit).
        let registry = prometheus::Registry::new();
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("real_seconds", "R.").buckets(vec![0.5, 2.0]),
        )
        .unwrap();
        registry.register(Box::new(h.clone())).unwrap();
        h.observe(1.0);
        let text = render(&registry.gather());
        assert!(
            text.contains("real_seconds_bucket{le=\"2.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("real_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn sample_timestamps_are_seconds() {
        let mut m = gauge(1.0);
        m.set_timestamp_ms(1_520_879_607_789);
        let mut old = gauge(2.0);
        old.set_timestamp_ms(-1_500);
        let mut ten = gauge(3.0);
        ten.set_timestamp_ms(10_005);
        let text = render(&[
            family("a", "A.", MetricType::GAUGE, vec![m]),
            family("b", "B.", MetricType::GAUGE, vec![old]),
            family("c", "C.", MetricType::GAUGE, vec![ten]),
        ]);
        assert!(text.contains("\na 1.0 1520879607.789\n"), "{text}");
        assert!(text.contains("\nb 2.0 -1.500\n"), "{text}");
        assert!(text.contains("\nc 3.0 10.005\n"), "{text}");
    }

    /// An exemplar to publish: the series' labels, value, trace, span, timestamp.
    type Published<'a> = (&'a [(&'a str, &'a str)], f64, u128, u64, f64);

    /// A table for `name` (bounds `bounds`) with `published` published through the instance
    /// registry, as the request path does.
    fn exemplars(name: &str, bounds: &[f64], published: &[Published<'_>]) -> Exemplars {
        let x = Exemplars::default();
        let table = x.register(name, bounds, DEFAULT_SLOTS).unwrap();
        for &(labels, value, trace, span, timestamp) in published {
            let pending = table.pending(series_key(labels.iter().copied()), value, span);
            x.publish(trace, timestamp, &pending);
        }
        x
    }

    #[test]
    fn histogram_buckets_carry_their_exemplar() {
        let x = exemplars(
            "h_seconds",
            &[0.1, 1.0],
            &[
                (&[("route", "/a")], 0.05, 0x2a, 7, 1_700_000_000.5),
                (
                    &[("route", "/a")],
                    7.5,
                    u128::MAX,
                    u64::MAX,
                    1_700_000_001.0,
                ),
                (&[("route", "/b")], 0.5, 1, 2, 1_700_000_002.25),
            ],
        );
        for buckets in [
            &[(0.1, 1), (1.0, 1)][..],
            &[(0.1, 1), (1.0, 1), (f64::INFINITY, 2)][..],
        ] {
            let f = family(
                "h_seconds",
                "H.",
                MetricType::HISTOGRAM,
                vec![
                    histogram(&[("route", "/a")], buckets, 2, 7.55),
                    histogram(&[("route", "/c")], buckets, 2, 7.55),
                ],
            );
            let text = render_openmetrics(&[f], &x);
            assert_eq!(
                lines(&text)[2..8],
                [
                    "h_seconds_bucket{route=\"/a\",le=\"0.1\"} 1 # {trace_id=\"0000000000000000000000000000002a\",span_id=\"0000000000000007\"} 0.05 1700000000.5",
                    "h_seconds_bucket{route=\"/a\",le=\"1.0\"} 1",
                    "h_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2 # {trace_id=\"ffffffffffffffffffffffffffffffff\",span_id=\"ffffffffffffffff\"} 7.5 1700000001",
                    "h_seconds_count{route=\"/a\"} 2",
                    "h_seconds_sum{route=\"/a\"} 7.55",
                    "h_seconds_bucket{route=\"/c\",le=\"0.1\"} 1",
                ],
                "{text}"
            );
            assert_eq!(
                text.matches(" # {").count(),
                2,
                "/c and /b have none here: {text}"
            );
        }
    }

    #[test]
    fn an_exemplar_above_its_bucket_bound_is_not_shown() {
        // A table whose bounds differ from the histogram's: 5.0 lands in its bucket 1.
        let x = exemplars("h", &[0.1, 10.0], &[(&[], 5.0, 1, 1, 1.0)]);
        let f = family(
            "h",
            "H.",
            MetricType::HISTOGRAM,
            vec![histogram(&[], &[(0.1, 0), (1.0, 0)], 1, 5.0)],
        );
        let text = render_openmetrics(&[f], &x);
        assert!(!text.contains(" # {"), "{text}");
    }

    #[test]
    fn total_counters_carry_the_exemplar_of_bucket_zero_and_nothing_else_does() {
        let x = Exemplars::default();
        for name in ["hits_total", "hits", "level", "legacy", "q"] {
            let t = x.register(name, &[], 16).unwrap();
            x.publish(3, 5.0, &t.pending(series_key([("k", "v")]), 1.0, 4));
        }
        let with = |m: Metric| {
            let mut m = m;
            m.set_label(vec![label("k", "v")]);
            m
        };
        let text = render_openmetrics(
            &[
                family(
                    "hits_total",
                    "H.",
                    MetricType::COUNTER,
                    vec![with(counter(&[], 2.0))],
                ),
                family(
                    "hits",
                    "H.",
                    MetricType::COUNTER,
                    vec![with(counter(&[], 2.0))],
                ),
                family("level", "L.", MetricType::GAUGE, vec![with(gauge(2.0))]),
                family(
                    "legacy",
                    "L.",
                    MetricType::UNTYPED,
                    vec![with(untyped(2.0))],
                ),
                family(
                    "q",
                    "Q.",
                    MetricType::SUMMARY,
                    vec![with(summary(&[(0.5, 1.0)], 1, 1.0))],
                ),
            ],
            &x,
        );
        assert!(
            text.contains(
                "\nhits_total{k=\"v\"} 2.0 # {trace_id=\"00000000000000000000000000000003\",span_id=\"0000000000000004\"} 1.0 5\n"
            ),
            "{text}"
        );
        assert_eq!(text.matches(" # {").count(), 1, "{text}");
    }

    #[test]
    fn a_non_finite_exemplar_timestamp_is_left_out() {
        let x = exemplars("c_total", &[], &[(&[], 1.0, 1, 1, f64::NAN)]);
        let text = render_openmetrics(
            &[family(
                "c_total",
                "C.",
                MetricType::COUNTER,
                vec![counter(&[], 1.0)],
            )],
            &x,
        );
        assert!(text.contains("} 1.0\n"), "{text}");
    }

    #[test]
    fn families_that_cannot_be_expressed_are_skipped_whole() {
        let h = |buckets: &[(f64, u64)], count| histogram(&[], buckets, count, 1.0);
        let bad = [
            family(
                "nan_bound",
                "x",
                MetricType::HISTOGRAM,
                vec![h(&[(f64::NAN, 1)], 1)],
            ),
            family(
                "unsorted",
                "x",
                MetricType::HISTOGRAM,
                vec![h(&[(1.0, 1), (0.5, 1)], 1)],
            ),
            family(
                "repeated",
                "x",
                MetricType::HISTOGRAM,
                vec![h(&[(1.0, 1), (1.0, 1)], 1)],
            ),
            family(
                "shrinking",
                "x",
                MetricType::HISTOGRAM,
                vec![h(&[(0.5, 2), (1.0, 1)], 2)],
            ),
            family(
                "over_inf",
                "x",
                MetricType::HISTOGRAM,
                vec![h(&[(0.5, 3)], 2)],
            ),
            family(
                "inf_mismatch",
                "x",
                MetricType::HISTOGRAM,
                vec![h(&[(0.5, 1), (f64::INFINITY, 2)], 3)],
            ),
            family(
                "le_label",
                "x",
                MetricType::HISTOGRAM,
                vec![histogram(&[("le", "1")], &[(0.5, 1)], 1, 1.0)],
            ),
            family(
                "q_range",
                "x",
                MetricType::SUMMARY,
                vec![summary(&[(1.5, 1.0)], 1, 1.0)],
            ),
            family(
                "q_nan",
                "x",
                MetricType::SUMMARY,
                vec![summary(&[(f64::NAN, 1.0)], 1, 1.0)],
            ),
            family(
                "nan_total",
                "x",
                MetricType::COUNTER,
                vec![counter(&[], f64::NAN)],
            ),
            family(
                "neg_total",
                "x",
                MetricType::COUNTER,
                vec![counter(&[], -1.0)],
            ),
            family("bad-name", "x", MetricType::GAUGE, vec![gauge(1.0)]),
            family("", "x", MetricType::GAUGE, vec![gauge(1.0)]),
            family(
                "bad_label",
                "x",
                MetricType::COUNTER,
                vec![counter(&[("a:b", "1")], 1.0)],
            ),
            family("no_metrics", "x", MetricType::GAUGE, vec![]),
        ];
        let mut quantile_label = summary(&[(0.5, 1.0)], 1, 1.0);
        quantile_label.set_label(vec![label("quantile", "x")]);
        let mut families = vec![family("first", "F.", MetricType::GAUGE, vec![gauge(1.0)])];
        for f in bad {
            families.push(f);
        }
        families.push(family(
            "q_label",
            "x",
            MetricType::SUMMARY,
            vec![quantile_label],
        ));
        families.push(family("last", "L.", MetricType::GAUGE, vec![gauge(2.0)]));
        let text = render(&families);
        assert_eq!(
            lines(&text),
            [
                "# TYPE first gauge",
                "# HELP first F.",
                "first 1.0",
                "# TYPE last gauge",
                "# HELP last L.",
                "last 2.0",
                "# EOF",
            ]
        );
    }

    #[test]
    fn a_family_whose_names_clash_with_an_earlier_one_is_skipped() {
        let text = render(&[
            family(
                "x_total",
                "Counter.",
                MetricType::COUNTER,
                vec![counter(&[], 1.0)],
            ),
            family("x_created", "Gauge.", MetricType::GAUGE, vec![gauge(1.0)]),
            family("x", "Gauge.", MetricType::GAUGE, vec![gauge(1.0)]),
            family(
                "h",
                "H.",
                MetricType::HISTOGRAM,
                vec![histogram(&[], &[], 0, 0.0)],
            ),
            family("h_bucket", "Gauge.", MetricType::GAUGE, vec![gauge(1.0)]),
            family("y", "Gauge.", MetricType::GAUGE, vec![gauge(1.0)]),
        ]);
        assert_eq!(
            lines(&text),
            [
                "# TYPE x counter",
                "# HELP x Counter.",
                "x_total 1.0",
                "# TYPE h histogram",
                "# HELP h H.",
                "h_bucket{le=\"+Inf\"} 0",
                "h_count 0",
                "h_sum 0.0",
                "# TYPE y gauge",
                "# HELP y Gauge.",
                "y 1.0",
                "# EOF",
            ]
        );
    }

    #[test]
    fn forbidden_sums_and_negative_quantile_values_are_left_out() {
        let text = render(&[
            family(
                "neg_bound",
                "x",
                MetricType::HISTOGRAM,
                vec![histogram(&[], &[(-1.0, 1), (1.0, 2)], 2, 0.5)],
            ),
            family(
                "neg_sum",
                "x",
                MetricType::HISTOGRAM,
                vec![histogram(&[], &[(1.0, 1)], 1, -0.5)],
            ),
            family(
                "nan_sum",
                "x",
                MetricType::HISTOGRAM,
                vec![histogram(&[], &[(1.0, 1)], 1, f64::NAN)],
            ),
            family(
                "s",
                "x",
                MetricType::SUMMARY,
                vec![summary(&[(0.5, -2.0), (0.9, 3.0)], 2, -4.0)],
            ),
        ]);
        for absent in [
            "neg_bound_sum",
            "neg_bound_count",
            "neg_sum_sum",
            "neg_sum_count",
            "nan_sum_sum",
            "s_sum",
            "quantile=\"0.5\"",
        ] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(text.contains("neg_bound_bucket{le=\"-1.0\"} 1\n"), "{text}");
        assert!(text.contains("neg_sum_bucket{le=\"+Inf\"} 1\n"), "{text}");
        assert!(
            text.contains("s{quantile=\"0.9\"} 3.0\ns_count 2\n"),
            "{text}"
        );
    }

    /// Parses `text` with the official Python client's OpenMetrics parser (consuming every
    /// family) and returns the families as JSON; fails the test, saying how to install the
    /// client, when it is missing.
    fn python_openmetrics(text: &str) -> serde_json::Value {
        use std::io::Write;
        use std::process::{Command, Stdio};
        const SCRIPT: &str = r#"
import json, sys
try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
def ts(t):
    return None if t is None else repr(float(t))
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation, "samples": [
        {"name": s.name, "labels": s.labels, "value": repr(float(s.value)),
         "timestamp": ts(s.timestamp),
         "exemplar": None if s.exemplar is None else {"labels": s.exemplar.labels,
             "value": repr(float(s.exemplar.value)), "timestamp": ts(s.exemplar.timestamp)}}
        for s in f.samples]})
print(json.dumps(out))
"#;
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3 is needed for this test ({e})"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        assert_ne!(
            out.status.code(),
            Some(3),
            "the official Python client is needed for this test ({stderr}); run \
             `bash scripts/test.sh`, which installs it (pip install prometheus_client)"
        );
        assert!(
            out.status.success(),
            "the OpenMetrics parser rejected the exposition: {stderr}\n{text}"
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn the_official_parser_accepts_every_shape_rendered_here() {
        let mut stamped = gauge(1.0);
        stamped.set_label(vec![label("at", "then")]);
        stamped.set_timestamp_ms(1_520_879_607_789);
        let x = exemplars("h", &[0.1, 1.0], &[(&[("r", "a")], 0.5, 1, 2, 3.0)]);
        let text = render_openmetrics(
            &[
                family(
                    "jobs",
                    "No _total.",
                    MetricType::COUNTER,
                    vec![counter(&[], 3.0)],
                ),
                family(
                    "odd_total",
                    "a \\ b\n\"c\"",
                    MetricType::COUNTER,
                    vec![counter(&[("v", "C:\\x\n\"y\"")], 1.0)],
                ),
                family(
                    "level",
                    "",
                    MetricType::GAUGE,
                    vec![gauge(f64::NAN), stamped],
                ),
                family("legacy", "U.", MetricType::UNTYPED, vec![untyped(-1.0)]),
                family(
                    "h",
                    "H.",
                    MetricType::HISTOGRAM,
                    vec![
                        histogram(&[("r", "a")], &[(0.1, 0), (1.0, 1)], 1, 0.5),
                        histogram(
                            &[("r", "b")],
                            &[(0.1, 0), (1.0, 1), (f64::INFINITY, 1)],
                            1,
                            0.5,
                        ),
                    ],
                ),
                family(
                    "neg_bound",
                    "N.",
                    MetricType::HISTOGRAM,
                    vec![histogram(
                        &[],
                        &[(f64::NEG_INFINITY, 0), (-1.0, 1), (1.0, 2)],
                        2,
                        0.5,
                    )],
                ),
                family(
                    "neg_sum",
                    "N.",
                    MetricType::HISTOGRAM,
                    vec![histogram(&[], &[(1.0, 1)], 1, -0.5)],
                ),
                family(
                    "s",
                    "S.",
                    MetricType::SUMMARY,
                    vec![summary(
                        &[(0.0, 1.0), (0.5, -2.0), (1.0, f64::NAN)],
                        2,
                        -4.0,
                    )],
                ),
            ],
            &x,
        );
        let families = python_openmetrics(&text);
        let names: Vec<&str> = families
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "jobs",
                "odd",
                "level",
                "legacy",
                "h",
                "neg_bound",
                "neg_sum",
                "s"
            ]
        );
        let odd = &families[1];
        assert_eq!(odd["help"], "a \\ b\n\"c\"");
        assert_eq!(odd["samples"][0]["labels"]["v"], "C:\\x\n\"y\"");
        assert_eq!(families[2]["samples"][1]["timestamp"], "1520879607.789");
        assert_eq!(families[0]["type"], "unknown");
        assert_eq!(families[0]["samples"][0]["name"], "jobs");
    }

    #[test]
    fn the_official_parser_reads_exemplars_back() {
        let route = [("route", "/users/{id}"), ("method", "GET")];
        let x = exemplars(
            "http_seconds",
            &[0.1, 1.0],
            &[
                (
                    &route,
                    0.042,
                    0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                    0x00f0_67aa_0ba9_02b7,
                    1_700_000_000.25,
                ),
                (&route, 3.5, 1, 2, 1_700_000_001.0),
            ],
        );
        let counters = x.register("jobs_total", &[], 16).unwrap();
        x.publish(
            9,
            1_700_000_002.5,
            &counters.pending(series_key([]), 1.0, 10),
        );
        let registry = prometheus::Registry::new();
        let h = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("http_seconds", "Latency \"with\" \\ and\nlines.")
                .buckets(vec![0.1, 1.0]),
            &["method", "route"],
        )
        .unwrap();
        let c = prometheus::IntCounter::new("jobs_total", "Jobs.").unwrap();
        registry.register(Box::new(h.clone())).unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        h.with_label_values(&["GET", "/users/{id}"]).observe(0.042);
        h.with_label_values(&["GET", "/users/{id}"]).observe(3.5);
        c.inc();
        let text = render_openmetrics(&registry.gather(), &x);
        let families = python_openmetrics(&text);
        let samples: Vec<&serde_json::Value> = families
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["samples"].as_array().unwrap())
            .collect();
        let exemplars: Vec<(&str, &serde_json::Value)> = samples
            .iter()
            .filter(|s| !s["exemplar"].is_null())
            .map(|s| (s["name"].as_str().unwrap(), &s["exemplar"]))
            .collect();
        assert_eq!(exemplars.len(), 3, "{text}");
        assert_eq!(exemplars[0].0, "http_seconds_bucket");
        assert_eq!(
            exemplars[0].1,
            &serde_json::json!({
                "labels": {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"},
                "value": "0.042",
                "timestamp": "1700000000.25",
            })
        );
        assert_eq!(
            exemplars[1].1["labels"],
            serde_json::json!({"trace_id": "00000000000000000000000000000001", "span_id": "0000000000000002"})
        );
        assert_eq!(exemplars[1].1["value"], "3.5");
        assert_eq!(exemplars[2].0, "jobs_total");
        assert_eq!(exemplars[2].1["timestamp"], "1700000002.5");
        let histogram = families
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "http_seconds")
            .unwrap();
        assert_eq!(histogram["help"], "Latency \"with\" \\ and\nlines.");
        assert_eq!(histogram["type"], "histogram");
    }
}
