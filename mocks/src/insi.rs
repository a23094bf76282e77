//! Mock INSi (`/lps`, CNAM service ICIR-v1, domain.md §7).
//!
//! In order, it refuses:
//! 1. a client certificate whose CN is not exactly `INSI-AUTO` or `INSI-MANU`
//!    (`desir_560` "Niveau d'accès insuffisant");
//! 2. a request that is not a SOAP envelope, lacks `ContexteLPS`, `ContexteBAM`,
//!    `wsa:Action` or `wsa:MessageID`, or whose Action does not match its body;
//! 3. a body or context that does not validate against the CNAM XSDs (libxml2).
//!
//! It answers `RECSANSVITALE` and `RECVITALE` from a small identity table: CR 00 with
//! `INSACTIF`, `INSHISTO` (the identity's former INS, if any) and `TIQ`, CR 01 (no
//! identity found), CR 02 (several found). Fault injection answers `siram_40` /
//! `insi_102` (service temporarily unavailable).
//!
//! A traits search matches an identity on `NomNaissance`, `Sexe`, `DateNaissance` and
//! `LieuNaissance` when sent, and on the first names: the `Prenom` text (every `Prenom`
//! element, space-separated) must be the identity's first first name alone, or its whole
//! list of first names in order (the mock's convention; CNAM does not publish its
//! matching rules).
//!
//! Fault codes: `siram_40`/`insi_102` and `desir_560` are the service's (domain.md §7);
//! the mock uses `siram_10`/`insi_101` for malformed requests (its own convention).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::StatusCode;
use libxml::parser::Parser;
use libxml::schemas::SchemaValidationContext;
use passerelle_signing::xml::Element;

use crate::MockError;
use crate::server::{MockRequest, MockResponse, Service};
use crate::soap::{self, Envelope, Fault, FaultCode, WSA};

pub use passerelle_soap::insi::{
    CTXBAM_NS, CTXLPS_NS, OP_TRAITS, OP_VITALE, RECSANS_NS, RECVIT_NS, RESULTAT_NS, SIRAM_NS,
};
const CONTENT_TYPE: &str = "application/soap+xml;charset=utf-8";
/// Test INS-NIR OID: the table holds test identities.
const TEST_OID: &str = "1.2.250.1.213.1.4.10";

/// One identity of the table.
#[derive(Debug, Clone)]
pub struct Identity {
    /// 13-character NIR.
    pub nir: String,
    pub key: String,
    pub birth_name: String,
    pub first_names: Vec<String>,
    pub sex: String,
    pub birth_date: String,
    /// INSEE code of the birth place (COG).
    pub birth_place: String,
    /// Former INS (13-character NIR), answered as `INSHISTO`.
    pub history: Vec<String>,
}

/// NIR key: 97 - (NIR mod 97), with Corsica's 2A as 19 and 2B as 18.
pub fn nir_key(nir: &str) -> String {
    let numeric = nir.replacen("2A", "19", 1).replacen("2B", "18", 1);
    let n: u64 = numeric.parse().unwrap_or(0);
    format!("{:02}", 97 - n % 97)
}

fn identity(nir: &str, name: &str, first: &[&str], sex: &str, date: &str, place: &str) -> Identity {
    Identity {
        nir: nir.into(),
        key: nir_key(nir),
        birth_name: name.into(),
        first_names: first.iter().map(|s| s.to_string()).collect(),
        sex: sex.into(),
        birth_date: date.into(),
        birth_place: place.into(),
        history: Vec::new(),
    }
}

/// The built-in table: one unique person per search kind; two homonyms (CR 02); two
/// namesakes told apart by their second first name only; one identity with a former INS.
pub fn default_identities() -> Vec<Identity> {
    let mut with_history = identity(
        "1720375056042",
        "ROUSSEAU",
        &["LOUIS", "HENRI"],
        "M",
        "1972-03-12",
        "75056",
    );
    with_history.history = vec!["1720399350019".into()];
    vec![
        with_history,
        // "MARIE" alone finds both (CR 02); with the second first name, one (CR 00).
        identity(
            "2850633063017",
            "LEGRAND",
            &["MARIE", "LOUISE"],
            "F",
            "1985-06-30",
            "33063",
        ),
        identity(
            "2850659350021",
            "LEGRAND",
            &["MARIE", "JEANNE"],
            "F",
            "1985-06-30",
            "59350",
        ),
        // domain.md's example test INS 207058575627097.
        identity(
            "2070585756270",
            "MARTIN",
            &["CLAIRE", "ANNE"],
            "F",
            "2007-05-14",
            "85756",
        ),
        identity(
            "1800175056001",
            "DUPONT",
            &["JEAN"],
            "M",
            "1980-01-01",
            "75056",
        ),
        identity(
            "1800169123002",
            "DUPONT",
            &["JEAN"],
            "M",
            "1980-01-01",
            "69123",
        ),
        identity(
            "295082A004123",
            "NGUYEN",
            &["THI", "MAI"],
            "F",
            "1995-08-23",
            "2A004",
        ),
    ]
}

/// XSD validators, one set per thread (libxml2 contexts are not `Send`).
struct Schemas {
    recsans: SchemaValidationContext,
    recvit: SchemaValidationContext,
    ctxlps: SchemaValidationContext,
    ctxbam: SchemaValidationContext,
}

impl Schemas {
    fn load(xsd_dir: &Path) -> Result<Self, MockError> {
        Ok(Self {
            recsans: crate::xsd::load(
                &xsd_dir.join("ServiceIdentiteCertifiee/INSi_RECSANS_INS.xsd"),
            )?,
            recvit: crate::xsd::load(
                &xsd_dir.join("ServiceIdentiteCertifiee/INSi_RECVITALE_INS.xsd"),
            )?,
            ctxlps: crate::xsd::load(&xsd_dir.join("CTX/ROOT_ctxlps_CTXLPS_V01_00.xsd"))?,
            ctxbam: crate::xsd::load(&xsd_dir.join("CTX/ROOT_ctxbam_CTXBAM_V01_02.xsd"))?,
        })
    }
}

thread_local! {
    static SCHEMAS: RefCell<HashMap<PathBuf, Schemas>> = RefCell::new(HashMap::new());
}

/// Validates `xml` with the schema chosen by `pick`; the error lists libxml2's messages.
fn validate(
    xsd_dir: &Path,
    xml: &str,
    pick: fn(&mut Schemas) -> &mut SchemaValidationContext,
) -> Result<(), String> {
    let doc = Parser::default()
        .parse_string(xml)
        .map_err(|e| format!("libxml2 cannot parse it: {e:?}"))?;
    SCHEMAS.with(|cell| {
        let mut map = cell.borrow_mut();
        if !map.contains_key(xsd_dir) {
            let schemas = Schemas::load(xsd_dir).map_err(|e| e.to_string())?;
            map.insert(xsd_dir.to_path_buf(), schemas);
        }
        let schemas = map
            .get_mut(xsd_dir)
            .ok_or_else(|| "schemas unavailable".to_string())?;
        pick(schemas).validate_document(&doc).map_err(|errors| {
            errors
                .iter()
                .filter_map(|e| e.message.as_deref().map(str::trim).map(str::to_string))
                .collect::<Vec<_>>()
                .join("; ")
        })
    })
}

/// The mock INSi service.
#[derive(Debug)]
pub struct MockInsi {
    /// `spec/insi/xsd` folder.
    xsd_dir: PathBuf,
    identities: Vec<Identity>,
}

impl MockInsi {
    /// Loads the CNAM XSDs from `xsd_dir` (`../shared/spec/insi/xsd`) once to check them.
    pub fn new(xsd_dir: PathBuf) -> Result<Self, MockError> {
        Schemas::load(&xsd_dir)?;
        Ok(Self {
            xsd_dir,
            identities: default_identities(),
        })
    }

    fn fault(
        &self,
        operation: &str,
        outcome: &str,
        code: FaultCode,
        siram: &str,
        detail_code: &str,
        reason: String,
    ) -> MockResponse {
        let detail = Element::new(Some("siram"), "Erreur")
            .ns(Some("siram"), SIRAM_NS)
            .attr("severite", "erreur")
            .attr("code", detail_code.to_string())
            .text(reason.clone());
        let body = soap::fault_envelope(&Fault {
            code,
            subcode: Some((SIRAM_NS, "siram", siram.to_string())),
            reason,
            detail: Some(detail),
        });
        MockResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            content_type: CONTENT_TYPE.into(),
            body: Bytes::from(body),
            operation: operation.into(),
            outcome: outcome.into(),
        }
    }

    fn invalid(&self, operation: &str, outcome: &str, reason: String) -> MockResponse {
        self.fault(
            operation,
            outcome,
            FaultCode::Sender,
            "siram_10",
            "insi_101",
            reason,
        )
    }

    fn search(&self, operation: &str, body: &Element) -> Vec<&Identity> {
        let text = |local: &str| soap::find_text(body, local).map(|t| t.trim().to_uppercase());
        let same = |want: Option<String>, have: &str| {
            want.is_none_or(|w| w.is_empty() || w == have.to_uppercase())
        };
        // Every Prenom element, each possibly a space-separated list.
        let sent: Vec<String> = body
            .elements()
            .filter(|e| e.local == "Prenom")
            .flat_map(|e| {
                e.text_content()
                    .split_whitespace()
                    .map(str::to_uppercase)
                    .collect::<Vec<_>>()
            })
            .collect();
        let first_names =
            |i: &Identity| sent.is_empty() || sent == i.first_names[..1] || sent == i.first_names;
        self.identities
            .iter()
            .filter(|i| {
                if operation == OP_VITALE {
                    text("NumIdentifiant").is_some_and(|n| n == i.nir)
                        && same(text("DateNaissance"), &i.birth_date)
                } else {
                    text("NomNaissance").is_some_and(|n| n == i.birth_name)
                        && first_names(i)
                        && same(text("Sexe"), &i.sex)
                        && same(text("DateNaissance"), &i.birth_date)
                        && same(text("LieuNaissance"), &i.birth_place)
                }
            })
            .collect()
    }

    fn result(&self, found: &[&Identity]) -> Element {
        let el = |local: &'static str| Element::new(None, local);
        let (code, label) = match found.len() {
            1 => ("00", "OK"),
            0 => ("01", "Aucune identité trouvée"),
            _ => ("02", "Plusieurs identités trouvées"),
        };
        let mut result = el("RESULTAT").ns(None, RESULTAT_NS).child(
            el("CR")
                .child(el("CodeCR").text(code))
                .child(el("LibelleCR").text(label)),
        );
        let ins = |nir: &str| {
            el("IdIndividu")
                .child(el("NumIdentifiant").text(nir.to_string()))
                .child(el("Cle").text(nir_key(nir)))
        };
        if let [i] = found {
            let mut individu = el("INDIVIDU").child(
                el("INSACTIF")
                    .child(ins(&i.nir))
                    .child(el("OID").text(TEST_OID)),
            );
            for former in &i.history {
                individu = individu.child(
                    el("INSHISTO")
                        .child(ins(former))
                        .child(el("OID").text(TEST_OID)),
                );
            }
            result = result.child(
                individu.child(
                    el("TIQ")
                        .child(el("NomNaissance").text(i.birth_name.clone()))
                        .child(el("Prenom").text(i.first_names[0].clone()))
                        .child(el("ListePrenom").text(i.first_names.join(" ")))
                        .child(el("Sexe").text(i.sex.clone()))
                        .child(el("DateNaissance").text(i.birth_date.clone()))
                        .child(el("LieuNaissance").text(i.birth_place.clone())),
                ),
            );
        }
        result
    }
}

impl Service for MockInsi {
    fn handle(&self, req: &MockRequest) -> MockResponse {
        let unknown = "unknown";
        if req.path != "/lps" {
            return MockResponse {
                status: StatusCode::NOT_FOUND,
                content_type: "text/plain".into(),
                body: Bytes::from_static(b"the INSi service is at /lps\n"),
                operation: unknown.into(),
                outcome: "not_found".into(),
            };
        }
        // The access level comes first: the real service refuses before reading.
        let cn = req.client.common_name.as_deref().unwrap_or("");
        if cn != "INSI-AUTO" && cn != "INSI-MANU" {
            return self.fault(
                unknown,
                "access_level",
                FaultCode::Sender,
                "siram_30",
                "desir_560",
                format!("Niveau d'accès insuffisant: certificate CN {cn:?} is neither INSI-AUTO nor INSI-MANU"),
            );
        }
        let Ok(text) = std::str::from_utf8(&req.body) else {
            return self.invalid(unknown, "malformed", "the body is not UTF-8".into());
        };
        let env = match Envelope::parse(text) {
            Ok(env) => env,
            Err(e) => {
                return self.invalid(unknown, "malformed", format!("not a SOAP envelope: {e}"));
            }
        };
        if env.soap_ns != soap::SOAP12 {
            return self.invalid(unknown, "soap_version", "INSi is SOAP 1.2 only".into());
        }
        let operation = match env.body_name() {
            Some((ns, local)) if ns == RECSANS_NS && local == "RECSANSVITALE" => OP_TRAITS,
            Some((ns, local)) if ns == RECVIT_NS && local == "RECVITALE" => OP_VITALE,
            Some((ns, local)) => {
                return self.invalid(
                    unknown,
                    "operation",
                    format!("unknown body element {{{ns}}}{local}"),
                );
            }
            None => return self.invalid(unknown, "operation", "empty SOAP Body".into()),
        };
        for (ns, local, name) in [
            (CTXLPS_NS, "ContexteLPS", "ctxlps:ContexteLPS"),
            (CTXBAM_NS, "ContexteBAM", "ctxbam:ContexteBAM"),
            (WSA, "Action", "wsa:Action"),
            (WSA, "MessageID", "wsa:MessageID"),
        ] {
            if env.header(ns, local).is_none() {
                return self.invalid(
                    operation,
                    "missing_header",
                    format!("SOAP header {name} is missing"),
                );
            }
        }
        let action = env.header_text(WSA, "Action").unwrap_or_default();
        let expected = format!("{}{operation}", passerelle_soap::insi::ACTION_PREFIX);
        if action != expected {
            return self.invalid(
                operation,
                "action",
                format!("wsa:Action is {action:?}, expected {expected:?} for this body"),
            );
        }
        type Pick = fn(&mut Schemas) -> &mut SchemaValidationContext;
        let checks: [(&str, &str, &str, Pick); 2] = [
            (CTXLPS_NS, "ContexteLPS", "ContexteLPS", |s| &mut s.ctxlps),
            (CTXBAM_NS, "ContexteBAM", "ContexteBAM", |s| &mut s.ctxbam),
        ];
        for (ns, local, name, pick) in checks {
            if let Some((e, scope)) = env.header(ns, local)
                && let Err(why) = validate(&self.xsd_dir, &soap::standalone(e, &scope), pick)
            {
                return self.invalid(
                    operation,
                    "invalid_context",
                    format!("{name} does not validate: {why}"),
                );
            }
        }
        let Some((body, scope)) = env.body_element() else {
            return self.invalid(operation, "operation", "empty SOAP Body".into());
        };
        let pick: fn(&mut Schemas) -> &mut SchemaValidationContext = if operation == OP_VITALE {
            |s| &mut s.recvit
        } else {
            |s| &mut s.recsans
        };
        if let Err(why) = validate(&self.xsd_dir, &soap::standalone(body, &scope), pick) {
            return self.invalid(
                operation,
                "invalid_body",
                format!("the body does not validate against the CNAM XSD: {why}"),
            );
        }
        let found = self.search(operation, body);
        let outcome = match found.len() {
            1 => "cr00",
            0 => "cr01",
            _ => "cr02",
        };
        let message_id = env.header_text(WSA, "MessageID").unwrap_or_default();
        let header = vec![
            Element::new(Some("wsa"), "Action")
                .ns(Some("wsa"), WSA)
                .text(format!("{expected}Response")),
            Element::new(Some("wsa"), "MessageID")
                .ns(Some("wsa"), WSA)
                .text(format!("uuid:{}", uuid::Uuid::new_v4())),
            Element::new(Some("wsa"), "RelatesTo")
                .ns(Some("wsa"), WSA)
                .text(message_id),
        ];
        MockResponse {
            status: StatusCode::OK,
            content_type: CONTENT_TYPE.into(),
            body: Bytes::from(soap::envelope(header, self.result(&found))),
            operation: operation.into(),
            outcome: outcome.into(),
        }
    }

    fn unavailable(&self, operation: &str) -> MockResponse {
        self.fault(
            operation,
            "injected_fault",
            FaultCode::Receiver,
            "siram_40",
            "insi_102",
            "Service temporairement indisponible".into(),
        )
    }
}

/// A RECSANSVITALE request as an LPS sends it (used by tests, benches and the sandbox).
pub fn traits_request(
    emetteur: &str,
    name: &str,
    first: &str,
    sex: &str,
    birth_date: &str,
) -> String {
    use passerelle_soap::insi::{ACTION_PREFIX, LpsIdentity, contexte_bam, contexte_lps};
    let stamp = passerelle_signing::vihf::saml_instant(time::OffsetDateTime::now_utc());
    let lps = LpsIdentity {
        idam: "TEST-IDAM-0000",
        name: "PASSERELLE",
        version: "0.1.0",
        instance: "00000000-0000-4000-8000-000000000001",
    };
    let wsa = |local: &'static str, text: String| {
        Element::new(Some("wsa"), local)
            .ns(Some("wsa"), WSA)
            .text(text)
    };
    let field = |local: &'static str, text: &str| Element::new(None, local).text(text.to_string());
    soap::envelope(
        vec![
            contexte_lps(&uuid::Uuid::new_v4().to_string(), &stamp, emetteur, &lps),
            contexte_bam(&uuid::Uuid::new_v4().to_string(), &stamp, emetteur),
            wsa("Action", format!("{ACTION_PREFIX}{OP_TRAITS}")),
            wsa("MessageID", format!("uuid:{}", uuid::Uuid::new_v4())),
        ],
        Element::new(None, "RECSANSVITALE")
            .ns(None, RECSANS_NS)
            .child(field("NomNaissance", name))
            .child(field("Prenom", first))
            .child(field("Sexe", sex))
            .child(field("DateNaissance", birth_date)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keys_are_valid_ins() {
        for i in default_identities() {
            passerelle_signing::Ins::new(&format!("{}{}", i.nir, i.key), TEST_OID)
                .expect("valid INS");
            for former in &i.history {
                passerelle_signing::Ins::new(&format!("{former}{}", nir_key(former)), TEST_OID)
                    .expect("valid former INS");
            }
        }
        assert_eq!(nir_key("2070585756270"), "97");
    }
}
