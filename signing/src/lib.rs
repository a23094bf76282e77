//! Signing for the DMP: the [`Signer`] abstraction, VIHF tokens ([`vihf`]), re-signing
//! of tokens supplied by internal systems ([`resign`]), submission-lot XAdES signatures
//! ([`lot`]), and verification with libxmlsec1 ([`verify`]).
//!
//! Structures the proxy generates are written into a small XML tree ([`xml`]) and
//! canonicalised there, then signed through [`Signer`]: no libxml on the hot path.
//! libxmlsec1 is the reference: every signature made here verifies with it (tests, and
//! Debian's `xmlsec1 --verify` in the test suite).

pub mod dsig;
pub mod lot;
pub mod resign;
pub mod signer;
pub mod verify;
pub mod vihf;
/// The XML tree, parser and canonicalization, from `passerelle-xml` (kept at this path
/// for the crates that reach them through `passerelle_signing::xml`).
pub use passerelle_xml as xml;

pub use lot::{
    DocumentDigest, LotMetadata, LotMetadataInput, LotRequest, SignedLot, lot_metadata, sign_lot,
};
pub use resign::{resign_vihf, resign_vihf_in};
pub use signer::{DigestAlgorithm, Signer, SoftwareSigner, TokenSigner, signer_for};
pub use verify::{
    SuppliedDocument, TrustAnchors, VerifiedLot, VerifiedVihf, VerifyError, verify_lot, verify_vihf,
};
pub use vihf::{
    Ins, SignedIdentity, SignedVihf, SoftwareIdentity, VihfContext, VihfOptions, sign_vihf,
    sign_vihf_in,
};

/// Why a VIHF could not be built or re-signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VihfError {
    #[error("invalid VIHF context: {0}")]
    Invalid(String),
    #[error("VIHF: {0}")]
    Xml(#[from] xml::XmlError),
    #[error("VIHF: the root element is not a SAML 2.0 Assertion")]
    NotAnAssertion,
    #[error("VIHF: exactly one Assertion is allowed, found {0}")]
    AssertionCount(usize),
    #[error("VIHF: required attribute {0:?} is missing or empty")]
    MissingAttribute(String),
    #[error("VIHF: authentication mode is {0:?}; the proxy only signs INDIRECTE tokens")]
    NotIndirect(String),
    #[error(
        "VIHF: Identifiant_Structure {0} is neither the tenant's legal entity nor one of its geographic entities"
    )]
    ForeignStructure(String),
    #[error("VIHF: the assertion has no Issuer")]
    MissingIssuer,
    #[error("VIHF: attribute {name:?} must occur once with one value, found {found}")]
    AmbiguousAttribute { name: String, found: String },
}

/// Why signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error(transparent)]
    Vihf(#[from] VihfError),
    #[error("signing key: {0}")]
    Key(String),
    #[error("the RSA signature operation failed")]
    Sign,
    /// The key's token cannot be used now (removed, restarted, busy, its PIN refused):
    /// nothing was signed.
    #[error("signing key unavailable: {0}")]
    KeyUnavailable(String),
    /// Every session with the key's token stayed in use: nothing was signed.
    #[error("signing key busy: {0}")]
    KeyBusy(String),
    #[error("submission lot: {0}")]
    Document(String),
}
