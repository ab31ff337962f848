//! gRPC status codes: names, classification, and where they are read from.
//!
//! A gRPC call answers HTTP 200 and puts its status in `grpc-status`: in the trailers after the
//! messages, or in the headers of a trailers-only response (an error before any message).

use http::{HeaderMap, HeaderName, StatusCode};

/// The `grpc-status` header or trailer.
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The code names, by code (gRPC `status.proto`).
const NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A gRPC status code (0–16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcCode(u8);

impl GrpcCode {
    /// `OK`.
    pub const OK: GrpcCode = GrpcCode(0);
    /// `CANCELLED`.
    pub const CANCELLED: GrpcCode = GrpcCode(1);
    /// `UNKNOWN`.
    pub const UNKNOWN: GrpcCode = GrpcCode(2);
    /// `UNIMPLEMENTED`.
    pub const UNIMPLEMENTED: GrpcCode = GrpcCode(12);
    /// `INTERNAL`.
    pub const INTERNAL: GrpcCode = GrpcCode(13);

    /// The code with this number, if it is one of the 17.
    pub fn from_u8(code: u8) -> Option<GrpcCode> {
        (usize::from(code) < NAMES.len()).then_some(GrpcCode(code))
    }

    /// The code's number.
    pub fn as_u8(self) -> u8 {
        self.0
    }

    /// The code's name (`OK`, `NOT_FOUND`, `INTERNAL`, …), the `rpc.response.status_code` value.
    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0)]
    }

    /// Whether the code is a server fault, an error for metrics, sampling, logs and error
    /// reporting: `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`,
    /// `DATA_LOSS` (the OpenTelemetry gRPC conventions for servers). The others are the
    /// client's doing (`NOT_FOUND`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`, …) or success.
    pub fn is_server_fault(self) -> bool {
        matches!(self.0, 2 | 4 | 12 | 13 | 14 | 15)
    }

    /// The code a client sees for an HTTP response without `grpc-status` (gRPC's
    /// "HTTP to gRPC status code mapping").
    pub fn from_http(status: StatusCode) -> GrpcCode {
        GrpcCode(match status.as_u16() {
            400 => 13,
            401 => 16,
            403 => 7,
            404 => 12,
            429 | 502..=504 => 14,
            _ => 2,
        })
    }

    /// Reads `grpc-status` from headers or trailers: `None` when absent; a value that is not a
    /// code is `UNKNOWN`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<GrpcCode> {
        let value = headers.get(&GRPC_STATUS)?;
        Some(
            std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|s| s.parse::<u8>().ok())
                .and_then(GrpcCode::from_u8)
                .unwrap_or(GrpcCode::UNKNOWN),
        )
    }
}

/// Whether a request is a gRPC call (`content-type: application/grpc`, `+proto`, `+json`, …).
#[inline]
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `rpc.method` of a gRPC request path (`/package.Service/Method` →
/// `package.Service/Method`), or `None` when the path does not have that shape.
pub(crate) fn rpc_method(path: &str) -> Option<&str> {
    let method = path.strip_prefix('/')?;
    let (service, name) = method.split_once('/')?;
    (!service.is_empty() && !name.is_empty() && !name.contains('/')).then_some(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_classes() {
        assert_eq!(GrpcCode::from_u8(13).map(GrpcCode::name), Some("INTERNAL"));
        assert_eq!(GrpcCode::from_u8(17), None);
        let faults: Vec<_> = (0..17)
            .filter_map(GrpcCode::from_u8)
            .filter(|c| c.is_server_fault())
            .map(GrpcCode::name)
            .collect();
        assert_eq!(
            faults,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        let mut h = HeaderMap::new();
        assert_eq!(GrpcCode::from_headers(&h), None);
        h.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(
            GrpcCode::from_headers(&h).map(GrpcCode::name),
            Some("NOT_FOUND")
        );
        h.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(GrpcCode::from_headers(&h), Some(GrpcCode::UNKNOWN));
        assert_eq!(
            GrpcCode::from_http(StatusCode::SERVICE_UNAVAILABLE).name(),
            "UNAVAILABLE"
        );
    }

    #[test]
    fn methods_from_paths() {
        assert_eq!(
            rpc_method("/mercenary.v1.Pricing/Quote"),
            Some("mercenary.v1.Pricing/Quote")
        );
        for bad in ["/", "/x", "/a/", "//b", "/a/b/c", "a/b"] {
            assert_eq!(rpc_method(bad), None, "{bad}");
        }
    }
}
