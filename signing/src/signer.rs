//! The [`Signer`] abstraction: RSA PKCS#1 v1.5 signatures over SHA-256 (or SHA-1 for
//! legacy DMP profiles) with the certificate chain that goes with the key.
//!
//! [`SoftwareSigner`] holds the key in memory (OpenSSL's libcrypto: optimised in every
//! build profile, and able to make the legacy RSA-SHA1 signatures ring refuses);
//! [`TokenSigner`] has a PKCS#11 token (an HSM) sign, the key never leaving it;
//! [`signer_for`] picks the one a certificate's key needs. Callers never see the key.
//! Signing costs about a millisecond of CPU (or of a token's time): async callers run it
//! on a blocking pool, never inside a reactor poll.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::{Hasher, MessageDigest};
use openssl::md::{Md, MdRef};
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::Padding;
use passerelle_config::{CertMaterial, CertificateInfo, KeyMaterial};
use passerelle_pkcs11::{Pkcs11Error, SignMechanism, TokenKey};

use crate::SigningError;

/// Digest used in signatures and references.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    #[default]
    Sha256,
    /// Only for DMP profiles that still require it (older official samples).
    Sha1,
}

impl DigestAlgorithm {
    /// XML-DSig `DigestMethod` URI.
    pub fn digest_uri(self) -> &'static str {
        match self {
            Self::Sha256 => "http://www.w3.org/2001/04/xmlenc#sha256",
            Self::Sha1 => "http://www.w3.org/2000/09/xmldsig#sha1",
        }
    }

    /// XML-DSig `SignatureMethod` URI for RSA with this digest.
    pub fn rsa_signature_uri(self) -> &'static str {
        match self {
            Self::Sha256 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            Self::Sha1 => "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        }
    }

    fn message_digest(self) -> MessageDigest {
        match self {
            Self::Sha256 => MessageDigest::sha256(),
            Self::Sha1 => MessageDigest::sha1(),
        }
    }

    fn md(self) -> &'static MdRef {
        match self {
            Self::Sha256 => Md::sha256(),
            Self::Sha1 => Md::sha1(),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => openssl::sha::sha256(data).to_vec(),
            Self::Sha1 => openssl::sha::sha1(data).to_vec(),
        }
    }

    /// A streaming digest, for documents hashed as they arrive.
    pub fn hasher(self) -> Result<Hasher, SigningError> {
        Hasher::new(self.message_digest()).map_err(|e| SigningError::Key(e.to_string()))
    }
}

/// Makes RSA PKCS#1 v1.5 signatures with one certificate's key.
pub trait Signer: Send + Sync + fmt::Debug {
    /// Signs `message` (hashing it with `digest` first).
    fn sign(&self, digest: DigestAlgorithm, message: &[u8]) -> Result<Vec<u8>, SigningError>;

    /// The signing certificate (DER) then its intermediates, nearest first.
    fn certificate_chain(&self) -> &[Vec<u8>];

    /// [`Self::certificate_chain`] followed by the root (trust anchor) it ends at, as
    /// XAdES `SigningCertificate` lists it. Without a known root: the chain alone.
    fn certificate_chain_to_root(&self) -> &[Vec<u8>] {
        self.certificate_chain()
    }

    /// What is known of the signing certificate (subject DN, serial, ...).
    fn certificate(&self) -> &CertificateInfo;

    /// The signing certificate in base64, as `KeyInfo/X509Data/X509Certificate` holds
    /// it. The signers of this crate encode it once and keep it (encoding it was a
    /// tenth of what a VIHF costs around its signature); this default encodes it at
    /// each call.
    fn certificate_base64(&self) -> Cow<'_, str> {
        Cow::Owned(leaf_base64(self.certificate_chain()))
    }

    /// Issuer DN and decimal serial of each certificate of
    /// [`Self::certificate_chain_to_root`], as XAdES `IssuerSerial` writes them. The
    /// signers of this crate read the certificates once and keep the answer; this
    /// default reads them at each call.
    fn issuer_serials_to_root(&self) -> Result<Cow<'_, [IssuerSerial]>, SigningError> {
        issuer_serials(self.certificate_chain_to_root()).map(Cow::Owned)
    }
}

/// The first certificate of `chain` (the signer's) in base64; empty without one.
fn leaf_base64(chain: &[Vec<u8>]) -> String {
    chain.first().map(|der| B64.encode(der)).unwrap_or_default()
}

/// A certificate's issuer DN (RFC 2253 order) and serial number in decimal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSerial {
    pub issuer: String,
    pub serial_decimal: String,
}

/// [`IssuerSerial`] of each DER certificate.
fn issuer_serials(chain: &[Vec<u8>]) -> Result<Vec<IssuerSerial>, SigningError> {
    chain
        .iter()
        .map(|der| {
            let info = CertificateInfo::from_der(der).map_err(SigningError::Key)?;
            Ok(IssuerSerial {
                issuer: info.issuer,
                serial_decimal: info.serial_decimal,
            })
        })
        .collect()
}

/// The certificates that go with a key: leaf, intermediates, then the root when known
/// (one vector, so both chain views are slices of it).
#[derive(Debug, Clone)]
struct Certificates {
    chain: Vec<Vec<u8>>,
    /// How many of `chain` are leaf and intermediates (the rest is the root).
    without_root: usize,
    info: CertificateInfo,
    /// [`Signer::issuer_serials_to_root`], read from `chain` at the first lot signed
    /// (parsing three certificates was 4 % of a submission's CPU when done each time).
    issuer_serials: OnceLock<Result<Vec<IssuerSerial>, SigningError>>,
    /// [`Signer::certificate_base64`], encoded at the first signature.
    leaf_base64: OnceLock<String>,
}

impl Certificates {
    /// From a chain, leaf first.
    fn new(chain: Vec<Vec<u8>>) -> Result<Self, SigningError> {
        let leaf = chain
            .first()
            .ok_or_else(|| SigningError::Key("no certificate given with the key".into()))?;
        let info = CertificateInfo::from_der(leaf).map_err(SigningError::Key)?;
        Ok(Self {
            without_root: chain.len(),
            chain,
            info,
            issuer_serials: OnceLock::new(),
            leaf_base64: OnceLock::new(),
        })
    }

    /// From a tenant's validated material, with the anchor its chain ended at.
    fn of(material: &CertMaterial) -> Result<Self, SigningError> {
        let mut chain = vec![material.leaf_der.clone()];
        chain.extend(material.intermediates_der.iter().cloned());
        let certificates = Self::new(chain)?;
        Ok(match &material.anchor_der {
            Some(root) => certificates.with_root(root.clone()),
            None => certificates,
        })
    }

    fn issuer_serials(&self) -> Result<Cow<'_, [IssuerSerial]>, SigningError> {
        match self
            .issuer_serials
            .get_or_init(|| issuer_serials(&self.chain))
        {
            Ok(serials) => Ok(Cow::Borrowed(serials)),
            Err(e) => Err(e.clone()),
        }
    }

    fn leaf_base64(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.leaf_base64.get_or_init(|| leaf_base64(&self.chain)))
    }

    fn with_root(mut self, root_der: Vec<u8>) -> Self {
        self.chain.truncate(self.without_root);
        self.chain.push(root_der);
        self.issuer_serials = OnceLock::new();
        self
    }
}

/// The signer of a tenant's certificate, wherever its key is (a file, a token).
pub fn signer_for(material: &CertMaterial) -> Result<Arc<dyn Signer>, SigningError> {
    Ok(match &material.key {
        KeyMaterial::File(key) => Arc::new(SoftwareSigner::from_pkcs8_with(
            key.pkcs8_der(),
            Certificates::of(material)?,
        )?),
        KeyMaterial::Token(key) => Arc::new(TokenSigner {
            key: Arc::clone(key),
            certificates: Certificates::of(material)?,
        }),
    })
}

/// A software key held in memory.
pub struct SoftwareSigner {
    key: PKey<Private>,
    /// Signing contexts already set up for the key (PKCS#1 v1.5, the digest), one pool per
    /// [`DigestAlgorithm`]: OpenSSL 3 looks the algorithms up in its providers and builds
    /// the context at each set-up, about a twentieth of the RSA operation itself. A
    /// context signs any number of digests; one is taken out for each signature, so
    /// concurrent signatures never share one.
    prepared: [Mutex<Vec<PkeyCtx<Private>>>; 2],
    certificates: Certificates,
}

/// Most prepared contexts kept per digest: as many as signatures run at once in
/// practice (the proxy's signing slots), a few kilobytes each.
const PREPARED_KEPT: usize = 32;

impl fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("subject", &self.certificates.info.subject)
            .field("serial", &self.certificates.info.serial_hex)
            .finish_non_exhaustive()
    }
}

impl SoftwareSigner {
    /// From a tenant's validated certificate material with its key in a file (with the
    /// anchor its chain ended at).
    pub fn from_material(material: &CertMaterial) -> Result<Self, SigningError> {
        match &material.key {
            KeyMaterial::File(key) => {
                Self::from_pkcs8_with(key.pkcs8_der(), Certificates::of(material)?)
            }
            KeyMaterial::Token(key) => Err(SigningError::Key(format!(
                "{} is in a token, not in memory",
                key.describe()
            ))),
        }
    }

    /// Adds the root the chain ends at (listed by [`Signer::certificate_chain_to_root`]).
    pub fn with_root(mut self, root_der: Vec<u8>) -> Self {
        self.certificates = self.certificates.with_root(root_der);
        self
    }

    /// From a PKCS#8 RSA key and its chain (leaf first).
    pub fn from_pkcs8(pkcs8: &[u8], chain: Vec<Vec<u8>>) -> Result<Self, SigningError> {
        Self::from_pkcs8_with(pkcs8, Certificates::new(chain)?)
    }

    fn from_pkcs8_with(pkcs8: &[u8], certificates: Certificates) -> Result<Self, SigningError> {
        let key = PKey::private_key_from_pkcs8(pkcs8)
            .ok()
            .filter(|k| k.rsa().is_ok())
            .ok_or_else(|| SigningError::Key("not a usable RSA PKCS#8 key".into()))?;
        Ok(Self {
            key,
            prepared: Default::default(),
            certificates,
        })
    }

    fn pool(&self, digest: DigestAlgorithm) -> &Mutex<Vec<PkeyCtx<Private>>> {
        &self.prepared[match digest {
            DigestAlgorithm::Sha256 => 0,
            DigestAlgorithm::Sha1 => 1,
        }]
    }

    /// A context ready to sign a `digest` hash with the key.
    fn prepare(&self, digest: DigestAlgorithm) -> Result<PkeyCtx<Private>, SigningError> {
        let taken = self.pool(digest).lock().ok().and_then(|mut p| p.pop());
        if let Some(ctx) = taken {
            return Ok(ctx);
        }
        let mut ctx = PkeyCtx::new(&self.key).map_err(|_| SigningError::Sign)?;
        ctx.sign_init().map_err(|_| SigningError::Sign)?;
        ctx.set_rsa_padding(Padding::PKCS1)
            .map_err(|_| SigningError::Sign)?;
        ctx.set_signature_md(digest.md())
            .map_err(|_| SigningError::Sign)?;
        Ok(ctx)
    }

    pub fn into_arc(self) -> Arc<dyn Signer> {
        Arc::new(self)
    }
}

impl Signer for SoftwareSigner {
    fn sign(&self, digest: DigestAlgorithm, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let hash = digest.digest(message);
        let mut ctx = self.prepare(digest)?;
        let mut signature = Vec::new();
        ctx.sign_to_vec(&hash, &mut signature)
            .map_err(|_| SigningError::Sign)?;
        // A context whose signature failed is dropped, not reused.
        if let Ok(mut pool) = self.pool(digest).lock()
            && pool.len() < PREPARED_KEPT
        {
            pool.push(ctx);
        }
        Ok(signature)
    }

    fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.certificates.chain[..self.certificates.without_root]
    }

    fn certificate_chain_to_root(&self) -> &[Vec<u8>] {
        &self.certificates.chain
    }

    fn certificate(&self) -> &CertificateInfo {
        &self.certificates.info
    }

    fn issuer_serials_to_root(&self) -> Result<Cow<'_, [IssuerSerial]>, SigningError> {
        self.certificates.issuer_serials()
    }

    fn certificate_base64(&self) -> Cow<'_, str> {
        self.certificates.leaf_base64()
    }
}

/// A key in a PKCS#11 token: the token hashes and signs (`CKM_SHA256_RSA_PKCS`, or
/// `CKM_SHA1_RSA_PKCS` for legacy profiles).
#[derive(Debug)]
pub struct TokenSigner {
    key: Arc<TokenKey>,
    certificates: Certificates,
}

impl Signer for TokenSigner {
    fn sign(&self, digest: DigestAlgorithm, message: &[u8]) -> Result<Vec<u8>, SigningError> {
        let mechanism = match digest {
            DigestAlgorithm::Sha256 => SignMechanism::RsaPkcs1Sha256,
            DigestAlgorithm::Sha1 => SignMechanism::RsaPkcs1Sha1,
        };
        self.key.sign(mechanism, message).map_err(|e| match e {
            // This one call failed (a mechanism the token refuses): the key is not at fault.
            Pkcs11Error::Operation { .. } => SigningError::Key(e.to_string()),
            // Every session at work: the key is fine, this process is overloaded.
            Pkcs11Error::Busy { .. } => SigningError::KeyBusy(e.to_string()),
            // The key cannot be used now: gone, busy, its PIN refused, not the certificate's.
            _ => SigningError::KeyUnavailable(e.to_string()),
        })
    }

    fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.certificates.chain[..self.certificates.without_root]
    }

    fn certificate_chain_to_root(&self) -> &[Vec<u8>] {
        &self.certificates.chain
    }

    fn certificate(&self) -> &CertificateInfo {
        &self.certificates.info
    }

    fn issuer_serials_to_root(&self) -> Result<Cow<'_, [IssuerSerial]>, SigningError> {
        self.certificates.issuer_serials()
    }

    fn certificate_base64(&self) -> Cow<'_, str> {
        self.certificates.leaf_base64()
    }
}
