//! Redaction of sensitive field and header names.
//!
//! A name is sensitive when, lower-cased and with `-`, `_` and `.` removed, it contains one of the
//! configured words (also normalized). So `password` covers `user_password` and `Password`,
//! `api_key` covers `x-api-key` and `apiKey`, and `cookie` covers `set-cookie`. Matching by
//! substring errs on the side of hiding: a `tokens_used` field is redacted too.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use super::names::REDACTED;

/// The default list of sensitive words (passwords, secrets, tokens, credentials, cookies, API keys, card numbers).
pub const DEFAULT_SENSITIVE: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "set-cookie",
    "api_key",
    "x-api-key",
    "card_number",
];

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Slots of the per-thread cache.
const SLOTS: usize = 512;

/// (redactor id, name address, name length, sensitive)
type Slot = (usize, usize, usize, bool);

thread_local! {
    /// A direct-mapped cache of decisions for `'static` field names: their address identifies
    /// them, so a hit costs one multiply and one compare. A miss recomputes and overwrites.
    static CACHE: RefCell<[Slot; SLOTS]> = const { RefCell::new([(0, 0, 0, false); SLOTS]) };
}

/// Decides which names are sensitive.
#[derive(Debug)]
pub(crate) struct Redactor {
    id: usize,
    words: Vec<Vec<u8>>,
}

impl Redactor {
    pub(crate) fn new<I, S>(words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words = words
            .into_iter()
            .map(|w| normalize(w.as_ref()))
            .filter(|w| !w.is_empty())
            .collect();
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            words,
        }
    }

    /// Whether a name (of any origin) is sensitive.
    pub(crate) fn is_sensitive(&self, name: &str) -> bool {
        if self.words.is_empty() {
            return false;
        }
        let norm = normalize(name);
        self.words.iter().any(|w| contains(&norm, w))
    }

    /// Whether a `'static` field name is sensitive, cached per thread.
    pub(crate) fn is_sensitive_static(&self, name: &'static str) -> bool {
        let addr = name.as_ptr() as usize;
        let slot = (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> 7) % SLOTS;
        CACHE.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return self.is_sensitive(name);
            };
            let (id, a, len, hit) = cache[slot];
            if id == self.id && a == addr && len == name.len() {
                return hit;
            }
            let value = self.is_sensitive(name);
            cache[slot] = (self.id, addr, name.len(), value);
            value
        })
    }
}

fn normalize(name: &str) -> Vec<u8> {
    name.bytes()
        .filter(|b| !matches!(b, b'-' | b'_' | b'.'))
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_words_match_their_variants() {
        let r = Redactor::new(DEFAULT_SENSITIVE);
        for name in [
            "password",
            "user_password",
            "Authorization",
            "x-api-key",
            "apiKey",
            "set-cookie",
            "Cookie",
            "card_number",
            "cardNumber",
            "access_token",
            "client.secret",
            "passwd",
        ] {
            assert!(r.is_sensitive(name), "{name}");
            assert!(
                r.is_sensitive_static(Box::leak(name.to_string().into_boxed_str())),
                "{name}"
            );
        }
        for name in ["user_id", "plan", "amount", "http.route", "correlation_id"] {
            assert!(!r.is_sensitive(name), "{name}");
        }
    }

    #[test]
    fn custom_list_replaces_the_default() {
        let r = Redactor::new(["ssn"]);
        assert!(r.is_sensitive("user_ssn"));
        assert!(!r.is_sensitive("password"));
    }
}
