//! Server TLS for the mocks: the SERV SSL leaf and its chain, TLS 1.2 and 1.3, and a
//! client certificate required and chained to the configured client CA (the ORG
//! intermediate, used as trust anchor so that nothing else is accepted).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::MockError;

fn file_error(path: &Path, message: impl ToString) -> MockError {
    MockError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MockError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no certificate"));
    }
    Ok(certs)
}

/// Builds the server configuration.
pub fn server_config(
    chain: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, MockError> {
    stapling_server_config(chain, key, client_ca, Vec::new())
}

/// The same, stapling `ocsp` (a DER OCSP response; empty: none) in every handshake, as
/// a server that staples does.
pub fn stapling_server_config(
    chain: &Path,
    key: &Path,
    client_ca: &Path,
    ocsp: Vec<u8>,
) -> Result<Arc<ServerConfig>, MockError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(chain)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(client_ca)? {
        roots.add(ca).map_err(|e| file_error(client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| MockError::Tls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| MockError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert_with_ocsp(chain, key, ocsp)
        .map_err(|e| MockError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
