//! Certificate and key material: reading PEM or PKCS#12 files, inspecting leaves, and
//! holding private keys so that they never show up in logs or debug output.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use openssl::pkcs12::Pkcs12;
use openssl::pkey::{Id, PKey, Private};
use openssl::x509::X509;
use passerelle_pkcs11::TokenKey;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};
use zeroize::Zeroizing;

use crate::ids::CertRole;

/// A private key, PKCS#8 DER. Zeroed on drop; `Debug` never prints it.
#[derive(Clone)]
pub struct PrivateKey(pub(crate) Zeroizing<Vec<u8>>);

impl PrivateKey {
    /// PKCS#8 DER encoding, for a signer or a TLS configuration to load.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Where a certificate's private key is.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// Read from a PEM or PKCS#12 file, held in memory.
    File(PrivateKey),
    /// In a PKCS#11 token: signatures are made there, the key never leaves it.
    Token(Arc<TokenKey>),
}

/// What the proxy and `passerelle check` need to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject DN in RFC 2253 order (`CN=...,OU=...,O=...,ST=...,C=FR`): the VIHF Issuer.
    pub subject: String,
    pub common_name: Option<String>,
    /// The structure id an ORG certificate carries.
    pub organizational_unit: Option<String>,
    /// The legal name (`O`), which a renewal's CSR repeats.
    pub organization: Option<String>,
    /// The département (`ST`, e.g. `Rhône (69)`), which a renewal's CSR repeats.
    pub state: Option<String>,
    pub issuer: String,
    pub issuer_common_name: Option<String>,
    /// Upper-case hexadecimal, no separators.
    pub serial_hex: String,
    /// Decimal, as XAdES `IssuerSerial` writes it.
    pub serial_decimal: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER certificate, lower-case hexadecimal.
    pub sha256: String,
    pub digital_signature: bool,
    pub non_repudiation: bool,
    pub client_auth: bool,
    pub email_protection: bool,
    pub server_auth: bool,
    /// Whether an extended key usage extension is present at all.
    pub has_eku: bool,
    /// Basic constraints say CA: an intermediate or a root, never a tenant's leaf.
    pub is_ca: bool,
}

impl CertificateInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        let subject = cert.subject();
        let first = |name: &X509Name<'_>, oid: &str| {
            name.iter_attributes()
                .find(|a| a.attr_type().to_id_string() == oid)
                .and_then(|a| a.as_str().ok())
                .map(str::to_string)
        };
        let ku = cert.key_usage().ok().flatten().map(|e| *e.value);
        let eku = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| e.value.clone());
        let serial = cert.raw_serial();
        let serial = serial
            .iter()
            .skip_while(|b| **b == 0)
            .map(|b| format!("{b:02X}"))
            .collect::<String>();
        Ok(Self {
            subject: rfc2253(subject),
            common_name: first(subject, OID_CN),
            organizational_unit: first(subject, OID_OU),
            organization: first(subject, OID_O),
            state: first(subject, OID_ST),
            issuer: rfc2253(cert.issuer()),
            issuer_common_name: first(cert.issuer(), OID_CN),
            serial_decimal: cert.serial.to_str_radix(10),
            serial_hex: if serial.is_empty() {
                "00".into()
            } else {
                serial
            },
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(der)),
            digital_signature: ku.is_some_and(|k| k.digital_signature()),
            non_repudiation: ku.is_some_and(|k| k.non_repudiation()),
            client_auth: eku.as_ref().is_some_and(|e| e.client_auth || e.any),
            email_protection: eku.as_ref().is_some_and(|e| e.email_protection || e.any),
            server_auth: eku.as_ref().is_some_and(|e| e.server_auth || e.any),
            has_eku: eku.is_some(),
            is_ca: cert.is_ca(),
        })
    }

    /// Whole days from `now` to `not_after` (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

const OID_CN: &str = "2.5.4.3";
const OID_OU: &str = "2.5.4.11";
const OID_O: &str = "2.5.4.10";
const OID_ST: &str = "2.5.4.8";

/// Formats a distinguished name as RFC 2253 does: the last RDN first, `,` between RDNs,
/// `+` inside one, special characters escaped. This is the form of the VIHF `Issuer`.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.11" => "OU",
                        "2.5.4.10" => "O",
                        "2.5.4.8" => "ST",
                        "2.5.4.6" => "C",
                        "2.5.4.7" => "L",
                        "2.5.4.9" => "STREET",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        _ => "",
                    };
                    match (key, atv.as_str()) {
                        ("", _) | (_, Err(_)) => {
                            // Unknown type or non-string value: dotted OID and #hex of the DER value.
                            format!("{oid}=#{}", hex::encode(atv.attr_value().as_bytes()))
                        }
                        (key, Ok(value)) => format!("{key}={}", escape_rfc2253(value)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_rfc2253(value: &str) -> String {
    let count = value.chars().count();
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == count => out.push_str("\\ "),
            _ => out.push(c),
        }
    }
    out
}

/// A leaf, the certificates supplied with it, and its private key, as read from disk
/// or opened in a token.
#[derive(Debug)]
pub(crate) struct RawMaterial {
    pub leaf: X509,
    /// Certificates supplied beside the leaf (chain file or PKCS#12 bag), leaf excluded.
    pub supplied_chain: Vec<X509>,
    pub key: RawKey,
}

#[derive(Debug)]
pub(crate) enum RawKey {
    File(PKey<Private>),
    Token(Arc<TokenKey>),
}

/// Reads every certificate of a PEM or DER file.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<X509>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs = if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        X509::stack_from_pem(&bytes).map_err(|e| format!("not a PEM certificate file: {e}"))?
    } else {
        vec![X509::from_der(&bytes).map_err(|e| format!("not a PEM or DER certificate: {e}"))?]
    };
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8 or PKCS#1); encrypted keys are refused with advice.
pub(crate) fn read_pem_key(path: &Path) -> Result<PKey<Private>, String> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?);
    if bytes.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(
            "encrypted PEM keys are not supported: use a PKCS#12 file with `password_file`".into(),
        );
    }
    PKey::private_key_from_pem(&bytes).map_err(|_| "not a PEM private key".to_string())
}

/// Opens a PKCS#12 with the password held in `password_file` (trailing newline ignored).
pub(crate) fn read_pkcs12(path: &Path, password_file: &Path) -> Result<RawMaterial, Pkcs12Error> {
    let bytes = std::fs::read(path).map_err(|e| Pkcs12Error::File(format!("cannot read: {e}")))?;
    let password = Zeroizing::new(
        std::fs::read_to_string(password_file)
            .map_err(|e| Pkcs12Error::Password(format!("cannot read: {e}")))?,
    );
    let password = password.trim_end_matches(['\r', '\n']);
    let p12 = Pkcs12::from_der(&bytes)
        .map_err(|_| Pkcs12Error::File("not a PKCS#12 (.p12) file".into()))?;
    let parsed = p12.parse2(password).map_err(|_| {
        Pkcs12Error::File(format!(
            "cannot open: wrong password in {} or damaged file",
            password_file.display()
        ))
    })?;
    let leaf = parsed
        .cert
        .ok_or_else(|| Pkcs12Error::File("holds no certificate".into()))?;
    let key = parsed
        .pkey
        .ok_or_else(|| Pkcs12Error::File("holds no private key".into()))?;
    let supplied_chain = parsed
        .ca
        .map(|stack| stack.into_iter().collect())
        .unwrap_or_default();
    Ok(RawMaterial {
        leaf,
        supplied_chain,
        key: RawKey::File(key),
    })
}

#[derive(Debug)]
pub(crate) enum Pkcs12Error {
    /// About the .p12 file itself.
    File(String),
    /// About the password file.
    Password(String),
}

/// Checks that the key is RSA (2048 bits or more) and belongs to the leaf; returns it
/// ready for use (a file key in its PKCS#8 encoding).
pub(crate) fn check_key(raw: &RawMaterial) -> Result<KeyMaterial, String> {
    let public = raw
        .leaf
        .public_key()
        .map_err(|e| format!("cannot read the certificate's public key: {e}"))?;
    match &raw.key {
        RawKey::File(key) => {
            if key.id() != Id::RSA {
                return Err(format!(
                    "the private key is {:?}, IGC-Santé ORG certificates use RSA",
                    key.id()
                ));
            }
            if key.bits() < 2048 {
                return Err(format!(
                    "the RSA key has {} bits, at least 2048 are required",
                    key.bits()
                ));
            }
            if !public.public_eq(key) {
                return Err("the private key does not match the certificate".into());
            }
            let der = key
                .private_key_to_pkcs8()
                .map_err(|e| format!("cannot encode the key as PKCS#8: {e}"))?;
            Ok(KeyMaterial::File(PrivateKey(Zeroizing::new(der))))
        }
        RawKey::Token(key) => {
            // The token's key was checked to be this certificate's pair when it was
            // found (and is at every look-up); its size is the certificate's.
            let bits = public.bits();
            if bits < 2048 {
                return Err(format!(
                    "{}: the RSA key has {bits} bits, at least 2048 are required",
                    key.describe()
                ));
            }
            Ok(KeyMaterial::Token(Arc::clone(key)))
        }
    }
}

/// The problems of a leaf for its role: key usages, extended key usages, INSi CN rule.
pub fn role_problems(info: &CertificateInfo, role: CertRole) -> Vec<String> {
    let mut problems = Vec::new();
    if !info.digital_signature {
        problems.push("key usage lacks digitalSignature".to_string());
    }
    match role {
        CertRole::DmpSign => {
            if !info.non_repudiation {
                problems.push(
                    "key usage lacks nonRepudiation: this is not an ORG SIGN certificate".into(),
                );
            }
            if info.has_eku && !info.email_protection {
                problems.push(
                    "extended key usage lacks emailProtection: this is not an ORG SIGN certificate"
                        .into(),
                );
            }
        }
        CertRole::DmpAuth | CertRole::InsiAuto | CertRole::InsiManu | CertRole::OrgAuth => {
            if !info.client_auth {
                problems.push(format!(
                    "extended key usage lacks clientAuth: this is not an ORG AUTH_CLI certificate \
                     (an ORG SIGN certificate cannot authenticate TLS) and cannot serve as {role}"
                ));
            }
        }
    }
    let insi = insi_role_of(info);
    if let Some(required) = role.required_common_name() {
        let cn = info.common_name.as_deref().unwrap_or("");
        if cn != required {
            let hint = match insi {
                Some(other)
                    if other != role && cn == other.required_common_name().unwrap_or("") =>
                {
                    format!(": this is the {other} certificate, put it under {other}")
                }
                _ => String::new(),
            };
            problems.push(format!(
                "CN is {cn:?}; INSi requires exactly {required:?} (upper case, a hyphen, no spaces) \
                 and answers DESIR_560 \"Niveau d'accès insuffisant\" otherwise{hint}"
            ));
        }
    } else if let Some(insi_role) = insi {
        problems.push(format!(
            "this is an INSi certificate (CN {}): put it under {insi_role}; {role} needs the \
             tenant's ORG {} certificate",
            info.common_name.as_deref().unwrap_or(""),
            if role == CertRole::DmpSign {
                "SIGN"
            } else {
                "AUTH_CLI"
            }
        ));
    }
    problems
}

/// The INSi role a certificate's CN names (`INSI-AUTO`, `INSI-MANU`, in any case, with a
/// space or a hyphen), if any: such a certificate serves INSi only.
pub(crate) fn insi_role_of(info: &CertificateInfo) -> Option<CertRole> {
    let cn: String = info
        .common_name
        .as_deref()?
        .trim()
        .to_ascii_uppercase()
        .replace(' ', "-");
    [CertRole::InsiAuto, CertRole::InsiManu]
        .into_iter()
        .find(|r| r.required_common_name() == Some(cn.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_orders_and_escapes() {
        assert_eq!(escape_rfc2253("A,B+C"), "A\\,B\\+C");
        assert_eq!(escape_rfc2253(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc2253("#1"), "\\#1");
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = PrivateKey(Zeroizing::new(vec![1, 2, 3]));
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
    }
}
