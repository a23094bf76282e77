//! INSi's answer to one request, read for the JSON API: a `RESULTAT` (CR `00` with the
//! individual's INS, former INS and reference traits, `01`, `02`) into [`InsiResult`], or
//! a SOAP 1.2 fault into [`CnamFault`] (its `siram_NNN` subcode and the
//! `desir_NNN` / `insi_NNN` code of its `siram:Erreur` detail). Anything else is refused
//! as an unreadable answer: the internal system is never told "not found" for an answer
//! Passerelle could not read.

use http::Response;
use passerelle_signing::xml::{self, Element, Scope};
use passerelle_soap::insi::{RESULTAT_NS, SIRAM_NS};
use passerelle_soap::{Envelope, SOAP12};
use serde_json::{Value, json};

use crate::body::ProxyBody;
use crate::fault::ProxyError;

/// A SOAP fault INSi answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnamFault {
    /// HTTP status of the answer (500 for INSi's faults).
    pub status: u16,
    /// The fault's subcode, e.g. `siram_40`.
    pub siram: Option<String>,
    /// `siram:Erreur/@code`, e.g. `insi_102` or `desir_560`.
    pub code: Option<String>,
    /// `siram:Erreur/@severite`.
    pub severity: Option<String>,
    /// The fault's reason, as INSi wrote it.
    pub reason: String,
}

impl CnamFault {
    /// `siram_40` / `insi_102`: the service is temporarily unavailable (domain.md §7);
    /// every other fault (`desir_5xx`: configuration or rights) will not pass by itself.
    pub fn retryable(&self) -> bool {
        self.siram.as_deref() == Some("siram_40") || self.code.as_deref() == Some("insi_102")
    }

    /// `siram_40 / insi_102: <reason>`.
    pub fn summary(&self) -> String {
        format!(
            "{} / {}: {}",
            self.siram.as_deref().unwrap_or("-"),
            self.code.as_deref().unwrap_or("-"),
            self.reason
        )
    }

    /// The `cnam` member of the JSON error.
    pub fn to_json(&self) -> Value {
        json!({
            "status": self.status,
            "siram": self.siram,
            "code": self.code,
            "severity": self.severity,
            "reason": self.reason,
        })
    }
}

/// One INS: the 13-character NIR (or NIA), its key and its OID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsRef {
    pub nir: String,
    pub key: String,
    pub oid: String,
    /// `DateDeb` / `DateFin`, when INSi gives them.
    pub start: Option<String>,
    pub end: Option<String>,
}

impl InsRef {
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "nir": self.nir, "key": self.key, "oid": self.oid });
        if let Some(start) = &self.start {
            v["start"] = json!(start);
        }
        if let Some(end) = &self.end {
            v["end"] = json!(end);
        }
        v
    }
}

/// The reference identity traits (`TIQ`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Traits {
    pub birth_name: String,
    pub first_name: String,
    pub first_names: Vec<String>,
    pub sex: String,
    pub birth_date: String,
    pub birth_place: String,
}

/// The individual of a CR 00.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Individual {
    pub ins: InsRef,
    pub history: Vec<InsRef>,
    pub traits: Traits,
}

/// One `RESULTAT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsiResult {
    /// `00` one identity, `01` none, `02` several.
    pub cr: String,
    pub label: String,
    /// Present for CR `00`.
    pub individual: Option<Individual>,
}

fn child<'e>(e: &'e Element, local: &str) -> Option<&'e Element> {
    e.elements().find(|c| c.local == local)
}

fn text(e: &Element, local: &str) -> Option<String> {
    child(e, local).map(|c| c.text_content().trim().to_string())
}

/// Reads the answer to one INSi request. `upstream` names the service in messages.
pub fn read(response: &Response<ProxyBody>, upstream: &str) -> Result<InsiResult, ProxyError> {
    let unreadable = |reason: String| ProxyError::UpstreamAnswer {
        upstream: upstream.to_string(),
        reason,
    };
    let status = response.status().as_u16();
    let ProxyBody::Full(bytes) = response.body() else {
        return Err(unreadable(format!(
            "HTTP {status}, an answer over {} bytes",
            crate::upstream::BUFFERED_RESPONSE_BYTES
        )));
    };
    let text_body = std::str::from_utf8(bytes)
        .map_err(|_| unreadable(format!("HTTP {status}, a body that is not UTF-8")))?;
    let envelope = Envelope::parse(text_body)
        .map_err(|e| unreadable(format!("HTTP {status}, not a SOAP envelope: {e}")))?;
    let (body, scope) = envelope
        .body_element()
        .ok_or_else(|| unreadable(format!("HTTP {status}, an empty SOAP Body")))?;
    let ns = xml::namespace_of(body, &scope);
    if envelope.soap_ns == SOAP12 && body.local == "Fault" && ns.as_deref() == Some(SOAP12) {
        return Err(ProxyError::InsiFault(fault(status, body, &scope)));
    }
    if status != 200 {
        return Err(unreadable(format!("HTTP {status} without a SOAP fault")));
    }
    if body.local != "RESULTAT" || ns.as_deref() != Some(RESULTAT_NS) {
        return Err(unreadable(format!(
            "the SOAP Body holds {{{}}}{}, not RESULTAT",
            ns.unwrap_or_default(),
            body.local
        )));
    }
    result(body).map_err(unreadable)
}

fn result(resultat: &Element) -> Result<InsiResult, String> {
    let cr = child(resultat, "CR").ok_or("RESULTAT has no CR")?;
    let code = text(cr, "CodeCR").ok_or("CR has no CodeCR")?;
    let label = text(cr, "LibelleCR").unwrap_or_default();
    if !matches!(code.as_str(), "00" | "01" | "02") {
        return Err(format!("CodeCR {code:?} is none of 00, 01, 02"));
    }
    let individual = match (code.as_str(), child(resultat, "INDIVIDU")) {
        ("00", Some(i)) => Some(individual(i)?),
        ("00", None) => return Err("CR 00 without INDIVIDU".into()),
        _ => None,
    };
    Ok(InsiResult {
        cr: code,
        label,
        individual,
    })
}

fn ins(e: &Element) -> Result<InsRef, String> {
    let id = child(e, "IdIndividu").ok_or_else(|| format!("{} has no IdIndividu", e.local))?;
    let nir = text(id, "NumIdentifiant").ok_or("IdIndividu has no NumIdentifiant")?;
    let key = text(id, "Cle").unwrap_or_default();
    let oid = text(e, "OID").ok_or_else(|| format!("{} has no OID", e.local))?;
    Ok(InsRef {
        nir,
        key,
        oid,
        start: text(e, "DateDeb"),
        end: text(e, "DateFin"),
    })
}

fn individual(e: &Element) -> Result<Individual, String> {
    let active = child(e, "INSACTIF").ok_or("INDIVIDU has no INSACTIF")?;
    let history = e
        .elements()
        .filter(|c| c.local == "INSHISTO")
        .map(ins)
        .collect::<Result<Vec<_>, _>>()?;
    let tiq = child(e, "TIQ").ok_or("INDIVIDU has no TIQ")?;
    let get = |local| text(tiq, local).unwrap_or_default();
    let first_names: Vec<String> = get("ListePrenom")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(Individual {
        ins: ins(active)?,
        history,
        traits: Traits {
            birth_name: get("NomNaissance"),
            first_name: text(tiq, "Prenom")
                .or_else(|| first_names.first().cloned())
                .unwrap_or_default(),
            first_names,
            sex: get("Sexe"),
            birth_date: get("DateNaissance"),
            birth_place: get("LieuNaissance"),
        },
    })
}

fn fault(status: u16, f: &Element, scope: &Scope) -> CnamFault {
    let value = |e: &Element| child(e, "Value").map(|v| v.text_content().trim().to_string());
    let siram = child(f, "Code")
        .and_then(|c| child(c, "Subcode"))
        .and_then(value)
        // `siram:siram_40`: the local part names the error.
        .map(|v| v.rsplit(':').next().unwrap_or(&v).to_string());
    let reason = child(f, "Reason")
        .and_then(|r| child(r, "Text"))
        .map(|t| t.text_content().trim().to_string())
        .unwrap_or_default();
    // The detail's `siram:Erreur`, by namespace and name.
    let inside = xml::scope_of(f, scope);
    let erreur = child(f, "Detail").and_then(|d| {
        let detail = xml::scope_of(d, &inside);
        d.elements().find(|e| {
            e.local == "Erreur" && xml::namespace_of(e, &detail).as_deref() == Some(SIRAM_NS)
        })
    });
    CnamFault {
        status,
        siram,
        code: erreur.and_then(|e| e.attribute("code")).map(str::to_string),
        severity: erreur
            .and_then(|e| e.attribute("severite"))
            .map(str::to_string),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn response(status: u16, body: &str) -> Response<ProxyBody> {
        let mut r = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
        r
    }

    const ENV: &str = "http://www.w3.org/2003/05/soap-envelope";

    #[test]
    fn a_cr00_gives_the_ins_history_and_traits() {
        let body = format!(
            r#"<s:Envelope xmlns:s="{ENV}"><s:Body><RESULTAT xmlns="{RESULTAT_NS}"><CR><CodeCR>00</CodeCR><LibelleCR>OK</LibelleCR></CR><INDIVIDU><INSACTIF><IdIndividu><NumIdentifiant>2070585756270</NumIdentifiant><Cle>97</Cle></IdIndividu><OID>1.2.250.1.213.1.4.10</OID></INSACTIF><INSHISTO><IdIndividu><NumIdentifiant>2070599999999</NumIdentifiant><Cle>01</Cle></IdIndividu><OID>1.2.250.1.213.1.4.10</OID><DateFin>2020-01-01</DateFin></INSHISTO><TIQ><NomNaissance>MARTIN</NomNaissance><Prenom>CLAIRE</Prenom><ListePrenom>CLAIRE ANNE</ListePrenom><Sexe>F</Sexe><DateNaissance>2007-05-14</DateNaissance><LieuNaissance>85756</LieuNaissance></TIQ></INDIVIDU></RESULTAT></s:Body></s:Envelope>"#
        );
        let r = read(&response(200, &body), "insi").expect("result");
        assert_eq!(r.cr, "00");
        let i = r.individual.expect("individual");
        assert_eq!(
            (i.ins.nir.as_str(), i.ins.key.as_str()),
            ("2070585756270", "97")
        );
        assert_eq!(i.history.len(), 1);
        assert_eq!(i.history[0].end.as_deref(), Some("2020-01-01"));
        assert_eq!(i.traits.first_names, ["CLAIRE", "ANNE"]);
        assert_eq!(i.traits.birth_place, "85756");
    }

    #[test]
    fn faults_carry_their_codes_and_the_rest_is_unreadable() {
        let body = format!(
            r#"<S:Envelope xmlns:S="{ENV}"><S:Body><S:Fault><S:Code><S:Value>S:Receiver</S:Value><S:Subcode><S:Value xmlns:siram="urn:siram">siram:siram_40</S:Value></S:Subcode></S:Code><S:Reason><S:Text xml:lang="fr">Service temporairement indisponible</S:Text></S:Reason><S:Detail><siram:Erreur xmlns:siram="urn:siram" severite="erreur" code="insi_102">Service temporairement indisponible</siram:Erreur></S:Detail></S:Fault></S:Body></S:Envelope>"#
        );
        match read(&response(500, &body), "insi") {
            Err(ProxyError::InsiFault(f)) => {
                assert_eq!(f.siram.as_deref(), Some("siram_40"));
                assert_eq!(f.code.as_deref(), Some("insi_102"));
                assert!(f.retryable());
            }
            other => panic!("{other:?}"),
        }
        let rights = CnamFault {
            status: 500,
            siram: Some("siram_30".into()),
            code: Some("desir_560".into()),
            severity: Some("erreur".into()),
            reason: "Niveau d'accès insuffisant".into(),
        };
        assert!(!rights.retryable());
        let e = ProxyError::InsiFault(rights);
        assert_eq!(e.status(), http::StatusCode::BAD_GATEWAY);
        assert!(!e.retryable());
        for (status, body) in [
            (200, "not xml".to_string()),
            (502, "<html/>".to_string()),
            (
                200,
                format!(
                    r#"<s:Envelope xmlns:s="{ENV}"><s:Body><Other xmlns="urn:x"/></s:Body></s:Envelope>"#
                ),
            ),
            (
                200,
                format!(
                    r#"<s:Envelope xmlns:s="{ENV}"><s:Body><RESULTAT xmlns="{RESULTAT_NS}"><CR><CodeCR>00</CodeCR><LibelleCR>OK</LibelleCR></CR></RESULTAT></s:Body></s:Envelope>"#
                ),
            ),
        ] {
            assert_eq!(
                read(&response(status, &body), "insi")
                    .err()
                    .map(|e| e.code()),
                Some("UpstreamAnswer"),
                "{body}"
            );
        }
    }
}
