//! Private keys that never leave a PKCS#11 token (an HSM, a smart card, SoftHSM2).
//!
//! - [`KeySpec`] says where a key is: the module (the vendor's PKCS#11 library), the
//!   token (by label or slot), the key (by `CKA_LABEL` or `CKA_ID`) and the user PIN.
//! - [`TokenKey`] is a key: a bounded pool of logged-in sessions, RSA signatures
//!   ([`SignMechanism`]), the public half, the key's protection flags. It is checked to
//!   be the certificate's pair each time it is looked up. A token that went away
//!   (removed, reset, restarted) is looked for again on the next operation: sessions
//!   reopened, PIN given, key found again; until then operations fail with
//!   [`Pkcs11Error::Unavailable`], and after a while the module is initialised again
//!   (some modules see a returning token only then).
//! - [`generate_rsa_key`] makes a key pair inside the token (sensitive, not extractable,
//!   signing only) for a certificate request.
//! - [`tls::TlsKey`] lets rustls authenticate a TLS client with a token key.
//!
//! A module is loaded once per process and shared by every key of it: PKCS#11 forbids
//! two initialisations at once. A PIN the token refused is never presented again (a
//! token locks it after a few failures) until the PIN changes. Every call blocks the
//! calling thread (a network HSM answers in milliseconds): async callers run them on a
//! blocking pool, or through [`tls::TlsKey`], which moves off the reactor.

mod key;
mod module;
pub mod tls;

use std::fmt;
use std::path::PathBuf;

pub use key::{KeyProtection, RsaPublicKey, SignMechanism, TokenKey, generate_rsa_key};
use zeroize::Zeroizing;

/// Which token of a module.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenSelector {
    /// `CKA_LABEL` of the token (`token_label`): stable across slot renumbering.
    Label(String),
    /// A slot id (`slot`).
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "token {label:?}"),
            Self::Slot(slot) => write!(f, "slot {slot}"),
        }
    }
}

/// Which key of a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySelector {
    /// `CKA_LABEL` (`key_label`).
    Label(String),
    /// `CKA_ID` (`key_id`, written in hexadecimal).
    Id(Vec<u8>),
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Label(label) => write!(f, "key label {label:?}"),
            Self::Id(id) => {
                f.write_str("key id ")?;
                id.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

/// A user PIN. Zeroed on drop; `Debug` never prints it.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    pub fn new(pin: String) -> Self {
        Self(Zeroizing::new(pin))
    }

    pub(crate) fn auth(&self) -> cryptoki::types::AuthPin {
        cryptoki::types::AuthPin::new(self.0.as_str().into())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// Where a key is, and how many sessions it may keep open.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The PKCS#11 library (`module`).
    pub module: PathBuf,
    pub token: TokenSelector,
    pub key: KeySelector,
    pub pin: Pin,
    /// Sessions kept open at most: concurrent signatures beyond it wait for one.
    pub sessions: usize,
}

impl KeySpec {
    /// For messages: `token "x" key label "y" (module /path)`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} (module {})",
            self.token,
            self.key,
            self.module.display()
        )
    }
}

/// What went wrong with a module, a token or a key. Messages name the module, token and
/// key, and what an operator can do.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("PKCS#11 module {}: {reason}", module.display())]
    Module { module: PathBuf, reason: String },
    #[error("PKCS#11 module {}: no {token} (tokens present: {present})", module.display())]
    TokenNotFound {
        module: PathBuf,
        token: TokenSelector,
        present: String,
    },
    #[error(
        "{what}: the token refused the PIN (CKR_PIN_INCORRECT): check pin_file; this PIN is not presented again (tokens lock the PIN after a few failures) until pin_file holds another and the configuration is reloaded"
    )]
    PinIncorrect { what: String },
    #[error(
        "{what}: the PIN is locked (CKR_PIN_LOCKED): the token's security officer must unlock it"
    )]
    PinLocked { what: String },
    #[error("{what}: no private key with this {}", if *.several { "selector: several match, give key_id" } else { "selector in the token" })]
    KeyNotFound { what: String, several: bool },
    #[error("{what}: not an RSA key: IGC-Santé ORG certificates use RSA")]
    NotRsa { what: String },
    #[error(
        "{what}: the token's key is not the certificate's (another key pair answers to this key_label / key_id, or another token took its place)"
    )]
    KeyMismatch { what: String },
    /// Every session was in use for the whole wait: the key works, it is busy.
    #[error(
        "{what}: all {sessions} sessions stayed busy for {seconds} s (raise the key's `sessions` if the token allows more)"
    )]
    Busy {
        what: String,
        sessions: usize,
        seconds: u64,
    },
    /// The token cannot be reached now (removed, reset, its device failing, every
    /// session busy for too long): operations fail until it is back.
    #[error("{what}: token unavailable: {reason}")]
    Unavailable { what: String, reason: String },
    #[error("{what}: {operation} failed: {reason}")]
    Operation {
        what: String,
        operation: &'static str,
        reason: String,
    },
}

impl Pkcs11Error {
    /// Whether the key may come back by itself (the token being re-inserted or
    /// restarted), as opposed to a configuration to fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}
