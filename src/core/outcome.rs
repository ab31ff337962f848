//! One outcome classification, used by metrics, logs, sampling and error reporting alike.

use http::StatusCode;

use super::grpc::GrpcCode;
use super::http::status_str;

/// How a request ended, as every part of the crate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 400 (and below 500 for 4xx, see [`Outcome::ClientError`]).
    Success(StatusCode),
    /// A 4xx response. Not an error for metrics' `error_type`, logged at WARNING.
    ClientError(StatusCode),
    /// A 5xx response.
    ServerError(StatusCode),
    /// The inner service returned `Err`; `error_type` is the error's type name.
    Failed(&'static str),
    /// The handler panicked; the layer answered 500.
    Panicked,
    /// The response future was dropped before a response head was produced (client went away),
    /// or a gRPC response stream before its trailers.
    Cancelled,
    /// A gRPC call answered with an HTTP status (200 normally) and a gRPC status. An error when
    /// the code is a server fault ([`GrpcCode::is_server_fault`]).
    Grpc(StatusCode, GrpcCode),
}

/// How severe an outcome is for the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// INFO: 1xx, 2xx, 3xx.
    Info,
    /// WARNING: 4xx, gRPC client faults and cancelled requests.
    Warning,
    /// ERROR: 5xx, `Err`, panic, gRPC server faults.
    Error,
}

impl Outcome {
    /// Classifies a response status.
    pub fn from_status(status: StatusCode) -> Self {
        if status.is_server_error() {
            Outcome::ServerError(status)
        } else if status.is_client_error() {
            Outcome::ClientError(status)
        } else {
            Outcome::Success(status)
        }
    }

    /// The status sent to the client, if a response was sent.
    pub fn status(self) -> Option<StatusCode> {
        match self {
            Outcome::Success(s)
            | Outcome::ClientError(s)
            | Outcome::ServerError(s)
            | Outcome::Grpc(s, _) => Some(s),
            Outcome::Panicked => Some(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::Failed(_) | Outcome::Cancelled => None,
        }
    }

    /// The value of the `error_type` label and `error.type` field; empty when not an error.
    ///
    /// It is the status code for 5xx, the code name for gRPC server faults, `panic`,
    /// `cancelled`, or the error type's name: all low-cardinality by construction.
    pub fn error_type(self) -> &'static str {
        match self {
            Outcome::Success(_) | Outcome::ClientError(_) => "",
            Outcome::ServerError(s) => status_str(s),
            Outcome::Failed(name) => name,
            Outcome::Panicked => "panic",
            Outcome::Cancelled => "cancelled",
            Outcome::Grpc(_, code) if code.is_server_fault() => code.name(),
            Outcome::Grpc(..) => "",
        }
    }

    /// Whether this is an error for sampling, error reporting and alerting (5xx, `Err`, panic,
    /// a gRPC server fault).
    pub fn is_error(self) -> bool {
        match self {
            Outcome::ServerError(_) | Outcome::Failed(_) | Outcome::Panicked => true,
            Outcome::Grpc(_, code) => code.is_server_fault(),
            _ => false,
        }
    }

    /// The gRPC code of a gRPC call's outcome (`CANCELLED` for a cancelled one is the caller's
    /// to say: see the layer).
    pub fn grpc_code(self) -> Option<GrpcCode> {
        match self {
            Outcome::Grpc(_, code) => Some(code),
            _ => None,
        }
    }

    /// The access-log severity.
    pub fn severity(self) -> Severity {
        match self {
            Outcome::Success(_) => Severity::Info,
            Outcome::ClientError(_) | Outcome::Cancelled => Severity::Warning,
            Outcome::ServerError(_) | Outcome::Failed(_) | Outcome::Panicked => Severity::Error,
            Outcome::Grpc(_, code) if code == GrpcCode::OK => Severity::Info,
            Outcome::Grpc(_, code) if code.is_server_fault() => Severity::Error,
            Outcome::Grpc(..) => Severity::Warning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(Outcome::from_status(StatusCode::OK).error_type(), "");
        assert_eq!(
            Outcome::from_status(StatusCode::NOT_FOUND).severity(),
            Severity::Warning
        );
        let e = Outcome::from_status(StatusCode::BAD_GATEWAY);
        assert!(e.is_error());
        assert_eq!(e.error_type(), "502");
        assert_eq!(
            Outcome::Panicked.status(),
            Some(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert_eq!(Outcome::Cancelled.error_type(), "cancelled");
        assert!(!Outcome::Cancelled.is_error());
    }
}
