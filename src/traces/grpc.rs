//! OTLP/gRPC export (feature `grpc`): the crate makes the `TraceService/Export` call itself on
//! a tonic channel, so that it sees what `opentelemetry-otlp`'s gRPC exporter only logs (a
//! partial success's `rejected_spans`) and keeps the retries in its own hands.
//!
//! Retries follow the OTLP specification's gRPC rules: `CANCELLED`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE` and `DATA_LOSS` are retried; `RESOURCE_EXHAUSTED`
//! only when the answer carries a `google.rpc.RetryInfo`; anything else is tried once. The wait
//! is the server's `RetryInfo` delay when it gives one (capped at 10 minutes), otherwise
//! exponential backoff with jitter (the same as `RetryPolicy::recommended()` of the HTTP
//! exporter: 100 ms doubling to 1.6 s, up to 100 ms jitter, 3 retries). A retry whose wait
//! would pass the export deadline is not made.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::transport::{LastError, error_chain};

/// Retries after the first attempt.
const MAX_RETRIES: u32 = 3;
const INITIAL_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_millis(1600);
const MAX_JITTER_MS: u64 = 100;
/// The longest server-given delay honoured.
const MAX_THROTTLE: Duration = Duration::from_secs(600);

/// The OTLP/gRPC trace exporter.
pub(crate) struct GrpcExporter {
    client: TraceServiceClient<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
    resource: ResourceAttributesWithSchema,
    last_error: LastError,
}

impl GrpcExporter {
    pub(crate) fn new(
        channel: Channel,
        headers: http::HeaderMap,
        gzip: bool,
        timeout: Duration,
        last_error: LastError,
    ) -> Self {
        let mut client = TraceServiceClient::new(channel);
        if gzip {
            client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        Self {
            client,
            metadata: MetadataMap::from_headers(headers),
            timeout,
            resource: ResourceAttributesWithSchema::default(),
            last_error,
        }
    }

    pub(crate) fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = resource.into();
    }

    /// One export call, retried as the module docs say. Spans a partial success rejected are
    /// added to the `LastError`'s rejected count; a failure's text names the gRPC status and
    /// its causes.
    pub(crate) async fn export(&self, batch: Vec<SpanData>) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let message = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let mut retries = 0;
        loop {
            let mut request = tonic::Request::new(message.clone());
            *request.metadata_mut() = self.metadata.clone();
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let status = match self.client.clone().export(request).await {
                Ok(response) => {
                    if let Some(partial) = response.into_inner().partial_success {
                        self.last_error
                            .add_rejected(u64::try_from(partial.rejected_spans).unwrap_or(0));
                    }
                    return Ok(());
                }
                Err(status) => status,
            };
            let wait = match retry_delay(&status) {
                Some(throttle) if retries < MAX_RETRIES => {
                    throttle.unwrap_or_else(|| backoff(retries))
                }
                _ => return Err(describe(&status)),
            };
            if Instant::now() + wait >= deadline {
                return Err(describe(&status));
            }
            retries += 1;
            tokio::time::sleep(wait).await;
        }
    }
}

/// `None` when `status` must not be retried; `Some(Some(delay))` when the server said how
/// long to wait; `Some(None)` when the backoff decides.
fn retry_delay(status: &tonic::Status) -> Option<Option<Duration>> {
    use tonic_types::StatusExt as _;
    let given = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .map(|d| d.min(MAX_THROTTLE));
    match status.code() {
        Code::ResourceExhausted => given.map(Some),
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Some(given.filter(|d| !d.is_zero())),
        _ => None,
    }
}

/// Exponential backoff for retry `n` (from 0), with jitter.
fn backoff(n: u32) -> Duration {
    let base = INITIAL_DELAY.saturating_mul(1 << n.min(16)).min(MAX_DELAY);
    base + Duration::from_millis(fastrand::u64(0..=MAX_JITTER_MS))
}

/// "gRPC status Unavailable: connection refused: …", never the metadata (it may hold secrets).
fn describe(status: &tonic::Status) -> String {
    let mut text = format!("gRPC status {:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    if let Some(source) = std::error::Error::source(status) {
        let chain = error_chain(source);
        if !text.contains(&chain) {
            text.push_str(": ");
            text.push_str(&chain);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_follow_the_otlp_specification() {
        use tonic_types::{ErrorDetails, StatusExt as _};
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert_eq!(
                retry_delay(&tonic::Status::new(code, "")),
                Some(None),
                "{code:?}"
            );
        }
        for code in [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
            Code::ResourceExhausted,
        ] {
            assert_eq!(retry_delay(&tonic::Status::new(code, "")), None, "{code:?}");
        }
        let throttled = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        assert_eq!(
            retry_delay(&throttled),
            Some(Some(Duration::from_millis(1500)))
        );
        let huge = tonic::Status::with_error_details(
            Code::Unavailable,
            "",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(86_400))),
        );
        assert_eq!(retry_delay(&huge), Some(Some(MAX_THROTTLE)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let jitter = Duration::from_millis(MAX_JITTER_MS);
        for (n, base) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1600), (9, 1600)] {
            let base = Duration::from_millis(base);
            for _ in 0..50 {
                let d = backoff(n);
                assert!(d >= base && d <= base + jitter, "retry {n}: {d:?}");
            }
        }
    }
}
