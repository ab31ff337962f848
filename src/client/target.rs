//! What a call is made to (`server.address`, `server.port`, `url.full`) and how its failure is
//! named (`error.type`).

use std::borrow::Cow;
use std::error::Error as StdError;
use std::io;

/// The longest `url.full` recorded.
const MAX_URL: usize = 8 * 1024;

/// Where an outgoing call goes, read from its URL.
pub(crate) struct Target<'a> {
    pub(crate) scheme: &'a str,
    /// As in the URL (an IPv6 address in brackets).
    pub(crate) host: &'a str,
    pub(crate) port: Option<u16>,
    pub(crate) path: &'a str,
}

impl<'a> Target<'a> {
    /// From an `http::Uri` (a client request's URI is absolute).
    pub(crate) fn from_uri(uri: &'a http::Uri) -> Self {
        Target {
            scheme: uri.scheme_str().unwrap_or("http"),
            host: uri.host().unwrap_or(""),
            port: uri.port_u16(),
            path: uri.path(),
        }
    }

    /// The port, or the scheme's default; `None` for a URI without a host (a tonic client made
    /// without an origin sends only the path: the channel adds the authority later).
    pub(crate) fn port(&self) -> Option<u16> {
        if self.host.is_empty() {
            return None;
        }
        Some(self.port.unwrap_or(match self.scheme {
            "https" | "wss" => 443,
            _ => 80,
        }))
    }

    /// `server.address`: the host, without IPv6 brackets, in lower case.
    pub(crate) fn address(&self) -> Cow<'a, str> {
        let host = self
            .host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(self.host);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        }
    }

    /// `url.full` without userinfo, query or fragment: `scheme://host[:port]/path`, cut at
    /// 8 KiB (the log value cap).
    pub(crate) fn url_full(&self) -> String {
        if self.host.is_empty() {
            return self.path.to_string();
        }
        let mut out =
            String::with_capacity(self.scheme.len() + self.host.len() + self.path.len() + 10);
        out.push_str(self.scheme);
        out.push_str("://");
        out.push_str(self.host);
        if let Some(port) = self.port {
            out.push(':');
            out.push_str(itoa_u16(port).as_str());
        }
        if !self.path.starts_with('/') {
            out.push('/');
        }
        out.push_str(self.path);
        if out.len() > MAX_URL {
            let mut end = MAX_URL;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push_str(crate::core::names::TRUNCATED);
        }
        out
    }
}

/// A port as decimal text on the stack.
pub(crate) struct PortText {
    buf: [u8; 5],
    len: usize,
}

impl PortText {
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[5 - self.len..]).unwrap_or("0")
    }
}

pub(crate) fn itoa_u16(mut n: u16) -> PortText {
    let mut buf = [0u8; 5];
    let mut len = 0;
    loop {
        buf[4 - len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    PortText { buf, len }
}

/// `error.type` of a failed call: the I/O error kind found in its source chain (`timeout`,
/// `connection_refused`, …), else `fallback` (the error's type name). Always low-cardinality.
pub(crate) fn error_type(error: &(dyn StdError + 'static), fallback: &'static str) -> &'static str {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(kind) = io_kind(io.kind())
        {
            return kind;
        }
        next = e.source();
    }
    fallback
}

fn io_kind(kind: io::ErrorKind) -> Option<&'static str> {
    use io::ErrorKind as K;
    Some(match kind {
        K::TimedOut => "timeout",
        K::ConnectionRefused => "connection_refused",
        K::ConnectionReset => "connection_reset",
        K::ConnectionAborted => "connection_aborted",
        K::NotConnected => "not_connected",
        K::AddrNotAvailable => "address_not_available",
        K::BrokenPipe => "broken_pipe",
        K::UnexpectedEof => "unexpected_eof",
        K::HostUnreachable => "host_unreachable",
        K::NetworkUnreachable => "network_unreachable",
        K::NotFound => "not_found",
        K::PermissionDenied => "permission_denied",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_full_drops_userinfo_query_and_fragment() {
        let uri: http::Uri = "https://user:pw@Api.Example.com:8443/v1/items?token=s3cret"
            .parse()
            .unwrap();
        let t = Target::from_uri(&uri);
        assert_eq!(t.url_full(), "https://Api.Example.com:8443/v1/items");
        assert_eq!(t.address(), "api.example.com");
        assert_eq!(t.port(), Some(8443));
        let uri: http::Uri = "http://[::1]/x".parse().unwrap();
        let t = Target::from_uri(&uri);
        assert_eq!((t.address().as_ref(), t.port()), ("::1", Some(80)));
        assert_eq!(t.url_full(), "http://[::1]/x");
        let uri: http::Uri = "/mercenary.v1.Pricing/Quote".parse().unwrap();
        let t = Target::from_uri(&uri);
        assert_eq!(
            (t.address().as_ref(), t.port()),
            ("", None),
            "no host: nothing invented"
        );
        assert_eq!(t.url_full(), "/mercenary.v1.Pricing/Quote");
    }

    #[test]
    fn ports_render_as_decimal() {
        for n in [0u16, 7, 80, 443, 8080, 65535] {
            assert_eq!(itoa_u16(n).as_str(), n.to_string());
        }
    }

    #[test]
    fn error_type_reads_the_io_kind_in_the_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(error_type(&refused, "Wrapper"), "connection_refused");
        let other = Wrapper(io::Error::other("x"));
        assert_eq!(error_type(&other, "Wrapper"), "Wrapper");
    }
}
