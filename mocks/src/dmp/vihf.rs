//! The VIHF's identity values as a standard XPath reader sees them (libxml2, the
//! namespace `saml2` = SAML 2.0 assertion registered), read from the very text libxmlsec1
//! has just verified. Nothing of Passerelle's own reading is reused: string values are
//! XPath `string()` (descendants' text included), counts are `count()` over the whole
//! assertion, attributes are found by namespace and `Name`.
//!
//! Refused, each with the check named:
//! - `Subject/NameID`: not exactly one `saml2:NameID` in the whole assertion, or not at
//!   `/saml2:Assertion/saml2:Subject/saml2:NameID`, or empty;
//! - an identity attribute (`Identifiant_Structure`, the authentication mode,
//!   `resource-id`, `VIHF_Version`) occurring more than once anywhere in the assertion,
//!   outside `/saml2:Assertion/saml2:AttributeStatement`, with anything but exactly one
//!   `saml2:AttributeValue`; both spellings of the authentication mode;
//! - mixed content: a `NameID` or the `AttributeValue` of a string attribute whose string
//!   value differs from its own text, or that holds elements; a coded value (role,
//!   purpose of use, confidentiality) that is not exactly one element with a `code`, or
//!   with text beside it;
//! - a required attribute missing or empty.

use libxml::parser::{Parser, ParserOptions};
use libxml::tree::Document;
use libxml::xpath::Context;

use super::{Refusal, refuse};

const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";

pub const STRUCTURE: &str = "Identifiant_Structure";
pub const PATIENT: &str = "urn:oasis:names:tc:xacml:2.0:resource:resource-id";
pub const VERSION: &str = "VIHF_Version";
/// Both spellings of the authentication-mode attribute (domain.md §5): one, not both.
pub const MODES: [&str; 2] = ["Authentification_mode", "Authentification_Mode"];

/// Attributes whose values are one HL7 coded element (`<Role code=".."/>`), not text.
const CODED: [&str; 3] = [
    "urn:oasis:names:tc:xacml:2.0:subject:role",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code",
];

/// Attributes a VIHF must carry (domain.md §5), besides the authentication mode.
const REQUIRED: [&str; 10] = [
    STRUCTURE,
    "Secteur_Activite",
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
    "urn:oasis:names:tc:xacml:2.0:subject:role",
    VERSION,
    PATIENT,
    "Ressource_URN",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "LPS_Nom",
    "LPS_Version",
];

/// Where an attribute belongs.
const IN_PLACE: &str = "/saml2:Assertion/saml2:AttributeStatement/saml2:Attribute";

/// The identity a verified VIHF carries, as libxml2's XPath reads it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `Subject/NameID`.
    pub actor_id: String,
    pub structure: String,
    /// The authentication mode's value, whichever spelling carries it.
    pub mode: String,
    /// `resource-id` (the patient's INS, HL7 CX).
    pub patient: String,
    pub version: String,
    pub issue_instant: String,
}

/// A libxml2 document and its XPath context (dropped first).
struct Reader {
    ctx: Context,
    _doc: Document,
}

fn xpath_failure(expr: &str) -> Refusal {
    Refusal {
        outcome: "vihf_xpath",
        reason: format!("VIHF: libxml2 cannot evaluate {expr}"),
    }
}

impl Reader {
    fn parse(text: &str) -> Result<Self, Refusal> {
        let options = ParserOptions {
            recover: false,
            no_net: true,
            ..ParserOptions::default()
        };
        let doc = Parser::default()
            .parse_string_with_options(text, options)
            .map_err(|e| Refusal {
                outcome: "vihf_xml",
                reason: format!("VIHF: libxml2 cannot parse the assertion: {e:?}"),
            })?;
        let ctx = Context::new(&doc).map_err(|()| xpath_failure("(no context)"))?;
        ctx.register_namespace("saml2", SAML)
            .map_err(|()| xpath_failure("(namespace saml2)"))?;
        Ok(Self { ctx, _doc: doc })
    }

    /// The XPath string value of `expr`.
    fn string(&self, expr: &str) -> Result<String, Refusal> {
        self.ctx
            .evaluate(expr)
            .map(|o| o.to_string())
            .map_err(|()| xpath_failure(expr))
    }

    /// `count(expr)`.
    fn count(&self, expr: &str) -> Result<usize, Refusal> {
        let text = self.string(&format!("count({expr})"))?;
        text.parse::<f64>()
            .ok()
            .filter(|n| n.fract() == 0.0 && *n >= 0.0)
            .map(|n| n as usize)
            .ok_or_else(|| xpath_failure(expr))
    }

    /// The text nodes directly under the node `expr` selects, concatenated.
    fn own_text(&self, expr: &str) -> Result<String, Refusal> {
        let path = format!("{expr}/text()");
        self.ctx
            .evaluate(&path)
            .map(|o| o.get_nodes_as_str().concat())
            .map_err(|()| xpath_failure(&path))
    }
}

/// XML white space only (not Unicode's).
fn blank(s: &str) -> bool {
    s.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

fn attribute_path(name: &str) -> String {
    format!("{IN_PLACE}[@Name='{name}']")
}

/// Reads and checks the identity of the verified assertion `text`.
pub(super) fn read(text: &str) -> Result<Identity, Refusal> {
    let r = Reader::parse(text)?;
    if r.count("/saml2:Assertion")? != 1 {
        return refuse("vihf_xml", "VIHF: the root is not a saml2:Assertion");
    }
    let actor_id = name_id(&r)?;
    values(&r)?;
    let both = MODES
        .iter()
        .map(|m| r.count(&format!("//saml2:Attribute[@Name='{m}']")))
        .collect::<Result<Vec<_>, _>>()?;
    if both.iter().all(|n| *n > 0) {
        return refuse(
            "vihf_mode",
            format!(
                "VIHF carries both {} and {}: exactly one authentication mode attribute is allowed",
                MODES[0], MODES[1]
            ),
        );
    }
    for name in [STRUCTURE, PATIENT, VERSION].iter().chain(&MODES) {
        single(&r, name)?;
    }
    for name in REQUIRED {
        let present = if CODED.contains(&name) {
            format!(
                "{}/saml2:AttributeValue/*[normalize-space(@code) != '']",
                attribute_path(name)
            )
        } else {
            format!(
                "{}/saml2:AttributeValue[normalize-space(.) != '']",
                attribute_path(name)
            )
        };
        if r.count(&present)? == 0 {
            return refuse(
                "vihf_attributes",
                format!("VIHF attribute {name} is missing or empty"),
            );
        }
    }
    let Some(mode_name) = MODES
        .iter()
        .zip(&both)
        .find_map(|(m, n)| (*n > 0).then_some(*m))
    else {
        return refuse(
            "vihf_attributes",
            format!(
                "VIHF authentication mode is missing ({} or {})",
                MODES[0], MODES[1]
            ),
        );
    };
    let value = |name: &str| {
        r.string(&format!(
            "string({}/saml2:AttributeValue)",
            attribute_path(name)
        ))
    };
    Ok(Identity {
        actor_id,
        structure: value(STRUCTURE)?,
        mode: value(mode_name)?,
        patient: value(PATIENT)?,
        version: value(VERSION)?,
        issue_instant: r.string("string(/saml2:Assertion/@IssueInstant)")?,
    })
}

/// Exactly one `saml2:NameID` in the whole assertion, at `Subject/NameID`, text only.
fn name_id(r: &Reader) -> Result<String, Refusal> {
    const AT: &str = "/saml2:Assertion/saml2:Subject/saml2:NameID";
    let anywhere = r.count("//saml2:NameID")?;
    let in_place = r.count(AT)?;
    if anywhere != 1 || in_place != 1 {
        return refuse(
            "vihf_name_id",
            format!(
                "VIHF Subject/NameID must occur exactly once in the assertion, as /Assertion/Subject/NameID: found {anywhere} NameID element(s), {in_place} there"
            ),
        );
    }
    let value = r.string(&format!("string({AT})"))?;
    let own = r.own_text(AT)?;
    if value != own || r.count(&format!("{AT}/*"))? > 0 {
        return refuse(
            "vihf_mixed_content",
            format!(
                "VIHF Subject/NameID has mixed content: its string value {value:?} is not its own text {own:?}"
            ),
        );
    }
    if blank(&value) {
        return refuse("vihf_name_id", "VIHF Subject/NameID is empty");
    }
    Ok(value)
}

/// Every `saml2:AttributeValue` of the assertion: text only for a string attribute, one
/// coded element and no text for a coded one.
fn values(r: &Reader) -> Result<(), Refusal> {
    let n = r.count("//saml2:AttributeValue")?;
    for i in 1..=n {
        let at = format!("(//saml2:AttributeValue)[{i}]");
        let name = r.string(&format!("string({at}/../@Name)"))?;
        let elements = r.count(&format!("{at}/*"))?;
        let own = r.own_text(&at)?;
        if CODED.contains(&name.as_str()) {
            if elements != 1 || !blank(&own) {
                return refuse(
                    "vihf_mixed_content",
                    format!(
                        "VIHF attribute {name}: a coded AttributeValue must hold exactly one element and no text, found {elements} element(s) and text {:?}",
                        own.trim()
                    ),
                );
            }
            continue;
        }
        let value = r.string(&format!("string({at})"))?;
        if elements > 0 || value != own {
            return refuse(
                "vihf_mixed_content",
                format!(
                    "VIHF attribute {name}: AttributeValue has mixed content: its string value {value:?} is not its own text {own:?}"
                ),
            );
        }
    }
    Ok(())
}

/// An identity attribute: at most once in the whole assertion, in its place, with
/// exactly one `saml2:AttributeValue` and no other child element.
fn single(r: &Reader, name: &str) -> Result<(), Refusal> {
    let anywhere = r.count(&format!("//saml2:Attribute[@Name='{name}']"))?;
    if anywhere == 0 {
        // Missing: reported by the required-attribute check.
        return Ok(());
    }
    if anywhere > 1 {
        return refuse(
            "vihf_duplicate_attribute",
            format!(
                "VIHF attribute {name} occurs {anywhere} times in the assertion: exactly once is allowed"
            ),
        );
    }
    let path = attribute_path(name);
    if r.count(&path)? != 1 {
        return refuse(
            "vihf_attribute_place",
            format!("VIHF attribute {name} is not in /Assertion/AttributeStatement"),
        );
    }
    let values = r.count(&format!("{path}/saml2:AttributeValue"))?;
    let children = r.count(&format!("{path}/*"))?;
    if values != 1 || children != 1 {
        return refuse(
            "vihf_attribute_values",
            format!(
                "VIHF attribute {name} must carry exactly one saml2:AttributeValue and nothing else, found {values} AttributeValue(s) among {children} element(s)"
            ),
        );
    }
    Ok(())
}
