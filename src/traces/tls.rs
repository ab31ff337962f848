//! The rustls client configuration of the OTLP exporter (feature `tls`).
//!
//! One crypto provider for the whole crate: *ring*, the one `ureq` (the Sentry transport)
//! already uses, chosen explicitly here with `ClientConfig::builder_with_provider`, so nothing
//! depends on a process-wide default provider being installed (or on which one it is).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::options::{Sourced, TlsFiles, source_error};
use crate::core::error::Error;

/// The client configuration for an `https://` collector: the CA bundle if one is given, else
/// the system's trust roots; a client certificate when both files are given; `alpn` offered.
pub(crate) fn client_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &files.ca {
        Some(ca) => {
            for cert in load_certs(ca)? {
                roots.add(cert).map_err(|e| {
                    source_error(
                        ca.0,
                        ca.1.clone(),
                        &format!("a PEM file of CA certificates ({e})"),
                    )
                })?;
            }
        }
        None => {
            // Certificates the platform has but rustls cannot parse are skipped, as are
            // stores that cannot be read: the connection then fails with an unknown issuer,
            // which the export warning says.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidSetting {
            setting: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: "https".into(),
            expected: format!("a TLS configuration rustls accepts ({e})"),
        })?
        .with_root_certificates(roots);
    let mut config = match (&files.client_certificate, &files.client_key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert)?;
            let private = PrivateKeyDer::from_pem_file(&key.1).map_err(|e| {
                source_error(
                    key.0,
                    key.1.clone(),
                    &format!("a readable PEM file with a private key ({e})"),
                )
            })?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                source_error(
                    key.0,
                    key.1.clone(),
                    &format!("the private key of the client certificate ({e})"),
                )
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file; none is an error.
fn load_certs(file: &Sourced<String>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let (name, path) = file;
    let bad = |why: String| {
        source_error(
            name,
            path.clone(),
            &format!("a readable PEM file of certificates ({why})"),
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no `BEGIN CERTIFICATE` block found".into()));
    }
    Ok(certs)
}
