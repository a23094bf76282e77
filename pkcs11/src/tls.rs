//! A token key as a rustls client-authentication key: the `CertificateVerify` signature
//! is made in the token, so the AUTH_CLI private key is never in memory.

use std::sync::Arc;

use rustls::SignatureScheme;
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};

use crate::{SignMechanism, TokenKey};

/// The schemes offered by a token RSA key, in order of preference (TLS 1.3 takes only
/// the PSS ones; rustls filters what the version allows before asking), each when the
/// token has its mechanism.
const SCHEMES: [(SignatureScheme, SignMechanism); 4] = [
    (SignatureScheme::RSA_PSS_SHA256, SignMechanism::RsaPssSha256),
    (SignatureScheme::RSA_PSS_SHA384, SignMechanism::RsaPssSha384),
    (
        SignatureScheme::RSA_PKCS1_SHA256,
        SignMechanism::RsaPkcs1Sha256,
    ),
    (
        SignatureScheme::RSA_PKCS1_SHA384,
        SignMechanism::RsaPkcs1Sha384,
    ),
];

/// A rustls [`SigningKey`] backed by a [`TokenKey`].
#[derive(Debug, Clone)]
pub struct TlsKey {
    key: Arc<TokenKey>,
}

impl TlsKey {
    pub fn new(key: Arc<TokenKey>) -> Self {
        Self { key }
    }

    /// The chain (leaf first) with this key, for `with_client_cert_resolver`.
    pub fn certified(self, chain: Vec<CertificateDer<'static>>) -> CertifiedKey {
        CertifiedKey::new(chain, Arc::new(self))
    }
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        SCHEMES
            .iter()
            .find(|(scheme, mechanism)| offered.contains(scheme) && self.key.supports(*mechanism))
            .map(|&(scheme, mechanism)| {
                Box::new(TlsSigner {
                    key: Arc::clone(&self.key),
                    scheme,
                    mechanism,
                }) as Box<dyn Signer>
            })
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::RSA
    }
}

#[derive(Debug)]
struct TlsSigner {
    key: Arc<TokenKey>,
    scheme: SignatureScheme,
    mechanism: SignMechanism,
}

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // rustls signs inside the handshake, on whichever thread polls the connection:
        // on a multi-threaded runtime's worker, hand the worker's other tasks over while
        // the token works (a network HSM takes milliseconds).
        let sign = || self.key.sign(self.mechanism, message);
        let signed = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        };
        // The error itself travels up through the handshake's: the proxy tells a token
        // that could not sign from a server that refused.
        signed.map_err(|e| rustls::Error::Other(rustls::OtherError(Arc::new(e))))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}
