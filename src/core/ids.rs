//! IDs: correlation IDs (validation, generation) and W3C trace and span IDs.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

/// The longest correlation ID accepted from a request, in bytes.
pub const MAX_LEN: usize = 128;

/// The correlation ID of one request.
///
/// The layer takes it from the configured request header (`x-request-id` by default, and
/// `x-correlation-id`) when the value is valid, and generates a UUID v4 otherwise. A valid ID is
/// 1 to 128 bytes of `[A-Za-z0-9._:@/+=-]`; anything else (too long, control bytes, CR/LF,
/// non-ASCII, spaces) is replaced, so an ID can always be written into a log line, a header or a
/// metric exemplar as it is.
///
/// It is echoed on the response, stored in the request's extensions, recorded on the request span
/// and written on every log line emitted while the request is handled.
///
/// ```
/// use mercenary_obs::CorrelationId;
///
/// assert!(CorrelationId::parse("req-42:abc").is_some());
/// assert!(CorrelationId::parse("a\r\nb").is_none());
/// assert_eq!(CorrelationId::generate().as_str().len(), 36);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(pub(crate) Arc<str>);

impl CorrelationId {
    /// Validates `value` and returns it as an ID, or `None` when it is not a valid ID.
    pub fn parse(value: &str) -> Option<Self> {
        Self::parse_bytes(value.as_bytes())
    }

    /// Validates raw header bytes (which may hold anything a client sent).
    pub fn parse_bytes(value: &[u8]) -> Option<Self> {
        if is_valid(value) {
            // Valid bytes are ASCII, so this cannot fail; `ok()` keeps the path panic-free.
            std::str::from_utf8(value).ok().map(|s| Self(Arc::from(s)))
        } else {
            None
        }
    }

    /// A fresh random ID (UUID v4, hyphenated, lower case).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        bytes[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        Self(Arc::from(&*uuid.hyphenated().encode_lower(&mut buf)))
    }

    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        // Every valid ID is a valid header value; the fallback is never taken.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CorrelationId").field(&&*self.0).finish()
    }
}

impl AsRef<str> for CorrelationId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Whether `value` is an acceptable correlation ID: 1..=128 bytes of `[A-Za-z0-9._:@/+=-]`.
#[inline]
pub(crate) fn is_valid(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_LEN
        && value.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'_' | b':' | b'@' | b'/' | b'+' | b'=' | b'-')
        })
}

/// A random, non-zero W3C trace ID.
#[inline]
pub(crate) fn new_trace_id() -> u128 {
    loop {
        let id = fastrand::u128(..);
        if id != 0 {
            return id;
        }
    }
}

/// A random, non-zero W3C span ID.
#[inline]
pub(crate) fn new_span_id() -> u64 {
    loop {
        let id = fastrand::u64(..);
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(is_valid(b"abcXYZ019._:@/+=-"));
        assert!(is_valid(&[b'a'; 128]));
    }

    #[test]
    fn rejects_hostile_values() {
        assert!(!is_valid(b""));
        assert!(!is_valid(&[b'a'; 129]));
        assert!(!is_valid(b"a\r\nb"));
        assert!(!is_valid(b"\x1b[31mred"));
        assert!(!is_valid(&[0x80, 0xff]));
        assert!(!is_valid(b"a b"));
        assert!(!is_valid(b"a\"b"));
    }

    #[test]
    fn generated_ids_are_uuid_v4() {
        let id = CorrelationId::generate();
        let parsed = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert!(is_valid(id.as_str().as_bytes()));
        assert_ne!(id, CorrelationId::generate());
    }
}
