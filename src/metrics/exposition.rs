//! Prometheus text exposition, its OpenMetrics counterpart, and the `/metrics` service that
//! negotiates between them.

use crate::core::exemplar::Exemplars;
use crate::core::names::CONTENT_TYPE;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};

use super::openmetrics::{OPENMETRICS_CONTENT_TYPE, render_openmetrics};

/// Renders every metric of `registry` in the Prometheus text format.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail for I/O reasons; a family the encoder rejects (only
    // possible with hand-made collectors) is skipped rather than failing the whole scrape.
    for family in registry.gather() {
        if family.get_field_type() == MetricType::UNTYPED {
            // The `prometheus` crate's encoder panics on an untyped family
            // (`unimplemented!`); only hand-made collectors make one.
            untyped_into(&mut out, &family);
            continue;
        }
        let mut one = Vec::new();
        if TextEncoder::new()
            .encode(std::slice::from_ref(&family), &mut one)
            .is_ok()
        {
            out.extend_from_slice(&one);
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// An untyped family in the text format 0.0.4, written as the crate's encoder writes the other
/// types (same escaping, same value and timestamp rendering, nothing for an empty family).
fn untyped_into(out: &mut Vec<u8>, family: &MetricFamily) {
    let name = family.name();
    if family.get_metric().is_empty() || name.is_empty() {
        return;
    }
    let escape = |s: &str, quote: bool| {
        let mut e = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '\\' => e.push_str("\\\\"),
                '\n' => e.push_str("\\n"),
                '"' if quote => e.push_str("\\\""),
                c => e.push(c),
            }
        }
        e
    };
    let mut text = String::new();
    if !family.help().is_empty() {
        text.push_str(&format!("# HELP {name} {}\n", escape(family.help(), false)));
    }
    text.push_str(&format!("# TYPE {name} untyped\n"));
    for m in family.get_metric() {
        text.push_str(name);
        let labels: Vec<String> = m
            .get_label()
            .iter()
            .map(|l| format!("{}=\"{}\"", l.name(), escape(l.value(), true)))
            .collect();
        if !labels.is_empty() {
            text.push_str(&format!("{{{}}}", labels.join(",")));
        }
        #[allow(deprecated)] // The only way to the value of an untyped family.
        let value = m.get_untyped().get_value();
        text.push_str(&format!(" {value}"));
        if m.timestamp_ms() != 0 {
            text.push_str(&format!(" {}", m.timestamp_ms()));
        }
        text.push('\n');
    }
    out.extend_from_slice(text.as_bytes());
}

/// Renders every metric of `registry` in the OpenMetrics 1.0 text format, with the exemplars
/// of `exemplars`.
pub(crate) fn render_openmetrics_registry(registry: &Registry, exemplars: &Exemplars) -> String {
    render_openmetrics(&registry.gather(), exemplars)
}

/// The two expositions `/metrics` can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// The Prometheus text format 0.0.4 ([`render`]).
    Classic,
    /// OpenMetrics 1.0 text ([`render_openmetrics_registry`]).
    OpenMetrics,
}

/// The format to answer a request with `headers` with: OpenMetrics when its `Accept` prefers
/// it, else the classic format.
///
/// `Accept` is read as RFC 9110 §12.5.1 says: media ranges with parameters and a `q` weight
/// (a missing `q` is 1, `q=0` means "not acceptable"); several `Accept` fields are one list.
/// Each format takes the weight of the most specific range that matches it (a range with a
/// `version` over one without, over `type/*`, over `*/*`; the higher `q` among equally
/// specific ones, which covers the two OpenMetrics versions Prometheus lists). The format with
/// the higher weight wins; on a tie, the one whose range comes first in the header; when one
/// range matches both (`*/*`), the classic format, which is what a scraper asking for
/// anything has always had. OpenMetrics matches `application/openmetrics-text` with
/// `version=1.0.0`, `version=0.0.1` (what Prometheus called it first) or no version; the
/// classic format matches `text/plain` with `version=0.0.4` or none. Other parameters
/// (`charset`, `escaping`) do not change the match: the names written are legacy names,
/// valid under every escaping scheme. No `Accept`, one that does not parse, or one that
/// accepts neither format: the classic format (rather than a 406, which would fail scrapes
/// that worked before negotiation existed).
pub(crate) fn negotiate(headers: &HeaderMap) -> Format {
    let mut accept = String::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return Format::Classic;
        };
        if !accept.is_empty() {
            accept.push(',');
        }
        accept.push_str(value);
    }
    negotiate_accept(&accept)
}

/// [`negotiate`] on the value of the `Accept` field(s).
pub(crate) fn negotiate_accept(accept: &str) -> Format {
    let Some(ranges) = parse_accept(accept) else {
        return Format::Classic;
    };
    let open = weight(&ranges, Format::OpenMetrics);
    let classic = weight(&ranges, Format::Classic);
    match (open, classic) {
        (Some(_), None) => Format::OpenMetrics,
        (Some((q_open, at_open)), Some((q_classic, at_classic)))
            if q_open > q_classic || (q_open == q_classic && at_open < at_classic) =>
        {
            Format::OpenMetrics
        }
        _ => Format::Classic,
    }
}

/// One media range of an `Accept` field.
#[derive(Debug, PartialEq, Eq)]
struct MediaRange {
    /// Lowercase.
    main: String,
    /// Lowercase.
    sub: String,
    version: Option<String>,
    /// In thousandths (`q=0.5` is 500).
    q: u16,
    /// Its index in the field.
    at: usize,
}

/// The weight (thousandths) and position of the range that decides `format`, unless none
/// matches or that range excludes it (`q=0`).
fn weight(ranges: &[MediaRange], format: Format) -> Option<(u16, usize)> {
    let (main, sub, versions): (&str, &str, &[&str]) = match format {
        Format::OpenMetrics => ("application", "openmetrics-text", &["1.0.0", "0.0.1"]),
        Format::Classic => ("text", "plain", &["0.0.4"]),
    };
    let specificity = |r: &MediaRange| -> Option<u8> {
        match (r.main.as_str(), r.sub.as_str()) {
            ("*", "*") => Some(0),
            (m, "*") if m == main => Some(1),
            (m, s) if m == main && s == sub => match &r.version {
                None => Some(2),
                Some(v) if versions.contains(&v.as_str()) => Some(3),
                Some(_) => None,
            },
            _ => None,
        }
    };
    let best = ranges
        .iter()
        .filter_map(|r| Some((specificity(r)?, r)))
        // Most specific first, then the highest q, then the first listed.
        .min_by_key(|(s, r)| (std::cmp::Reverse(*s), std::cmp::Reverse(r.q), r.at))?;
    (best.1.q > 0).then_some((best.1.q, best.1.at))
}

/// The media ranges of an `Accept` value; `None` when any element does not parse.
fn parse_accept(accept: &str) -> Option<Vec<MediaRange>> {
    let mut ranges = Vec::new();
    for element in split_unquoted(accept, ',')? {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue; // RFC 9110 §5.6.1: empty list elements are allowed and ignored.
        }
        let mut parts = split_unquoted(element, ';')?.into_iter();
        let media = parts.next()?.trim_matches([' ', '\t']);
        let (main, sub) = media.split_once('/')?;
        if !is_token(main) || !is_token(sub) || (main == "*" && sub != "*") {
            return None;
        }
        let mut range = MediaRange {
            main: main.to_ascii_lowercase(),
            sub: sub.to_ascii_lowercase(),
            version: None,
            q: 1000,
            at: ranges.len(),
        };
        let mut weighted = false;
        for parameter in parts {
            let parameter = parameter.trim_matches([' ', '\t']);
            if parameter.is_empty() {
                continue;
            }
            let (name, value) = parameter.split_once('=')?;
            if !is_token(name) {
                return None;
            }
            let value = unquote(value)?;
            if name.eq_ignore_ascii_case("q") {
                range.q = qvalue(&value)?;
                weighted = true;
            } else if name.eq_ignore_ascii_case("version") && !weighted {
                // Parameters after the weight are extensions (RFC 7231's accept-ext), not the
                // media type's.
                range.version = Some(value);
            }
        }
        ranges.push(range);
    }
    Some(ranges)
}

/// `s` split at each `separator` outside a quoted string; `None` on an unterminated quote.
fn split_unquoted(s: &str, separator: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    if quoted {
        return None;
    }
    parts.push(&s[start..]);
    Some(parts)
}

/// A parameter value: a token, or a quoted string (RFC 9110 §5.6.4) without its quotes and
/// escapes.
fn unquote(value: &str) -> Option<String> {
    if is_token(value) {
        return Some(value.to_owned());
    }
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// RFC 9110 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A tower `Service` answering `GET /metrics` (and `HEAD`) with the exposition of one instance.
///
/// The exposition is OpenMetrics 1.0 (with exemplars) when the request's `Accept` prefers it,
/// as Prometheus's does, else the Prometheus text format 0.0.4; the response says `Vary:
/// Accept`. Any other path answers 404 and any other method 405, so it can be mounted as a
/// whole server or routed to. Obtain it from [`crate::metrics_service`] or
/// [`crate::Obs::metrics_service`].
#[derive(Clone)]
pub struct MetricsService {
    registry: Registry,
    exemplars: Arc<Exemplars>,
}

impl MetricsService {
    /// The service answering with the exposition of `registry` (and no exemplars).
    pub(crate) fn new(registry: Registry) -> Self {
        Self {
            registry,
            exemplars: Arc::default(),
        }
    }

    /// The same service, showing the exemplars of `exemplars` in OpenMetrics answers.
    #[allow(dead_code)] // Called by the instance once exemplars are recorded.
    pub(crate) fn with_exemplars(self, exemplars: Arc<Exemplars>) -> Self {
        Self { exemplars, ..self }
    }
}

impl std::fmt::Debug for MetricsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<B> tower::Service<Request<B>> for MetricsService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let response = if req.uri().path() != "/metrics" {
            plain(StatusCode::NOT_FOUND, "not found\n")
        } else if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            r
        } else {
            let (body, content_type) = match negotiate(req.headers()) {
                Format::OpenMetrics => (
                    render_openmetrics_registry(&self.registry, &self.exemplars),
                    OPENMETRICS_CONTENT_TYPE,
                ),
                Format::Classic => (render(&self.registry), CONTENT_TYPE),
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            r.headers_mut()
                .insert(header::VARY, http::HeaderValue::from_static("Accept"));
            r
        };
        ready(Ok(response))
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tower::Service;

    const PROMETHEUS_2_42: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    #[test]
    fn negotiation_table() {
        use Format::{Classic, OpenMetrics};
        for (accept, want) in [
            (PROMETHEUS_2_42, OpenMetrics),
            (PROMETHEUS_3, OpenMetrics),
            // Prometheus 3.x sending `escaping` on every range.
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,*/*;q=0.2",
                OpenMetrics,
            ),
            // A scraper configured to prefer the text formats.
            (
                "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.6,text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.3",
                Classic,
            ),
            ("", Classic),
            ("*/*", Classic),
            ("text/*", Classic),
            ("text/plain", Classic),
            ("text/plain; version=0.0.4; charset=utf-8", Classic),
            ("application/json", Classic),
            ("application/openmetrics-text", OpenMetrics),
            (
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                OpenMetrics,
            ),
            ("application/openmetrics-text;version=0.0.1", OpenMetrics),
            (
                "application/openmetrics-text;version=\"1.0.0\"",
                OpenMetrics,
            ),
            (
                "APPLICATION/OpenMetrics-Text;Version=1.0.0;Q=1.000",
                OpenMetrics,
            ),
            ("application/*", OpenMetrics),
            (" , application/openmetrics-text ,, ", OpenMetrics),
            // An OpenMetrics version this renderer does not write.
            ("application/openmetrics-text;version=2.0.0", Classic),
            (
                "application/openmetrics-text;version=2.0.0,*/*;q=0.1",
                Classic,
            ),
            // q-values: the highest wins, a tie goes to the first listed.
            (
                "text/plain;q=0.5,application/openmetrics-text;q=0.6",
                OpenMetrics,
            ),
            (
                "text/plain;q=0.6,application/openmetrics-text;q=0.5",
                Classic,
            ),
            (
                "application/openmetrics-text;q=0.5,text/plain;q=0.5",
                OpenMetrics,
            ),
            (
                "text/plain;q=0.5,application/openmetrics-text;q=0.5",
                Classic,
            ),
            (
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5",
                Classic,
            ),
            ("*/*;q=0.9,application/openmetrics-text;q=0.1", Classic),
            (
                "text/plain;q=0.001,application/openmetrics-text;q=0.002",
                OpenMetrics,
            ),
            // q=0 excludes, and the more specific range decides.
            ("application/openmetrics-text;q=0", Classic),
            ("application/openmetrics-text;q=0,*/*", Classic),
            (
                "application/*;q=0.9,application/openmetrics-text;q=0",
                Classic,
            ),
            ("application/openmetrics-text;q=0,application/*", Classic),
            (
                "text/plain;q=0,*/*;q=0.1,application/openmetrics-text;q=0.05",
                OpenMetrics,
            ),
            ("text/plain;q=0,application/openmetrics-text;q=0", Classic),
            // Not parseable: the classic format, whatever else the field says.
            ("garbage", Classic),
            ("application/openmetrics-text, garbage", Classic),
            ("application/openmetrics-text;q=2", Classic),
            ("application/openmetrics-text;q=1.5", Classic),
            ("application/openmetrics-text;q=0.5.5", Classic),
            ("application/openmetrics-text;q=0.1234", Classic),
            ("application/openmetrics-text;q=abc", Classic),
            ("application/openmetrics-text;q=", Classic),
            ("application/openmetrics-text;version", Classic),
            ("application/openmetrics-text;version=\"1.0.0", Classic),
            ("application/openmetrics-text; version = 1.0.0", Classic),
            ("*/openmetrics-text", Classic),
            ("/openmetrics-text", Classic),
            ("application/", Classic),
            ("application/openmetrics text", Classic),
        ] {
            assert_eq!(negotiate_accept(accept), want, "Accept: {accept}");
        }
    }

    #[test]
    fn quoted_separators_and_escapes_stay_inside_their_parameter() {
        assert_eq!(
            negotiate_accept("text/plain;x=\"a,b;c\\\"\";q=0.1,application/openmetrics-text;q=0.2"),
            Format::OpenMetrics
        );
        assert_eq!(qvalue("0.5"), Some(500));
        assert_eq!(qvalue("0.05"), Some(50));
        assert_eq!(qvalue("1."), Some(1000));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("1.001"), None);
    }

    #[test]
    fn several_accept_fields_are_one_list() {
        let mut headers = HeaderMap::new();
        headers.append(header::ACCEPT, "text/plain;q=0.1".parse().unwrap());
        headers.append(
            header::ACCEPT,
            "application/openmetrics-text".parse().unwrap(),
        );
        assert_eq!(negotiate(&headers), Format::OpenMetrics);
        assert_eq!(negotiate(&HeaderMap::new()), Format::Classic);
        let mut opaque = HeaderMap::new();
        opaque.append(
            header::ACCEPT,
            http::HeaderValue::from_bytes(b"application/openmetrics-text;x=\xff").unwrap(),
        );
        assert_eq!(negotiate(&opaque), Format::Classic);
    }

    fn registry() -> Registry {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("jobs_total", "Jobs.").unwrap();
        c.inc();
        registry.register(Box::new(c)).unwrap();
        registry
    }

    async fn answer(
        service: &mut MetricsService,
        method: Method,
        accept: Option<&str>,
    ) -> (Response<Full<Bytes>>, String) {
        let mut req = Request::builder().method(method).uri("/metrics");
        if let Some(accept) = accept {
            req = req.header(header::ACCEPT, accept);
        }
        let response = service.call(req.body(()).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (Response::from_parts(parts, Full::new(bytes)), text)
    }

    fn header_of(r: &Response<Full<Bytes>>, name: header::HeaderName) -> &str {
        r.headers().get(name).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn metrics_answers_in_the_negotiated_format_and_varies_on_accept() {
        let registry = registry();
        let mut service = MetricsService::new(registry.clone());
        for method in [Method::GET, Method::HEAD] {
            for accept in [Some(PROMETHEUS_2_42), Some(PROMETHEUS_3)] {
                let (r, body) = answer(&mut service, method.clone(), accept).await;
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(
                    header_of(&r, header::CONTENT_TYPE),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8"
                );
                assert_eq!(header_of(&r, header::VARY), "Accept");
                assert_eq!(
                    body,
                    "# TYPE jobs counter\n# HELP jobs Jobs.\njobs_total 1.0\n# EOF\n"
                );
            }
            for accept in [None, Some("*/*"), Some("text/plain"), Some("nonsense")] {
                let (r, body) = answer(&mut service, method.clone(), accept).await;
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(header_of(&r, header::CONTENT_TYPE), CONTENT_TYPE);
                assert_eq!(header_of(&r, header::VARY), "Accept");
                assert_eq!(body, render(&registry), "{accept:?}");
                assert!(body.contains("# TYPE jobs_total counter\njobs_total 1\n"));
            }
        }
    }

    #[tokio::test]
    async fn the_service_shows_the_exemplars_it_is_given() {
        let exemplars = Arc::new(Exemplars::default());
        let table = exemplars.register("jobs_total", &[], 16).unwrap();
        exemplars.publish(
            1,
            2.0,
            &table.pending(crate::core::exemplar::series_key([]), 1.0, 3),
        );
        let mut plain = MetricsService::new(registry());
        let mut with = plain.clone().with_exemplars(exemplars.clone());
        let (_, body) = answer(&mut with, Method::GET, Some(PROMETHEUS_2_42)).await;
        assert!(
            body.contains("jobs_total 1.0 # {trace_id=\"00000000000000000000000000000001\",span_id=\"0000000000000003\"} 1.0 2\n"),
            "{body}"
        );
        assert_eq!(
            render_openmetrics_registry(&registry(), &exemplars),
            body,
            "the service answers what the registry renderer renders"
        );
        let (_, body) = answer(&mut plain, Method::GET, Some(PROMETHEUS_2_42)).await;
        assert!(!body.contains(" # {"), "{body}");
    }

    /// An untyped family from a hand-made collector.
    struct Legacy;

    impl prometheus::core::Collector for Legacy {
        fn desc(&self) -> Vec<&prometheus::core::Desc> {
            Vec::new()
        }

        #[allow(deprecated)] // The proto's untyped setters.
        fn collect(&self) -> Vec<MetricFamily> {
            let mut f = MetricFamily::default();
            f.set_name("legacy_value".into());
            f.set_help("Old \\ \"style\"\nvalue.".into());
            f.set_field_type(MetricType::UNTYPED);
            let mut m = prometheus::proto::Metric::default();
            let mut l = prometheus::proto::LabelPair::default();
            l.set_name("k".into());
            l.set_value("a\"b\\c\nd".into());
            m.set_label(vec![l]);
            let mut u = prometheus::proto::Untyped::default();
            u.set_value(2.5);
            m.set_untyped(u);
            m.set_timestamp_ms(1_000);
            f.set_metric(vec![m]);
            vec![f]
        }
    }

    #[test]
    fn an_untyped_family_renders_in_both_formats_instead_of_panicking() {
        let registry = registry();
        registry.register(Box::new(Legacy)).unwrap();
        let classic = render(&registry);
        assert!(
            classic.ends_with(
                "# HELP legacy_value Old \\\\ \"style\"\\nvalue.\n# TYPE legacy_value untyped\nlegacy_value{k=\"a\\\"b\\\\c\\nd\"} 2.5 1000\n"
            ),
            "{classic}"
        );
        let open = render_openmetrics_registry(&registry, &Exemplars::default());
        assert!(
            open.contains(
                "# TYPE legacy_value unknown\n# HELP legacy_value Old \\\\ \\\"style\\\"\\nvalue.\nlegacy_value{k=\"a\\\"b\\\\c\\nd\"} 2.5 1.000\n"
            ),
            "{open}"
        );
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_not_negotiated() {
        let mut service = MetricsService::new(registry());
        let req = Request::builder()
            .uri("/other")
            .header(header::ACCEPT, PROMETHEUS_2_42)
            .body(())
            .unwrap();
        let r = service.call(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/metrics")
            .body(())
            .unwrap();
        let r = service.call(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
