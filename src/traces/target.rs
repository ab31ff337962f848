//! The exporter's target: the checked endpoint, headers and TLS settings, and the exporter
//! built from them: `opentelemetry-otlp`'s for HTTP/protobuf, the crate's own (`grpc.rs`) for
//! gRPC under feature `grpc`.

#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use super::export::{ExportConfig, Protocol};
#[cfg(feature = "tls")]
use super::options::TlsFiles;
use super::transport::{HyperClient, LastError};
use crate::core::error::Error;

/// The rustls configuration for an `https://` endpoint (feature `tls`).
#[cfg(feature = "tls")]
type TlsConfig = Option<Arc<rustls::ClientConfig>>;
#[cfg(not(feature = "tls"))]
type TlsConfig = Option<std::convert::Infallible>;

/// The checked endpoint and headers.
pub(crate) enum Target {
    Http {
        endpoint: String,
        headers: http::HeaderMap,
        tls: TlsConfig,
    },
    #[cfg(feature = "grpc")]
    Grpc {
        endpoint: String,
        headers: http::HeaderMap,
        tls: TlsConfig,
    },
}

/// Reads the TLS files (also for an `http://` endpoint, so a wrong path is an error either
/// way) and returns the client configuration when the endpoint is `https://`.
#[cfg(feature = "tls")]
fn tls_config(files: &TlsFiles, https: bool, alpn: &[&[u8]]) -> Result<TlsConfig, Error> {
    if !https && files.is_empty() {
        return Ok(None);
    }
    let config = super::tls::client_config(files, alpn)?;
    Ok(https.then_some(config))
}

impl Target {
    pub(crate) fn check(config: &ExportConfig) -> Result<Self, Error> {
        let invalid_endpoint = |expected: &str| Error::InvalidSetting {
            setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: config.endpoint.clone(),
            expected: expected.to_string(),
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in &config.headers {
            let header_name =
                http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    Error::InvalidSetting {
                        setting: "OTEL_EXPORTER_OTLP_HEADERS",
                        value: name.clone(),
                        expected: "header names made of letters, digits and `-`".into(),
                    }
                })?;
            // The value is a secret more often than not: it is never echoed in the error.
            let header_value =
                http::HeaderValue::from_str(value.trim()).map_err(|_| Error::InvalidSetting {
                    setting: "OTEL_EXPORTER_OTLP_HEADERS",
                    value: format!("{name}=…"),
                    expected: format!("a value of visible ASCII characters for header `{name}`"),
                })?;
            headers.append(header_name, header_value);
        }
        match config.protocol {
            Protocol::HttpProtobuf => {
                let uri: http::Uri = config.endpoint.parse().map_err(|_| {
                    invalid_endpoint("an http:// URL such as http://localhost:4318/v1/traces")
                })?;
                let https = uri.scheme_str() == Some("https");
                #[cfg(not(feature = "tls"))]
                if https {
                    return Err(invalid_endpoint(
                        "an http:// URL: this build of mercenary-obs has no `tls` feature",
                    ));
                }
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(invalid_endpoint(
                        "an http:// or https:// URL such as http://localhost:4318/v1/traces",
                    ));
                }
                #[cfg(feature = "tls")]
                let tls = tls_config(&config.tls, https, &[])?; // hyper-rustls sets the ALPN
                #[cfg(not(feature = "tls"))]
                let tls = None;
                Ok(Target::Http {
                    endpoint: config.endpoint.clone(),
                    headers,
                    tls,
                })
            }
            #[cfg(feature = "grpc")]
            Protocol::Grpc => {
                // A bare `host:port` is plaintext (opentelemetry-otlp would assume https).
                let endpoint = if config.endpoint.contains("://") {
                    config.endpoint.clone()
                } else {
                    format!("http://{}", config.endpoint)
                };
                let uri: http::Uri = endpoint.parse().map_err(|_| {
                    invalid_endpoint("a collector address such as http://localhost:4317")
                })?;
                let https = uri.scheme_str() == Some("https");
                #[cfg(not(feature = "tls"))]
                if https {
                    return Err(invalid_endpoint(
                        "an http:// address: this build of mercenary-obs has no `tls` feature",
                    ));
                }
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none()
                {
                    return Err(invalid_endpoint(
                        "a collector address such as http://localhost:4317",
                    ));
                }
                #[cfg(feature = "tls")]
                let tls = tls_config(&config.tls, https, &[b"h2"])?;
                #[cfg(not(feature = "tls"))]
                let tls = None;
                Ok(Target::Grpc {
                    endpoint,
                    headers,
                    tls,
                })
            }
            #[cfg(not(feature = "grpc"))]
            Protocol::Grpc => Err(Error::InvalidEnv {
                variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
                value: "grpc".into(),
                expected: "`http/protobuf`, or enable the `grpc` feature of mercenary-obs".into(),
            }),
        }
    }

    pub(crate) fn endpoint(&self) -> &str {
        match self {
            Target::Http { endpoint, .. } => endpoint,
            #[cfg(feature = "grpc")]
            Target::Grpc { endpoint, .. } => endpoint,
        }
    }

    /// Builds the exporter; must run inside the runtime (tonic's lazy channel spawns a task).
    pub(crate) fn build(
        self,
        timeout: Duration,
        gzip: bool,
        last_error: &LastError,
    ) -> Result<Exporter, Error> {
        match self {
            Target::Http {
                endpoint,
                headers,
                tls,
            } => http_exporter(endpoint, headers, tls, timeout, gzip, last_error),
            #[cfg(feature = "grpc")]
            Target::Grpc {
                endpoint,
                headers,
                tls,
            } => {
                let channel = match tls {
                    #[cfg(feature = "tls")]
                    Some(config) => grpc_tls_channel(&endpoint, config, timeout, last_error)?,
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match never {},
                    None => tonic::transport::Endpoint::from_shared(endpoint.clone())
                        .map_err(|e| Error::InvalidSetting {
                            setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
                            value: endpoint,
                            expected: format!(
                                "a collector address such as http://collector:4317 ({e})"
                            ),
                        })?
                        .timeout(timeout)
                        .connect_lazy(),
                };
                Ok(Exporter::Grpc(super::grpc::GrpcExporter::new(
                    channel,
                    headers,
                    gzip,
                    timeout,
                    last_error.clone(),
                )))
            }
        }
    }
}

/// The span exporter of one protocol.
pub(crate) enum Exporter {
    /// `opentelemetry-otlp`'s HTTP exporter on the crate's `HttpClient`.
    Http(opentelemetry_otlp::SpanExporter),
    /// The crate's own gRPC export call.
    #[cfg(feature = "grpc")]
    Grpc(super::grpc::GrpcExporter),
}

impl Exporter {
    pub(crate) fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        use opentelemetry_sdk::trace::SpanExporter as _;
        match self {
            Exporter::Http(e) => e.set_resource(resource),
            #[cfg(feature = "grpc")]
            Exporter::Grpc(e) => e.set_resource(resource),
        }
    }

    /// One export call; the error's text says why it failed.
    pub(crate) async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> Result<(), String> {
        use opentelemetry_sdk::trace::SpanExporter as _;
        match self {
            Exporter::Http(e) => e.export(batch).await.map_err(|e| e.to_string()),
            #[cfg(feature = "grpc")]
            Exporter::Grpc(e) => e.export(batch).await,
        }
    }
}

/// `opentelemetry-otlp`'s HTTP/protobuf exporter on the crate's hyper client.
fn http_exporter(
    endpoint: String,
    headers: http::HeaderMap,
    tls: TlsConfig,
    timeout: Duration,
    gzip: bool,
    last_error: &LastError,
) -> Result<Exporter, Error> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let headers = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    let builder = match tls {
        #[cfg(feature = "tls")]
        Some(config) => builder.with_http_client(HyperClient::tls(config, last_error.clone())),
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
        None => builder.with_http_client(HyperClient::plain(last_error.clone())),
    };
    let builder = builder
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(timeout)
        .with_retry_policy(opentelemetry_otlp::RetryPolicy::recommended())
        .with_headers(headers);
    let built = if gzip {
        builder
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
    } else {
        builder.build()
    };
    built
        .map(Exporter::Http)
        .map_err(|e| Error::InvalidSetting {
            setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: endpoint,
            expected: format!("an endpoint the OTLP exporter accepts ({e})"),
        })
}

/// A lazy tonic channel whose connections are TLS by the crate's rustls configuration.
#[cfg(all(feature = "grpc", feature = "tls"))]
fn grpc_tls_channel(
    endpoint: &str,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
    last_error: &LastError,
) -> Result<tonic::transport::Channel, Error> {
    let invalid = |why: String| Error::InvalidSetting {
        setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
        value: endpoint.to_owned(),
        expected: format!("a collector address such as https://collector:4317 ({why})"),
    };
    let uri: http::Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| invalid("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let server_name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| invalid(format!("not a TLS server name: {e}")))?;
    // tonic sees plain HTTP/2; the connector below does the TLS.
    let port = uri.port_u16().unwrap_or(443);
    let plain = format!(
        "http://{}:{port}{}",
        uri.host().unwrap_or_default(),
        uri.path().trim_end_matches('/')
    );
    let connector = super::transport::GrpcTlsConnector {
        http: {
            let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
            http.enforce_http(false);
            http
        },
        tls: tokio_rustls::TlsConnector::from(config),
        server_name,
        last_error: last_error.clone(),
    };
    let channel = tonic::transport::Endpoint::from_shared(plain)
        .map_err(|e| invalid(e.to_string()))?
        .timeout(timeout)
        .connect_with_connector_lazy(connector);
    Ok(channel)
}
