//! An opened token key: its session pool, and what is done with it (sign, read the public
//! half and the protection flags, probe), plus key-pair generation inside the token.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;

use crate::module::{Context, LoginError, Module, RESET_AGE, module};
use crate::{KeySelector, KeySpec, Pkcs11Error, TokenSelector};

/// How long an operation waits for a session when all of them are in use.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// A key unavailable this long asks for its module to be initialised again (see
/// [`crate::module::Module::reset`]): some modules see a token come back only then.
const RESET_AFTER: Duration = RESET_AGE;

/// The RSA signatures made with token keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMechanism {
    /// `CKM_SHA256_RSA_PKCS`: XML-DSig rsa-sha256, TLS rsa_pkcs1_sha256.
    RsaPkcs1Sha256,
    /// `CKM_SHA1_RSA_PKCS`: legacy DMP profiles only.
    RsaPkcs1Sha1,
    /// `CKM_SHA384_RSA_PKCS`: TLS 1.2 rsa_pkcs1_sha384.
    RsaPkcs1Sha384,
    /// `CKM_SHA256_RSA_PKCS_PSS` (salt of 32 bytes): TLS rsa_pss_rsae_sha256.
    RsaPssSha256,
    /// `CKM_SHA384_RSA_PKCS_PSS` (salt of 48 bytes): TLS rsa_pss_rsae_sha384.
    RsaPssSha384,
}

impl SignMechanism {
    fn mechanism_type(self) -> MechanismType {
        self.mechanism().mechanism_type()
    }

    fn mechanism(self) -> Mechanism<'static> {
        // RFC 8446 4.2.3: PSS with MGF1 over the same hash, salt as long as the hash.
        let pss = |hash_alg, mgf, s_len: u64| PkcsPssParams {
            hash_alg,
            mgf,
            s_len: s_len.into(),
        };
        match self {
            Self::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
            Self::RsaPkcs1Sha1 => Mechanism::Sha1RsaPkcs,
            Self::RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
            Self::RsaPssSha256 => Mechanism::Sha256RsaPkcsPss(pss(
                MechanismType::SHA256,
                PkcsMgfType::MGF1_SHA256,
                32,
            )),
            Self::RsaPssSha384 => Mechanism::Sha384RsaPkcsPss(pss(
                MechanismType::SHA384,
                PkcsMgfType::MGF1_SHA384,
                48,
            )),
        }
    }
}

/// The public half of an RSA token key, big-endian, without leading zero bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

impl RsaPublicKey {
    pub fn bits(&self) -> usize {
        match self.modulus.first() {
            Some(first) => self.modulus.len() * 8 - first.leading_zeros() as usize,
            None => 0,
        }
    }
}

fn unsigned(bytes: Vec<u8>) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// How the token protects the key (PKCS#11 `CKA_SENSITIVE`, `CKA_EXTRACTABLE`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProtection {
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
}

impl KeyProtection {
    /// The key cannot leave the token in clear, and never could.
    pub fn is_protected(&self) -> bool {
        self.sensitive && !self.extractable && self.always_sensitive && self.never_extractable
    }
}

/// Where the key was found; forgotten when the token goes away.
#[derive(Debug, Clone, Copy)]
struct Found {
    slot: Slot,
    key: ObjectHandle,
}

#[derive(Debug, Default)]
struct Pool {
    idle: Vec<Session>,
    /// Sessions open: idle and lent.
    open: usize,
    /// The module initialisation `idle` and `found` belong to.
    context: Option<Arc<Context>>,
    found: Option<Found>,
    /// The key was found once: not finding it later is the token's absence, not a
    /// configuration to fix.
    ever_found: bool,
    /// Bumped when the token went away: sessions lent before are closed on return.
    generation: u64,
}

/// What requests and readiness read: behind a lock of its own, never held across a
/// PKCS#11 call (the pool's can be, closing sessions).
#[derive(Debug, Default)]
struct Status {
    /// The token's mechanisms (empty: not read yet).
    mechanisms: Vec<MechanismType>,
    /// Why the last operation could not use the key, and since when; cleared by a
    /// success.
    unavailable: Option<String>,
    unavailable_since: Option<Instant>,
    /// The module initialisation the last attempt used (the one to give up when the
    /// key stays unavailable).
    epoch: u64,
}

/// Sessions to close, then the initialisation they belong to (in this order: fields
/// drop in declaration order), outside any lock when possible.
struct Closing {
    _sessions: Vec<Session>,
    _context: Option<Arc<Context>>,
}

impl Pool {
    /// Forgets the sessions, the key and the initialisation (the token went away, or
    /// the module was initialised again).
    fn forget(&mut self) -> Closing {
        self.generation += 1;
        self.found = None;
        let sessions = std::mem::take(&mut self.idle);
        self.open -= sessions.len();
        Closing {
            _sessions: sessions,
            _context: self.context.take(),
        }
    }
}

/// A private key in a token: see the crate documentation. Opened lazily: [`Self::new`]
/// only loads the module; the first operation (or [`Self::connect`]) opens a session,
/// gives the PIN and finds the key, and checks it is the expected one.
#[derive(Debug)]
pub struct TokenKey {
    spec: KeySpec,
    module: Arc<Module>,
    /// The certificate's public key: the token's key must be its pair, at every look-up
    /// (a token swapped for another is noticed).
    expected: Option<RsaPublicKey>,
    what: String,
    pool: Mutex<Pool>,
    freed: Condvar,
    status: Mutex<Status>,
}

/// A session lent to one operation; goes back to the pool when dropped.
struct Lease<'a> {
    key: &'a TokenKey,
    session: Option<Session>,
    /// Dropped after the session (fields drop after `drop`).
    context: Arc<Context>,
    found: Found,
    generation: u64,
    /// The token went away during the operation: close the session and forget the key.
    lost: bool,
}

impl Lease<'_> {
    fn session(&self) -> Result<&Session, Pkcs11Error> {
        self.session
            .as_ref()
            .ok_or_else(|| Pkcs11Error::Unavailable {
                what: self.key.what.clone(),
                reason: "session already returned".into(),
            })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // Sessions are closed after the lock is released.
        let (closing, stale) = {
            let mut pool = self.key.lock();
            let closing = (self.lost && pool.generation == self.generation).then(|| pool.forget());
            let current = pool.generation == self.generation
                && pool
                    .context
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, &self.context));
            if current {
                pool.idle.push(session);
                (closing, None)
            } else {
                pool.open -= 1;
                (closing, Some(session))
            }
        };
        self.key.freed.notify_all();
        drop(stale);
        drop(closing);
    }
}

impl TokenKey {
    /// Loads the module (an error names it); nothing is asked of the token yet.
    pub fn new(spec: KeySpec, expected: Option<RsaPublicKey>) -> Result<Self, Pkcs11Error> {
        let module = module(&spec.module)?;
        Ok(Self {
            what: spec.describe(),
            spec: KeySpec {
                sessions: spec.sessions.max(1),
                ..spec
            },
            module,
            expected,
            pool: Mutex::default(),
            freed: Condvar::new(),
            status: Mutex::default(),
        })
    }

    /// [`Self::new`] then [`Self::connect`].
    pub fn open(spec: KeySpec) -> Result<Self, Pkcs11Error> {
        let key = Self::new(spec, None)?;
        key.connect()?;
        Ok(key)
    }

    /// Opens a session, gives the PIN, finds the key and checks it: each failure names
    /// what is wrong.
    pub fn connect(&self) -> Result<(), Pkcs11Error> {
        self.run("C_OpenSession", |_, _| Ok(()))
    }

    /// `token "x" key label "y" (module /path)`.
    pub fn describe(&self) -> &str {
        &self.what
    }

    pub fn spec(&self) -> &KeySpec {
        &self.spec
    }

    /// Signs `data` (the token hashes it).
    pub fn sign(&self, mechanism: SignMechanism, data: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        self.run("C_Sign", |session, key| {
            session.sign(&mechanism.mechanism(), key, data)
        })
    }

    /// Whether the token offers `mechanism` (true while its list is unknown).
    pub fn supports(&self, mechanism: SignMechanism) -> bool {
        let status = self.status();
        status.mechanisms.is_empty() || status.mechanisms.contains(&mechanism.mechanism_type())
    }

    /// The public half, read from the private key object (RSA private keys carry their
    /// modulus and public exponent).
    pub fn public_key(&self) -> Result<RsaPublicKey, Pkcs11Error> {
        let attributes = self.run("C_GetAttributeValue", |session, key| {
            session.get_attributes(
                key,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
        })?;
        let public = rsa_public(attributes);
        if public.modulus.is_empty() {
            return Err(Pkcs11Error::Operation {
                what: self.what.clone(),
                operation: "C_GetAttributeValue",
                reason: "the key has no readable CKA_MODULUS".into(),
            });
        }
        Ok(public)
    }

    /// The certificate stored in the token beside the key: the `CKO_CERTIFICATE` object
    /// with the key's label or id, DER (`CKA_VALUE`).
    pub fn certificate(&self) -> Result<Vec<u8>, Pkcs11Error> {
        let selector = selector_attribute(&self.spec.key);
        let found = self.run("C_FindObjects", |session, _| {
            let objects = session
                .find_objects(&[Attribute::Class(ObjectClass::CERTIFICATE), selector.clone()])?;
            let [certificate] = objects.as_slice() else {
                return Ok(None);
            };
            let value = session
                .get_attributes(*certificate, &[AttributeType::Value])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(der) => Some(der),
                    _ => None,
                });
            Ok(value)
        })?;
        found.ok_or_else(|| Pkcs11Error::Operation {
            what: self.what.clone(),
            operation: "C_FindObjects",
            reason: format!(
                "no single certificate object (CKO_CERTIFICATE) with this {}: give `cert` (and `chain`) files, or store the certificate in the token under the key's label or id",
                match self.spec.key {
                    KeySelector::Label(_) => "label",
                    KeySelector::Id(_) => "id",
                }
            ),
        })
    }

    /// `CKA_SENSITIVE`, `CKA_EXTRACTABLE`, `CKA_ALWAYS_SENSITIVE`, `CKA_NEVER_EXTRACTABLE`
    /// (an attribute the token does not report counts as unprotected).
    pub fn protection(&self) -> Result<KeyProtection, Pkcs11Error> {
        let attributes = self.run("C_GetAttributeValue", |session, key| {
            session.get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                ],
            )
        })?;
        let mut protection = KeyProtection {
            sensitive: false,
            extractable: true,
            always_sensitive: false,
            never_extractable: false,
        };
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(v) => protection.sensitive = v,
                Attribute::Extractable(v) => protection.extractable = v,
                Attribute::AlwaysSensitive(v) => protection.always_sensitive = v,
                Attribute::NeverExtractable(v) => protection.never_extractable = v,
                _ => {}
            }
        }
        Ok(protection)
    }

    /// Whether the key signs now: one signature over a fixed message (what readiness
    /// needs to know is that requests would be signed, not that a session is open). Any
    /// failure but a busy pool is recorded ([`Self::unavailable`]).
    pub fn probe(&self) -> Result<(), Pkcs11Error> {
        // No wait for a session: every session busy is a key at work.
        let probed = self.run_within(Duration::ZERO, "C_Sign", |session, key| {
            session.sign(
                &SignMechanism::RsaPkcs1Sha256.mechanism(),
                key,
                b"passerelle readiness probe",
            )
        });
        match probed {
            Ok(_) | Err(Pkcs11Error::Busy { .. }) => Ok(()),
            Err(e) => {
                if matches!(e, Pkcs11Error::Operation { .. }) {
                    self.status().unavailable = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Why the last operation could not use the key, until one succeeds again.
    pub fn unavailable(&self) -> Option<String> {
        self.status().unavailable.clone()
    }

    /// Records that the key cannot be used, for a reason found outside an operation (a
    /// probe that did not return); the next successful operation clears it.
    pub fn mark_unavailable(&self, reason: String) {
        let mut status = self.status();
        status.unavailable = Some(format!("{}: {reason}", self.what));
        status.unavailable_since.get_or_insert_with(Instant::now);
    }

    /// Sessions open with the token now (idle and lent).
    pub fn open_sessions(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One operation on a pooled session (waiting [`SESSION_WAIT`] at most for one). A
    /// token that went away is looked for again once (new session, PIN, key) before the
    /// operation fails.
    fn run<T>(
        &self,
        operation: &'static str,
        f: impl Fn(&Session, ObjectHandle) -> cryptoki::error::Result<T>,
    ) -> Result<T, Pkcs11Error> {
        self.run_within(SESSION_WAIT, operation, f)
    }

    fn run_within<T>(
        &self,
        wait: Duration,
        operation: &'static str,
        f: impl Fn(&Session, ObjectHandle) -> cryptoki::error::Result<T>,
    ) -> Result<T, Pkcs11Error> {
        let mut retried = false;
        loop {
            let result = self.checkout(wait).and_then(|mut lease| {
                self.status().epoch = lease.context.epoch;
                let outcome = f(lease.session()?, lease.found.key);
                outcome.map_err(|e| {
                    let error = self.failure(operation, e);
                    lease.lost = error.is_transient();
                    error
                })
            });
            match result {
                Ok(value) => {
                    let mut status = self.status();
                    status.unavailable = None;
                    status.unavailable_since = None;
                    return Ok(value);
                }
                Err(e) if e.is_transient() && !retried => retried = true,
                Err(e) => {
                    self.record(&e);
                    return Err(e);
                }
            }
        }
    }

    /// Remembers that the key cannot be used (the token gone, the PIN refused, the key
    /// not the certificate's): said until an operation succeeds. A failure of one call
    /// (a mechanism the token lacks) or a busy pool says nothing of the key. Unavailable
    /// for [`RESET_AFTER`]: the module is initialised again.
    fn record(&self, e: &Pkcs11Error) {
        if matches!(e, Pkcs11Error::Operation { .. } | Pkcs11Error::Busy { .. }) {
            return;
        }
        let mut status = self.status();
        status.unavailable = Some(e.to_string());
        let since = *status.unavailable_since.get_or_insert_with(Instant::now);
        let epoch = status.epoch;
        drop(status);
        if e.is_transient() && since.elapsed() >= RESET_AFTER {
            // The initialisation this key last tried (the module ignores a reset of an
            // initialisation already given up, or too young).
            self.module.reset(epoch);
        }
    }

    fn checkout(&self, wait: Duration) -> Result<Lease<'_>, Pkcs11Error> {
        let deadline = Instant::now() + wait;
        let mut pool = self.lock();
        loop {
            // The module was initialised again: these sessions are gone with it (closed
            // once the lock is released).
            if pool
                .context
                .as_ref()
                .is_some_and(|c| c.epoch != self.module.epoch())
            {
                let closing = pool.forget();
                drop(pool);
                drop(closing);
                pool = self.lock();
                continue;
            }
            if let (Some(found), Some(context)) = (pool.found, pool.context.clone())
                && let Some(session) = pool.idle.pop()
            {
                return Ok(Lease {
                    key: self,
                    session: Some(session),
                    context,
                    found,
                    generation: pool.generation,
                    lost: false,
                });
            }
            if pool.open < self.spec.sessions {
                pool.open += 1;
                let generation = pool.generation;
                let known = pool.found.zip(pool.context.clone());
                let ever_found = pool.ever_found;
                drop(pool);
                let opened = self.open_session(known).map_err(|e| match e {
                    // Found before, gone now: removed (it may come back).
                    Pkcs11Error::TokenNotFound { present, .. } if ever_found => {
                        Pkcs11Error::Unavailable {
                            what: self.what.clone(),
                            reason: format!("the token is not present (tokens present: {present})"),
                        }
                    }
                    Pkcs11Error::KeyNotFound { .. } if ever_found => Pkcs11Error::Unavailable {
                        what: self.what.clone(),
                        reason: "the key is no longer in the token (another token in its place?)"
                            .into(),
                    },
                    e => e,
                });
                let mut pool = self.lock();
                return match opened {
                    Ok(opened) => {
                        if pool.generation == generation && pool.found.is_none() {
                            pool.found = Some(opened.found);
                            pool.context = Some(Arc::clone(&opened.context));
                            pool.ever_found = true;
                            if let Some(mechanisms) = opened.mechanisms {
                                self.status().mechanisms = mechanisms;
                            }
                        }
                        Ok(Lease {
                            key: self,
                            session: Some(opened.session),
                            context: opened.context,
                            found: opened.found,
                            generation,
                            lost: false,
                        })
                    }
                    Err(e) => {
                        pool.open -= 1;
                        // A stale slot or initialisation must not be reused by the retry.
                        let closing = (e.is_transient() && pool.generation == generation)
                            .then(|| pool.forget());
                        drop(pool);
                        drop(closing);
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Pkcs11Error::Busy {
                    what: self.what.clone(),
                    sessions: self.spec.sessions,
                    seconds: wait.as_secs(),
                });
            }
            pool = self
                .freed
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// A new logged-in session: on the known slot and initialisation, or after finding
    /// the token and the key (checked) in the module's current initialisation.
    fn open_session(&self, known: Option<(Found, Arc<Context>)>) -> Result<Opened, Pkcs11Error> {
        let (context, slot) = match &known {
            Some((found, context)) => (Arc::clone(context), found.slot),
            None => {
                let context = self.module.context()?;
                self.status().epoch = context.epoch;
                let slot = self.find_slot(context.pkcs11())?;
                (context, slot)
            }
        };
        let session = context
            .pkcs11()
            .open_ro_session(slot)
            .map_err(|e| self.failure("C_OpenSession", e))?;
        self.login(&session)?;
        let (found, mechanisms) = match known {
            Some((found, _)) => (found, None),
            None => {
                let key = find_key(&session, &self.spec.key).map_err(|e| match e {
                    Lookup::Failed(e) => self.failure("C_FindObjects", e),
                    Lookup::Count(n) => Pkcs11Error::KeyNotFound {
                        what: self.what.clone(),
                        several: n > 1,
                    },
                })?;
                self.verify(&session, key)?;
                let mechanisms = context.pkcs11().get_mechanism_list(slot).ok();
                (Found { slot, key }, mechanisms)
            }
        };
        Ok(Opened {
            session,
            context,
            found,
            mechanisms,
        })
    }

    fn login(&self, session: &Session) -> Result<(), Pkcs11Error> {
        let pin = &self.spec.pin;
        self.module
            .login_once(&self.spec.token.to_string(), pin.bytes(), || {
                session.login(UserType::User, Some(&pin.auth()))
            })
            .map_err(|e| match e {
                LoginError::RefusedBefore => Pkcs11Error::PinIncorrect {
                    what: self.what.clone(),
                },
                LoginError::Failed(e) => self.failure("C_Login", e),
            })
    }

    fn find_slot(&self, pkcs11: &Pkcs11) -> Result<Slot, Pkcs11Error> {
        find_slot(pkcs11, &self.spec).map_err(|e| match e {
            Lookup::Failed(e) => self.failure("C_GetSlotList", e),
            Lookup::Count(_) => Pkcs11Error::TokenNotFound {
                module: self.spec.module.clone(),
                token: self.spec.token.clone(),
                present: present_tokens(pkcs11),
            },
        })
    }

    /// An RSA key, and the certificate's pair when one is expected.
    fn verify(&self, session: &Session, key: ObjectHandle) -> Result<(), Pkcs11Error> {
        let attributes = session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                ],
            )
            .map_err(|e| self.failure("C_GetAttributeValue", e))?;
        if !attributes.contains(&Attribute::KeyType(KeyType::RSA)) {
            return Err(Pkcs11Error::NotRsa {
                what: self.what.clone(),
            });
        }
        let held = rsa_public(attributes);
        if let Some(expected) = &self.expected {
            let exponent_differs = !held.exponent.is_empty() && held.exponent != expected.exponent;
            if held.modulus != expected.modulus || exponent_differs {
                return Err(Pkcs11Error::KeyMismatch {
                    what: self.what.clone(),
                });
            }
        }
        Ok(())
    }

    fn failure(&self, operation: &'static str, error: Error) -> Pkcs11Error {
        classify(&self.what, operation, error)
    }
}

/// What [`TokenKey::open_session`] made.
struct Opened {
    session: Session,
    context: Arc<Context>,
    found: Found,
    /// Read when the key was looked up.
    mechanisms: Option<Vec<MechanismType>>,
}

fn rsa_public(attributes: Vec<Attribute>) -> RsaPublicKey {
    let mut public = RsaPublicKey {
        modulus: Vec::new(),
        exponent: Vec::new(),
    };
    for attribute in attributes {
        match attribute {
            Attribute::Modulus(m) => public.modulus = unsigned(m),
            Attribute::PublicExponent(e) => public.exponent = unsigned(e),
            _ => {}
        }
    }
    public
}

/// The error of `operation` as an operator reads it: the PIN, a token gone (transient),
/// or the call's own failure.
fn classify(what: &str, operation: &'static str, error: Error) -> Pkcs11Error {
    let what = what.to_string();
    match error {
        Error::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange, _) => {
            Pkcs11Error::PinIncorrect { what }
        }
        Error::Pkcs11(RvError::PinLocked, _) => Pkcs11Error::PinLocked { what },
        Error::Pkcs11(
            rv @ (RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::UserNotLoggedIn
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError),
            _,
        ) => Pkcs11Error::Unavailable {
            what,
            reason: format!("{operation}: CKR_{}", ckr(&rv)),
        },
        Error::Pkcs11(rv, _) => Pkcs11Error::Operation {
            what,
            operation,
            reason: format!("CKR_{}", ckr(&rv)),
        },
        other => Pkcs11Error::Operation {
            what,
            operation,
            reason: other.to_string(),
        },
    }
}

/// `DeviceRemoved` → `DEVICE_REMOVED`: the constant's name in the PKCS#11 headers (the
/// binding's own messages are paragraphs of the specification).
fn ckr(rv: &RvError) -> String {
    let name = format!("{rv:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A look-up that failed, or found a number of matches other than one.
enum Lookup {
    Failed(Error),
    Count(usize),
}

fn find_slot(pkcs11: &Pkcs11, spec: &KeySpec) -> Result<Slot, Lookup> {
    let slots = pkcs11.get_slots_with_token().map_err(Lookup::Failed)?;
    let matching: Vec<Slot> = slots
        .into_iter()
        .filter(|slot| match &spec.token {
            TokenSelector::Slot(id) => slot.id() == *id,
            TokenSelector::Label(label) => pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == label),
        })
        .collect();
    match matching.as_slice() {
        [slot] => Ok(*slot),
        _ => Err(Lookup::Count(matching.len())),
    }
}

/// For an error message: the labels of the tokens the module shows.
fn present_tokens(pkcs11: &Pkcs11) -> String {
    let labels: Vec<String> = pkcs11
        .get_slots_with_token()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|slot| {
            let info = pkcs11.get_token_info(slot).ok()?;
            Some(format!(
                "{:?} in slot {}",
                info.label().trim_end(),
                slot.id()
            ))
        })
        .collect();
    if labels.is_empty() {
        "none".into()
    } else {
        labels.join(", ")
    }
}

fn selector_attribute(selector: &KeySelector) -> Attribute {
    match selector {
        KeySelector::Label(label) => Attribute::Label(label.as_bytes().to_vec()),
        KeySelector::Id(id) => Attribute::Id(id.clone()),
    }
}

fn find_key(session: &Session, selector: &KeySelector) -> Result<ObjectHandle, Lookup> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            selector_attribute(selector),
        ])
        .map_err(Lookup::Failed)?;
    match found.as_slice() {
        [key] => Ok(*key),
        _ => Err(Lookup::Count(found.len())),
    }
}

/// Generates an RSA key pair inside the token of `spec` under `label` and `id`: the
/// private half sensitive, never extractable, for signing only; and opens it (by
/// `spec.key`). Refuses when a private key already answers to the label or the id.
pub fn generate_rsa_key(
    spec: KeySpec,
    label: &str,
    id: &[u8],
    bits: u64,
) -> Result<TokenKey, Pkcs11Error> {
    let key = TokenKey::new(spec, None)?;
    let context = key.module.context()?;
    let slot = key.find_slot(context.pkcs11())?;
    {
        let session = context
            .pkcs11()
            .open_rw_session(slot)
            .map_err(|e| key.failure("C_OpenSession", e))?;
        key.login(&session)?;
        for selector in [
            KeySelector::Label(label.into()),
            KeySelector::Id(id.to_vec()),
        ] {
            match find_key(&session, &selector) {
                Err(Lookup::Count(0)) => {}
                Err(Lookup::Failed(e)) => return Err(key.failure("C_FindObjects", e)),
                Ok(_) | Err(Lookup::Count(_)) => {
                    return Err(Pkcs11Error::Operation {
                        what: key.what.clone(),
                        operation: "C_GenerateKeyPair",
                        reason: format!(
                            "the token already holds a private key with {selector}: choose another label and id, or use that key"
                        ),
                    });
                }
            }
        }
        let common = [
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.to_vec()),
        ];
        // Signing only: an ORG key that decrypts or wraps is one more way to misuse it.
        let public: Vec<Attribute> = common
            .iter()
            .cloned()
            .chain([
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Wrap(false),
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            ])
            .collect();
        let private: Vec<Attribute> = common
            .iter()
            .cloned()
            .chain([
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::SignRecover(false),
                Attribute::Derive(false),
            ])
            .collect();
        session
            .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
            .map_err(|e| key.failure("C_GenerateKeyPair", e))?;
    }
    drop(context);
    key.connect()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_read_as_the_header_constants() {
        assert_eq!(ckr(&RvError::DeviceRemoved), "DEVICE_REMOVED");
        assert_eq!(ckr(&RvError::PinIncorrect), "PIN_INCORRECT");
    }

    #[test]
    fn a_removed_token_is_transient_a_refused_pin_is_not() {
        let removed = classify(
            "t",
            "C_Sign",
            Error::Pkcs11(RvError::DeviceRemoved, cryptoki::context::Function::Sign),
        );
        assert!(removed.is_transient(), "{removed}");
        assert!(
            removed.to_string().contains("CKR_DEVICE_REMOVED"),
            "{removed}"
        );
        let pin = classify(
            "t",
            "C_Login",
            Error::Pkcs11(RvError::PinIncorrect, cryptoki::context::Function::Login),
        );
        assert!(!pin.is_transient());
        assert!(pin.to_string().contains("pin_file"), "{pin}");
    }

    #[test]
    fn leading_zeros_do_not_count() {
        let key = RsaPublicKey {
            modulus: unsigned(vec![0, 0x80, 0]),
            exponent: unsigned(vec![0, 1, 0, 1]),
        };
        assert_eq!(key.modulus, vec![0x80, 0]);
        assert_eq!(key.bits(), 16);
        assert_eq!(key.exponent, vec![1, 0, 1]);
    }
}
