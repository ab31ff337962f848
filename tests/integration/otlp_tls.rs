//! OTLP export to `https://` receivers (feature `tls`): certificates made in the test with
//! `rcgen` (a CA, a server certificate for `localhost`/127.0.0.1, a client certificate), an
//! OTLP/HTTP receiver on hyper + tokio-rustls and, with feature `grpc`, an OTLP/gRPC one.
#![cfg(feature = "tls")]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Capture, client, samples};
use http_body_util::{BodyExt as _, Full};
use mercenary_obs::{Obs, ObsBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The test's certificates: PEM files for the exporter, DER for the receivers.
struct Pki {
    ca_pem: PathBuf,
    client_cert_pem: PathBuf,
    client_key_pem: PathBuf,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivatePkcs8KeyDer<'static>,
    /// A server certificate for `localhost` from a CA nobody trusts.
    untrusted_chain: Vec<CertificateDer<'static>>,
    untrusted_key: PrivatePkcs8KeyDer<'static>,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    (params.signed_by(&key, issuer).unwrap(), key)
}

fn pki() -> Pki {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mercenary-obs-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = new_ca("mercenary test CA");
    let (server, server_key) = leaf(&ca, &["localhost", "127.0.0.1"]);
    let (client, client_key) = leaf(&ca, &["client.test"]);
    let other = new_ca("somebody else's CA");
    let (untrusted, untrusted_key) = leaf(&other, &["localhost", "127.0.0.1"]);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca_pem: write("ca.pem", ca.pem()),
        client_cert_pem: write("client.pem", client.pem()),
        client_key_pem: write("client.key", client_key.serialize_pem()),
        ca_der: ca.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        untrusted_chain: vec![untrusted.der().clone()],
        untrusted_key: PrivatePkcs8KeyDer::from(untrusted_key.serialize_der()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The receiver's TLS settings; `client_ca`: require a client certificate signed by it.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    client_ca: Option<CertificateDer<'static>>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots.into(),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(key))
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// One export request as the receiver saw it.
#[derive(Clone, Debug, Default)]
struct Received {
    spans: Vec<(String, String)>,
    headers: HashMap<String, String>,
}

type Inbox = Arc<Mutex<Vec<Received>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode(headers: &http::HeaderMap, body: &[u8]) -> Received {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let raw = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("a gzip body");
        out
    } else {
        body.to_vec()
    };
    let req = ExportTraceServiceRequest::decode(raw.as_slice()).expect("an OTLP protobuf body");
    let spans = req
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|s| (hex(&s.trace_id), hex(&s.span_id)))
        .collect();
    Received {
        spans,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect(),
    }
}

/// An OTLP/HTTP receiver over TLS on 127.0.0.1.
async fn https_receiver(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Inbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let sink = sink.clone();
            tokio::spawn(async move {
                // A failed handshake is what some tests are about: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let sink = sink.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body: hyper::body::Incoming = body;
                        let bytes = body.collect().await.unwrap().to_bytes();
                        sink.lock().unwrap().push(decode(&parts.headers, &bytes));
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, inbox)
}

fn builder(endpoint: String, capture: &Capture) -> ObsBuilder {
    Obs::builder()
        .service_name("otlp-tls-test")
        .log_writer(capture.clone())
        .process_metrics(false)
        .otlp_endpoint(endpoint)
        .success_ratio(1.0)
        .export_schedule_delay(std::time::Duration::from_millis(100))
}

/// Sends `n` requests to `/ok`, all answered 200; returns their trace IDs.
async fn drive(obs: &Obs, n: usize) -> HashSet<String> {
    let addr = common::serve(common::traced_routes().layer(obs.layer())).await;
    let c = client();
    let mut traces = HashSet::new();
    for _ in 0..n {
        let resp = c
            .request(
                http::Request::get(format!("http://{addr}/ok"))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "requests are served normally");
        let tr = resp.headers()["traceresponse"]
            .to_str()
            .unwrap()
            .to_string();
        traces.insert(tr[3..35].to_string());
    }
    traces
}

fn dropped(obs: &Obs, reason: &str) -> f64 {
    samples(&obs.render_metrics(), "mercenary_obs_spans_dropped_total")
        .into_iter()
        .find(|(l, _)| l.contains(reason))
        .map_or(0.0, |(_, v)| v)
}

fn exported(obs: &Obs) -> f64 {
    samples(&obs.render_metrics(), "mercenary_obs_spans_exported_total")
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// Every kept trace arrived, each span once, and the exported counter says so.
fn assert_all_arrived(obs: &Obs, sent: &HashSet<String>, inbox: &Inbox) {
    let got = inbox.lock().unwrap().clone();
    let spans: Vec<&(String, String)> = got.iter().flat_map(|r| &r.spans).collect();
    let ids: HashSet<&str> = spans.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(ids.len(), spans.len(), "no span arrives twice");
    let traces: HashSet<String> = spans.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(&traces, sent, "every kept trace arrives");
    assert_eq!(exported(obs), spans.len() as f64);
    assert_eq!(dropped(obs, "export_failed"), 0.0);
}

/// The WARNING lines about failing exports.
fn export_warnings(capture: &Capture) -> Vec<String> {
    capture
        .text()
        .lines()
        .filter(|l| l.contains("trace export failing"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_bundle_headers_and_gzip() {
    let pki = pki();
    let (addr, inbox) = https_receiver(server_config(
        pki.server_chain.clone(),
        pki.server_key.clone_key(),
        None,
        &[b"http/1.1"],
    ))
    .await;
    let capture = Capture::default();
    let obs = builder(format!("https://localhost:{}", addr.port()), &capture)
        .from_vars([
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                pki.ca_pem.to_str().unwrap(),
            ),
            // The `_TRACES_` form wins over the generic one.
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=generic"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "authorization=Bearer%20abc,x-tenant=a%2Cb",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ])
        .build()
        .unwrap();
    let sent = drive(&obs, 30).await;
    assert!(obs.flush(), "flush exports everything in time");
    assert_all_arrived(&obs, &sent, &inbox);
    for r in inbox.lock().unwrap().iter() {
        assert_eq!(r.headers["authorization"], "Bearer abc");
        assert_eq!(r.headers["x-tenant"], "a,b");
        assert_eq!(r.headers["content-encoding"], "gzip");
    }
    assert!(export_warnings(&capture).is_empty(), "{}", capture.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let pki = pki();
    let (addr, inbox) = https_receiver(server_config(
        pki.server_chain.clone(),
        pki.server_key.clone_key(),
        Some(pki.ca_der.clone()),
        &[b"http/1.1"],
    ))
    .await;
    let capture = Capture::default();
    let obs = builder(format!("https://127.0.0.1:{}", addr.port()), &capture)
        .from_vars([
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                pki.ca_pem.to_str().unwrap(),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                pki.client_cert_pem.to_str().unwrap(),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                pki.client_key_pem.to_str().unwrap(),
            ),
        ])
        .build()
        .unwrap();
    let sent = drive(&obs, 20).await;
    assert!(obs.flush(), "flush exports everything in time");
    assert_all_arrived(&obs, &sent, &inbox);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_client_certificate_fails_and_is_counted() {
    let pki = pki();
    let (addr, inbox) = https_receiver(server_config(
        pki.server_chain.clone(),
        pki.server_key.clone_key(),
        Some(pki.ca_der.clone()),
        &[b"http/1.1"],
    ))
    .await;
    let capture = Capture::default();
    let obs = builder(format!("https://localhost:{}", addr.port()), &capture)
        .otlp_certificate(pki.ca_pem.to_str().unwrap())
        .build()
        .unwrap();
    drive(&obs, 10).await;
    assert!(obs.flush(), "a failed export is handled, not hung");
    assert!(inbox.lock().unwrap().is_empty());
    assert!(dropped(&obs, "export_failed") > 0.0);
    assert_eq!(exported(&obs), 0.0);
    let warnings = export_warnings(&capture);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].to_lowercase().contains("certificate"),
        "the warning says a certificate is missing: {}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_fails_safely() {
    let pki = pki();
    let (addr, inbox) = https_receiver(server_config(
        pki.untrusted_chain.clone(),
        pki.untrusted_key.clone_key(),
        None,
        &[b"http/1.1"],
    ))
    .await;
    let capture = Capture::default();
    let obs = builder(format!("https://localhost:{}", addr.port()), &capture)
        .from_vars([(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            pki.ca_pem.to_str().unwrap(),
        )])
        .build()
        .unwrap();
    drive(&obs, 20).await;
    assert!(obs.flush(), "a failed export is handled, not hung");
    assert!(inbox.lock().unwrap().is_empty());
    assert!(dropped(&obs, "export_failed") > 0.0);
    assert_eq!(exported(&obs), 0.0);
    let warnings = export_warnings(&capture);
    assert_eq!(warnings.len(), 1, "one rate-limited warning: {warnings:?}");
    assert!(
        warnings[0].contains("UnknownIssuer"),
        "the warning names the certificate problem: {}",
        warnings[0]
    );
}

#[test]
fn unreadable_or_bad_tls_files_are_errors_naming_their_source() {
    let pki = pki();
    let err = |b: ObsBuilder| b.build().expect_err("an error").to_string();
    let base = || {
        Obs::builder()
            .log_writer(std::io::sink())
            .process_metrics(false)
            .otlp_endpoint("https://localhost:4318")
    };
    let e = err(base().from_vars([("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem")]));
    assert!(e.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{e}");
    let e = err(base().from_vars([(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        pki.client_key_pem.to_str().unwrap(),
    )]));
    assert!(e.contains("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"), "{e}");
    let e = err(base().otlp_certificate("/no/such/ca.pem"));
    assert!(e.contains("ObsBuilder::otlp_certificate"), "{e}");
    let e = err(base().from_vars([(
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        pki.client_cert_pem.to_str().unwrap(),
    )]));
    assert!(e.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), "{e}");
    let e = err(base().otlp_client_certificate(
        pki.client_cert_pem.to_str().unwrap(),
        pki.ca_pem.to_str().unwrap(),
    ));
    assert!(e.contains("ObsBuilder::otlp_client_certificate"), "{e}");
    let e = err(base().from_vars([("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]));
    assert!(e.contains("OTEL_EXPORTER_OTLP_COMPRESSION"), "{e}");
}

#[test]
fn header_values_never_appear_in_debug_or_errors() {
    let b = Obs::builder()
        .log_writer(std::io::sink())
        .otlp_endpoint("http://localhost:4318")
        .from_vars([(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20s3cret",
        )]);
    let debug = format!("{b:?}");
    assert!(debug.contains("authorization"), "{debug}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let b = Obs::builder()
        .log_writer(std::io::sink())
        .otlp_endpoint("http://localhost:4318")
        .otlp_headers([("x-api-key", "hunter2")]);
    assert!(!format!("{b:?}").contains("hunter2"));
    let e = Obs::builder()
        .log_writer(std::io::sink())
        .otlp_endpoint("http://localhost:4318")
        .from_vars([(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%zzs3cret,x-k=hunter2",
        )])
        .build()
        .expect_err("a malformed header is an error")
        .to_string();
    assert!(e.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{e}");
    assert!(!e.contains("s3cret") && !e.contains("hunter2"), "{e}");
    let e = Obs::builder()
        .log_writer(std::io::sink())
        .otlp_endpoint("http://localhost:4318")
        .otlp_headers([("x-api-key", "hunter2\rx")])
        .build()
        .expect_err("a header value with a newline is an error")
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
}

/// An OTLP/gRPC receiver over TLS (ALPN `h2`) on 127.0.0.1: hyper's HTTP/2 server reading the
/// gRPC framing (a 5-byte prefix: compressed flag, big-endian length) of each
/// `ExportTraceServiceRequest`, answering an empty response message and `grpc-status: 0`.
#[cfg(feature = "grpc")]
async fn grpc_tls_receiver(config: Arc<rustls::ServerConfig>) -> (SocketAddr, Inbox) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let sink = sink.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let sink = sink.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        assert_eq!(
                            parts.uri.path(),
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        );
                        let body: hyper::body::Incoming = body;
                        let bytes = body.collect().await.unwrap().to_bytes();
                        assert!(bytes.len() >= 5, "a gRPC frame");
                        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
                        assert_eq!(bytes.len(), 5 + len, "one message per call");
                        let mut headers = parts.headers.clone();
                        // The flag says whether the message is compressed (`grpc-encoding`).
                        if bytes[0] == 1 {
                            let encoding = headers["grpc-encoding"].clone();
                            headers.insert("content-encoding", encoding);
                        } else {
                            headers.remove("content-encoding");
                        }
                        sink.lock().unwrap().push(decode(&headers, &bytes[5..]));
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
                            .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    (addr, inbox)
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_ca_bundle_and_gzip() {
    let pki = pki();
    let (addr, inbox) = grpc_tls_receiver(server_config(
        pki.server_chain.clone(),
        pki.server_key.clone_key(),
        None,
        &[b"h2"],
    ))
    .await;
    let capture = Capture::default();
    let obs = builder(format!("https://localhost:{}", addr.port()), &capture)
        .from_vars([
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                pki.ca_pem.to_str().unwrap(),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ])
        .build()
        .unwrap();
    let sent = drive(&obs, 30).await;
    assert!(obs.flush(), "flush exports everything in time");
    assert_all_arrived(&obs, &sent, &inbox);
    for r in inbox.lock().unwrap().iter() {
        assert_eq!(r.headers["x-tenant"], "acme");
        assert_eq!(r.headers["content-encoding"], "gzip", "compressed frames");
    }
    assert!(export_warnings(&capture).is_empty(), "{}", capture.text());
}
