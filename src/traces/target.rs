//! The exporter's target: the checked endpoint, headers and TLS settings, and the
//! `opentelemetry-otlp` exporter built from them (HTTP/protobuf, or gRPC under feature `grpc`).

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
    ) -> Result<opentelemetry_otlp::SpanExporter, Error> {
        use opentelemetry_otlp::WithExportConfig as _;

        let endpoint = self.endpoint().to_owned();
        let compression = opentelemetry_otlp::Compression::Gzip;
        let built = match self {
            Target::Http {
                endpoint,
                headers,
                tls,
            } => {
                use opentelemetry_otlp::WithHttpConfig as _;
                let headers = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                let builder = opentelemetry_otlp::SpanExporter::builder().with_http();
                let builder = match tls {
                    #[cfg(feature = "tls")]
                    Some(config) => {
                        builder.with_http_client(HyperClient::tls(config, last_error.clone()))
                    }
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match never {},
                    None => builder.with_http_client(HyperClient::plain(last_error.clone())),
                };
                let builder = builder
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(endpoint)
                    .with_timeout(timeout)
                    .with_retry_policy(opentelemetry_otlp::RetryPolicy::recommended())
                    .with_headers(headers);
                if gzip {
                    builder.with_compression(compression).build()
                } else {
                    builder.build()
                }
            }
            #[cfg(feature = "grpc")]
            Target::Grpc {
                endpoint,
                headers,
                tls,
            } => {
                use opentelemetry_otlp::WithTonicConfig as _;
                use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
                let builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                    .with_timeout(timeout)
                    .with_retry_policy(opentelemetry_otlp::RetryPolicy::recommended())
                    .with_metadata(MetadataMap::from_headers(headers));
                let builder = match tls {
                    #[cfg(feature = "tls")]
                    Some(config) => builder
                        .with_channel(grpc_tls_channel(&endpoint, config, timeout, last_error)?),
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match never {},
                    None => builder.with_endpoint(endpoint),
                };
                if gzip {
                    builder.with_compression(compression).build()
                } else {
                    builder.build()
                }
            }
        };
        built.map_err(|e| Error::InvalidSetting {
            setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: endpoint,
            expected: format!("an endpoint the OTLP exporter accepts ({e})"),
        })
    }
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
