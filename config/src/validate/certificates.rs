//! One tenant certificate: reading it (PEM files or PKCS#12), its key, its role,
//! OU and validity dates, its chain to the configured anchors, and revocation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509Crl, X509StoreContext};
use passerelle_pkcs11::{
    KeySelector, KeySpec, Pin, Pkcs11Error, RsaPublicKey, TokenKey, TokenSelector,
};
use time::OffsetDateTime;

use super::Validator;
use super::trust::TenantTrust;

use crate::file::{CertSource, Pkcs11Section};
use crate::ids::{CertRole, StructureId};
use crate::material::{self, CertificateInfo, RawKey, role_problems};
use crate::model::CertMaterial;
use crate::report::{Revocation, RevocationStatus, Severity};

/// Intermediates (nearest first) and the anchor a verified chain ended at, DER.
type VerifiedChain = (Vec<Vec<u8>>, Option<Vec<u8>>);

impl Validator {
    pub(super) fn certificate(
        &mut self,
        field: &str,
        role: CertRole,
        source: &CertSource,
        trust: &TenantTrust,
        structure: Option<&StructureId>,
    ) -> (Option<CertMaterial>, Option<Revocation>) {
        // Split so that the revocation status reaches the report row even when the
        // certificate is refused for another reason (e.g. not anchored).
        let mut revocation = None;
        let material =
            self.certificate_material(field, role, source, trust, structure, &mut revocation);
        (material, revocation)
    }

    fn certificate_material(
        &mut self,
        field: &str,
        role: CertRole,
        source: &CertSource,
        trust: &TenantTrust,
        structure: Option<&StructureId>,
        revocation: &mut Option<Revocation>,
    ) -> Option<CertMaterial> {
        let (raw, main_file) = match (source, &source.cert, &source.pkcs12) {
            (
                CertSource {
                    key: Some(key),
                    chain,
                    password_file: None,
                    pkcs11: None,
                    ..
                },
                Some(cert),
                None,
            ) => {
                let key_path = self.resolve(key);
                self.check_secret_permissions(&format!("{field}.key"), &key_path);
                let certs = self.leaf_and_chain(field, cert, chain.as_deref());
                let key = material::read_pem_key(&key_path)
                    .map_err(|e| {
                        self.problem(Severity::Error, Some(&key_path), &format!("{field}.key"), e)
                    })
                    .ok();
                let ((leaf, supplied_chain, cert_path), key) = (certs?, key?);
                (
                    material::RawMaterial {
                        leaf,
                        supplied_chain,
                        key: RawKey::File(key),
                    },
                    cert_path,
                )
            }
            (
                CertSource {
                    key: None,
                    chain,
                    password_file: None,
                    pkcs11: Some(token),
                    ..
                },
                cert,
                None,
            ) => {
                let key_field = format!("{field}.pkcs11");
                let spec = self.token_spec(&key_field, token)?;
                let (leaf, supplied_chain, main_file) = match cert {
                    Some(cert) => self.leaf_and_chain(field, cert, chain.as_deref())?,
                    None => self.token_leaf_and_chain(field, spec.clone(), chain.as_deref())?,
                };
                let key = self.token_key(&key_field, token, spec, &leaf, &main_file)?;
                (
                    material::RawMaterial {
                        leaf,
                        supplied_chain,
                        key: RawKey::Token(Arc::new(key)),
                    },
                    main_file,
                )
            }
            (
                CertSource {
                    password_file: Some(password),
                    cert: None,
                    key: None,
                    chain: None,
                    pkcs11: None,
                    ..
                },
                None,
                Some(p12),
            ) => {
                let p12_path = self.resolve(p12);
                let password_path = self.resolve(password);
                self.check_secret_permissions(&format!("{field}.pkcs12"), &p12_path);
                self.check_secret_permissions(&format!("{field}.password_file"), &password_path);
                match material::read_pkcs12(&p12_path, &password_path) {
                    Ok(raw) => (raw, p12_path),
                    Err(material::Pkcs12Error::File(e)) => {
                        self.problem(
                            Severity::Error,
                            Some(&p12_path),
                            &format!("{field}.pkcs12"),
                            e,
                        );
                        return None;
                    }
                    Err(material::Pkcs12Error::Password(e)) => {
                        self.problem(
                            Severity::Error,
                            Some(&password_path),
                            &format!("{field}.password_file"),
                            e,
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    field,
                    "give either `cert` + `key` (+ optional `chain`) PEM files, `pkcs12` + `password_file`, or the key in a token (`[...pkcs11]` table) with `cert` (+ optional `chain`) files or the certificate stored in the token",
                );
                return None;
            }
        };

        let leaf_der = raw.leaf.to_der().ok()?;
        let info = match CertificateInfo::from_der(&leaf_der) {
            Ok(i) => i,
            Err(e) => {
                self.problem(Severity::Error, Some(&main_file), field, e);
                return None;
            }
        };
        let mut err = |v: &mut Self, message: String| {
            v.problem(Severity::Error, Some(&main_file), field, message)
        };
        let key = match material::check_key(&raw) {
            Ok(k) => Some(k),
            Err(e) => {
                let key_field = if source.key.is_some() {
                    format!("{field}.key")
                } else if source.pkcs11.is_some() {
                    format!("{field}.pkcs11")
                } else {
                    field.to_string()
                };
                let key_file = source
                    .key
                    .as_deref()
                    .map(|k| self.resolve(k))
                    .unwrap_or_else(|| main_file.clone());
                self.problem(Severity::Error, Some(&key_file), &key_field, e);
                None
            }
        };
        for p in role_problems(&info, role) {
            err(self, p);
        }
        if let Some(structure) = structure {
            match info.organizational_unit.as_deref() {
                Some(ou) if ou == structure.as_str() => {}
                ou => err(
                    self,
                    format!(
                        "certificate OU is {:?} but the tenant's structure_id is {:?}: ORG certificates carry their legal entity's structure id",
                        ou.unwrap_or(""),
                        structure.as_str()
                    ),
                ),
            }
        }
        if info.not_before > self.now {
            self.disabling(
                &main_file,
                field,
                format!("not valid before {} (not yet valid)", date(info.not_before)),
            );
        }
        let days_left = info.days_left(self.now);
        if info.not_after <= self.now {
            self.disabling(
                &main_file,
                field,
                format!(
                    "expired on {} ({} days ago): renew it on the IGC-Santé portal",
                    date(info.not_after),
                    -days_left
                ),
            );
        } else if days_left < i64::from(self.expiry_warning_days) {
            self.problem(
                Severity::Warning,
                Some(&main_file),
                field,
                format!("expires on {} (in {days_left} days): renew it now, renewal must not interrupt service", date(info.not_after)),
            );
        }
        let chain = self.anchor(&mut err, &raw, trust);
        let status = self.revocation(&raw, trust, &main_file, field);
        let revoked = (status.status == RevocationStatus::Revoked).then(|| {
            format!(
                "revoked on {} according to {}",
                status.revoked_on.as_deref().unwrap_or("?"),
                status
                    .source
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        });
        *revocation = Some(status);
        let (intermediates_der, anchor_der) = chain?;
        Some(CertMaterial {
            role,
            info,
            leaf_der,
            intermediates_der,
            anchor_der,
            key: key?,
            source: main_file,
            revoked,
        })
    }

    /// The leaf of `cert`, the certificates supplied beside it (`cert`'s others and
    /// `chain`'s, the leaf removed), and `cert`'s resolved path.
    fn leaf_and_chain(
        &mut self,
        field: &str,
        cert: &Path,
        chain: Option<&Path>,
    ) -> Option<(X509, Vec<X509>, PathBuf)> {
        let cert_path = self.resolve(cert);
        let certs = material::read_certificates(&cert_path)
            .map_err(|e| {
                self.problem(
                    Severity::Error,
                    Some(&cert_path),
                    &format!("{field}.cert"),
                    e,
                )
            })
            .ok();
        let chain_certs = self.read_chain(field, chain);
        let mut certs = certs?;
        let leaf = certs.remove(0);
        certs.extend(chain_certs);
        // A chain file usually starts with the leaf itself.
        let leaf_der = leaf.to_der().ok();
        certs.retain(|c| c.to_der().ok() != leaf_der);
        Some((leaf, certs, cert_path))
    }

    /// The certificates of `chain` (none when not given, or unreadable: a problem).
    fn read_chain(&mut self, field: &str, chain: Option<&Path>) -> Vec<X509> {
        let Some(chain) = chain else {
            return Vec::new();
        };
        let chain_path = self.resolve(chain);
        material::read_certificates(&chain_path)
            .map_err(|e| {
                self.problem(
                    Severity::Error,
                    Some(&chain_path),
                    &format!("{field}.chain"),
                    e,
                )
            })
            .unwrap_or_default()
    }

    /// [`Self::leaf_and_chain`] with the certificate stored in the token beside the key
    /// (the module's path stands for its file in problems).
    fn token_leaf_and_chain(
        &mut self,
        field: &str,
        spec: KeySpec,
        chain: Option<&Path>,
    ) -> Option<(X509, Vec<X509>, PathBuf)> {
        let module = spec.module.clone();
        let key_field = format!("{field}.pkcs11");
        let leaf = TokenKey::open(spec)
            .and_then(|key| key.certificate())
            .map_err(|e| {
                format!(
                    "{e} (with no `cert` file, the certificate is read from the token, which must answer at start)"
                )
            })
            .and_then(|der| {
                X509::from_der(&der).map_err(|e| {
                    format!("the token's certificate object is not a DER certificate: {e}")
                })
            });
        let leaf = match leaf {
            Ok(leaf) => leaf,
            Err(message) => {
                self.problem(Severity::Error, Some(&module), &key_field, message);
                return None;
            }
        };
        let mut certs = self.read_chain(field, chain);
        let leaf_der = leaf.to_der().ok();
        certs.retain(|c| c.to_der().ok() != leaf_der);
        Some((leaf, certs, module))
    }

    /// The [`KeySpec`] of a `[...pkcs11]` table (the PIN read), or problems.
    fn token_spec(&mut self, field: &str, token: &Pkcs11Section) -> Option<KeySpec> {
        let module = self.resolve(&token.module);
        let selector = match (&token.token_label, token.slot) {
            (Some(label), None) if !label.is_empty() => TokenSelector::Label(label.clone()),
            (None, Some(slot)) => TokenSelector::Slot(slot),
            _ => {
                self.error(
                    field,
                    "give the token by `token_label` or by `slot` (one of them)",
                );
                return None;
            }
        };
        let key = match (&token.key_label, &token.key_id) {
            (Some(label), None) if !label.is_empty() => KeySelector::Label(label.clone()),
            (None, Some(id)) => {
                match hex::decode(id.replace(':', "")) {
                    Ok(id) if !id.is_empty() => KeySelector::Id(id),
                    _ => {
                        self.error(
                        &format!("{field}.key_id"),
                        format!("{id:?} is not hexadecimal (the key's CKA_ID, e.g. \"01\" or \"a1:b2\")"),
                    );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    field,
                    "give the key by `key_label` or by `key_id` (one of them)",
                );
                return None;
            }
        };
        if token.sessions == 0 {
            self.error(&format!("{field}.sessions"), "must be at least 1");
            return None;
        }
        let pin_path = self.resolve(&token.pin_file);
        self.check_secret_permissions(&format!("{field}.pin_file"), &pin_path);
        let pin = match std::fs::read_to_string(&pin_path).map(zeroize::Zeroizing::new) {
            Ok(pin) => Pin::new(pin.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => {
                self.problem(
                    Severity::Error,
                    Some(&pin_path),
                    &format!("{field}.pin_file"),
                    format!("cannot read: {e}"),
                );
                return None;
            }
        };
        Some(KeySpec {
            module,
            token: selector,
            key,
            pin,
            sessions: token.sessions,
        })
    }

    /// Opens the key of a `[...pkcs11]` table: module, token, PIN, key, the pair of
    /// `leaf`; warns when the token would let the key out. A token that does not answer
    /// now disables the pair only (the key is looked for again, and the pair served, when
    /// it does); anything else is an error to fix.
    fn token_key(
        &mut self,
        field: &str,
        token: &Pkcs11Section,
        spec: KeySpec,
        leaf: &X509,
        cert_path: &Path,
    ) -> Option<TokenKey> {
        let expected = match leaf.public_key().and_then(|k| k.rsa()) {
            Ok(rsa) => RsaPublicKey {
                modulus: rsa.n().to_vec(),
                exponent: rsa.e().to_vec(),
            },
            Err(_) => {
                self.problem(
                    Severity::Error,
                    Some(cert_path),
                    field,
                    "the certificate's key is not RSA, IGC-Santé ORG certificates use RSA".into(),
                );
                return None;
            }
        };
        let module = spec.module.clone();
        let pin_path = self.resolve(&token.pin_file);
        let key = match TokenKey::new(spec, Some(expected)) {
            Ok(key) => key,
            Err(e) => {
                self.problem(
                    Severity::Error,
                    Some(&module),
                    &format!("{field}.module"),
                    e.to_string(),
                );
                return None;
            }
        };
        match key.connect().and_then(|()| key.protection()) {
            Ok(protection) => {
                let advice = "generate keys inside the token (`passerelle csr --pkcs11`): sensitive and never extractable";
                if protection.extractable || !protection.sensitive {
                    self.warning(
                        field,
                        format!(
                            "{}: the token lets this key out (CKA_EXTRACTABLE {}, CKA_SENSITIVE {}): {advice}",
                            key.describe(),
                            protection.extractable,
                            protection.sensitive
                        ),
                    );
                } else if !protection.is_protected() {
                    self.warning(
                        field,
                        format!(
                            "{}: this key was imported into the token (CKA_NEVER_EXTRACTABLE or CKA_ALWAYS_SENSITIVE false): copies of it may exist outside; {advice}",
                            key.describe()
                        ),
                    );
                }
                Some(key)
            }
            Err(e) if e.is_transient() => {
                self.disabling(
                    &module,
                    field,
                    format!(
                        "{e}: this (tenant, role) pair is disabled until the token answers (looked for every 5 s)"
                    ),
                );
                Some(key)
            }
            Err(e) => {
                let (file, at) = match &e {
                    Pkcs11Error::PinIncorrect { .. } | Pkcs11Error::PinLocked { .. } => {
                        (pin_path, format!("{field}.pin_file"))
                    }
                    Pkcs11Error::Module { .. } => (module, format!("{field}.module")),
                    Pkcs11Error::KeyMismatch { .. } => (cert_path.to_path_buf(), field.to_string()),
                    _ => (module, field.to_string()),
                };
                self.problem(Severity::Error, Some(&file), &at, e.to_string());
                None
            }
        }
    }

    /// An error that disables only this certificate's (tenant, role) pair at run time.
    fn disabling(&mut self, file: &Path, field: &str, message: String) {
        self.problem(Severity::Error, Some(file), field, message);
        if let Some(p) = self.problems.last_mut() {
            p.disables = true;
        }
    }

    /// Builds the chain to a configured anchor, ignoring time (reported separately):
    /// the intermediates strictly between leaf and anchor, and the anchor itself.
    fn anchor(
        &mut self,
        err: &mut impl FnMut(&mut Self, String),
        raw: &material::RawMaterial,
        trust: &TenantTrust,
    ) -> Option<VerifiedChain> {
        if trust.anchors.is_empty() {
            return None;
        }
        let result = (|| -> Result<Result<VerifiedChain, String>, openssl::error::ErrorStack> {
            let mut store = X509StoreBuilder::new()?;
            for a in &trust.anchors {
                store.add_cert(a.clone())?;
            }
            store.set_flags(X509VerifyFlags::NO_CHECK_TIME)?;
            let store = store.build();
            let mut untrusted = Stack::new()?;
            for c in raw.supplied_chain.iter().chain(&trust.intermediates) {
                untrusted.push(c.clone())?;
            }
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&store, &raw.leaf, &untrusted, |ctx| {
                if ctx.verify_cert()? {
                    let chain = ctx.chain().map(|c| {
                        let mut all: Vec<_> = c.iter().filter_map(|x| x.to_der().ok()).collect();
                        // Leaf first, anchor last: what lies strictly between, then the
                        // anchor (none when the leaf itself is the anchor).
                        let anchor = if all.len() > 1 { all.pop() } else { None };
                        let intermediates = all.get(1..).map(<[_]>::to_vec).unwrap_or_default();
                        (intermediates, anchor)
                    });
                    Ok(Ok(chain.unwrap_or_default()))
                } else {
                    Ok(Err(ctx.error().error_string().to_string()))
                }
            })
        })();
        match result {
            Ok(Ok(chain)) => Some(chain),
            Ok(Err(reason)) => {
                let issuer = CertificateInfo::from_der(&raw.leaf.to_der().unwrap_or_default())
                    .map(|i| i.issuer)
                    .unwrap_or_default();
                err(
                    self,
                    format!(
                        "not anchored in the configured trust (trust.anchors): {reason}; issuer is {issuer:?}"
                    ),
                );
                None
            }
            Err(e) => {
                err(self, format!("chain verification failed: {e}"));
                None
            }
        }
    }

    /// Looks the leaf up in the CRLs its issuer signed: revoked (when, by which CRL),
    /// good (which CRL), or not checked when no configured CRL speaks for its issuer.
    fn revocation(
        &mut self,
        raw: &material::RawMaterial,
        trust: &TenantTrust,
        file: &Path,
        field: &str,
    ) -> Revocation {
        let issuers: Vec<&X509> = raw
            .supplied_chain
            .iter()
            .chain(&trust.intermediates)
            .chain(&trust.anchors)
            .collect();
        let mut good = None;
        for (crl_path, crl) in &trust.crls {
            let same_issuer = crl
                .issuer_name()
                .try_cmp(raw.leaf.issuer_name())
                .is_ok_and(|o| o == std::cmp::Ordering::Equal);
            if !same_issuer {
                continue;
            }
            // Only a CRL signed by the leaf's actual issuer speaks for it.
            let signed_by_issuer = issuers.iter().any(|ca| {
                ca.issued(&raw.leaf) == openssl::x509::X509VerifyResult::OK
                    && ca
                        .public_key()
                        .is_ok_and(|k| crl.verify(&k).unwrap_or(false))
            });
            if !signed_by_issuer {
                continue;
            }
            if let openssl::x509::CrlStatus::Revoked(entry) = crl.get_by_cert(&raw.leaf) {
                let on = entry.revocation_date().to_string();
                self.disabling(
                    file,
                    field,
                    format!("revoked on {on} according to {}", crl_path.display()),
                );
                return Revocation {
                    status: RevocationStatus::Revoked,
                    source: Some(crl_path.clone()),
                    url: None,
                    revoked_on: Some(on),
                    ocsp: None,
                };
            }
            // The newest CRL that speaks for it is the one to name.
            if good.is_none_or(|(_, g): (&PathBuf, &X509Crl)| crl.last_update() > g.last_update()) {
                good = Some((crl_path, crl));
            }
        }
        Revocation {
            status: if good.is_some() {
                RevocationStatus::Good
            } else {
                RevocationStatus::NotChecked
            },
            source: good.map(|(p, _)| p.clone()),
            url: None,
            revoked_on: None,
            ocsp: None,
        }
    }
}

fn date(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}
