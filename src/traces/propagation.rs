//! W3C Trace Context: `traceparent` and `tracestate` in, `traceresponse` and `traceparent`
//! out.

use std::sync::Arc;

use crate::core::escape::hex_u64;
use http::HeaderValue;
use http::header::GetAll;

/// The longest `tracestate` forwarded (the spec asks vendors to propagate at least 512 bytes;
/// a longer one is dropped whole rather than cut, since cutting needs vendor knowledge).
pub(crate) const MAX_TRACESTATE: usize = 512;

/// The most list members a `tracestate` may have (W3C Trace Context §3.3.1).
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A parsed incoming `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteParent {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) sampled: bool,
}

/// Parses `traceparent` (version 00, or a later version read as 00 as the spec asks).
/// Returns `None` for anything malformed, all-zero IDs, or version `ff`.
pub(crate) fn parse_traceparent(value: &[u8]) -> Option<RemoteParent> {
    if value.len() < 55 || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let version = hex_u8(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_u128(&value[3..35])?;
    let span_id = u64::try_from(hex_u128(&value[36..52])?).ok()?;
    let flags = hex_u8(&value[53..55])?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(RemoteParent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn hex_u8(s: &[u8]) -> Option<u8> {
    Some(hex_val(s[0])? << 4 | hex_val(s[1])?)
}

fn hex_u128(s: &[u8]) -> Option<u128> {
    s.iter()
        .try_fold(0u128, |acc, &b| Some(acc << 4 | u128::from(hex_val(b)?)))
}

/// A valid `tracestate` (all its header lines joined with `,`), or `None` when it is absent,
/// empty, longer than [`MAX_TRACESTATE`], has more than 32 members, a duplicate key, or any
/// member that breaks the grammar of W3C Trace Context §3.3.1: such a value is never forwarded.
pub(crate) fn parse_tracestate(values: GetAll<'_, HeaderValue>) -> Option<Arc<str>> {
    let mut joined = String::new();
    for value in values {
        let text = value.to_str().ok()?;
        let separator = usize::from(!joined.is_empty());
        if joined.len() + separator + text.len() > MAX_TRACESTATE {
            return None;
        }
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(text);
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in joined.split(',') {
        let member = member.trim_matches([' ', '\t']);
        if member.is_empty() {
            continue; // empty list members are allowed and skipped
        }
        let (key, value) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(value) || keys.contains(&key) {
            return None;
        }
        keys.push(key);
        if keys.len() > MAX_TRACESTATE_MEMBERS {
            return None;
        }
    }
    if keys.is_empty() {
        return None;
    }
    Some(Arc::from(joined))
}

/// `simple-key` (`[a-z][a-z0-9_-*/]{0,255}`) or `tenant@system` (`[a-z0-9][…]{0,240}` `@`
/// `[a-z][…]{0,13}`).
fn valid_key(key: &str) -> bool {
    fn rest(s: &[u8]) -> bool {
        s.iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    }
    match key.split_once('@') {
        None => {
            let k = key.as_bytes();
            (1..=256).contains(&k.len()) && k[0].is_ascii_lowercase() && rest(&k[1..])
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && matches!(t[0], b'a'..=b'z' | b'0'..=b'9')
                && rest(&t[1..])
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && rest(&s[1..])
        }
    }
}

/// 1–256 printable ASCII characters but `,` and `=`, not ending in a space.
fn valid_value(value: &str) -> bool {
    let v = value.as_bytes();
    (1..=256).contains(&v.len())
        && v.iter()
            .all(|b| (0x20..=0x7e).contains(b) && *b != b',' && *b != b'=')
        && v[v.len() - 1] != b' '
}

/// `00-<trace id>-<span id>-<flags>`, the form of `traceparent` and `traceresponse`.
pub(crate) fn format_context(trace_id: u128, span_id: u64, sampled: bool) -> HeaderValue {
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    buf[3..19].copy_from_slice(&hex_u64((trace_id >> 64) as u64));
    buf[19..35].copy_from_slice(&hex_u64(trace_id as u64));
    buf[36..52].copy_from_slice(&hex_u64(span_id));
    if sampled {
        buf[54] = b'1';
    }
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| {
        HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let p =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        let v = format_context(p.trace_id, p.span_id, true);
        assert_eq!(v, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    }

    fn tracestate(values: &[&str]) -> Option<Arc<str>> {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append("tracestate", HeaderValue::from_str(v).unwrap());
        }
        parse_tracestate(headers.get_all("tracestate"))
    }

    #[test]
    fn tracestate_follows_the_spec_grammar() {
        // Examples of W3C Trace Context §3.3.1.
        assert_eq!(
            tracestate(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]).as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
        assert_eq!(
            tracestate(&["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
            "several header lines are one list"
        );
        assert!(tracestate(&["fw529a3039@dt=s, , vendor=v"]).is_some());
        for bad in [
            "",
            "Rojo=1",              // upper-case key
            "rojo=1,rojo=2",       // duplicate key
            "rojo",                // no value
            "rojo=a=b",            // '=' in the value
            "@dt=1",               // empty tenant
            "t@toolongsystemid=1", // system id over 14
        ] {
            assert!(tracestate(&[bad]).is_none(), "{bad:?} must be refused");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert("tracestate", HeaderValue::from_bytes(b"rojo=\xff").unwrap());
        assert!(
            parse_tracestate(headers.get_all("tracestate")).is_none(),
            "not ASCII"
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(tracestate(&[&many.join(",")]).is_none(), "33 members");
        let many: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert!(tracestate(&[&many.join(",")]).is_some(), "32 members");
        let long = format!("k={}", "x".repeat(MAX_TRACESTATE));
        assert!(tracestate(&[&long]).is_none(), "oversized");
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A future version may carry more fields.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more")
                .is_some()
        );
    }
}
