//! Identifiers parsed once at the edge: [`TenantId`], [`StructureId`], [`CertRole`].

use std::fmt;
use std::str::FromStr;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "tenant id {0:?} must be 1 to 63 characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit"
    )]
    TenantId(String),
    #[error("structure id is empty")]
    EmptyStructure,
    #[error(
        "structure id {value:?} starts with {prefix:?}: expected a type prefix 0 (ADELI), 1 (FINESS), 2 (SIREN), 3 (SIRET) or 4 (RPPS-rang)"
    )]
    StructurePrefix { value: String, prefix: char },
    #[error("structure id {value:?}: {kind} identifier must be {expected}")]
    StructureShape {
        value: String,
        kind: StructureKind,
        expected: &'static str,
    },
    #[error("structure id {value:?}: the {kind} number fails its Luhn check digit")]
    StructureLuhn { value: String, kind: StructureKind },
}

/// A tenant: one legal entity (entité juridique) whose certificates the proxy holds.
///
/// Lower-case, short and free of spaces, because it appears in headers, metric labels
/// and audit lines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

/// The `tenant` and `client` metric label of a request that access control has not
/// attributed (yet): reserved, no tenant or client may be named so.
pub const UNATTRIBUTED: &str = "none";

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(IdError::TenantId(s.to_string()))
        }
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The registry a structure identifier comes from: its one-digit prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StructureKind {
    /// `0` + ADELI number of a private practice.
    Adeli,
    /// `1` + FINESS (juridique or géographique).
    Finess,
    /// `2` + SIREN.
    Siren,
    /// `3` + SIRET.
    Siret,
    /// `4` + RPPS + rang.
    RppsRang,
}

impl fmt::Display for StructureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Adeli => "ADELI",
            Self::Finess => "FINESS",
            Self::Siren => "SIREN",
            Self::Siret => "SIRET",
            Self::RppsRang => "RPPS-rang",
        })
    }
}

/// A structure identifier as the DMP and IGC-Santé write it: a type prefix then the
/// identifier (`1` + FINESS: `10B0152872`). It is the OU of ORG certificates and the
/// VIHF `Identifiant_Structure`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StructureId {
    kind: StructureKind,
    value: String,
}

impl StructureId {
    pub fn kind(&self) -> StructureKind {
        self.kind
    }

    /// The whole identifier, prefix included.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The identifier without its type prefix (the FINESS, SIRET, ...).
    pub fn number(&self) -> &str {
        &self.value[1..]
    }

    /// For a FINESS: the check key its 9th character must be ([`finess_key`]); `None`
    /// for other kinds, or when the first 8 characters hold a letter other than A / B.
    pub fn expected_finess_key(&self) -> Option<char> {
        match self.kind {
            StructureKind::Finess => finess_key(self.number()),
            _ => None,
        }
    }
}

/// The check key of a FINESS number (9 characters, juridique or géographique): the
/// Luhn digit of its first 8 characters. Corsica's départements write a letter in the
/// 2nd place (`2A...`, `2B...`); for the key, A counts as 1 and B as 2 (checked against
/// published FINESS numbers of both départements, e.g. `2A0000014`, `2B0000020`: with
/// A and B as 0 none of them passes). `None` for any other letter, or a short input.
pub fn finess_key(finess: &str) -> Option<char> {
    let body = finess.get(..8)?;
    let mut digits = String::with_capacity(8);
    for c in body.chars() {
        digits.push(match c {
            '0'..='9' => c,
            'A' => '1',
            'B' => '2',
            _ => return None,
        });
    }
    char::from_digit(luhn_digit(&digits), 10)
}

/// The Luhn check digit to append to a string of decimal digits.
fn luhn_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

impl FromStr for StructureId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut chars = s.chars();
        let prefix = chars.next().ok_or(IdError::EmptyStructure)?;
        let rest = chars.as_str();
        let kind = match prefix {
            '0' => StructureKind::Adeli,
            '1' => StructureKind::Finess,
            '2' => StructureKind::Siren,
            '3' => StructureKind::Siret,
            '4' => StructureKind::RppsRang,
            _ => {
                return Err(IdError::StructurePrefix {
                    value: s.to_string(),
                    prefix,
                });
            }
        };
        let digits = |n: std::ops::RangeInclusive<usize>| {
            n.contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_digit())
        };
        let shape = |expected| IdError::StructureShape {
            value: s.to_string(),
            kind,
            expected,
        };
        match kind {
            // FINESS: 9 characters; Corsica's départements (2A, 2B) put letters in it.
            StructureKind::Finess => {
                if rest.len() != 9
                    || !rest
                        .chars()
                        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                {
                    return Err(shape("9 digits or upper-case letters"));
                }
            }
            StructureKind::Siren | StructureKind::Siret => {
                let len = if kind == StructureKind::Siren { 9 } else { 14 };
                if !digits(len..=len) {
                    return Err(shape(if len == 9 { "9 digits" } else { "14 digits" }));
                }
                if !luhn_valid(rest) {
                    return Err(IdError::StructureLuhn {
                        value: s.to_string(),
                        kind,
                    });
                }
            }
            StructureKind::Adeli => {
                if !digits(9..=9) {
                    return Err(shape("9 digits"));
                }
            }
            StructureKind::RppsRang => {
                if !digits(12..=16) {
                    return Err(shape(
                        "an 11-digit RPPS followed by its rang (12 to 16 digits)",
                    ));
                }
            }
        }
        Ok(Self {
            kind,
            value: s.to_string(),
        })
    }
}

impl fmt::Display for StructureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Luhn check over a string of decimal digits (SIREN, SIRET): its last digit is the
/// check digit of the others.
fn luhn_valid(digits: &str) -> bool {
    match digits.char_indices().last() {
        Some((i, key)) => key.to_digit(10) == Some(luhn_digit(&digits[..i])),
        None => false,
    }
}

/// What a certificate is used for. Each tenant holds at most one per role, and no
/// request may leave with the certificate of another role or tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CertRole {
    /// ORG AUTH_CLI presented to the DMP in mutual TLS.
    DmpAuth,
    /// ORG SIGN: signs VIHF tokens and submission lots.
    DmpSign,
    /// ORG AUTH_CLI with CN `INSI-AUTO`: automated INSi calls.
    InsiAuto,
    /// ORG AUTH_CLI with CN `INSI-MANU`: INSi calls made by a person.
    InsiManu,
    /// ORG AUTH_CLI for the other services reached over mutual TLS (`[[services]]`:
    /// MSSanté operators' APIs, ROR, ...): neither the DMP's nor INSi's.
    OrgAuth,
}

impl CertRole {
    pub const ALL: [CertRole; 5] = [
        Self::DmpAuth,
        Self::DmpSign,
        Self::InsiAuto,
        Self::InsiManu,
        Self::OrgAuth,
    ];

    /// The key under `[tenants.certificates]`.
    pub fn config_key(self) -> &'static str {
        match self {
            Self::DmpAuth => "dmp_auth",
            Self::DmpSign => "dmp_sign",
            Self::InsiAuto => "insi_auto",
            Self::InsiManu => "insi_manu",
            Self::OrgAuth => "org_auth",
        }
    }

    /// The CN INSi requires, for the two INSi roles.
    pub fn required_common_name(self) -> Option<&'static str> {
        match self {
            Self::InsiAuto => Some("INSI-AUTO"),
            Self::InsiManu => Some("INSI-MANU"),
            Self::DmpAuth | Self::DmpSign | Self::OrgAuth => None,
        }
    }

    /// Whether the role authenticates a TLS client (ORG AUTH_CLI) rather than signing.
    pub fn is_tls_client(self) -> bool {
        !matches!(self, Self::DmpSign)
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.config_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finess_structure_ids() {
        let s: StructureId = "10B0152872".parse().expect("valid FINESS");
        assert_eq!(s.kind(), StructureKind::Finess);
        assert_eq!(s.number(), "0B0152872");
        assert!("1690010004".parse::<StructureId>().is_ok());
        assert!(matches!(
            "10B015287".parse::<StructureId>(),
            Err(IdError::StructureShape { .. })
        ));
        assert!("10b0152872".parse::<StructureId>().is_err());
    }

    #[test]
    fn finess_check_key() {
        // The test PKI's legal entities and geographic entities, and published FINESS
        // numbers (CHU de Nantes EJ, CH d'Ajaccio, Bonifacio, Bastia, Calvi).
        for ok in [
            "690010004",
            "690010012",
            "690010020",
            "440010106",
            "440010114",
            "440010122",
            "440000289",
            "010003820",
            "2A0000014",
            "2A0000170",
            "2B0000020",
            "2B0005342",
            // The DMP specifications' example structure, 10B0152872.
            "0B0152872",
        ] {
            assert_eq!(finess_key(ok), ok.chars().nth(8), "{ok}");
        }
        assert_eq!(finess_key("690010005"), Some('4'));
        assert_eq!(finess_key("2C0000014"), None, "no such letter in FINESS");
        assert_eq!(finess_key("1234"), None);
        let id: StructureId = "1690010009".parse().expect("FINESS shape");
        assert_eq!(id.expected_finess_key(), Some('4'));
        let siret: StructureId = "373282932000074".parse().expect("SIRET");
        assert_eq!(siret.expected_finess_key(), None);
    }

    #[test]
    fn siret_needs_luhn() {
        // 732 829 320 00074 is a well-known valid SIRET.
        assert!("373282932000074".parse::<StructureId>().is_ok());
        assert!(matches!(
            "373282932000075".parse::<StructureId>(),
            Err(IdError::StructureLuhn { .. })
        ));
        assert!(matches!(
            "3732829320".parse::<StructureId>(),
            Err(IdError::StructureShape { .. })
        ));
    }

    #[test]
    fn unknown_prefix_and_empty() {
        assert_eq!("".parse::<StructureId>(), Err(IdError::EmptyStructure));
        assert!(matches!(
            "9123".parse::<StructureId>(),
            Err(IdError::StructurePrefix { prefix: '9', .. })
        ));
    }

    #[test]
    fn tenant_ids() {
        assert!("ch-test-a".parse::<TenantId>().is_ok());
        for bad in ["", "CHU", "-a", "a b", &"a".repeat(64)] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn structure_parse_never_panics_and_round_trips(s in "\\PC{0,20}") {
            if let Ok(id) = s.parse::<StructureId>() {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert_eq!(id.to_string().parse::<StructureId>(), Ok(id));
            }
        }

        #[test]
        fn every_finess_shape_parses(body in "[0-9A-Z]{9}") {
            let s = format!("1{body}");
            prop_assert!(s.parse::<StructureId>().is_ok());
        }
    }
}
