//! Property tests (issue 17): every parser and encoder that takes outside input.
//!
//! Each property drives the crate through its public API the way the input reaches it in
//! production: request headers over real HTTP on loopback through `obs.layer()`, a
//! downstream's `traceresponse` through the client layer and the reqwest middleware, `Accept`
//! through the `/metrics` service, environment variables through `ObsBuilder::from_vars`, log
//! values and label values through a handler's `tracing` calls and `Obs::counter`. Each result
//! is judged by the specification, written here as a small oracle of its own (never a call to
//! the crate's parsers): the W3C Trace Context grammar, RFC 9110 (field values, media ranges),
//! RFC 8259 JSON through `serde_json`, the Prometheus text format's escaping, and the rules the
//! README states (correlation IDs, the value cap, label cuts, series caps, redaction).
//!
//! Every test reuses one instance and one server for all its cases, and runs 64 to 256 cases,
//! so the whole file stays around a minute. Failures are not persisted to files; proptest
//! prints the minimal failing input.

use crate::common::{self, Capture};

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::get;
use bytes::Bytes;
use mercenary_obs::{CorrelationId, Error, Obs};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Runs `test` on `cases` inputs drawn from `strategy`, and fails with proptest's minimal
/// failing input. No regression file is written: a case worth keeping becomes a test.
fn property<S>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

/// A request head `GET path` with header lines as raw bytes: what any client can send.
fn head(path: &str, headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    }
    out
}

/// RFC 9110 §5.5: the bytes a field value may hold (VCHAR, obs-text, SP, HTAB). A request
/// carrying anything else is refused by the HTTP server before any layer sees it.
fn field_value_ok(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// A field value as its recipient sees it: without leading and trailing whitespace (RFC 9110
/// §5.5).
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Bytes a header line can carry on the wire (CR and LF would end it): mostly VCHAR, some
/// obs-text and HTAB, and rarely a control byte that the server must refuse.
fn line_byte() -> impl Strategy<Value = u8> + Clone {
    let controls: Vec<u8> = (0u8..0x20)
        .chain([0x7f])
        .filter(|b| !matches!(b, b'\r' | b'\n' | b'\t'))
        .collect();
    prop_oneof![
        16 => 0x20u8..=0x7e,
        2 => 0x80u8..=0xff,
        1 => Just(b'\t'),
        1 => prop::sample::select(controls),
    ]
}

/// Bytes a header value can hold once a server accepted it (no control bytes).
fn legal_byte() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![
        16 => 0x20u8..=0x7e,
        2 => 0x80u8..=0xff,
        1 => Just(b'\t'),
    ]
}

/// One small edit of a generated value: the "near-valid" inputs a grammar alone never makes.
#[derive(Clone, Debug)]
enum Edit {
    None,
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    UpperOne(Index),
    UpperAll,
    Pad(String, String),
}

impl Edit {
    fn strategy(byte: impl Strategy<Value = u8> + Clone + 'static) -> impl Strategy<Value = Edit> {
        prop_oneof![
            6 => Just(Edit::None),
            2 => (any::<Index>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
            1 => (any::<Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
            1 => any::<Index>().prop_map(Edit::Delete),
            1 => any::<Index>().prop_map(Edit::UpperOne),
            1 => Just(Edit::UpperAll),
            1 => ("[ \t]{0,2}", "[ \t]{0,2}").prop_map(|(a, b)| Edit::Pad(a, b)),
        ]
    }

    fn apply(&self, mut v: Vec<u8>) -> Vec<u8> {
        match self {
            Edit::None => {}
            Edit::Replace(i, b) if !v.is_empty() => {
                let i = i.index(v.len());
                v[i] = *b;
            }
            Edit::Insert(i, b) => v.insert(i.index(v.len() + 1), *b),
            Edit::Delete(i) if !v.is_empty() => {
                v.remove(i.index(v.len()));
            }
            Edit::UpperOne(i) if !v.is_empty() => {
                let i = i.index(v.len());
                v[i] = v[i].to_ascii_uppercase();
            }
            Edit::UpperAll => v.make_ascii_uppercase(),
            Edit::Pad(a, b) => v = [a.as_bytes(), &v, b.as_bytes()].concat(),
            _ => {}
        }
        v
    }
}

/// Every string value in a JSON document (not the keys).
fn string_values(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| string_values(v, out)),
        Value::Object(map) => map.values().for_each(|v| string_values(v, out)),
        _ => {}
    }
}

/// The captured log output: UTF-8, every line one JSON object (RFC 8259, by `serde_json`).
fn parse_lines(logs: &Capture) -> Result<Vec<(String, Value)>, TestCaseError> {
    let bytes = logs.0.lock().unwrap().clone();
    let text = String::from_utf8(bytes).map_err(|e| fail(format!("log output not UTF-8: {e}")))?;
    text.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .map(|v| (line.to_string(), v))
                .ok_or_else(|| fail(format!("a log line that is not a JSON object: {line:?}")))
        })
        .collect()
}

fn clear(logs: &Capture) {
    logs.0.lock().unwrap().clear();
}

/// Counts the outcomes a run went through, so a generator that stops reaching one fails.
#[derive(Default)]
struct Tally(std::cell::RefCell<std::collections::BTreeMap<&'static str, usize>>);

impl Tally {
    fn hit(&self, outcome: &'static str) {
        *self.0.borrow_mut().entry(outcome).or_default() += 1;
    }

    fn assert_reached(&self, outcomes: &[&str]) {
        let seen = self.0.borrow();
        for outcome in outcomes {
            assert!(
                seen.contains_key(outcome),
                "no case reached {outcome}: {seen:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Correlation IDs
// ---------------------------------------------------------------------------------------------

/// The characters of a correlation ID (README, "What every request gets").
const ID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@/+=-";

/// The README's rule: an incoming ID is kept when it is at most 128 bytes of
/// `[A-Za-z0-9._:@/+=-]` (and not empty: `CorrelationId`'s docs say 1 to 128 bytes).
fn readme_valid_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| ID_CHARS.contains(b))
}

/// A lower-case hyphenated UUID of version 4, variant 10 (RFC 9562).
fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    let dashes = [8, 13, 18, 23];
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if dashes.contains(&i) {
                *c == b'-'
            } else {
                matches!(c, b'0'..=b'9' | b'a'..=b'f')
            }
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

fn id_chars(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ID_CHARS), len)
}

/// A correlation-ID header value: valid ones, ones around the length limit, valid ones with a
/// foreign byte, arbitrary bytes (non-UTF-8 and control bytes included), very long ones, and
/// padded ones.
fn id_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => id_chars(1..=128),
        2 => id_chars(125..=132),
        3 => (id_chars(1..=64), line_byte(), any::<Index>()).prop_map(|(mut v, b, at)| {
            v.insert(at.index(v.len() + 1), b);
            v
        }),
        2 => prop::collection::vec(line_byte(), 0..48),
        1 => (prop::sample::select(ID_CHARS), 129usize..16_000).prop_map(|(c, n)| vec![c; n]),
        1 => (id_chars(1..=16), "[ \t]{0,3}", "[ \t]{0,3}")
            .prop_map(|(v, a, b)| [a.as_bytes(), &v, b.as_bytes()].concat()),
    ]
}

/// Strings of the access line that a hostile value may coincide with without having leaked.
const ACCESS_LINE_TEXT: &[&str] = &[
    "request completed",
    "mercenary_obs::access",
    "INFO",
    "GET",
    "/id",
    "prop",
];

#[test]
fn correlation_ids_are_kept_iff_valid_and_never_logged_raw() {
    let rt = runtime();
    let logs = Capture::default();
    let obs = Obs::builder()
        .service_name("prop")
        .log_writer(logs.clone())
        .process_metrics(false)
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/id",
            get(|id: CorrelationId| async move { id.to_string() }),
        )
        .layer(obs.layer());
    let addr = rt.block_on(common::serve(app));
    let strategy = (
        prop::option::weighted(0.85, id_header().prop_map(Bytes::from)),
        prop::option::weighted(0.4, id_header().prop_map(Bytes::from)),
    );
    let tally = Tally::default();
    property(256, strategy, |(primary, alternate)| {
        clear(&logs);
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(v) = &primary {
            headers.push(("x-request-id", v));
        }
        if let Some(v) = &alternate {
            headers.push(("X-Correlation-ID", v));
        }
        let resp = rt.block_on(common::raw(addr, &head("/id", &headers)));
        if !headers.iter().all(|(_, v)| field_value_ok(v)) {
            // Not a field value (RFC 9110 §5.5): the server refuses it, no layer sees it.
            prop_assert_eq!(resp.status, 400);
            prop_assert!(resp.header("x-request-id").is_none());
            tally.hit("refused");
            return Ok(());
        }
        prop_assert_eq!(resp.status, 200);
        let echoed: Vec<&Vec<u8>> = resp
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
            .map(|(_, v)| v)
            .collect();
        prop_assert_eq!(echoed.len(), 1, "one x-request-id in {:?}", resp.headers);
        let echoed = echoed[0].clone();
        // The configured header first, then x-correlation-id; the first valid one is kept.
        let kept = headers
            .iter()
            .map(|(_, v)| trim_ows(v))
            .find(|v| readme_valid_id(v));
        tally.hit(if kept.is_some() { "kept" } else { "replaced" });
        match kept {
            Some(id) => prop_assert_eq!(&echoed[..], id),
            None => prop_assert!(
                std::str::from_utf8(&echoed).is_ok_and(is_uuid_v4),
                "a fresh UUID v4, got {:?}",
                String::from_utf8_lossy(&echoed)
            ),
        }
        let echoed = String::from_utf8(echoed).map_err(|e| fail(e.to_string()))?;
        prop_assert_eq!(String::from_utf8_lossy(&resp.body), echoed.as_str());

        prop_assert!(obs.flush());
        let lines = parse_lines(&logs)?;
        let access: Vec<&Value> = lines
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v["target"] == "mercenary_obs::access")
            .collect();
        prop_assert_eq!(access.len(), 1, "one access line in {:?}", lines);
        let invalid: Vec<String> = headers
            .iter()
            .map(|(_, v)| trim_ows(v))
            .filter(|v| !readme_valid_id(v) && v.len() >= 8)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .filter(|v| !ACCESS_LINE_TEXT.iter().any(|t| t.contains(v.as_str())))
            .collect();
        for (line, value) in &lines {
            prop_assert!(line.len() <= 4096, "a bounded line: {} bytes", line.len());
            prop_assert_eq!(&value["correlation_id"], &Value::from(echoed.as_str()));
            let mut strings = Vec::new();
            string_values(value, &mut strings);
            for raw in &invalid {
                prop_assert!(
                    !strings.iter().any(|s| s.contains(raw.as_str())),
                    "the invalid ID {:?} was logged: {}",
                    raw,
                    line
                );
            }
        }
        Ok(())
    });
    tally.assert_reached(&["kept", "replaced", "refused"]);
}
