//! The INSi JSON API: `POST /api/insi/search` (identity traits: `RECSANSVITALE`,
//! `rechercherInsAvecTraitsIdentite`) and `POST /api/insi/vitale` (carte Vitale:
//! `RECVITALE`, `rechercherInsAvecCarteVitale`).
//!
//! [`read`] types the request at the edge ([`super::input`]). A [`Search`] then gives,
//! one at a time, the body element to send; the pipeline completes each into the SOAP
//! request the SOAP route would send for an envelope without contexts
//! ([`crate::insi::complete`]: `ContexteLPS`, `ContexteBAM`, `wsa:Action`,
//! `wsa:MessageID`), forwards it with the tenant's INSi certificate, and hands the
//! answer ([`answer::read`]) back to the search, which decides whether another request
//! is needed. A fault ends the search: it becomes a JSON error carrying the CNAM codes.
//!
//! The first-name strategy of a traits search (README, "JSON API"): all the first
//! names given, in their order, space-separated in one `Prenom` (as INSi's
//! `ListePrenom` writes them); when INSi finds nobody (CR 01) and there are several,
//! each first name alone, in order. The search stops at the first answer that is not
//! CR 01: an identity found (CR 00), or several (CR 02: trying fewer first names could
//! only find more people; the birth place narrows it).

pub mod answer;

use std::collections::VecDeque;

use http::{Response, StatusCode};
use passerelle_signing::xml::Element;
use passerelle_soap::insi::{RECSANS_NS, RECVIT_NS};
use serde_json::{Value, json};

pub use answer::{CnamFault, InsiResult};

use super::input::{BirthDate, BirthName, BirthRank, FirstName, InseeCode, Nir, Sex, mode};
use super::{Fields, invalid, json_response};
use crate::body::ProxyBody;
use crate::exchange::InsiApiCall;
use crate::fault::ProxyError;
use crate::state::InsiMode;

/// A search by identity traits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraitsQuery {
    pub birth_name: BirthName,
    /// In the order of the identity document, the first first name first.
    pub first_names: Vec<FirstName>,
    pub sex: Sex,
    pub birth_date: BirthDate,
    pub birth_place: Option<InseeCode>,
}

/// One matricule of a carte Vitale: the NIR and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matricule {
    pub nir: Nir,
    pub key: String,
}

/// A search by carte Vitale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitaleQuery {
    /// The beneficiary's own NIR (`MatriculeIndividu`), when the card carries one.
    pub beneficiary: Option<Matricule>,
    /// The card holder's (`MatriculeOD`, the "ouvrant droit"), for a beneficiary
    /// without a NIR of their own.
    pub holder: Option<Matricule>,
    pub birth_name: Option<BirthName>,
    pub birth_date: BirthDate,
    pub birth_rank: Option<BirthRank>,
}

/// What is searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Traits(TraitsQuery),
    Vitale(VitaleQuery),
}

/// A request of the JSON API, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsiApiRequest {
    /// The certificate (`None`: the tenant's only INSi certificate, as `POST /insi`).
    pub mode: Option<InsiMode>,
    pub query: Query,
}

const SEARCH_MEMBERS: [&str; 6] = [
    "birth_name",
    "first_names",
    "sex",
    "birth_date",
    "birth_place",
    "mode",
];
const VITALE_MEMBERS: [&str; 8] = [
    "nir",
    "nir_key",
    "holder_nir",
    "holder_nir_key",
    "birth_name",
    "birth_date",
    "birth_rank",
    "mode",
];

/// Reads a JSON API request body into typed values; a refusal names its member.
pub fn read(
    call: InsiApiCall,
    content_type: &str,
    body: &[u8],
) -> Result<InsiApiRequest, ProxyError> {
    let members: &[&str] = match call {
        InsiApiCall::Search => &SEARCH_MEMBERS,
        InsiApiCall::Vitale => &VITALE_MEMBERS,
    };
    let mut f = Fields::read(content_type, body, members)?;
    let mode = mode("mode", f.string("mode")?.as_deref())?;
    let query = match call {
        InsiApiCall::Search => {
            let birth_name = BirthName::parse("birth_name", &f.required_string("birth_name")?)?;
            let first_names = FirstName::parse_list(
                "first_names",
                &f.strings("first_names")?
                    .ok_or_else(|| invalid("first_names", "is required"))?,
            )?;
            let sex = Sex::parse("sex", &f.required_string("sex")?)?;
            let birth_date = BirthDate::parse("birth_date", &f.required_string("birth_date")?)?;
            let birth_place = f
                .string("birth_place")?
                .map(|p| InseeCode::parse("birth_place", &p))
                .transpose()?;
            Query::Traits(TraitsQuery {
                birth_name,
                first_names,
                sex,
                birth_date,
                birth_place,
            })
        }
        InsiApiCall::Vitale => {
            let mut matricule = |nir: &str, key: &str| -> Result<Option<Matricule>, ProxyError> {
                let Some(raw) = f.string(nir)? else {
                    if f.string(key)?.is_some() {
                        return Err(invalid(key, format!("given without {nir}")));
                    }
                    return Ok(None);
                };
                let parsed = Nir::parse(nir, &raw)?;
                let key = match f.string(key)? {
                    Some(k) => {
                        parsed.check_key(key, &k)?;
                        k
                    }
                    None => parsed.key(),
                };
                Ok(Some(Matricule { nir: parsed, key }))
            };
            let beneficiary = matricule("nir", "nir_key")?;
            let holder = matricule("holder_nir", "holder_nir_key")?;
            if beneficiary.is_none() && holder.is_none() {
                return Err(invalid(
                    "nir",
                    "is required: the beneficiary's NIR, or holder_nir (the card holder's) for a beneficiary without one",
                ));
            }
            let birth_date = BirthDate::parse("birth_date", &f.required_string("birth_date")?)?;
            let birth_name = f
                .string("birth_name")?
                .map(|n| BirthName::parse("birth_name", &n))
                .transpose()?;
            let birth_rank = f
                .integer("birth_rank")?
                .map(|r| BirthRank::parse("birth_rank", r))
                .transpose()?;
            Query::Vitale(VitaleQuery {
                beneficiary,
                holder,
                birth_name,
                birth_date,
                birth_rank,
            })
        }
    };
    Ok(InsiApiRequest { mode, query })
}

fn field(local: &'static str, text: &str) -> Element {
    Element::new(None, local).text(text.to_string())
}

/// `RECSANSVITALE` with `first_names` (space-separated in one `Prenom`).
fn recsansvitale(q: &TraitsQuery, first_names: &[FirstName]) -> Element {
    let names: Vec<&str> = first_names.iter().map(FirstName::as_str).collect();
    let mut e = Element::new(None, "RECSANSVITALE")
        .ns(None, RECSANS_NS)
        .child(field("NomNaissance", q.birth_name.as_str()))
        .child(field("Prenom", &names.join(" ")))
        .child(field("Sexe", q.sex.as_str()))
        .child(field("DateNaissance", q.birth_date.as_str()));
    if let Some(place) = &q.birth_place {
        e = e.child(field("LieuNaissance", place.as_str()));
    }
    e
}

/// `RECVITALE`, its members in the XSD's order.
fn recvitale(q: &VitaleQuery) -> Element {
    let matricule = |local: &'static str, m: &Matricule| {
        Element::new(None, local)
            .child(field("NumIdentifiant", m.nir.as_str()))
            .child(field("Cle", &m.key))
    };
    let mut e = Element::new(None, "RECVITALE").ns(None, RECVIT_NS);
    if let Some(m) = &q.beneficiary {
        e = e.child(matricule("MatriculeIndividu", m));
    }
    if let Some(m) = &q.holder {
        e = e.child(matricule("MatriculeOD", m));
    }
    if let Some(name) = &q.birth_name {
        e = e.child(field("NomNaissance", name.as_str()));
    }
    e = e.child(field("DateNaissance", q.birth_date.as_str()));
    if let Some(rank) = q.birth_rank {
        e = e.child(field("RangNaissance", &rank.to_string()));
    }
    e
}

/// One search, as it goes: the requests still to try, and the answer that decided.
#[derive(Debug)]
pub struct Search {
    query: Query,
    /// First-name lists still to try (traits); one empty entry for a carte Vitale.
    plan: VecDeque<Vec<FirstName>>,
    /// The first names of the request in flight or last answered.
    current: Vec<FirstName>,
    last: Option<InsiResult>,
    attempts: usize,
}

impl Search {
    pub fn new(query: Query) -> Self {
        let mut plan = VecDeque::new();
        match &query {
            Query::Traits(q) => {
                plan.push_back(q.first_names.clone());
                if q.first_names.len() > 1 {
                    plan.extend(q.first_names.iter().map(|n| vec![n.clone()]));
                }
            }
            Query::Vitale(_) => plan.push_back(Vec::new()),
        }
        Self {
            query,
            plan,
            current: Vec::new(),
            last: None,
            attempts: 0,
        }
    }

    /// The body of the next request to send, or `None` once the search is decided: an
    /// answer other than CR 01, or nothing left to try.
    pub fn next_body(&mut self) -> Option<Element> {
        if self.last.as_ref().is_some_and(|r| r.cr != "01") {
            return None;
        }
        self.current = self.plan.pop_front()?;
        self.attempts += 1;
        Some(match &self.query {
            Query::Traits(q) => recsansvitale(q, &self.current),
            Query::Vitale(q) => recvitale(q),
        })
    }

    /// The answer to the last body given.
    pub fn record(&mut self, result: InsiResult) {
        self.last = Some(result);
    }

    /// Requests sent so far.
    pub fn attempts(&self) -> usize {
        self.attempts
    }

    /// The JSON answer, once decided.
    pub fn into_response(self, request_id: &str) -> Result<Response<ProxyBody>, ProxyError> {
        let last = self
            .last
            .ok_or_else(|| ProxyError::Internal("INSi search ended without an answer".into()))?;
        let result = match last.cr.as_str() {
            "00" => "found",
            "02" => "several",
            _ => "not_found",
        };
        let mut answer = json!({
            "result": result,
            "cr": last.cr,
            "label": last.label,
            "attempts": self.attempts,
            "request_id": request_id,
        });
        if let Query::Traits(_) = self.query {
            answer["first_names_sent"] = Value::from(
                self.current
                    .iter()
                    .map(|n| n.as_str().to_string())
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(i) = &last.individual {
            answer["ins"] = i.ins.to_json();
            answer["traits"] = json!({
                "birth_name": i.traits.birth_name,
                "first_name": i.traits.first_name,
                "first_names": i.traits.first_names,
                "sex": i.traits.sex,
                "birth_date": i.traits.birth_date,
                "birth_place": i.traits.birth_place,
            });
            answer["history"] = Value::from(
                i.history
                    .iter()
                    .map(answer::InsRef::to_json)
                    .collect::<Vec<_>>(),
            );
        }
        Ok(json_response(StatusCode::OK, &answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits(first_names: &[&str]) -> Query {
        let body = json!({
            "birth_name": "MARTIN",
            "first_names": first_names,
            "sex": "F",
            "birth_date": "2007-05-14",
        });
        read(
            InsiApiCall::Search,
            "application/json",
            body.to_string().as_bytes(),
        )
        .expect("request")
        .query
    }

    fn cr(code: &str) -> InsiResult {
        InsiResult {
            cr: code.into(),
            label: String::new(),
            individual: None,
        }
    }

    fn prenom(e: &Element) -> String {
        e.elements()
            .find(|c| c.local == "Prenom")
            .map(|c| c.text_content())
            .unwrap_or_default()
    }

    #[test]
    fn all_first_names_then_each_alone_until_an_answer_is_not_cr01() {
        let mut s = Search::new(traits(&["ANNE", "CLAIRE", "MARIE"]));
        let mut sent = Vec::new();
        while let Some(body) = s.next_body() {
            sent.push(prenom(&body));
            s.record(cr(if sent.len() == 3 { "00" } else { "01" }));
        }
        assert_eq!(sent, ["ANNE CLAIRE MARIE", "ANNE", "CLAIRE"]);
        assert_eq!(s.attempts(), 3);

        // CR 02 decides: fewer first names can only find more people.
        let mut s = Search::new(traits(&["JEAN", "LUC"]));
        assert!(s.next_body().is_some());
        s.record(cr("02"));
        assert!(s.next_body().is_none());
        assert_eq!(s.attempts(), 1);

        // One first name: one request; nothing found anywhere: every request tried.
        let mut s = Search::new(traits(&["JEAN"]));
        assert!(s.next_body().is_some());
        s.record(cr("01"));
        assert!(s.next_body().is_none());
        let mut s = Search::new(traits(&["A", "B"]));
        while s.next_body().is_some() {
            s.record(cr("01"));
        }
        assert_eq!(s.attempts(), 3);
    }

    #[test]
    fn vitale_requests_are_typed_and_keys_checked() {
        let read_vitale = |v: Value| {
            read(
                InsiApiCall::Vitale,
                "application/json",
                v.to_string().as_bytes(),
            )
        };
        let r = read_vitale(
            json!({"nir": "2070585756270", "birth_date": "2007-05-14", "birth_rank": 1}),
        )
        .expect("vitale");
        let Query::Vitale(q) = &r.query else {
            panic!("vitale")
        };
        assert_eq!(q.beneficiary.as_ref().map(|m| m.key.as_str()), Some("97"));
        let xml = recvitale(q).to_xml();
        assert!(
            xml.contains("<MatriculeIndividu><NumIdentifiant>2070585756270</NumIdentifiant><Cle>97</Cle></MatriculeIndividu><DateNaissance>2007-05-14</DateNaissance><RangNaissance>1</RangNaissance>"),
            "{xml}"
        );
        let field = |v: Value| match read_vitale(v) {
            Err(ProxyError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(json!({"nir": "2070585756270", "nir_key": "12", "birth_date": "2007-05-14"})),
            "nir_key"
        );
        assert_eq!(field(json!({"birth_date": "2007-05-14"})), "nir");
        assert_eq!(
            field(
                json!({"holder_nir_key": "12", "nir": "2070585756270", "birth_date": "2007-05-14"})
            ),
            "holder_nir_key"
        );
        assert_eq!(
            field(json!({"nir": "2070585756270", "birth_date": "2007-05-14", "birth_rank": "1"})),
            "birth_rank"
        );
    }
}
