//! Who acts, for which patient: read from the `X-Vihf-*` request headers (values
//! UTF-8, percent-encoded) into a [`VihfContext`], for internal systems that do not
//! build a VIHF themselves. The README's HTTP API section documents each header.

use http::HeaderMap;
use passerelle_signing::vihf::{Actor, AuthnClass, Code, PurposeOfUse, VihfRole};
use passerelle_signing::{Ins, SoftwareIdentity, VihfContext, VihfOptions};

use crate::fault::ProxyError;

pub const SUBJECT_ID: &str = "x-vihf-subject-id";
pub const SUBJECT_NAME: &str = "x-vihf-subject-name";
pub const ROLE: &str = "x-vihf-role";
pub const SPECIALTY: &str = "x-vihf-specialty";
pub const STRUCTURE: &str = "x-vihf-structure";
pub const SECTOR: &str = "x-vihf-sector";
pub const PATIENT: &str = "x-vihf-patient";
pub const PURPOSE: &str = "x-vihf-purpose";
pub const AUTHN: &str = "x-vihf-authn";

const ALL: [&str; 9] = [
    SUBJECT_ID,
    SUBJECT_NAME,
    ROLE,
    SPECIALTY,
    STRUCTURE,
    SECTOR,
    PATIENT,
    PURPOSE,
    AUTHN,
];

/// Secteur_Activite code system, added when the header gives the bare code (`SA01`).
const SECTOR_SYSTEM: &str = "1.2.250.1.71.4.2.4";
/// Production INS-NIR, the OID of a bare 15-character INS.
const INS_NIR_OID: &str = "1.2.250.1.213.1.4.8";

/// Whether the request carries any `X-Vihf-*` header.
pub fn present(headers: &HeaderMap) -> bool {
    ALL.iter().any(|h| headers.contains_key(*h))
}

/// Refuses a second `X-Vihf-*` header of any name: which one a reader takes is not
/// defined, and the proxy must sign exactly what it checked.
pub fn check_single(headers: &HeaderMap) -> Result<(), ProxyError> {
    for name in ALL {
        let count = headers.get_all(name).iter().count();
        if count > 1 {
            return Err(ProxyError::DuplicateHeader {
                header: name,
                count,
            });
        }
    }
    Ok(())
}

/// Characters XML 1.0 forbids (the value goes into the signed token).
fn xml_forbidden(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r' | ' '..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A header's decoded value. Messages never repeat the value: they reach the log, and
/// identity values are patient or professional data.
fn value(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ProxyError> {
    let Some(raw) = headers.get(name) else {
        return Ok(None);
    };
    let bad = |why: &str| ProxyError::BadIdentity(format!("header {name}: {why}"));
    let text = raw
        .to_str()
        .map_err(|_| bad("not ASCII (percent-encode UTF-8)"))?;
    let decoded = percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| bad("percent-decoded value is not UTF-8"))?;
    if let Some(at) = decoded.chars().position(xml_forbidden) {
        return Err(bad(&format!(
            "character {} is a control character XML 1.0 forbids",
            at + 1
        )));
    }
    // XML white space only: a U+00A0 kept is a value checked as it is signed.
    let trimmed = decoded.trim_matches([' ', '\t', '\n', '\r']);
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    Ok(Some(trimmed.to_string()))
}

fn required(headers: &HeaderMap, name: &'static str) -> Result<String, ProxyError> {
    value(headers, name)?
        .ok_or_else(|| ProxyError::BadIdentity(format!("header {name} is missing")))
}

/// `code^displayName`.
fn code(header: &str, text: &str) -> Result<Code, ProxyError> {
    let (code, display) = text.split_once('^').ok_or_else(|| {
        ProxyError::BadIdentity(format!(
            "header {header}: the value must be code^displayName, e.g. 10^Médecin"
        ))
    })?;
    Ok(Code {
        code: code.trim().to_string(),
        code_system: None,
        display_name: display.trim().to_string(),
    })
}

/// An INS as HL7 CX (`NIR^^^&OID&ISO^NH`) or bare (15 characters, production OID).
fn ins(text: &str) -> Result<Ins, ProxyError> {
    let parsed = if text.contains("^^^&") {
        Ins::from_cx(text)
    } else {
        Ins::new(text, INS_NIR_OID)
    };
    parsed.map_err(|e| ProxyError::BadIdentity(format!("header {PATIENT}: {e}")))
}

fn keyword<T: serde::de::DeserializeOwned>(
    header: &str,
    text: &str,
    allowed: &str,
) -> Result<T, ProxyError> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).map_err(|_| {
        ProxyError::BadIdentity(format!(
            "header {header}: the value is not one of {allowed}"
        ))
    })
}

/// The context the headers describe; `default_structure` (the tenant's legal entity)
/// applies when `X-Vihf-Structure` is absent.
pub fn from_headers(
    headers: &HeaderMap,
    default_structure: &str,
    software: SoftwareIdentity,
    options: VihfOptions,
) -> Result<VihfContext, ProxyError> {
    let role_text = required(headers, ROLE)?;
    let automate = role_text.eq_ignore_ascii_case("AUTOMATE");
    let role = if automate {
        VihfRole::Automate
    } else {
        VihfRole::Professional {
            profession: code(ROLE, &role_text)?,
            specialty: value(headers, SPECIALTY)?
                .map(|s| code(SPECIALTY, &s))
                .transpose()?,
        }
    };
    let sector = required(headers, SECTOR)?;
    let sector = if sector.contains('^') {
        sector
    } else {
        format!("{sector}^{SECTOR_SYSTEM}")
    };
    let purpose: PurposeOfUse = match value(headers, PURPOSE)? {
        Some(p) => keyword(PURPOSE, &p, "normal, bris_de_glace, centre_15")?,
        None => PurposeOfUse::Normal,
    };
    let authn_class: AuthnClass = match value(headers, AUTHN)? {
        Some(a) => keyword(
            AUTHN,
            &a,
            "password, smartcard_pki, tls_client, unspecified",
        )?,
        None if automate => AuthnClass::Unspecified,
        None => AuthnClass::Password,
    };
    let context = VihfContext {
        actor: Actor {
            id: required(headers, SUBJECT_ID)?,
            name: required(headers, SUBJECT_NAME)?,
        },
        roles: vec![role],
        structure_id: value(headers, STRUCTURE)?.unwrap_or_else(|| default_structure.to_string()),
        sector,
        patient: ins(&required(headers, PATIENT)?)?,
        purpose,
        purpose_display_name: None,
        authn_class,
        confidentiality: None,
        software: Some(software),
        options,
    };
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn software() -> SoftwareIdentity {
        SoftwareIdentity {
            name: "P".into(),
            version: "1".into(),
            homologation_id: "H".into(),
            lps_id: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn professional_from_percent_encoded_headers() {
        let h = headers(&[
            (SUBJECT_ID, "899900063480"),
            (SUBJECT_NAME, "MAX%20LIBRE"),
            (ROLE, "10^M%C3%A9decin"),
            (
                SPECIALTY,
                "SM26^Qualifi%C3%A9%20en%20m%C3%A9decine%20g%C3%A9n%C3%A9rale",
            ),
            (SECTOR, "SA01"),
            (
                PATIENT,
                "207058575627097^^^%261.2.250.1.213.1.4.10%26ISO^NH",
            ),
        ]);
        assert!(present(&h));
        let ctx =
            from_headers(&h, "1690010004", software(), VihfOptions::default()).expect("context");
        assert_eq!(ctx.actor.name, "MAX LIBRE");
        assert_eq!(ctx.sector, "SA01^1.2.250.1.71.4.2.4");
        assert_eq!(ctx.structure_id, "1690010004");
        assert_eq!(
            ctx.patient.to_cx(),
            "207058575627097^^^&1.2.250.1.213.1.4.10&ISO^NH"
        );
        let VihfRole::Professional {
            profession,
            specialty,
        } = &ctx.roles[0]
        else {
            panic!("professional expected")
        };
        assert_eq!(profession.display_name, "Médecin");
        assert_eq!(specialty.as_ref().map(|s| s.code.as_str()), Some("SM26"));
        assert_eq!(ctx.authn_class, AuthnClass::Password);
        ctx.validate().expect("valid");
    }

    /// Every value the error message (and the README) offers is accepted, in any case;
    /// `centre_15` was once refused while being listed.
    #[test]
    fn every_documented_keyword_is_accepted() {
        let base = [
            (SUBJECT_ID, "1"),
            (SUBJECT_NAME, "X"),
            (ROLE, "AUTOMATE"),
            (SECTOR, "SA07"),
            (PATIENT, "207058575627097"),
        ];
        for (value, expected) in [
            ("normal", PurposeOfUse::Normal),
            ("bris_de_glace", PurposeOfUse::BrisDeGlace),
            ("centre_15", PurposeOfUse::Centre15),
            ("CENTRE_15", PurposeOfUse::Centre15),
        ] {
            let mut h = headers(&base);
            h.insert(PURPOSE, value.parse().expect("value"));
            let ctx = from_headers(&h, "1690010004", software(), VihfOptions::default())
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(ctx.purpose, expected, "{value}");
        }
        for (value, expected) in [
            ("password", AuthnClass::Password),
            ("smartcard_pki", AuthnClass::SmartcardPki),
            ("tls_client", AuthnClass::TlsClient),
            ("unspecified", AuthnClass::Unspecified),
        ] {
            let mut h = headers(&base);
            h.insert(AUTHN, value.parse().expect("value"));
            let ctx = from_headers(&h, "1690010004", software(), VihfOptions::default())
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(ctx.authn_class, expected, "{value}");
        }
    }

    #[test]
    fn each_bad_header_is_named() {
        let base = [
            (SUBJECT_ID, "1"),
            (SUBJECT_NAME, "X"),
            (ROLE, "AUTOMATE"),
            (SECTOR, "SA07"),
            (PATIENT, "207058575627097"),
        ];
        let ctx = from_headers(
            &headers(&base),
            "1690010004",
            software(),
            VihfOptions::default(),
        )
        .expect("automate");
        assert_eq!(ctx.authn_class, AuthnClass::Unspecified);
        assert!(!present(&HeaderMap::new()));
        let cases: [(&'static str, &str); 4] = [
            (PATIENT, "207058575627098"),
            (ROLE, "10"),
            (PURPOSE, "urgence"),
            (SUBJECT_NAME, "%FF"),
        ];
        for (name, bad) in cases {
            let mut h = headers(&base);
            h.insert(name, bad.parse().expect("value"));
            let err =
                from_headers(&h, "1690010004", software(), VihfOptions::default()).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
        let mut h = headers(&base);
        h.remove(SECTOR);
        let err = from_headers(&h, "1", software(), VihfOptions::default()).expect_err("missing");
        assert!(
            err.to_string().contains("x-vihf-sector is missing"),
            "{err}"
        );
    }
}
