//! Small emitters: Prometheus durations, quoted YAML/JSON strings, PromQL string literals, a
//! JSON value with a pretty printer, and Go's number formatting as Prometheus templates use it
//! (to predict rendered annotations in the generated `promtool` unit tests).

use std::fmt::Write as _;
use std::time::Duration;

/// A duration in Prometheus notation with the largest unit that divides it (`90s` → `90s`,
/// `300s` → `5m`, `3600s` → `1h`, `86400s` → `1d`); sub-second parts are rounded up to `1s`.
pub(crate) fn prom_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs += 1;
    }
    if secs == 0 {
        return "0s".into();
    }
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// Whole seconds of `d`, rounded up (what [`prom_duration`] writes).
pub(crate) fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A double-quoted string, escaped for JSON; also a valid YAML double-quoted scalar.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A PromQL double-quoted string literal.
pub(crate) fn promql_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as PromQL and YAML read it back (`0.05`, `1`, `1073741824`).
pub(crate) fn num(v: f64) -> String {
    format!("{v}")
}

/// Go's `%.<prec>g`: `prec` significant digits, trailing zeros removed, exponent form when the
/// exponent is below -4 or at least `prec`.
pub(crate) fn go_g(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let sci = format!("{:.*e}", prec.saturating_sub(1), v);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= prec as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

/// Prometheus's `humanizePercentage`.
pub(crate) fn humanize_percentage(v: f64) -> String {
    format!("{}%", go_g(v * 100.0, 4))
}

/// Prometheus's `humanize1024`.
pub(crate) fn humanize_1024(mut v: f64) -> String {
    if v.abs() <= 1.0 {
        return go_g(v, 4);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, 4))
}

/// Prometheus's `humanizeDuration`.
pub(crate) fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let d = v as i64;
        let (s, m, h, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86_400);
        return if days != 0 {
            format!("{sign}{days}d {h}h {m}m {s}s")
        } else if h != 0 {
            format!("{sign}{h}h {m}m {s}s")
        } else if m != 0 {
            format!("{sign}{m}m {s}s")
        } else {
            format!("{sign}{}s", go_g(v, 4))
        };
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g(v, 4))
}

/// A JSON value, printed with two-space indentation, keys in insertion order.
#[derive(Clone, Debug)]
pub(crate) enum Json {
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_string())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}
impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}
impl From<f64> for Json {
    fn from(n: f64) -> Json {
        Json::Num(n)
    }
}
impl From<u32> for Json {
    fn from(n: u32) -> Json {
        Json::Num(f64::from(n))
    }
}
impl From<Vec<Json>> for Json {
    fn from(v: Vec<Json>) -> Json {
        Json::Arr(v)
    }
}

/// `obj!{"key" => value, ...}`: a [`Json::Obj`].
macro_rules! obj {
    ($($k:expr => $v:expr),* $(,)?) => {
        $crate::monitoring::text::Json::Obj(vec![$(($k.to_string(), $crate::monitoring::text::Json::from($v))),*])
    };
}
pub(crate) use obj;

impl Json {
    /// Pretty-printed, with a final newline.
    pub(crate) fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n));
        match self {
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) if n.is_finite() => out.push_str(&num(*n)),
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => out.push_str(&quote(s)),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Obj(items) if items.is_empty() => out.push_str("{}"),
            Json::Arr(items) => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    item.write(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push(']');
            }
            Json::Obj(items) => {
                out.push_str("{\n");
                for (i, (k, v)) in items.iter().enumerate() {
                    pad(out, indent + 2);
                    out.push_str(&quote(k));
                    out.push_str(": ");
                    v.write(out, indent + 2);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_use_the_largest_unit() {
        assert_eq!(prom_duration(Duration::from_secs(300)), "5m");
        assert_eq!(prom_duration(Duration::from_secs(90)), "90s");
        assert_eq!(prom_duration(Duration::from_secs(86_400 * 3)), "3d");
        assert_eq!(prom_duration(Duration::from_secs(7_200)), "2h");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "2s");
    }

    #[test]
    fn go_number_formatting() {
        assert_eq!(go_g(10.0, 4), "10");
        assert_eq!(go_g(4.75, 4), "4.75");
        assert_eq!(go_g(2.485, 4), "2.485");
        assert_eq!(go_g(12346.0, 4), "1.235e+04");
        assert_eq!(go_g(0.00001234, 4), "1.234e-05");
        assert_eq!(go_g(0.0001234, 4), "0.0001234");
        assert_eq!(humanize_percentage(0.1), "10%");
        assert_eq!(humanize_1024(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5Gi");
        assert_eq!(humanize_duration(2.485), "2.485s");
        assert_eq!(humanize_duration(0.25), "250ms");
        assert_eq!(humanize_duration(90.0), "1m 30s");
    }

    #[test]
    fn json_is_escaped_and_indented() {
        let v = obj! {"a" => "x\"y", "b" => vec![Json::from(1.5), Json::from(true)]};
        assert_eq!(
            v.pretty(),
            "{\n  \"a\": \"x\\\"y\",\n  \"b\": [\n    1.5,\n    true\n  ]\n}\n"
        );
    }
}
