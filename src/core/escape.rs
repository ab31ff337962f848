//! JSON string escaping with a length cap.
//!
//! Every value a log line carries goes through [`JsonStr`]: quotes, backslashes, C0 and C1
//! control characters (ANSI escapes included), DEL, and U+2028/U+2029 are escaped, so one event
//! is always exactly one line and a terminal showing it never interprets it. Values longer than
//! the cap are cut at a character boundary and marked with `…[truncated]`.

use std::fmt::{self, Write};

pub(crate) use super::names::TRUNCATED;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A `fmt::Write` that appends JSON-escaped text (without the quotes) to a `String`, keeping at
/// most `budget` bytes of the input.
pub(crate) struct JsonStr<'a> {
    out: &'a mut String,
    budget: usize,
    truncated: bool,
}

impl<'a> JsonStr<'a> {
    pub(crate) fn new(out: &'a mut String, budget: usize) -> Self {
        Self {
            out,
            budget,
            truncated: false,
        }
    }

    /// Writes the truncation marker when needed.
    pub(crate) fn finish(self) {
        if self.truncated {
            self.out.push_str(TRUNCATED);
        }
    }
}

impl Write for JsonStr<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.truncated {
            // Stop the formatter: the rest would be thrown away anyway.
            return Err(fmt::Error);
        }
        let take = if s.len() <= self.budget {
            s.len()
        } else {
            self.truncated = true;
            let mut n = self.budget;
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            n
        };
        self.budget -= take;
        escape_into(self.out, &s[..take]);
        if self.truncated {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Bytes that may start something to escape: C0 controls, `"`, `\\`, DEL, and the lead bytes
/// of U+0080..U+009F (0xC2) and U+2028/U+2029 (0xE2), which need a closer look.
static FLAGGED: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xc2] = true;
    t[0xe2] = true;
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes of `w` may need escaping: a C0 control, `"`, `\\`, or a byte at
/// or above DEL (the multi-byte cases get the byte-wise look). It can answer yes for a clean
/// word (a carry from a byte above DEL), never no for a word to escape.
#[inline]
fn word_flagged(w: u64) -> bool {
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let quote = has_zero(w ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(w ^ (ONES * u64::from(b'\\')));
    let high = (w | w.wrapping_add(ONES)) & HIGHS;
    (control | quote | backslash | high) != 0
}

/// Appends `s` JSON-escaped (no quotes, no cap).
pub(crate) fn escape_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Clean text (most values) goes eight bytes at a time; the last few bytes, padded
        // with a clean byte, in one more step.
        while let Some(word) = bytes[i..].first_chunk::<8>() {
            if word_flagged(u64::from_le_bytes(*word)) {
                break;
            }
            i += 8;
        }
        if bytes.len() - i < 8 && i < bytes.len() {
            let mut w = [b'a'; 8];
            for (slot, &b) in w.iter_mut().zip(&bytes[i..]) {
                *slot = b;
            }
            if !word_flagged(u64::from_le_bytes(w)) {
                break;
            }
        }
        let Some(&b) = bytes.get(i) else { break };
        if !FLAGGED[b as usize] {
            i += 1;
            continue;
        }
        let escape_len = match b {
            0x00..=0x1f | b'"' | b'\\' | 0x7f => 1,
            // U+0080..=U+009F: C1 controls, among them the 8-bit CSI of ANSI escapes.
            0xc2 if matches!(bytes.get(i + 1), Some(0x80..=0x9f)) => 2,
            // U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR.
            0xe2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) =>
            {
                3
            }
            _ => 0,
        };
        if escape_len == 0 {
            i += 1;
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let code: u32 = match escape_len {
                    1 => u32::from(b),
                    2 => u32::from(bytes[i + 1]),
                    _ => 0x2000 | u32::from(bytes[i + 2] & 0x3f),
                };
                let hex = [
                    b'\\',
                    b'u',
                    HEX[((code >> 12) & 0xf) as usize],
                    HEX[((code >> 8) & 0xf) as usize],
                    HEX[((code >> 4) & 0xf) as usize],
                    HEX[(code & 0xf) as usize],
                ];
                out.push_str(std::str::from_utf8(&hex).unwrap_or("\\ufffd"));
            }
        }
        i += escape_len;
        start = i;
    }
    out.push_str(&s[start..]);
}

/// Appends a number, fast for the common cases (integers and up to three decimals).
pub(crate) fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() && v.abs() < 1e15 {
        let milli = (v * 1000.0).round();
        if milli / 1000.0 == v {
            let neg = milli < 0.0;
            if neg {
                out.push('-');
            }
            push_thousandths(out, milli.abs() as u64);
            return;
        }
    }
    use std::fmt::Write as _;
    let _ = write!(out, "{v}");
}

/// Appends `micros / 1000` as [`push_f64`] writes `micros as f64 / 1000.0` (a duration in
/// milliseconds with whole microseconds), without floating point.
pub(crate) fn push_millis(out: &mut String, micros: u64) {
    if micros >= 1 << 53 {
        push_f64(out, micros as f64 / 1000.0);
        return;
    }
    push_thousandths(out, micros);
}

/// Appends `m / 1000` with up to three decimals, trailing zeros left out.
fn push_thousandths(out: &mut String, m: u64) {
    push_u64(out, m / 1000);
    let frac = m % 1000;
    if frac != 0 {
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let mut len = 4;
        while digits[len - 1] == b'0' {
            len -= 1;
        }
        out.push_str(std::str::from_utf8(&digits[..len]).unwrap_or(""));
    }
}

/// `"00010203…99"`: the two digits of every number below 100.
const DEC_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// [`DEC_PAIRS`] as text, for appending two digits without a UTF-8 check.
const DEC_PAIRS_TEXT: &str = match std::str::from_utf8(&DEC_PAIRS) {
    Ok(s) => s,
    Err(_) => panic!("digits are ASCII"),
};

/// Appends `n` (below 100) as two digits, `07` for 7.
pub(crate) fn push_two_digits(out: &mut String, n: usize) {
    let n = n.min(99);
    out.push_str(&DEC_PAIRS_TEXT[2 * n..2 * n + 2]);
}

/// Appends an unsigned integer (two digits per division).
pub(crate) fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    while v >= 100 {
        let pair = (v % 100) as usize * 2;
        v /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DEC_PAIRS[pair..pair + 2]);
    }
    if v >= 10 {
        let pair = v as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&DEC_PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + v as u8;
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Appends a signed integer.
pub(crate) fn push_i64(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    push_u64(out, v.unsigned_abs());
}

/// Appends `"s"` JSON-escaped and capped.
#[inline]
pub(crate) fn push_json_str(out: &mut String, s: &str, cap: usize) {
    out.push('"');
    if s.len() <= cap {
        escape_into(out, s);
    } else {
        let mut w = JsonStr::new(out, cap);
        let _ = w.write_str(s);
        w.finish();
    }
    out.push('"');
}

/// Appends `"{value:?}"` JSON-escaped and capped.
pub(crate) fn push_json_debug(out: &mut String, value: &dyn fmt::Debug, cap: usize) {
    out.push('"');
    let mut w = JsonStr::new(out, cap);
    let _ = write!(w, "{value:?}");
    w.finish();
    out.push('"');
}

/// Appends lower-case hex.
pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        push_hex_u64(out, u64::from_be_bytes(w));
    }
    for b in words.remainder() {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

/// Appends the 16 lower-case hex digits of `v`.
#[inline]
pub(crate) fn push_hex_u64(out: &mut String, v: u64) {
    let digits = hex_u64(v);
    out.push_str(std::str::from_utf8(&digits).unwrap_or("0000000000000000"));
}

/// The 16 lower-case hex digits of `v`, most significant first, computed a word at a time.
#[inline]
pub(crate) fn hex_u64(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&hex_word((v >> 32) as u32).to_be_bytes());
    out[8..].copy_from_slice(&hex_word(v as u32).to_be_bytes());
    out
}

/// The 8 hex digits of `x` as the bytes of a word, most significant digit in the top byte.
#[inline]
fn hex_word(x: u32) -> u64 {
    // Each nibble spread into a byte of its own, in order.
    let x = u64::from(x);
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    let n = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in the bytes holding 10..=15 (adding 6 carries into bit 4), which become letters:
    // '0' + n, plus 'a' - '0' - 10 = 0x27 for a letter. No byte carries into the next.
    let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    n + 0x3030_3030_3030_3030 + letters * 0x27
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str) -> String {
        let mut out = String::new();
        push_json_str(&mut out, s, 8192);
        out
    }

    #[test]
    fn escapes_what_json_and_terminals_need() {
        assert_eq!(esc("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(esc("a\r\nb"), r#""a\r\nb""#);
        assert_eq!(esc("\x1b[31mred"), r#""\u001b[31mred""#);
        assert_eq!(esc("\u{9b}31m"), r#""\u009b31m""#);
        assert_eq!(esc("x\u{2028}y\u{2029}"), r#""x\u2028y\u2029""#);
        assert_eq!(esc("\x7f\0"), r#""\u007f\u0000""#);
        assert_eq!(esc("héllo ✓"), "\"héllo ✓\"");
        for s in ["\x1b[31mred\u{2028}", "a\"\\\n\u{85}z", "plain"] {
            let parsed: String = serde_json::from_str(&esc(s)).unwrap();
            assert_eq!(parsed, s);
        }
    }

    #[test]
    fn the_word_scan_never_misses_a_byte_to_escape() {
        // Every byte value at every position of a clean word, and after a byte above DEL
        // (whose carry must not hide it).
        for b in 0..=255u8 {
            for p in 0..8 {
                for filler in [b'a', 0xff, 0x7e] {
                    let mut w = [filler; 8];
                    w[p] = b;
                    let needs_look = w.iter().any(|&x| FLAGGED[x as usize] || x >= 0x7f);
                    if needs_look {
                        assert!(word_flagged(u64::from_le_bytes(w)), "{w:?}");
                    }
                }
            }
        }
        assert!(!word_flagged(u64::from_le_bytes(*b"abcdefgh")));
        // Long values with something to escape at every offset agree with serde_json.
        for at in 0..40 {
            for special in [
                "\"", "\\", "\n", "\u{1b}", "\u{9b}", "\u{2028}", "é", "\u{7f}",
            ] {
                let s = format!("{}{special}{}", "x".repeat(at), "y".repeat(40 - at));
                let parsed: String = serde_json::from_str(&esc(&s)).unwrap();
                assert_eq!(parsed, s);
                assert!(!esc(&s).contains('\n') && !esc(&s).contains('\u{1b}'));
            }
        }
    }

    #[test]
    fn integers_and_hex_read_as_std_formats_them() {
        let mut values = vec![
            0u64,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            u64::MAX,
            u64::MAX - 1,
        ];
        values.extend((0..64).map(|b| 1u64 << b));
        values.extend((0..64).map(|b| (1u64 << b) - 1));
        // Deterministic spread: every nibble value at every position.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x);
            values.push(x % 1_000_000);
        }
        for v in values {
            let mut s = String::new();
            push_u64(&mut s, v);
            assert_eq!(s, v.to_string());
            let mut h = String::new();
            push_hex_u64(&mut h, v);
            assert_eq!(h, format!("{v:016x}"));
            let mut b = String::new();
            push_hex(&mut b, &[&v.to_be_bytes()[..], &[0xab, 0x0f]].concat());
            assert_eq!(b, format!("{v:016x}ab0f"));
        }
        let mut wide = String::new();
        push_hex(
            &mut wide,
            &0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.to_be_bytes(),
        );
        assert_eq!(wide, "0123456789abcdeffedcba9876543210");
    }

    #[test]
    fn numbers() {
        let f = |v: f64| {
            let mut s = String::new();
            push_f64(&mut s, v);
            s
        };
        assert_eq!(f(0.231), "0.231");
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(12.0), "12");
        assert_eq!(f(-3.25), "-3.25");
        assert_eq!(f(0.1234), "0.1234");
        assert_eq!(f(1e300), format!("{}", 1e300));
        for micros in [0u64, 1, 999, 1000, 123_456, 98_765_432] {
            let v = micros as f64 / 1000.0;
            assert_eq!(f(v).parse::<f64>().unwrap(), v, "{micros}");
        }
        let mut s = String::new();
        push_u64(&mut s, u64::MAX);
        push_i64(&mut s, i64::MIN);
        assert_eq!(s, format!("{}{}", u64::MAX, i64::MIN));
    }

    #[test]
    fn millis_from_micros_read_as_the_float_does() {
        let f = |micros: u64| {
            let (mut a, mut b) = (String::new(), String::new());
            push_millis(&mut a, micros);
            push_f64(&mut b, micros as f64 / 1000.0);
            assert_eq!(a, b, "{micros}");
        };
        for micros in (0..5000).chain([10_000, 123_450, 999_999, 1 << 40, u64::MAX]) {
            f(micros);
        }
        for _ in 0..10_000 {
            f(fastrand::u64(..1 << 50));
        }
    }

    #[test]
    fn caps_at_a_char_boundary() {
        let mut out = String::new();
        push_json_str(&mut out, &"é".repeat(10), 5);
        assert_eq!(out, format!("\"éé{TRUNCATED}\""));
        let mut out = String::new();
        push_json_debug(&mut out, &"x".repeat(100), 10);
        assert_eq!(out, format!("\"\\\"xxxxxxxxx{TRUNCATED}\""));
    }
}
