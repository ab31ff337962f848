//! The exporter's transports: an `opentelemetry_http::HttpClient` on hyper (with rustls for
//! `https://`, feature `tls`) and, under feature `grpc`, a TLS connector for tonic's channel.
//!
//! Both record the text of their last failure, with the whole `source()` chain, in a
//! [`LastError`]: `opentelemetry-otlp` reduces a failed request to "network error" or
//! "transport error", and the export warning must say why (an unknown issuer, an expired
//! certificate, a wrong name).

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Response bodies larger than this are refused (the collector answers with a small message).
const MAX_RESPONSE: usize = 4 << 20;

/// The last transport failure, as text; and spans the collector rejected in answers that
/// were otherwise successes (OTLP partial success, which `opentelemetry-otlp` only logs).
#[derive(Clone, Debug, Default)]
pub(crate) struct LastError(Arc<Mutex<Option<String>>>, Arc<AtomicU64>);

impl LastError {
    /// Counts spans a collector rejected in an otherwise successful answer.
    pub(crate) fn add_rejected(&self, spans: u64) {
        self.1.fetch_add(spans, Ordering::Relaxed);
    }

    /// Spans rejected since the last call, taken.
    pub(crate) fn take_rejected(&self) -> u64 {
        self.1.swap(0, Ordering::Relaxed)
    }

    pub(crate) fn record(&self, error: &(dyn StdError + 'static)) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(error_chain(error));
    }

    pub(crate) fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The error and its sources, `: `-separated, skipping a source whose text its parent's
/// already contains.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// Plain HTTP, or HTTPS with the crate's rustls configuration.
#[cfg(feature = "tls")]
pub(crate) type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An `opentelemetry_http::HttpClient` on hyper-util's pooled client.
#[derive(Clone, Debug)]
pub(crate) struct HyperClient<C> {
    client: Client<C, Full<Bytes>>,
    last_error: LastError,
}

impl HyperClient<HttpConnector> {
    pub(crate) fn plain(last_error: LastError) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            last_error,
        }
    }
}

#[cfg(feature = "tls")]
impl HyperClient<HttpsConnector> {
    pub(crate) fn tls(config: Arc<rustls::ClientConfig>, last_error: LastError) -> Self {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            last_error,
        }
    }
}

#[async_trait::async_trait]
impl<C> opentelemetry_http::HttpClient for HyperClient<C>
where
    C: Connect + Clone + Send + Sync + std::fmt::Debug + 'static,
{
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let result = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            if parts.status.is_success() && !body.is_empty() {
                self.last_error.add_rejected(rejected_spans(&body));
            }
            Ok::<_, BoxError>(http::Response::from_parts(parts, body))
        }
        .await;
        result.map_err(|e| {
            self.last_error.record(&*e);
            e
        })
    }
}

/// `partial_success.rejected_spans` of an OTLP/HTTP protobuf answer (0 when absent or not
/// protobuf).
fn rejected_spans(body: &[u8]) -> u64 {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    use prost::Message as _;
    ExportTraceServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

/// A connector for tonic's channel: TCP, then TLS with the crate's rustls configuration and
/// the collector's name, whatever the URI's scheme says (the channel is given an `http://`
/// URI so that tonic's own TLS, if some other crate enables it, stays out of the way).
#[cfg(all(feature = "grpc", feature = "tls"))]
#[derive(Clone)]
pub(crate) struct GrpcTlsConnector {
    pub(crate) http: HttpConnector,
    pub(crate) tls: tokio_rustls::TlsConnector,
    pub(crate) server_name: rustls::pki_types::ServerName<'static>,
    pub(crate) last_error: LastError,
}

#[cfg(all(feature = "grpc", feature = "tls"))]
impl tower::Service<http::Uri> for GrpcTlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        let name = self.server_name.clone();
        let last_error = self.last_error.clone();
        Box::pin(async move {
            let result = async {
                let tcp = tower::Service::call(&mut http, uri).await?;
                let stream = tls.connect(name, tcp.into_inner()).await?;
                Ok::<_, BoxError>(hyper_util::rt::TokioIo::new(stream))
            }
            .await;
            result.map_err(|e| {
                last_error.record(&*e);
                e
            })
        })
    }
}
