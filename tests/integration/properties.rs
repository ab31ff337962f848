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
//! Every test reuses one instance and one server for all its cases and runs 64 to 256 cases:
//! the whole file takes a few seconds under nextest on a 2-core machine. Failures are not
//! persisted to files; a failure prints the minimal failing input and the seed that replays
//! the run. Bugs the properties found are reproduced, reduced, by ignored tests at the end.

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
/// failing input and the seed that replays the run (`PROPTEST_RNG_SEED=<seed>`). No
/// regression file is written: a case worth keeping becomes a test of its own.
fn property<S>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    use std::hash::{BuildHasher, Hasher};
    // One seed per process (PROPTEST_RNG_SEED, else random); each call draws from a stream of
    // its own, numbered in its test's thread so that a replay meets the same numbers under
    // nextest (a process per test) and `cargo test` (a thread per test) alike.
    thread_local!(static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) });
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let seed = match config.rng_seed {
        proptest::test_runner::RngSeed::Fixed(seed) => seed,
        proptest::test_runner::RngSeed::Random => {
            static RANDOM: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
            *RANDOM.get_or_init(|| {
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            })
        }
    };
    let call = CALLS.with(|calls| calls.replace(calls.get() + 1));
    let mut runner = TestRunner::new(Config {
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed.wrapping_add(call)),
        ..config
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}\nreplay this run with PROPTEST_RNG_SEED={seed}");
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

/// Forgets what was logged so far, once every queued line is written (a case that failed
/// early leaves its lines behind).
fn clear(obs: &Obs, logs: &Capture) {
    obs.flush();
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

/// A byte outside the ID alphabet: mostly separators and specials an ID might be confused
/// with, else any byte a header line can carry.
fn foreign_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(b" \t,;\"'%\\~!#*()<>[]{}?&|^`$".as_slice()),
        1 => line_byte(),
    ]
}

/// A correlation-ID header value: valid ones, ones around the length limit, valid ones with a
/// foreign byte, arbitrary bytes (non-UTF-8 and control bytes included), very long ones, and
/// padded ones.
fn id_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => id_chars(1..=128),
        2 => id_chars(125..=132),
        3 => (id_chars(1..=64), foreign_byte(), any::<Index>()).prop_map(|(mut v, b, at)| {
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
        clear(&obs, &logs);
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

// ---------------------------------------------------------------------------------------------
// 2. traceparent and tracestate
// ---------------------------------------------------------------------------------------------

fn hex_lc(n: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(b"0123456789abcdef".as_slice()), n)
        .prop_map(|v| String::from_utf8(v).unwrap())
}

/// W3C Trace Context §3.2 (`traceparent`), with §3.2.4's rules for a version above `00`
/// (parse what version 00 defines, which must be followed by the end or a dash): the trace ID
/// and the sampled flag, or `None` when the value must be ignored and the trace restarted.
fn w3c_traceparent(v: &[u8]) -> Option<(String, bool)> {
    let lc_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if v.len() < 55 {
        return None;
    }
    let (version, trace_id, parent_id, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let well_formed = v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && lc_hex(version)
        && lc_hex(trace_id)
        && lc_hex(parent_id)
        && lc_hex(flags);
    if !well_formed || version == b"ff" {
        return None;
    }
    if trace_id.iter().all(|&b| b == b'0') || parent_id.iter().all(|&b| b == b'0') {
        return None;
    }
    let end_ok = if version == b"00" {
        v.len() == 55
    } else {
        v.len() == 55 || v[55] == b'-'
    };
    if !end_ok {
        return None;
    }
    let flags = u8::from_str_radix(std::str::from_utf8(flags).ok()?, 16).ok()?;
    Some((String::from_utf8(trace_id.to_vec()).ok()?, flags & 1 == 1))
}

/// A `traceparent` (or `traceresponse`) made from the W3C grammar: versions 00, ff, cc or any,
/// IDs sometimes all zero, any flags, sometimes a suffix; then sometimes one edit. Or bytes.
fn traceparent(byte: impl Strategy<Value = u8> + Clone + 'static) -> BoxedStrategy<Vec<u8>> {
    let version = prop_oneof![
        5 => Just("00".to_string()),
        1 => Just("ff".to_string()),
        1 => Just("cc".to_string()),
        1 => hex_lc(2),
    ];
    let trace_id = prop_oneof![8 => hex_lc(32), 1 => Just("0".repeat(32))];
    let parent_id = prop_oneof![8 => hex_lc(16), 1 => Just("0".repeat(16))];
    let suffix = prop_oneof![
        6 => Just(String::new()),
        1 => "-[ -~]{0,12}",
        1 => "[.,;_ ][ -~]{0,12}",
    ];
    let grammar = (version, trace_id, parent_id, hex_lc(2), suffix)
        .prop_map(|(v, t, p, f, s)| format!("{v}-{t}-{p}-{f}{s}").into_bytes());
    prop_oneof![
        8 => (grammar, Edit::strategy(byte.clone())).prop_map(|(v, e)| e.apply(v)),
        1 => prop::collection::vec(byte, 0..72),
    ]
    .boxed()
}

fn valid_traceparent() -> impl Strategy<Value = Vec<u8>> {
    (hex_lc(32), hex_lc(16), hex_lc(2))
        .prop_filter("non-zero IDs", |(t, p, _)| {
            t.bytes().any(|b| b != b'0') && p.bytes().any(|b| b != b'0')
        })
        .prop_map(|(t, p, f)| format!("00-{t}-{p}-{f}").into_bytes())
}

/// §3.3.1.3.1 `key = simple-key / multi-tenant-key` (Trace Context Level 1, the Recommendation).
fn w3c_key(key: &str) -> bool {
    fn part(s: &[u8], first: fn(&u8) -> bool, max: usize) -> bool {
        let keychar = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
        !s.is_empty() && s.len() <= max && first(&s[0]) && s[1..].iter().all(keychar)
    }
    match key.split_once('@') {
        None => part(key.as_bytes(), u8::is_ascii_lowercase, 256),
        Some((tenant, system)) => {
            part(
                tenant.as_bytes(),
                |b| b.is_ascii_lowercase() || b.is_ascii_digit(),
                241,
            ) && part(system.as_bytes(), u8::is_ascii_lowercase, 14)
        }
    }
}

/// §3.3.1.3.2 `value = 0*255(chr) nblk-chr`.
fn w3c_value(value: &str) -> bool {
    let nblk = |b: u8| matches!(b, 0x21..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    let b = value.as_bytes();
    (1..=256).contains(&b.len()) && b.iter().all(|&c| c == b' ' || nblk(c)) && nblk(b[b.len() - 1])
}

/// The list members of a `tracestate` value, split and trimmed as §3.3.1 says (no checks).
fn tracestate_members(combined: &str) -> Vec<(String, String)> {
    combined
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .map(|m| match m.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (m.to_string(), String::new()),
        })
        .collect()
}

/// The oracle for forwarding `tracestate` field lines: their members when the combined value
/// (RFC 9110 §5.3: the lines joined by commas) is at most 512 bytes (the bound DECISIONS.md
/// documents: longer ones are dropped whole) and a §3.3.1 `list` of 1 to 32 members with
/// unique keys; `None` when it must not be forwarded.
fn w3c_tracestate(lines: &[Bytes]) -> Option<Vec<(String, String)>> {
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| std::str::from_utf8(trim_ows(l)).ok())
        .collect::<Option<_>>()?;
    let combined = lines.join(",");
    if lines.is_empty() || combined.len() > 512 {
        return None;
    }
    let members = tracestate_members(&combined);
    let mut keys = std::collections::HashSet::new();
    for (k, v) in &members {
        if !w3c_key(k) || !w3c_value(v) || !keys.insert(k) {
            return None;
        }
    }
    // A member without `=` is not a `key "=" value`.
    let all_have_eq = combined
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .all(|m| m.is_empty() || m.contains('='));
    (all_have_eq && (1..=32).contains(&members.len())).then_some(members)
}

fn keychars(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(b"abcdefghijklmnopqrstuvwxyz0123456789_-*/".as_slice()),
        len,
    )
    .prop_map(|v| String::from_utf8(v).unwrap())
}

/// A `tracestate` key from the grammar, some at the length limits (a simple key of 256, a
/// tenant of 241, a system of 14).
fn tracestate_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => ("[a-z]", keychars(0..=12)).prop_map(|(a, b)| a + &b),
        1 => ("[a-z]", keychars(255)).prop_map(|(a, b)| a + &b),
        2 => ("[a-z0-9]", keychars(0..=8), "[a-z]", keychars(0..=13))
            .prop_map(|(a, b, c, d)| format!("{a}{b}@{c}{d}")),
        1 => ("[a-z0-9]", keychars(240), "[a-z]", keychars(13))
            .prop_map(|(a, b, c, d)| format!("{a}{b}@{c}{d}")),
    ]
}

/// A `tracestate` value from the grammar (`0*255(chr) nblk-chr`), some of 256 characters.
fn tracestate_value() -> impl Strategy<Value = String> {
    // chr = %x20 / nblk-chr; nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    const NBLK: &str = "[\\x21-\\x2b\\x2d-\\x3c\\x3e-\\x7e]";
    prop_oneof![
        6 => ("[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{0,15}", NBLK).prop_map(|(a, b)| a + &b),
        1 => ("[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{255}", NBLK).prop_map(|(a, b)| a + &b),
    ]
}

/// One way to take a `tracestate` list out of the grammar (or not).
#[derive(Clone, Debug)]
enum ListEdit {
    None,
    /// Give a member the key of another.
    DuplicateKey(Index, Index),
    /// Upper-case a key.
    UpperKey(Index),
    /// Make a key one character too long (257, or a system of 15).
    LongerKey(Index),
    /// Make a value one character too long (257).
    LongerValue(Index),
    /// Put a character outside `chr` (or `,` / `=`) into a value.
    BadValueChar(Index, Index, char),
    /// Drop a member's `=`.
    NoEquals(Index),
    /// Replace a member with arbitrary printable text.
    Garbage(Index, String),
    /// Add empty and whitespace-only members (allowed).
    Empties(Index, String),
}

fn list_edit() -> impl Strategy<Value = ListEdit> {
    let i = any::<Index>;
    prop_oneof![
        8 => Just(ListEdit::None),
        2 => (i(), i()).prop_map(|(a, b)| ListEdit::DuplicateKey(a, b)),
        1 => i().prop_map(ListEdit::UpperKey),
        1 => i().prop_map(ListEdit::LongerKey),
        1 => i().prop_map(ListEdit::LongerValue),
        1 => (i(), i(), prop::sample::select(vec![',', '=', '\t', 'é', '\u{7f}', '\u{1}']))
            .prop_map(|(a, b, c)| ListEdit::BadValueChar(a, b, c)),
        1 => i().prop_map(ListEdit::NoEquals),
        1 => (i(), "[ -~]{1,10}").prop_map(|(a, g)| ListEdit::Garbage(a, g)),
        2 => (i(), "[ \t]{0,2}").prop_map(|(a, w)| ListEdit::Empties(a, w)),
    ]
}

impl ListEdit {
    fn apply(&self, mut members: Vec<String>) -> Vec<String> {
        let n = members.len();
        let split = |m: &str| {
            m.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        match self {
            ListEdit::None => {}
            ListEdit::DuplicateKey(a, b) => {
                let (from, to) = (a.index(n), b.index(n));
                if let (Some((key, _)), Some((_, value))) =
                    (split(&members[from]), split(&members[to]))
                {
                    members[to] = format!("{key}={value}");
                }
            }
            ListEdit::UpperKey(a) => {
                let i = a.index(n);
                if let Some((k, v)) = split(&members[i]) {
                    members[i] = format!("{}={v}", k.to_ascii_uppercase());
                }
            }
            ListEdit::LongerKey(a) => {
                let i = a.index(n);
                if let Some((k, v)) = split(&members[i]) {
                    let longer = match k.split_once('@') {
                        None => format!("{k}{}", "x".repeat(257 - k.len().min(256))),
                        Some((t, sys)) => {
                            format!("{t}@{sys}{}", "x".repeat(15 - sys.len().min(14)))
                        }
                    };
                    members[i] = format!("{longer}={v}");
                }
            }
            ListEdit::LongerValue(a) => {
                let i = a.index(n);
                if let Some((k, v)) = split(&members[i]) {
                    members[i] = format!("{k}={}{v}", "y".repeat(257 - v.len().min(256)));
                }
            }
            ListEdit::BadValueChar(a, at, c) => {
                let i = a.index(n);
                if let Some((k, mut v)) = split(&members[i]) {
                    let chars: Vec<usize> =
                        v.char_indices().map(|(j, _)| j).chain([v.len()]).collect();
                    v.insert(chars[at.index(chars.len())], *c);
                    members[i] = format!("{k}={v}");
                }
            }
            ListEdit::NoEquals(a) => {
                let i = a.index(n);
                members[i] = members[i].replacen('=', "", 1);
            }
            ListEdit::Garbage(a, g) => members[a.index(n)] = g.clone(),
            ListEdit::Empties(a, w) => {
                members.insert(a.index(n + 1), w.clone());
                members.insert(a.index(n + 2), String::new());
            }
        }
        members
    }
}

/// `tracestate` field lines: a list from the grammar (1 to 6 members, or 30 to 34 to cross the
/// limit of 32), maybe taken out of it by one [`ListEdit`], with optional whitespace around
/// the commas, split into 1 to 3 lines.
fn tracestate_lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let member = (tracestate_key(), tracestate_value()).prop_map(|(k, v)| format!("{k}={v}"));
    let list = prop_oneof![
        6 => prop::collection::vec(member, 1..=6),
        1 => (30usize..=34).prop_map(|n| (0..n).map(|i| format!("m{i}=v{i}")).collect()),
    ];
    let ows = prop::collection::vec(("[ \t]{0,1}", "[ \t]{0,1}"), 40);
    (list, list_edit(), ows, any::<Index>(), any::<Index>()).prop_map(
        |(members, edit, ows, a, b)| {
            let members: Vec<String> = edit
                .apply(members)
                .into_iter()
                .zip(ows)
                .map(|(m, (before, after))| before + &m + &after)
                .collect();
            // Split the list into up to three field lines at member boundaries.
            let (mut i, mut j) = (a.index(members.len() + 1), b.index(members.len() + 1));
            if i > j {
                std::mem::swap(&mut i, &mut j);
            }
            [&members[..i], &members[i..j], &members[j..]]
                .iter()
                .filter(|part| !part.is_empty())
                .map(|part| part.join(",").into_bytes())
                .collect()
        },
    )
}

/// A valid `tracestate` whose combined length is 508 to 516 bytes, in one or two lines: the
/// forwarding bound (512) exactly.
fn sized_tracestate() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (2usize..=4, 508usize..=516, any::<bool>()).prop_map(|(n, target, split)| {
        let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let fixed: usize = keys.iter().map(|k| k.len() + 1).sum::<usize>() + (n - 1);
        let mut room = target - fixed;
        let members: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let take = (room - (n - 1 - i)).min(256);
                room -= take;
                format!("{k}={}", "v".repeat(take))
            })
            .collect();
        if split {
            vec![
                members[..1].join(",").into_bytes(),
                members[1..].join(",").into_bytes(),
            ]
        } else {
            vec![members.join(",").into_bytes()]
        }
    })
}

/// The headers the recorder last received.
type Seen = Arc<Mutex<Option<HeaderMap>>>;

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn hyper_client() -> HyperClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A plain downstream (no instrumentation) that keeps the headers of its last request.
async fn recorder() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let app = Router::new().route(
        "/echo",
        get(move |headers: HeaderMap| {
            let sink = sink.clone();
            async move {
                *sink.lock().unwrap() = Some(headers);
                "ok"
            }
        }),
    );
    (common::serve(app).await, seen)
}

#[test]
fn traceparent_continues_the_trace_iff_valid_and_tracestate_is_forwarded_iff_valid() {
    let rt = runtime();
    let obs = Obs::builder()
        .service_name("prop")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .unwrap();
    let (down, seen) = rt.block_on(recorder());
    let client = tower::Layer::layer(&obs.client_layer(), hyper_client());
    let url = format!("http://{down}/echo");
    let app = Router::new()
        .route(
            "/call",
            get(move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let req = http::Request::get(url.as_str())
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    match tower::ServiceExt::oneshot(client, req).await {
                        Ok(_) => "called",
                        Err(_) => "failed",
                    }
                }
            }),
        )
        .layer(obs.layer());
    let addr = rt.block_on(common::serve(app));
    let strategy = prop_oneof![
        6 => (
            prop::option::weighted(
                0.9,
                prop_oneof![
                    1 => valid_traceparent().prop_map(|v| Edit::Pad(" ".into(), String::new()).apply(v)),
                    1 => valid_traceparent(),
                    3 => traceparent(line_byte()),
                ],
            ),
            prop_oneof![1 => Just(Vec::new()), 4 => tracestate_lines()],
        ),
        1 => (valid_traceparent().prop_map(Some), sized_tracestate()),
    ]
    .prop_map(|(tp, ts)| {
        (
            tp.map(Bytes::from),
            ts.into_iter().map(Bytes::from).collect::<Vec<_>>(),
        )
    });
    let tally = Tally::default();
    property(256, strategy, |(tp, ts)| {
        *seen.lock().unwrap() = None;
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let Some(tp) = &tp {
            headers.push(("traceparent", tp));
        }
        for line in &ts {
            headers.push(("tracestate", line));
        }
        let resp = rt.block_on(common::raw(addr, &head("/call", &headers)));
        if !headers.iter().all(|(_, v)| field_value_ok(v)) {
            prop_assert_eq!(resp.status, 400);
            return Ok(());
        }
        prop_assert_eq!(resp.status, 200);
        prop_assert_eq!(String::from_utf8_lossy(&resp.body), "called");
        let incoming = tp.as_deref().map(trim_ows).and_then(w3c_traceparent);
        tally.hit(if incoming.is_some() {
            "continued"
        } else {
            "restarted"
        });

        // The response's traceresponse: version 00, the incoming trace when it was valid.
        let traceresponse = resp
            .header("traceresponse")
            .ok_or_else(|| fail("no traceresponse"))?;
        prop_assert!(traceresponse.len() == 55 && traceresponse.starts_with("00-"));
        let (trace_id, _) = w3c_traceparent(traceresponse.as_bytes())
            .ok_or_else(|| fail(format!("malformed traceresponse {traceresponse}")))?;
        match &incoming {
            Some((incoming_id, _)) => prop_assert_eq!(&trace_id, incoming_id),
            None => {
                let field = tp.as_deref().map(trim_ows).and_then(|v| v.get(3..35));
                prop_assert!(
                    field != Some(trace_id.as_bytes()),
                    "an invalid traceparent continued: {}",
                    traceresponse
                );
            }
        }

        // The downstream call carries the same trace, under a new parent.
        let got = seen
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| fail("no call downstream"))?;
        let sent: Vec<&HeaderValue> = got.get_all("traceparent").iter().collect();
        prop_assert_eq!(sent.len(), 1);
        let sent = sent[0].as_bytes();
        prop_assert_eq!(sent.len(), 55);
        prop_assert_eq!(w3c_traceparent(sent).map(|(t, _)| t), Some(trace_id));
        if let Some(tp) = &tp {
            prop_assert_ne!(&sent[36..52], trim_ows(tp).get(36..52).unwrap_or_default());
        }

        // tracestate: forwarded, members unchanged, only when both headers are valid.
        let expected = incoming.as_ref().and_then(|_| w3c_tracestate(&ts));
        tally.hit(if expected.is_some() {
            "forwarded"
        } else {
            "withheld"
        });
        let forwarded: Vec<&HeaderValue> = got.get_all("tracestate").iter().collect();
        match expected {
            Some(members) => {
                let lines: Vec<&str> = forwarded
                    .iter()
                    .map(|v| v.to_str())
                    .collect::<Result<_, _>>()
                    .map_err(|e| fail(e.to_string()))?;
                prop_assert_eq!(tracestate_members(&lines.join(",")), members);
            }
            None => prop_assert!(
                forwarded.is_empty(),
                "forwarded {:?}, which must not be",
                forwarded
            ),
        }
        Ok(())
    });
    tally.assert_reached(&["continued", "restarted", "forwarded", "withheld"]);
}

// ---------------------------------------------------------------------------------------------
// 3. traceresponse, read by the client side
// ---------------------------------------------------------------------------------------------

/// What the downstream answers in `traceresponse`: arbitrary bytes, or a value made from the
/// W3C grammar around the caller's own trace ID (or another one), then maybe edited.
#[derive(Clone, Debug)]
enum TraceResponse {
    Bytes(Bytes),
    Made {
        version: &'static str,
        own_trace: bool,
        other_trace: String,
        parent: String,
        flags: String,
        suffix: String,
        edit: Edit,
    },
}

impl TraceResponse {
    fn strategy() -> impl Strategy<Value = TraceResponse> {
        let made = (
            prop::sample::select(vec!["00", "00", "00", "cc", "ff", "0a"]),
            prop::bool::weighted(0.85),
            hex_lc(32),
            prop_oneof![8 => hex_lc(16), 1 => Just("0".repeat(16))],
            hex_lc(2),
            prop_oneof![6 => Just(String::new()), 1 => "-[ -~]{0,8}", 1 => "[ -~]{1,8}"],
            Edit::strategy(legal_byte()),
        )
            .prop_map(
                |(version, own_trace, other_trace, parent, flags, suffix, edit)| {
                    TraceResponse::Made {
                        version,
                        own_trace,
                        other_trace,
                        parent,
                        flags,
                        suffix,
                        edit,
                    }
                },
            );
        prop_oneof![
            6 => made,
            1 => prop::collection::vec(legal_byte(), 0..70)
                .prop_map(|v| TraceResponse::Bytes(Bytes::from(v))),
        ]
    }

    fn render(&self, trace_id: &str) -> Vec<u8> {
        match self {
            TraceResponse::Bytes(b) => b.to_vec(),
            TraceResponse::Made {
                version,
                own_trace,
                other_trace,
                parent,
                flags,
                suffix,
                edit,
            } => {
                let trace = if *own_trace { trace_id } else { other_trace };
                edit.apply(format!("{version}-{trace}-{parent}-{flags}{suffix}").into_bytes())
            }
        }
    }
}

/// A downstream (no instrumentation) answering 200 with the planned `traceresponse`, keeping
/// the `traceparent` it received and the value it answered.
#[derive(Default)]
struct Answering {
    plan: Mutex<Option<TraceResponse>>,
    received: Mutex<Option<String>>,
    answered: Mutex<Option<Vec<u8>>>,
}

async fn answering_downstream(state: Arc<Answering>) -> SocketAddr {
    let app = Router::new().route(
        "/answer",
        get(move |headers: HeaderMap| {
            let state = state.clone();
            async move {
                let received = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let plan = state.plan.lock().unwrap().clone().expect("a plan");
                let bytes = plan.render(received.get(3..35).unwrap_or_default());
                let mut resp = axum::response::Response::new(axum::body::Body::from("ok"));
                if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                    resp.headers_mut().insert("traceresponse", value);
                    *state.answered.lock().unwrap() = Some(bytes);
                }
                *state.received.lock().unwrap() = Some(received);
                resp
            }
        }),
    );
    common::serve(app).await
}

#[test]
fn traceresponse_from_a_downstream_never_breaks_the_call_and_keeps_only_when_valid() {
    let rt = runtime();
    // Successes are never kept by ratio: a kept trace can only be the downstream's doing.
    let obs = Obs::builder()
        .service_name("prop")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .success_ratio(0.0)
        .trace_ring_size(10_000)
        .build()
        .unwrap();
    let state = Arc::new(Answering::default());
    let down = rt.block_on(answering_downstream(state.clone()));
    let url = format!("http://{down}/answer");
    let tower_client = tower::Layer::layer(&obs.client_layer(), hyper_client());
    #[cfg(feature = "reqwest")]
    let reqwest_client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(obs.reqwest_middleware())
        .build();
    let calls = std::sync::atomic::AtomicU64::new(0);
    let strategy = (TraceResponse::strategy(), any::<bool>());
    let tally = Tally::default();
    property(256, strategy, |(plan, use_reqwest)| {
        *state.plan.lock().unwrap() = Some(plan);
        *state.answered.lock().unwrap() = None;
        let status = rt.block_on(async {
            #[cfg(feature = "reqwest")]
            if use_reqwest {
                return reqwest_client
                    .get(url.as_str())
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string());
            }
            let _ = use_reqwest;
            let req = http::Request::get(url.as_str())
                .body(http_body_util::Empty::new())
                .unwrap();
            tower::ServiceExt::oneshot(tower_client.clone(), req)
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        });
        prop_assert_eq!(status, Ok(200));
        let calls = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;

        // The call is recorded, whatever the answer said.
        let exposition = obs.render_metrics();
        let recorded: f64 =
            common::samples(&exposition, "http_client_request_duration_seconds_count")
                .iter()
                .map(|(_, v)| v)
                .sum();
        prop_assert_eq!(recorded, calls as f64);

        // Kept (reason `downstream`) iff the answer is a valid W3C value for this trace with
        // the sampled flag; the call, a success, keeps nothing else.
        let sent = state.received.lock().unwrap().clone().unwrap_or_default();
        let (trace_id, _) = w3c_traceparent(sent.as_bytes())
            .ok_or_else(|| fail(format!("the client sent traceparent {sent:?}")))?;
        let answered = state.answered.lock().unwrap().clone().map(Bytes::from);
        let says_kept = answered
            .as_deref()
            .map(trim_ows)
            .and_then(w3c_traceparent)
            .is_some_and(|(id, sampled)| id == trace_id && sampled);
        let ring: Value = serde_json::from_str(&obs.recent_traces_json().unwrap())
            .map_err(|e| fail(e.to_string()))?;
        let kept = ring["traces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["trace_id"] == trace_id.as_str());
        tally.hit(if says_kept { "kept" } else { "dropped" });
        match kept {
            Some(t) => {
                prop_assert!(says_kept, "kept although the answer was {:?}", answered);
                prop_assert_eq!(&t["reason"], "downstream");
            }
            None => prop_assert!(!says_kept, "dropped although the answer was {:?}", answered),
        }
        Ok(())
    });
    tally.assert_reached(&["kept", "dropped"]);
}

// ---------------------------------------------------------------------------------------------
// 4. Accept on /metrics
// ---------------------------------------------------------------------------------------------

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A media range of the generated `Accept` lists.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Media {
    Any,
    ApplicationAny,
    TextAny,
    /// `application/openmetrics-text`, with a `version` parameter or none.
    OpenMetrics(Option<&'static str>),
    /// `text/plain`, with a `version` parameter or none.
    Plain(Option<&'static str>),
    Other(&'static str),
}

impl Media {
    fn text(self) -> (&'static str, Option<&'static str>) {
        match self {
            Media::Any => ("*/*", None),
            Media::ApplicationAny => ("application/*", None),
            Media::TextAny => ("text/*", None),
            Media::OpenMetrics(v) => ("application/openmetrics-text", v),
            Media::Plain(v) => ("text/plain", v),
            Media::Other(t) => (t, None),
        }
    }

    /// How specifically this range matches each format (RFC 9110 §12.5.1: `*/*` < `type/*` <
    /// `type/subtype` < `type/subtype` with parameters), `None` when it does not match it. The
    /// formats are OpenMetrics 1.0.0 (which DECISIONS.md also lets `version=0.0.1`, the name
    /// Prometheus first gave it, ask for) and the text format 0.0.4.
    fn specificity(self, format: Format) -> Option<u8> {
        let (openmetrics, classic) = match self {
            Media::Any => (Some(0), Some(0)),
            Media::ApplicationAny => (Some(1), None),
            Media::TextAny => (None, Some(1)),
            Media::OpenMetrics(None) => (Some(2), None),
            Media::OpenMetrics(Some("1.0.0" | "0.0.1")) => (Some(3), None),
            Media::Plain(None) => (None, Some(2)),
            Media::Plain(Some("0.0.4")) => (None, Some(3)),
            _ => (None, None),
        };
        match format {
            Format::OpenMetrics => openmetrics,
            Format::Classic => classic,
        }
    }
}

/// The two formats `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    OpenMetrics,
    Classic,
}

/// One element of an `Accept` list, with its weight in thousandths as written.
#[derive(Clone, Debug)]
struct AcceptRange {
    media: Media,
    q: Option<(u16, String)>,
    case_mask: u64,
    quoted_version: bool,
    ows: [String; 4],
}

impl AcceptRange {
    fn weight(&self) -> u16 {
        self.q.as_ref().map_or(1000, |(t, _)| *t)
    }

    fn render(&self) -> String {
        let (media, version) = self.media.text();
        // Types, subtypes and parameter names are case-insensitive (RFC 9110 §8.3.1, §5.6.6).
        let flip = |s: &str, shift: u32| -> String {
            s.chars()
                .enumerate()
                .map(|(i, c)| {
                    if self.case_mask.rotate_left(shift) >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        };
        let mut out = flip(media, 0);
        let [a, b, c, d] = &self.ows;
        if let Some(v) = version {
            let v = if self.quoted_version {
                format!("\"{v}\"")
            } else {
                v.to_string()
            };
            out.push_str(&format!("{a};{b}{}={v}", flip("version", 7)));
        }
        if let Some((_, q)) = &self.q {
            out.push_str(&format!("{c};{d}{}={q}", flip("q", 13)));
        }
        out
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` (RFC 9110 §12.4.2), in
/// every spelling of the same weight.
fn qvalue() -> impl Strategy<Value = (u16, String)> {
    let thousandths = prop_oneof![Just(0u16), Just(1000), Just(500), Just(1), 0u16..=1000];
    (thousandths, 0usize..=4).prop_map(|(t, extra)| {
        let whole = if t == 1000 { "1" } else { "0" };
        let fraction = format!("{:03}", t % 1000);
        let needed = fraction.trim_end_matches('0').len();
        // With no digit needed: "0", "0.", "0.0", "0.00", "0.000"; else 1 to 3 digits.
        let digits = if needed == 0 {
            extra.checked_sub(1)
        } else {
            Some((needed + extra).min(3))
        };
        let text = match digits {
            None => whole.to_string(),
            Some(d) => format!("{whole}.{}", &fraction[..d]),
        };
        (t, text)
    })
}

fn accept_range() -> impl Strategy<Value = AcceptRange> {
    let media = prop_oneof![
        2 => Just(Media::Any),
        1 => Just(Media::ApplicationAny),
        1 => Just(Media::TextAny),
        3 => prop::sample::select(vec![None, Some("1.0.0"), Some("0.0.1"), Some("2.0.0")])
            .prop_map(Media::OpenMetrics),
        3 => prop::sample::select(vec![None, Some("0.0.4"), Some("1.0.0")]).prop_map(Media::Plain),
        1 => prop::sample::select(vec!["application/json", "text/html", "image/*"])
            .prop_map(Media::Other),
    ];
    let ows = prop::array::uniform4("[ \t]{0,1}");
    (
        media,
        prop::option::weighted(0.7, qvalue()),
        any::<u64>(),
        any::<bool>(),
        ows,
    )
        .prop_map(|(media, q, case_mask, quoted_version, ows)| AcceptRange {
            media,
            q,
            case_mask,
            quoted_version,
            ows,
        })
}

/// The format RFC 9110 §12.5.1 picks, with the rule of DECISIONS.md ("OpenMetrics on
/// `/metrics`, negotiated"): each format takes the weight of the most specific range matching
/// it (the highest weight among equally specific ones), `q=0` excludes it, the higher weight
/// wins, a tie goes to the range listed first, and a range matching both formats gives the
/// classic format; no acceptable format gives the classic one too.
fn negotiated(ranges: &[AcceptRange]) -> &'static str {
    let decide = |format: Format| {
        ranges
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((r.media.specificity(format)?, r.weight(), i)))
            .max_by_key(|&(specificity, q, i)| (specificity, q, std::cmp::Reverse(i)))
            .filter(|&(_, q, _)| q > 0)
            .map(|(_, q, i)| (q, i))
    };
    match (decide(Format::OpenMetrics), decide(Format::Classic)) {
        (None, _) => CLASSIC,
        (Some(_), None) => OPENMETRICS,
        (Some((q_open, at_open)), Some((q_classic, at_classic))) => {
            if q_open > q_classic || (q_open == q_classic && at_open < at_classic) {
                OPENMETRICS
            } else {
                CLASSIC
            }
        }
    }
}

/// `Accept` field lines holding a well-formed list, split in one or two lines, with empty
/// elements now and then (RFC 9110 §5.6.1), and the ranges in order.
fn accept_lines() -> impl Strategy<Value = (Vec<String>, Vec<AcceptRange>)> {
    let element = prop_oneof![9 => accept_range().prop_map(Some), 1 => Just(None)];
    (
        prop::collection::vec(element, 0..=6),
        prop::collection::vec("[ \t]{0,1},[ \t]{0,1}", 6),
        any::<Index>(),
    )
        .prop_map(|(elements, separators, split)| {
            let ranges: Vec<AcceptRange> = elements.iter().flatten().cloned().collect();
            let texts: Vec<String> = elements
                .iter()
                .map(|e| e.as_ref().map(AcceptRange::render).unwrap_or_default())
                .collect();
            let at = split.index(texts.len() + 1);
            let join = |part: &[String]| {
                let mut out = String::new();
                for (i, t) in part.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&separators[i - 1]);
                    }
                    out.push_str(t);
                }
                out
            };
            let lines = [join(&texts[..at]), join(&texts[at..])]
                .into_iter()
                .filter(|l| !l.trim().is_empty())
                .collect();
            (lines, ranges)
        })
}

/// Serves `obs.metrics_service()` at `/metrics` in an axum router.
fn metrics_app(rt: &tokio::runtime::Runtime) -> (Obs, SocketAddr) {
    let obs = Obs::builder()
        .service_name("prop")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .unwrap();
    obs.counter("prop_requests_total", &[("kind", &"seen")])
        .inc();
    let app = Router::new().route_service("/metrics", obs.metrics_service());
    let addr = rt.block_on(common::serve(app));
    (obs, addr)
}

/// The content type of a `/metrics` answer, checked against its body.
fn exposition_type(resp: &common::RawResponse) -> Result<String, TestCaseError> {
    prop_assert_eq!(resp.status, 200);
    let content_type = resp
        .header("content-type")
        .ok_or_else(|| fail("no content type"))?;
    let body = String::from_utf8_lossy(&resp.body);
    prop_assert!(
        content_type == OPENMETRICS || content_type == CLASSIC,
        "content type {content_type}"
    );
    prop_assert_eq!(
        body.ends_with("# EOF\n"),
        content_type == OPENMETRICS,
        "a body of the type it says"
    );
    Ok(content_type)
}

#[test]
fn accept_gets_the_format_rfc_9110_negotiates() {
    let rt = runtime();
    let (_obs, addr) = metrics_app(&rt);
    let tally = Tally::default();
    property(256, accept_lines(), |(lines, ranges)| {
        let headers: Vec<(&str, &[u8])> = lines.iter().map(|l| ("Accept", l.as_bytes())).collect();
        let resp = rt.block_on(common::raw(addr, &head("/metrics", &headers)));
        let got = exposition_type(&resp)?;
        let want = negotiated(&ranges);
        prop_assert_eq!(&got, want, "Accept: {:?}", lines);
        tally.hit(if want == OPENMETRICS {
            "openmetrics"
        } else {
            "classic"
        });
        Ok(())
    });
    tally.assert_reached(&["openmetrics", "classic"]);
}

#[test]
fn any_accept_value_gets_one_of_the_two_formats() {
    let rt = runtime();
    let (_obs, addr) = metrics_app(&rt);
    let mutated = (accept_lines(), Edit::strategy(line_byte())).prop_map(|((lines, _), edit)| {
        lines
            .into_iter()
            .map(|l| edit.apply(l.into_bytes()))
            .collect::<Vec<_>>()
    });
    let strategy = prop_oneof![
        2 => mutated,
        1 => prop::collection::vec(prop::collection::vec(line_byte(), 0..80), 1..=2),
        1 => (prop::sample::select(vec!["*/*", "application/openmetrics-text", ";q=", ",", "\""]), 100usize..2000)
            .prop_map(|(s, n)| vec![s.repeat(n).into_bytes()]),
    ]
    .prop_map(|lines| lines.into_iter().map(Bytes::from).collect::<Vec<_>>());
    property(256, strategy, |lines| {
        let headers: Vec<(&str, &[u8])> = lines.iter().map(|l| ("accept", &l[..])).collect();
        let resp = rt.block_on(common::raw(addr, &head("/metrics", &headers)));
        if !lines.iter().all(|l| field_value_ok(l)) {
            prop_assert_eq!(resp.status, 400);
            return Ok(());
        }
        exposition_type(&resp)?;
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Environment variables
// ---------------------------------------------------------------------------------------------

/// Every public constant of `mercenary_obs::env` (checked against the module below).
const VARIABLES: &[&str] = {
    use mercenary_obs::env::*;
    &[
        OTEL_SERVICE_NAME,
        OTEL_RESOURCE_ATTRIBUTES,
        MERCENARY_OBS_LOG_FORMAT,
        RUST_LOG,
        MERCENARY_OBS_PANIC_HOOK,
        OTEL_EXPORTER_OTLP_ENDPOINT,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        OTEL_EXPORTER_OTLP_PROTOCOL,
        OTEL_EXPORTER_OTLP_HEADERS,
        OTEL_EXPORTER_OTLP_TRACES_HEADERS,
        OTEL_EXPORTER_OTLP_CERTIFICATE,
        OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE,
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
        OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE,
        OTEL_EXPORTER_OTLP_CLIENT_KEY,
        OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY,
        OTEL_EXPORTER_OTLP_COMPRESSION,
        OTEL_EXPORTER_OTLP_TRACES_COMPRESSION,
        OTEL_EXPORTER_OTLP_INSECURE,
        OTEL_EXPORTER_OTLP_TRACES_INSECURE,
        OTEL_EXPORTER_OTLP_TIMEOUT,
        OTEL_BSP_SCHEDULE_DELAY,
        OTEL_BSP_MAX_QUEUE_SIZE,
        MERCENARY_OBS_SUCCESS_RATIO,
        MERCENARY_OBS_FORCED_PER_SECOND,
        SENTRY_DSN,
        SENTRY_ENVIRONMENT,
        SENTRY_RELEASE,
        MERCENARY_OBS_ADMIN_ADDR,
        MERCENARY_OBS_AUDIT_MAX_WAIT_MS,
        MERCENARY_OBS_AUDIT_FALLBACK_FILE,
    ]
};

#[test]
fn the_variables_tested_are_every_public_constant_of_the_env_module() {
    let declared: std::collections::BTreeSet<&str> = include_str!("../../src/core/env.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .collect();
    let tested: std::collections::BTreeSet<&str> = VARIABLES.iter().copied().collect();
    assert_eq!(declared, tested, "add the new variable to VARIABLES");
}

/// A value for any variable: arbitrary text, pieces of what the variables accept run
/// together (numbers, booleans, URLs on loopback, DSNs, filters, `k=v` lists, escapes), and
/// long runs.
fn env_value() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "true",
        "FALSE",
        "0",
        "1",
        "-1",
        "0.5",
        "1.5",
        "1e309",
        "NaN",
        "inf",
        "60001",
        "18446744073709551616",
        "http://",
        "https://",
        "127.0.0.1:4318",
        "localhost:9464",
        "[::1]:0",
        "/v1/traces",
        "grpc",
        "http/protobuf",
        "json",
        "pretty",
        "gzip",
        "none",
        "info",
        "warn,my_crate=debug",
        "[span{x=1}]",
        "=",
        ",",
        "%",
        "%2C",
        "%zz",
        "%ff",
        "service.name=x",
        "k=",
        " ",
        "\t",
        "\0",
        "é",
        "\u{202e}",
        "http://k@127.0.0.1:9/1",
    ]);
    prop_oneof![
        3 => any::<String>(),
        4 => prop::collection::vec(piece, 1..6).prop_map(|p| p.concat()),
        1 => (prop::sample::select(vec!["a", "1", "é", "=", ",", "%"]), 200usize..4000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// Any variable name found in `text` other than `name`.
fn other_variables(text: &str, name: &str) -> Vec<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .collect();
    VARIABLES
        .iter()
        .copied()
        .filter(|v| *v != name && words.contains(v))
        .collect()
}

#[test]
fn every_environment_variable_parses_or_names_itself() {
    let dir = std::env::temp_dir().join(format!("mercenary-obs-prop-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let started = std::time::Instant::now();
    for &name in VARIABLES {
        property(64, env_value(), |value| {
            let value = match name {
                // A path, kept inside a directory of the test's own: the file is created.
                mercenary_obs::env::MERCENARY_OBS_AUDIT_FALLBACK_FILE => {
                    format!("{}/{}", dir.display(), value.replace('/', "_"))
                }
                _ => value,
            };
            let mut vars = vec![(name, value.as_str())];
            if name.contains("CERTIFICATE") || name.contains("CLIENT_KEY") {
                // The TLS files are read only for an OTLP endpoint.
                vars.push((
                    mercenary_obs::env::OTEL_EXPORTER_OTLP_ENDPOINT,
                    "http://127.0.0.1:4318",
                ));
            }
            let built = Obs::builder()
                .log_writer(std::io::sink())
                .process_metrics(false)
                .from_vars(vars)
                .build();
            let Err(error) = built else {
                return Ok(());
            };
            let message = error.to_string();
            let subject = match &error {
                Error::InvalidEnv { variable, .. } => variable.to_string(),
                Error::InvalidSetting { setting, .. } => setting.to_string(),
                other => return Err(fail(format!("{name}={value:?}: {other:?}"))),
            };
            prop_assert!(
                subject
                    .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                    .any(|w| w == name),
                "{}={:?} gave an error about {}: {}",
                name,
                value,
                subject,
                message
            );
            prop_assert_eq!(other_variables(&subject, name), Vec::<&str>::new());
            prop_assert!(message.contains(name), "{message}");
            prop_assert!(
                message.len() <= 4096,
                "{}: a message of {} bytes: {}…",
                name,
                message.len(),
                message.chars().take(300).collect::<String>()
            );
            Ok(())
        });
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("{} variables in {:?}", VARIABLES.len(), started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// 6. JSON escaping of log lines
// ---------------------------------------------------------------------------------------------

/// Characters that test an escaper: any character, the JSON specials, C0 and C1 controls, DEL,
/// U+2028/U+2029, a BOM, and characters of every UTF-8 length.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        3 => prop::char::range(' ', '~'),
        2 => prop::char::range('\u{0}', '\u{1f}'),
        1 => prop::char::range('\u{7f}', '\u{a0}'),
        2 => prop::sample::select(vec![
            '"', '\\', '/', '\n', '\r', '\t', '\u{1b}', '\u{2028}', '\u{2029}', '\u{feff}',
            'é', '€', '😀', '\u{10ffff}',
        ]),
    ]
}

fn nasty_string(len: impl Into<prop::collection::SizeRange>) -> impl Strategy<Value = String> {
    prop::collection::vec(nasty_char(), len).prop_map(|c| c.into_iter().collect())
}

/// Strings around `cap` bytes: a run of ASCII that puts a 1- to 4-byte character across the
/// cap, then more text; and long strings of several times the cap.
fn text_for(cap: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => nasty_string(0..40),
        2 => (cap.saturating_sub(5)..=cap + 1, prop::sample::select(vec!['a', 'é', '€', '😀']), nasty_string(0..6))
            .prop_map(|(n, c, tail)| format!("{}{c}{tail}", "a".repeat(n))),
        1 => (nasty_string(1..8), 2usize..4).prop_map(move |(s, times)| {
            s.repeat(cap * times / s.len() + 1)
        }),
    ]
}

/// What a value cut at `cap` bytes reads as (README: values are cut at the cap, on a character
/// boundary, with a `…[truncated]` marker).
fn capped(s: &str, cap: usize) -> String {
    if s.len() <= cap {
        return s.to_string();
    }
    let end = (0..=cap)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…[truncated]", &s[..end])
}

#[derive(Clone, Debug, Default)]
struct LogCase {
    message: String,
    value: String,
    bytes: Bytes,
}

fn log_case(cap: usize) -> impl Strategy<Value = LogCase> {
    (
        text_for(cap),
        text_for(cap),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(message, value, bytes)| LogCase {
            message,
            value,
            bytes: Bytes::from(bytes),
        })
}

/// One request logging the case as a message and as field values (a `&str`, `Display`,
/// `Debug`, invalid UTF-8 through `Debug`, and a span's field), inside a request.
fn escaping_holds(cap: Option<usize>, cases: u32) {
    let rt = runtime();
    let logs = Capture::default();
    let mut builder = Obs::builder()
        .service_name("prop")
        .log_writer(logs.clone())
        .process_metrics(false);
    if let Some(cap) = cap {
        builder = builder.log_value_max_bytes(cap);
    }
    let obs = builder.build().unwrap();
    let cap = cap.unwrap_or(8192);
    let current: Arc<Mutex<LogCase>> = Arc::default();
    let case = current.clone();
    let app = Router::new()
        .route(
            "/log",
            get(move || {
                let LogCase {
                    message,
                    value,
                    bytes,
                } = case.lock().unwrap().clone();
                async move {
                    let lossy = String::from_utf8_lossy(&bytes);
                    tracing::info_span!("prop.work", span_text = value.as_str()).in_scope(|| {
                        tracing::info!(
                            text = value.as_str(),
                            shown = %value,
                            debugged = ?value,
                            raw = ?bytes,
                            lossy = %lossy,
                            "{message}"
                        );
                    });
                    "logged"
                }
            }),
        )
        .layer(obs.layer());
    let addr = rt.block_on(common::serve(app));
    property(cases, log_case(cap), |case| {
        clear(&obs, &logs);
        *current.lock().unwrap() = case.clone();
        let resp = rt.block_on(common::get(addr, "/log", &[]));
        prop_assert_eq!(resp.status, 200);
        prop_assert!(obs.flush());
        let lines = parse_lines(&logs)?;
        // Each value as written: at most 6 bytes of escape per byte of the cap, plus the marker.
        let bound = 7 * (6 * cap + 20) + 2048;
        for (line, _) in &lines {
            prop_assert!(line.len() <= bound, "a line of {} bytes", line.len());
            prop_assert!(
                !line
                    .chars()
                    .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
                "an unescaped control character or line separator in {:?}",
                line
            );
        }
        let events: Vec<&Value> = lines
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v.get("text").is_some())
            .collect();
        prop_assert_eq!(events.len(), 1, "one event line in {:?}", lines);
        let event = events[0];
        let lossy = String::from_utf8_lossy(&case.bytes).into_owned();
        for (key, original) in [
            ("message", case.message.clone()),
            ("text", case.value.clone()),
            ("shown", case.value.clone()),
            ("debugged", format!("{:?}", case.value)),
            ("raw", format!("{:?}", case.bytes)),
            ("lossy", lossy),
            ("span_text", case.value.clone()),
        ] {
            let expected = capped(&original, cap);
            prop_assert_eq!(
                event[key].as_str(),
                Some(expected.as_str()),
                "{} of {:?}",
                key,
                case
            );
        }
        Ok(())
    });
}

#[test]
fn log_values_are_escaped_json_and_cut_at_the_default_cap() {
    escaping_holds(None, 128);
}

#[test]
fn log_values_are_escaped_json_and_cut_at_a_small_cap() {
    escaping_holds(Some(24), 256);
}

// ---------------------------------------------------------------------------------------------
// 7. Label values of business metrics
// ---------------------------------------------------------------------------------------------

/// One sample of a classic exposition: metric name, labels (unescaped), value.
type Sample = (String, Vec<(String, String)>, f64);

/// The samples of a text-format 0.0.4 exposition, parsed as the Prometheus documentation
/// ("Exposition formats", text-based format) specifies it, independently of any client:
/// `metric_name [ "{" label_name "=" '"' label_value '"' { "," ... } [ "," ] "}" ] value
/// [ timestamp ]`, one sample per line (lines end with `\n`), label values escaped with `\\`,
/// `\"` and `\n` only; `# HELP` texts escaped with `\\` and `\n`.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut samples = Vec::new();
    for line in text.split('\n') {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let mut chars = help.chars();
            while let Some(c) = chars.next() {
                if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                    return Err(format!("a bad escape in {line:?}"));
                }
            }
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(|c: char| !name_char(c)).unwrap_or(line.len());
        let (name, mut rest) = line.split_at(end);
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("no metric name in {line:?}"));
        }
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .ok_or(format!("an unterminated label in {line:?}"))?;
                let (label, r) = rest.split_at(end);
                if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
                    return Err(format!("a bad label name in {line:?}"));
                }
                rest = r
                    .strip_prefix("=\"")
                    .ok_or(format!("no =\" after {label} in {line:?}"))?;
                let mut value = String::new();
                let mut chars = rest.char_indices();
                let close = loop {
                    match chars.next() {
                        None => return Err(format!("an unterminated value in {line:?}")),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("a bad escape {other:?} in {line:?}")),
                        },
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((label.to_string(), value));
                rest = &rest[close + 1..];
                if let Some(r) = rest.strip_prefix(',') {
                    rest = r;
                } else if !rest.starts_with('}') {
                    return Err(format!("no , or }} after a label in {line:?}"));
                }
            }
        }
        let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
        let value: f64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or(format!("no value in {line:?}"))?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| format!("a bad timestamp in {line:?}"))?;
        }
        if fields.next().is_some() || !rest.starts_with([' ', '\t']) {
            return Err(format!("a malformed sample line {line:?}"));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

/// Label values: any text (the exposition's specials `\\`, `"` and newline included), a few
/// that repeat, and long ones that put a multi-byte character across 1024 bytes, in pairs
/// that share their first 1024 bytes or more.
fn label_values() -> impl Strategy<Value = Vec<String>> {
    let long = (
        1018usize..=1024,
        prop::sample::select(vec!['x', 'é', '€', '😀', '"', '\n']),
        nasty_string(1..4),
        nasty_string(1..4),
    )
        .prop_map(|(n, c, a, b)| {
            let head = format!("{}{c}", "\\".repeat(n));
            vec![format!("{head}{a}"), format!("{head}{b}")]
        });
    let one = prop_oneof![
        6 => nasty_string(0..24).prop_map(|v| vec![v]),
        2 => prop::sample::select(vec!["", "a", "\"", "\n", "\\", "_other_"])
            .prop_map(|v| vec![v.to_string()]),
        1 => long,
    ];
    prop::collection::vec(one, 1..=12).prop_map(|values| {
        values
            .into_iter()
            .flatten()
            .filter(|v| v != "_other")
            .collect()
    })
}

/// A label value as the README says it is exported: cut to 1024 bytes, on a character boundary.
fn cut_label(s: &str) -> String {
    let end = (0..=s.len().min(1024))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    s[..end].to_string()
}

/// The series of `metric`: label value of `value` → sample value.
fn series_of(samples: &[Sample], metric: &str) -> Result<HashMap<String, f64>, String> {
    let mut out = HashMap::new();
    for (name, labels, v) in samples.iter().filter(|s| s.0 == metric) {
        let [(label, value)] = labels.as_slice() else {
            return Err(format!("{name} has labels {labels:?}"));
        };
        if label != "value" || out.insert(value.clone(), *v).is_some() {
            return Err(format!("a duplicate or unknown series {name}{labels:?}"));
        }
    }
    Ok(out)
}

/// The exported series equal the model's; else the first difference, not both maps.
fn same_series(
    got: &HashMap<String, f64>,
    want: &HashMap<String, f64>,
) -> Result<(), TestCaseError> {
    for (value, n) in want {
        match got.get(value) {
            Some(m) if m == n => {}
            other => {
                return Err(fail(format!(
                    "series {value:?}: {other:?} exported, {n} expected"
                )));
            }
        }
    }
    if let Some(extra) = got.keys().find(|k| !want.contains_key(*k)) {
        return Err(fail(format!(
            "an unexpected series {extra:?} (values: {:?})",
            want.keys()
                .filter(|k| k.len() < 40)
                .take(8)
                .collect::<Vec<_>>()
        )));
    }
    Ok(())
}

#[test]
fn label_values_round_trip_through_the_exposition_and_series_stay_capped() {
    const CAP: usize = 8;
    let obs = Obs::builder()
        .service_name("prop")
        .log_writer(std::io::sink())
        .process_metrics(false)
        .series_cap(CAP)
        .build()
        .unwrap();
    // Each run of a case counts its values in a metric of its own, so a failing case shrinks
    // alone. The model: the first CAP label sets get a series each, the rest go to `_other`.
    let runs = std::sync::atomic::AtomicUsize::new(0);
    property(128, label_values(), |values| {
        let run = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("prop_labels_{run}_total");
        let (mut own, mut folded) = (HashMap::new(), 0.0);
        for value in &values {
            obs.counter(&name, &[("value", value)]).inc();
            let key = cut_label(value);
            if let Some(n) = own.get_mut(&key) {
                *n += 1.0;
            } else if own.len() < CAP {
                own.insert(key, 1.0);
            } else {
                folded += 1.0;
            }
        }
        let samples = parse_exposition(&obs.render_metrics()).map_err(fail)?;
        let mut got = series_of(&samples, &name).map_err(fail)?;
        prop_assert!(got.len() <= CAP + 1, "{} series", got.len());
        let other = got.remove("_other").unwrap_or(0.0);
        prop_assert_eq!(other, folded, "resolutions folded into _other");
        same_series(&got, &own)?;
        let overflow = samples
            .iter()
            .filter(|(metric, labels, _)| {
                metric == "mercenary_obs_metric_overflow_total"
                    && labels.contains(&("metric".into(), name.clone()))
            })
            .map(|s| s.2)
            .sum::<f64>();
        prop_assert_eq!(overflow, folded, "folded resolutions counted");
        Ok(())
    });
    // The official tooling agrees with the parser above, once for the whole run.
    common::promtool_check(&obs.render_metrics());
}

// ---------------------------------------------------------------------------------------------
// 8. Redaction
// ---------------------------------------------------------------------------------------------

/// Names "like" each of `DEFAULT_SENSITIVE` (README, "Log lines"): the word itself, other
/// cases, other separators, and inside a longer name.
macro_rules! sensitive_names {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)*
            "password", "Password", "PASSWORD", "user_password", "db.password.hash",
            "passwd", "PassWd", "secret", "client_secret", "SECRET_KEY",
            "token", "Token", "access_token", "refresh-token"
        )
    };
}

const SENSITIVE_FIELDS: &[&str] = &[
    "password",
    "Password",
    "PASSWORD",
    "user_password",
    "db.password.hash",
    "passwd",
    "PassWd",
    "secret",
    "client_secret",
    "SECRET_KEY",
    "token",
    "Token",
    "access_token",
    "refresh-token",
    "authorization",
    "Authorization",
    "proxy-authorization",
    "cookie",
    "Cookie",
    "set-cookie",
    "Set-Cookie",
    "set_cookie",
    "api_key",
    "apiKey",
    "API-KEY",
    "api.key",
    "x-api-key",
    "X-API-KEY",
    "x_api_key",
    "card_number",
    "cardNumber",
    "CARD-NUMBER",
];

/// Headers logged by the instance below; all but `user-agent` are sensitive.
const LOGGED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
    "user-agent",
];

/// A secret: any text, or header-legal bytes for the headers.
#[derive(Clone, Debug)]
struct Secrets {
    field: String,
    headers: Vec<(String, Bytes)>,
}

fn secrets() -> impl Strategy<Value = Secrets> {
    let header_value = prop::collection::vec(legal_byte(), 1..40)
        .prop_filter("not blank", |v| !trim_ows(v).is_empty())
        .prop_map(Bytes::from);
    // Header names in any case: they are case-insensitive.
    let header = (
        prop::sample::select(&LOGGED_HEADERS[..6]),
        any::<u64>(),
        header_value,
    )
        .prop_map(|(name, mask, value)| {
            let name: String = name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> i & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            (name, value)
        });
    (
        prop_oneof![
            4 => nasty_string(0..40),
            1 => (nasty_string(1..8), 1000usize..1200).prop_map(|(s, n)| s.repeat(n)),
        ],
        prop::collection::vec(header, 1..4),
    )
        .prop_map(|(field, headers)| Secrets { field, headers })
}

#[test]
fn fields_and_headers_named_like_a_secret_never_show_it() {
    let rt = runtime();
    let logs = Capture::default();
    let obs = Obs::builder()
        .service_name("prop")
        .log_writer(logs.clone())
        .process_metrics(false)
        .log_headers(LOGGED_HEADERS.iter().copied())
        .build()
        .unwrap();
    let current: Arc<Mutex<String>> = Arc::default();
    let secret = current.clone();
    let app = Router::new()
        .route(
            "/secret",
            get(move || {
                let v = secret.lock().unwrap().clone();
                async move {
                    let span = tracing::info_span!(
                        "prop.secret",
                        "authorization" = ?v, "Authorization" = ?v, "proxy-authorization" = ?v,
                        "cookie" = ?v, "Cookie" = ?v, "set-cookie" = ?v, "Set-Cookie" = ?v,
                        "set_cookie" = ?v
                    );
                    span.in_scope(|| {
                        macro_rules! event {
                            ($($name:literal),*) => {
                                tracing::info!($($name = %v,)* "display values")
                            };
                        }
                        sensitive_names!(event!());
                        tracing::warn!(
                            "api_key" = v.as_str(),
                            "apiKey" = v.as_str(),
                            "API-KEY" = v.as_str(),
                            "api.key" = v.as_str(),
                            "x-api-key" = v.as_str(),
                            "X-API-KEY" = v.as_str(),
                            "x_api_key" = v.as_str(),
                            "card_number" = v.as_str(),
                            "cardNumber" = v.as_str(),
                            "CARD-NUMBER" = v.as_str(),
                            "str values"
                        );
                    });
                    "ok"
                }
            }),
        )
        .layer(obs.layer());
    let addr = rt.block_on(common::serve(app));
    const FIXED: &[&str] = &[
        "[REDACTED]",
        "display values",
        "str values",
        "request completed",
        "prop.secret",
        "mercenary_obs::access",
        "/secret",
        "properties-test",
    ];
    property(256, secrets(), |case| {
        clear(&obs, &logs);
        *current.lock().unwrap() = case.field.clone();
        let mut headers: Vec<(&str, &[u8])> = case
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), &v[..]))
            .collect();
        headers.push(("user-agent", b"properties-test"));
        let resp = rt.block_on(common::raw(addr, &head("/secret", &headers)));
        prop_assert_eq!(resp.status, 200);
        prop_assert!(obs.flush());
        let lines = parse_lines(&logs)?;
        prop_assert_eq!(
            lines.len(),
            3,
            "two events and the access line: {:?}",
            lines
        );
        let mut secrets: Vec<String> = case
            .headers
            .iter()
            .map(|(_, v)| String::from_utf8_lossy(trim_ows(v)).into_owned())
            .collect();
        secrets.push(case.field.clone());
        // A secret too short to be told from the line's own text is checked by key only.
        secrets.retain(|s| s.len() >= 8 && !FIXED.iter().any(|f| f.contains(s.as_str())));
        let mut redacted = std::collections::HashSet::new();
        for (line, value) in &lines {
            let object = value.as_object().unwrap();
            for (key, v) in object {
                let name = key.strip_prefix("http.request.header.").unwrap_or(key);
                if SENSITIVE_FIELDS.contains(&name) || LOGGED_HEADERS[..6].contains(&name) {
                    prop_assert_eq!(v, "[REDACTED]", "{} in {}", key, line);
                    redacted.insert(key.clone());
                }
            }
            let mut strings = Vec::new();
            string_values(value, &mut strings);
            for secret in &secrets {
                prop_assert!(
                    !strings.iter().any(|s| s.contains(secret.as_str())),
                    "{:?} shown in {}",
                    secret,
                    line
                );
            }
            prop_assert!(line.len() <= 64 * 1024, "a bounded line");
        }
        // Every sensitive field and header sent is there, redacted (none dropped instead).
        let sent: std::collections::HashSet<String> = SENSITIVE_FIELDS
            .iter()
            .map(|f| f.to_string())
            .chain(
                case.headers
                    .iter()
                    .map(|(n, _)| format!("http.request.header.{}", n.to_ascii_lowercase())),
            )
            .collect();
        prop_assert_eq!(redacted, sent);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Bugs the properties found, each reduced to its smallest case (ignored until fixed)
// ---------------------------------------------------------------------------------------------

/// Sends `headers` to a service whose handler calls a recorder; returns (traceresponse, the
/// headers the recorder received).
fn through_a_service(headers: &[(&str, &[u8])]) -> (String, HeaderMap) {
    let rt = runtime();
    let obs = Obs::builder()
        .log_writer(std::io::sink())
        .process_metrics(false)
        .build()
        .unwrap();
    let (down, seen) = rt.block_on(recorder());
    let client = tower::Layer::layer(&obs.client_layer(), hyper_client());
    let url = format!("http://{down}/echo");
    let app = Router::new()
        .route(
            "/call",
            get(move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let req = http::Request::get(url.as_str())
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    tower::ServiceExt::oneshot(client, req)
                        .await
                        .is_ok()
                        .to_string()
                }
            }),
        )
        .layer(obs.layer());
    let addr = rt.block_on(common::serve(app));
    let resp = rt.block_on(common::raw(addr, &head("/call", headers)));
    let got = seen.lock().unwrap().take().expect("a call downstream");
    (resp.header("traceresponse").unwrap(), got)
}

/// Found by `traceparent_continues_the_trace_iff_valid_and_tracestate_is_forwarded_iff_valid`:
/// a valid `tracestate` of exactly 512 bytes in one field line is not forwarded, though
/// DECISIONS.md drops only those "longer than 512 bytes" (and W3C Trace Context asks vendors to
/// propagate at least 512). Split over two lines, the same 512 bytes are forwarded.
#[test]
fn a_tracestate_of_exactly_512_bytes_is_forwarded() {
    let tracestate = format!("k0={},k1={}", "v".repeat(256), "v".repeat(249));
    assert_eq!(tracestate.len(), 512);
    let (_, got) = through_a_service(&[
        (
            "traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", tracestate.as_bytes()),
    ]);
    assert_eq!(
        got.get("tracestate").map(|v| v.to_str().unwrap().len()),
        Some(512)
    );
}

/// Two `traceparent` field lines: RFC 9110 §5.3 combines them into one value,
/// `00-…-01, 00-…-01`, which is not a valid `traceparent`, so the trace must restart; the W3C
/// Trace Context test suite checks exactly this (`test_traceparent_duplicated`). The layer
/// reads the first line only and continues its trace.
#[test]
fn a_duplicated_traceparent_restarts_the_trace() {
    let (traceresponse, _) = through_a_service(&[
        (
            "traceparent",
            b"00-12345678901234567890123456789011-1234567890123456-01",
        ),
        (
            "traceparent",
            b"00-12345678901234567890123456789012-1234567890123456-01",
        ),
    ]);
    assert!(
        !traceresponse.contains("1234567890123456789012345678901"),
        "{traceresponse}"
    );
}

/// Found by `every_environment_variable_parses_or_names_itself`: the value is cut to 200
/// bytes in an `Error`'s message (its docs say so), but the message for
/// `OTEL_RESOURCE_ATTRIBUTES` also quotes the whole malformed item (or value) in its "expected"
/// part, unescaped: the message grows with the variable (10 000 bytes in, about 10 300 out),
/// and control characters of the value reach it raw.
#[test]
fn the_resource_attributes_error_is_bounded() {
    let value = format!("{}\u{1b}[2J", "a".repeat(10_000));
    let built = Obs::builder()
        .log_writer(std::io::sink())
        .process_metrics(false)
        .from_vars([(mercenary_obs::env::OTEL_RESOURCE_ATTRIBUTES, value.as_str())])
        .build();
    let Err(error) = built else {
        panic!("an error: the value has no `=`");
    };
    let message = error.to_string();
    assert!(
        message.len() <= 4096 && !message.contains('\u{1b}'),
        "a message of {} bytes",
        message.len()
    );
}
