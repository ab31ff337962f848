//! HTTP naming: the method label values and status codes as static strings.

use http::{Method, StatusCode};

/// The method label values: RFC 9110 methods, PATCH, and `_OTHER` for anything else.
pub(crate) const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
];

/// The label value of a method and its index in [`METHODS`]. Clients choose methods, so
/// anything outside the known set is `_OTHER` (OTel semconv).
#[inline]
pub(crate) fn method_label(method: &Method) -> (&'static str, usize) {
    let idx = match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    };
    (METHODS[idx], idx)
}

/// The decimal form of a status code as a `'static` string, without allocating.
#[inline]
pub(crate) fn status_str(status: StatusCode) -> &'static str {
    static CODES: [[u8; 3]; 900] = {
        let mut out = [[0u8; 3]; 900];
        let mut i = 0;
        while i < 900 {
            let code = i + 100;
            out[i] = [
                b'0' + (code / 100) as u8,
                b'0' + (code / 10 % 10) as u8,
                b'0' + (code % 10) as u8,
            ];
            i += 1;
        }
        out
    };
    let code = status.as_u16() as usize;
    match CODES.get(code.wrapping_sub(100)) {
        Some(bytes) => std::str::from_utf8(bytes).unwrap_or("_OTHER"),
        None => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings() {
        assert_eq!(status_str(StatusCode::OK), "200");
        assert_eq!(status_str(StatusCode::CONTINUE), "100");
        assert_eq!(status_str(StatusCode::from_u16(599).unwrap()), "599");
        for code in 100..1000u16 {
            assert_eq!(
                status_str(StatusCode::from_u16(code).unwrap()),
                code.to_string()
            );
        }
    }

    #[test]
    fn methods_outside_the_known_set_are_other() {
        assert_eq!(method_label(&Method::GET).0, "GET");
        assert_eq!(method_label(&Method::PATCH).0, "PATCH");
        assert_eq!(
            method_label(&Method::from_bytes(b"FOO").unwrap()).0,
            "_OTHER"
        );
        assert_eq!(
            method_label(&Method::from_bytes(b"get").unwrap()).0,
            "_OTHER"
        );
    }
}
