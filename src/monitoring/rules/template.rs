//! Annotation templates: a `summary` or `description` written once as [`Piece`]s, rendered as a
//! Go template for the rule file and as the expected text for its unit test.

use crate::monitoring::text::{humanize_1024, humanize_duration, humanize_percentage};

/// How an annotation shows `$value`.
#[derive(Clone, Copy)]
pub(super) enum Fmt {
    Percent,
    Duration,
    Bytes,
    Fixed2,
    Int,
}

/// A piece of an annotation template.
pub(super) enum Piece {
    Text(String),
    Label(String),
    Value(Fmt),
}

/// An annotation: rendered as a Go template for the rule, and as text for the unit test.
pub(super) struct Tpl(pub(super) Vec<Piece>);

impl Tpl {
    /// The Go template Prometheus expands (`{{ $labels.job }}`, `{{ $value | ... }}`).
    pub(super) fn go(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Label(l) => format!("{{{{ $labels.{l} }}}}"),
                Piece::Value(Fmt::Percent) => "{{ $value | humanizePercentage }}".into(),
                Piece::Value(Fmt::Duration) => "{{ $value | humanizeDuration }}".into(),
                Piece::Value(Fmt::Bytes) => "{{ $value | humanize1024 }}B".into(),
                Piece::Value(Fmt::Fixed2) => "{{ printf \"%.2f\" $value }}".into(),
                Piece::Value(Fmt::Int) => "{{ printf \"%.0f\" $value }}".into(),
            })
            .collect()
    }

    /// The text Prometheus expands the template to for an alert with `labels` and `value`.
    pub(super) fn render(&self, labels: &[(String, String)], value: f64) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Label(l) => labels
                    .iter()
                    .find(|(k, _)| k == l)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                Piece::Value(Fmt::Percent) => humanize_percentage(value),
                Piece::Value(Fmt::Duration) => humanize_duration(value),
                Piece::Value(Fmt::Bytes) => format!("{}B", humanize_1024(value)),
                Piece::Value(Fmt::Fixed2) => format!("{value:.2}"),
                Piece::Value(Fmt::Int) => format!("{value:.0}"),
            })
            .collect()
    }
}

/// `tpl!["text", label("job"), Fmt::Percent, ...]`
macro_rules! tpl {
    ($($p:expr),* $(,)?) => {
        $crate::monitoring::rules::template::Tpl(vec![
            $($crate::monitoring::rules::template::Piece::from($p)),*
        ])
    };
}
pub(super) use tpl;

impl From<&str> for Piece {
    fn from(s: &str) -> Piece {
        Piece::Text(s.to_string())
    }
}
impl From<String> for Piece {
    fn from(s: String) -> Piece {
        Piece::Text(s)
    }
}
impl From<Fmt> for Piece {
    fn from(f: Fmt) -> Piece {
        Piece::Value(f)
    }
}

/// The value of label `l` of the alert.
pub(super) fn label(l: &str) -> Piece {
    Piece::Label(l.to_string())
}

/// A ratio as Prometheus' `humanizePercentage` shows it, for thresholds in annotation text.
pub(super) fn percent(v: f64) -> String {
    humanize_percentage(v)
}
