//! The VIHF token (domain.md §5): [`VihfContext`] models every attribute, validated once;
//! [`sign_vihf`] builds the SAML 2.0 assertion in the exact element and attribute order
//! of the ANS examples and signs it (enveloped, exclusive c14n, RSA-SHA256 by default).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use passerelle_config::StructureId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dsig::{self, DSIG_NS, ENVELOPED, ReferenceSpec};
use crate::signer::{DigestAlgorithm, Signer};
use crate::xml::{C14n, Element, Node, Scope, canonicalize};
use crate::{SigningError, VihfError};

pub const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const XS_NS: &str = "http://www.w3.org/2001/XMLSchema";
pub const HL7_NS: &str = "urn:hl7-org:v3";

/// The patient's INS with the OID of its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "InsJson", into = "InsJson")]
pub struct Ins {
    value: String,
    kind: InsKind,
}

/// Which identifier the INS is (its assigning authority OID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsKind {
    /// INS-NIR, production: `1.2.250.1.213.1.4.8`.
    Nir,
    /// INS-NIR of test patients: `1.2.250.1.213.1.4.10`.
    NirTest,
    /// NIA (identifier awaiting a NIR): `1.2.250.1.213.1.4.9`.
    Nia,
}

impl InsKind {
    pub fn oid(self) -> &'static str {
        match self {
            Self::Nir => "1.2.250.1.213.1.4.8",
            Self::NirTest => "1.2.250.1.213.1.4.10",
            Self::Nia => "1.2.250.1.213.1.4.9",
        }
    }

    fn from_oid(oid: &str) -> Option<Self> {
        [Self::Nir, Self::NirTest, Self::Nia]
            .into_iter()
            .find(|k| k.oid() == oid)
    }
}

#[derive(Serialize, Deserialize)]
struct InsJson {
    ins: String,
    oid: String,
}

impl TryFrom<InsJson> for Ins {
    type Error = VihfError;
    fn try_from(j: InsJson) -> Result<Self, VihfError> {
        Ins::new(&j.ins, &j.oid)
    }
}

impl From<Ins> for InsJson {
    fn from(i: Ins) -> Self {
        InsJson {
            ins: i.value,
            oid: i.kind.oid().to_string(),
        }
    }
}

impl Ins {
    /// Validates a 15-character INS (13-character NIR + 2-digit key; Corsica's `2A`/`2B`
    /// allowed in the département) and its OID.
    pub fn new(value: &str, oid: &str) -> Result<Self, VihfError> {
        let kind = InsKind::from_oid(oid).ok_or_else(|| {
            VihfError::Invalid(format!(
                "patient.oid {oid:?} is not an INS OID (1.2.250.1.213.1.4.8 NIR, .4.10 test NIR, .4.9 NIA)"
            ))
        })?;
        let bad = |why: &str| VihfError::Invalid(format!("patient.ins: {why}"));
        if value.len() != 15 || !value.is_ascii() {
            return Err(bad(
                "an INS has 15 characters (13-character NIR + 2-digit key)",
            ));
        }
        let (nir, key) = value.split_at(13);
        let dept = &nir[5..7];
        let numeric = match dept {
            "2A" => format!("{}19{}", &nir[..5], &nir[7..]),
            "2B" => format!("{}18{}", &nir[..5], &nir[7..]),
            _ => nir.to_string(),
        };
        let n: u64 = numeric
            .parse()
            .map_err(|_| bad("the NIR part must be digits (2A/2B allowed for Corsica)"))?;
        // Digits only: `parse` alone would take "+5" as a key.
        let key: u64 = key
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| key.parse().ok())
            .flatten()
            .ok_or_else(|| bad("the key must be 2 digits"))?;
        if !matches!(nir.as_bytes()[0], b'1' | b'2' | b'3' | b'4' | b'7' | b'8') {
            return Err(bad(
                "the NIR must start with 1, 2 (or 3, 4, 7, 8 for temporary numbers)",
            ));
        }
        if 97 - n % 97 != key {
            return Err(bad("the key does not match the NIR (97 - NIR mod 97)"));
        }
        Ok(Self {
            value: value.to_string(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn kind(&self) -> InsKind {
        self.kind
    }

    /// Reads the HL7 CX form (`<INS>^^^&<OID>&ISO^NH`, the assigning authority's
    /// `&ISO` and the `^NH` type optional). The INS and its OID are validated.
    pub fn from_cx(text: &str) -> Result<Self, VihfError> {
        let (value, rest) = text.split_once("^^^&").ok_or_else(|| {
            VihfError::Invalid("patient: an INS in HL7 CX form is NIR^^^&OID&ISO^NH".into())
        })?;
        let oid = rest.split('&').next().unwrap_or("");
        Self::new(value, oid)
    }

    /// HL7 CX form of the VIHF `resource-id`: `<INS>^^^&<OID>&ISO^NH`.
    pub fn to_cx(&self) -> String {
        format!("{}^^^&{}&ISO^NH", self.value, self.kind.oid())
    }
}

/// A coded value (`code`, `codeSystem`, `displayName`) rendered as an HL7 CE element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub code: String,
    #[serde(default)]
    pub code_system: Option<String>,
    pub display_name: String,
}

/// One role of the acting person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VihfRole {
    /// A health professional: profession (`1.2.250.1.71.1.2.7`) and optional specialty
    /// (`1.2.250.1.71.4.2.5`).
    Professional {
        profession: Code,
        #[serde(default)]
        specialty: Option<Code>,
    },
    /// Automated sender (`AUTOMATE`, `1.2.250.1.213.1.1.4.6`).
    Automate,
}

const PROFESSION_SYSTEM: &str = "1.2.250.1.71.1.2.7";
const SPECIALTY_SYSTEM: &str = "1.2.250.1.71.4.2.5";
const AUTOMATE_SYSTEM: &str = "1.2.250.1.213.1.1.4.6";
const PURPOSE_SYSTEM: &str = "1.2.250.1.213.1.1.4.248";

/// Why the DMP is accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PurposeOfUse {
    #[default]
    Normal,
    BrisDeGlace,
    // snake_case would make it `centre15`; the code (and what is documented) is `centre_15`.
    #[serde(rename = "centre_15")]
    Centre15,
}

impl PurposeOfUse {
    fn code(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::BrisDeGlace => "bris_de_glace",
            Self::Centre15 => "centre_15",
        }
    }
    fn default_display(self) -> &'static str {
        match self {
            Self::Normal => "Accès normal",
            Self::BrisDeGlace => "Accès en mode bris de glace",
            Self::Centre15 => "Accès en mode centre de régulation",
        }
    }
}

/// How the user logged into the internal system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthnClass {
    #[default]
    Password,
    SmartcardPki,
    TlsClient,
    /// Automated senders.
    Unspecified,
}

impl AuthnClass {
    fn uri(&self) -> &'static str {
        match self {
            Self::Password => "urn:oasis:names:tc:SAML:2.0:ac:classes:Password",
            Self::SmartcardPki => "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI",
            Self::TlsClient => "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient",
            Self::Unspecified => "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified",
        }
    }
}

/// The software sending the request (LPS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareIdentity {
    pub name: String,
    pub version: String,
    /// CNDA homologation number (`LPS_ID_HOMOLOGATION_DMP`).
    pub homologation_id: String,
    /// Optional `LPS_ID`.
    #[serde(default)]
    pub lps_id: Option<String>,
}

/// Open points of the specifications, configurable (domain.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VihfOptions {
    /// `VIHF_Version` value.
    pub vihf_version: String,
    /// Spelling of the authentication-mode attribute (`Authentification_mode` or `_Mode`).
    pub auth_mode_attribute: String,
    pub digest: DigestAlgorithm,
    /// Exclusive c14n InclusiveNamespaces PrefixList on the reference transform (the ANS
    /// kit writes `ds saml #default xsi`); empty: none.
    pub inclusive_prefixes: Vec<String>,
    /// Re-signing: the oldest `AuthnInstant` kept from an internal system's VIHF, in
    /// seconds (the user's local login must be recent; default 12 h).
    pub max_authn_age_secs: u64,
}

impl Default for VihfOptions {
    fn default() -> Self {
        Self {
            vihf_version: "3.0".into(),
            auth_mode_attribute: "Authentification_mode".into(),
            digest: DigestAlgorithm::Sha256,
            inclusive_prefixes: Vec::new(),
            max_authn_age_secs: 12 * 3600,
        }
    }
}

/// The acting person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// National id (RPPS/ADELI) — `NameID`.
    pub id: String,
    /// Display name — `subject-id`; for an automated sender: software, model, service.
    pub name: String,
}

/// Everything a VIHF says. Build it from JSON ([`VihfContext::from_json`]) or in code,
/// then [`VihfContext::validate`] (done by the builders too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VihfContext {
    pub actor: Actor,
    pub roles: Vec<VihfRole>,
    /// `Identifiant_Structure`: the tenant's legal entity or one of its geographic entities.
    pub structure_id: String,
    /// `Secteur_Activite`, e.g. `SA07^1.2.250.1.71.4.2.4`.
    pub sector: String,
    pub patient: Ins,
    #[serde(default)]
    pub purpose: PurposeOfUse,
    /// Overrides the purpose's display name.
    #[serde(default)]
    pub purpose_display_name: Option<String>,
    #[serde(default)]
    pub authn_class: AuthnClass,
    /// Only for "connexion secrète".
    #[serde(default)]
    pub confidentiality: Option<Code>,
    /// Filled from the configuration when absent.
    #[serde(default)]
    pub software: Option<SoftwareIdentity>,
    #[serde(default)]
    pub options: VihfOptions,
}

impl VihfContext {
    /// Parses and validates JSON.
    pub fn from_json(json: &str) -> Result<Self, VihfError> {
        let ctx: Self = serde_json::from_str(json)
            .map_err(|e| VihfError::Invalid(format!("context JSON: {e}")))?;
        ctx.validate()?;
        Ok(ctx)
    }

    /// Checks what the types cannot: non-empty fields, structure id format, roles.
    pub fn validate(&self) -> Result<StructureId, VihfError> {
        let invalid = |m: String| Err(VihfError::Invalid(m));
        if self.actor.id.trim().is_empty() {
            return invalid("actor.id must not be empty (RPPS/ADELI of the acting person)".into());
        }
        if self.actor.name.trim().is_empty() {
            return invalid("actor.name must not be empty".into());
        }
        if self.roles.is_empty() {
            return invalid("roles must hold at least one role (profession, or automate)".into());
        }
        for role in &self.roles {
            if let VihfRole::Professional { profession, .. } = role
                && profession.code.trim().is_empty()
            {
                return invalid("roles[].profession.code must not be empty".into());
            }
        }
        if !self.sector.contains('^') {
            return invalid(format!(
                "sector {:?} must look like SA07^1.2.250.1.71.4.2.4",
                self.sector
            ));
        }
        let structure = StructureId::from_str(&self.structure_id)
            .map_err(|e| VihfError::Invalid(format!("structure_id: {e}")))?;
        if let Some(s) = &self.software
            && (s.name.trim().is_empty() || s.version.trim().is_empty())
        {
            return invalid("software.name and software.version must not be empty".into());
        }
        if self.options.auth_mode_attribute.trim().is_empty()
            || self.options.vihf_version.trim().is_empty()
        {
            return invalid(
                "options.auth_mode_attribute and options.vihf_version must not be empty".into(),
            );
        }
        Ok(structure)
    }
}

/// A signed assertion and its `ID`. Its text is what is placed in the envelope, as it
/// is (no tree, no second parse of the token).
#[derive(Debug, Clone)]
pub struct SignedVihf {
    pub id: String,
    /// The signed `saml2:Assertion`, serialized.
    pub text: String,
    /// Who acts, for which patient, under which structure: exactly the values signed.
    pub identity: SignedIdentity,
}

/// The identity values a signed VIHF carries, read from what was signed (the audit
/// trail records these, never a value found elsewhere in the request).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignedIdentity {
    /// `Identifiant_Structure`.
    pub structure: String,
    /// `Subject/NameID`: the acting person's national id.
    pub actor_id: String,
    /// `resource-id`: the patient's INS (HL7 CX).
    pub patient: String,
    /// `purposeofuse` code: `normal`, `bris_de_glace` (break-glass), `centre_15`.
    pub purpose: String,
}

impl SignedVihf {
    /// The signed assertion, serialized (a copy of [`Self::text`]).
    pub fn xml(&self) -> String {
        self.text.clone()
    }
}

impl fmt::Display for SignedVihf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `2024-05-01T08:46:06.839Z`.
pub fn saml_instant(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    if !(0..=9999).contains(&t.year()) {
        // Not four digits: no clock reads such a year; kept as `format!` writes it.
        return format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        );
    }
    // Written digit by digit: `format!` with widths was 2 % of a VIHF's build.
    let mut out = String::with_capacity(24);
    let mut digits = |value: u32, width: u32, after: char| {
        for place in (0..width).rev() {
            let digit = value / 10u32.pow(place) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
        out.push(after);
    };
    digits(t.year().unsigned_abs(), 4, '-');
    digits(u32::from(u8::from(t.month())), 2, '-');
    digits(u32::from(t.day()), 2, 'T');
    digits(u32::from(t.hour()), 2, ':');
    digits(u32::from(t.minute()), 2, ':');
    digits(u32::from(t.second()), 2, '.');
    digits(u32::from(t.millisecond()), 3, 'Z');
    out
}

/// The assertion of a [`VihfContext`], before its signature, written straight from the
/// context as text, in two forms at once:
/// - `wire`: as it goes in the envelope, the namespaces declared where the ANS examples
///   declare them (`saml2` and `xsi` on the root, `xs` on each string value, HL7 as
///   the default namespace of each coded value);
/// - `canonical`: as Exclusive XML Canonicalization 1.0 writes it, what the signature's
///   reference digests: a namespace is declared on each element that uses it and
///   whose nearest written ancestor did not declare it (`xsi` on each element with an
///   `xsi:type`, none for `xs`, which only a value names), unless the reference's
///   InclusiveNamespaces prefix list names it; empty elements have an end tag.
///
/// The two differ in those declarations and in the end tags of empty elements only.
/// Writing them without a tree cut the time a VIHF costs around its RSA signature by
/// a third (measured with the code hot in the caches), and the instructions outside
/// the RSA operation and SHA-256 from 92,000 to 50,000 per token. Tests check
/// `canonical` against the canonicalization of the parsed `wire` form, for each prefix
/// list and place in an envelope, and xmlsec1 verifies the signed tokens.
struct AssertionText {
    wire: String,
    canonical: String,
    /// Where the signature goes in `wire`: right after `Issuer` (SAML 2.0 schema
    /// order: Issuer, Signature, Subject, ...).
    after_issuer: usize,
    /// `xsi` is declared on each element that uses it (the prefix list does not name
    /// it; when it does, the root declares it once).
    xsi_where_used: bool,
    /// The prefix list names `xs` and the root does not already declare it as the
    /// string values do: each of them declares it in canonical form too.
    xs_declared: bool,
    /// The root declares the HL7 namespace as default in canonical form (listed
    /// `#default`, inherited from where the token is placed): the coded values do not.
    hl7_default_on_root: bool,
}

impl AssertionText {
    /// `inherited`: the namespaces in force where the token is placed. A prefix the
    /// InclusiveNamespaces list names is rendered on the root under Canonical XML's
    /// inclusive rule, so a binding inherited from the envelope is part of what is
    /// signed.
    fn write(
        ctx: &VihfContext,
        software: &SoftwareIdentity,
        issuer: &str,
        id: &str,
        now: OffsetDateTime,
        inherited: &Scope,
    ) -> Self {
        let listed = |prefix: &str| ctx.options.inclusive_prefixes.iter().any(|p| p == prefix);
        // The root's declarations in canonical form: `saml2`, which it uses, then each
        // listed prefix in force there (the root's own `xsi`, or what it inherits),
        // default first, then by prefix.
        let mut root_decls: Vec<(Option<&str>, &str)> = vec![(Some("saml2"), SAML_NS)];
        for name in &ctx.options.inclusive_prefixes {
            let prefix = match name.as_str() {
                "#default" => None,
                "xml" | "saml2" => continue,
                p => Some(p),
            };
            let uri = match prefix {
                Some("xsi") => Some(XSI_NS),
                _ => inherited
                    .get(&prefix.map(str::to_string))
                    .map(String::as_str)
                    .filter(|uri| !uri.is_empty()),
            };
            if let Some(uri) = uri {
                root_decls.push((prefix, uri));
            }
        }
        root_decls.sort_by(|a, b| a.0.cmp(&b.0));
        root_decls.dedup_by(|a, b| a.0 == b.0);
        let on_root = |prefix: Option<&str>, uri: &str| root_decls.contains(&(prefix, uri));
        let mut w = Self {
            wire: String::with_capacity(4096),
            canonical: String::with_capacity(4096),
            after_issuer: 0,
            xsi_where_used: !listed("xsi"),
            xs_declared: listed("xs") && !on_root(Some("xs"), XS_NS),
            hl7_default_on_root: on_root(None, HL7_NS),
        };
        let instant = saml_instant(now);
        w.both("<saml2:Assertion");
        w.wire_decl(Some("saml2"), SAML_NS);
        w.wire_decl(Some("xsi"), XSI_NS);
        for (prefix, uri) in &root_decls {
            crate::xml::push_ns_decl(&mut w.canonical, *prefix, uri);
        }
        w.attr("ID", id);
        w.attr("IssueInstant", &instant);
        w.both(" Version=\"2.0\"><saml2:Issuer");
        w.attr(
            "Format",
            "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
        );
        w.both(">");
        w.text(issuer);
        w.both("</saml2:Issuer>");
        w.after_issuer = w.wire.len();
        w.both("<saml2:Subject><saml2:NameID>");
        w.text(&ctx.actor.id);
        w.both("</saml2:NameID></saml2:Subject><saml2:AuthnStatement");
        w.attr("AuthnInstant", &instant);
        w.both("><saml2:AuthnContext><saml2:AuthnContextClassRef>");
        w.text(ctx.authn_class.uri());
        w.both(
            "</saml2:AuthnContextClassRef></saml2:AuthnContext></saml2:AuthnStatement>\
             <saml2:AttributeStatement>",
        );
        w.string_attribute("Identifiant_Structure", &ctx.structure_id);
        w.string_attribute("Secteur_Activite", &ctx.sector);
        w.string_attribute(
            "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
            &ctx.actor.name,
        );
        w.attribute_start("urn:oasis:names:tc:xacml:2.0:subject:role");
        for role in &ctx.roles {
            match role {
                VihfRole::Professional {
                    profession,
                    specialty,
                } => {
                    w.coded_value("Role", profession, PROFESSION_SYSTEM, None);
                    if let Some(s) = specialty {
                        w.coded_value("Role", s, SPECIALTY_SYSTEM, None);
                    }
                }
                VihfRole::Automate => {
                    w.hl7_value("Role", "AUTOMATE", AUTOMATE_SYSTEM, "Automate", None)
                }
            }
        }
        w.both("</saml2:Attribute>");
        w.string_attribute("VIHF_Version", &ctx.options.vihf_version);
        w.string_attribute(&ctx.options.auth_mode_attribute, "INDIRECTE");
        w.string_attribute(
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
            &ctx.patient.to_cx(),
        );
        w.string_attribute("Ressource_URN", "urn:dmp");
        w.attribute_start("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse");
        w.hl7_value(
            "PurposeOfUse",
            ctx.purpose.code(),
            PURPOSE_SYSTEM,
            ctx.purpose_display_name
                .as_deref()
                .unwrap_or(ctx.purpose.default_display()),
            Some(("codeSystemName", "mode acces VIHF 2.0")),
        );
        w.both("</saml2:Attribute>");
        if let Some(c) = &ctx.confidentiality {
            w.attribute_start(
                "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code",
            );
            w.coded_value("ConfidentialityCode", c, "1.2.250.1.213.1.1.4.13", None);
            w.both("</saml2:Attribute>");
        }
        if let Some(lps_id) = &software.lps_id {
            w.string_attribute("LPS_ID", lps_id);
        }
        w.string_attribute("LPS_Nom", &software.name);
        w.string_attribute("LPS_Version", &software.version);
        w.string_attribute("LPS_ID_HOMOLOGATION_DMP", &software.homologation_id);
        w.both("</saml2:AttributeStatement></saml2:Assertion>");
        w
    }

    /// The wire form with the signature's XML placed after `Issuer`.
    fn signed(mut self, signature: &str) -> String {
        self.wire.insert_str(self.after_issuer, signature);
        self.wire
    }

    fn both(&mut self, markup: &str) {
        self.wire.push_str(markup);
        self.canonical.push_str(markup);
    }

    fn wire_decl(&mut self, prefix: Option<&str>, uri: &str) {
        crate::xml::push_ns_decl(&mut self.wire, prefix, uri);
    }

    fn canonical_decl(&mut self, prefix: Option<&str>, uri: &str) {
        crate::xml::push_ns_decl(&mut self.canonical, prefix, uri);
    }

    /// ` name="value"`, the value escaped.
    fn attr(&mut self, name: &str, value: &str) {
        for out in [&mut self.wire, &mut self.canonical] {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            crate::xml::escape_attr(out, value);
            out.push('"');
        }
    }

    fn text(&mut self, value: &str) {
        crate::xml::escape_text(&mut self.wire, value);
        crate::xml::escape_text(&mut self.canonical, value);
    }

    fn attribute_start(&mut self, name: &str) {
        self.both("<saml2:Attribute");
        self.attr("Name", name);
        self.both(">");
    }

    /// An attribute with one `xs:string` value.
    fn string_attribute(&mut self, name: &str, value: &str) {
        self.attribute_start(name);
        self.both("<saml2:AttributeValue");
        self.wire_decl(Some("xs"), XS_NS);
        if self.xs_declared {
            self.canonical_decl(Some("xs"), XS_NS);
        }
        if self.xsi_where_used {
            self.canonical_decl(Some("xsi"), XSI_NS);
        }
        self.both(" xsi:type=\"xs:string\">");
        self.text(value);
        self.both("</saml2:AttributeValue></saml2:Attribute>");
    }

    /// A [`Code`] as an HL7 CE value, its code system `system` unless it names one.
    fn coded_value(
        &mut self,
        element: &str,
        code: &Code,
        system: &str,
        extra: Option<(&str, &str)>,
    ) {
        let system = code.code_system.as_deref().unwrap_or(system);
        self.hl7_value(element, &code.code, system, &code.display_name, extra);
    }

    /// An `AttributeValue` holding one HL7 CE element (attributes in the order
    /// Canonical XML sorts them, which is also the ANS examples' order).
    fn hl7_value(
        &mut self,
        element: &str,
        code: &str,
        system: &str,
        display: &str,
        extra: Option<(&str, &str)>,
    ) {
        self.both("<saml2:AttributeValue><");
        self.both(element);
        self.wire_decl(None, HL7_NS);
        if !self.hl7_default_on_root {
            self.canonical_decl(None, HL7_NS);
        }
        if self.xsi_where_used {
            self.canonical_decl(Some("xsi"), XSI_NS);
        }
        self.attr("code", code);
        self.attr("codeSystem", system);
        if let Some((name, value)) = extra {
            self.attr(name, value);
        }
        self.attr("displayName", display);
        self.both(" xsi:type=\"CE\"");
        self.wire.push_str("/>");
        self.canonical.push_str("></");
        self.canonical.push_str(element);
        self.canonical.push('>');
        self.both("</saml2:AttributeValue>");
    }
}

/// A fresh assertion ID: `_` + UUID (an NCName).
pub fn new_assertion_id() -> String {
    format!("_{}", uuid::Uuid::new_v4())
}

/// Builds the VIHF of `ctx` and signs it with `signer` (the tenant's ORG SIGN key).
/// `software` is used when the context has none. For a token placed where no namespace
/// is bound (a document of its own); [`sign_vihf_in`] for one placed in an envelope.
pub fn sign_vihf(
    ctx: &VihfContext,
    software: &SoftwareIdentity,
    signer: &dyn Signer,
    now: OffsetDateTime,
) -> Result<SignedVihf, SigningError> {
    sign_vihf_in(ctx, software, signer, now, &Scope::new())
}

/// [`sign_vihf`] for a token placed where the namespaces of `inherited` are in force
/// (in an envelope: those of `wsse:Security`). Without an InclusiveNamespaces prefix
/// list the signature does not depend on them; with one, the listed prefixes bound
/// there are part of what is signed (Exclusive XML Canonicalization renders them on
/// the assertion as Canonical XML would), so the signature verifies where it sits.
pub fn sign_vihf_in(
    ctx: &VihfContext,
    software: &SoftwareIdentity,
    signer: &dyn Signer,
    now: OffsetDateTime,
    inherited: &Scope,
) -> Result<SignedVihf, SigningError> {
    ctx.validate()?;
    let software = ctx.software.as_ref().unwrap_or(software);
    let id = new_assertion_id();
    let issuer = &signer.certificate().subject;
    let assertion = AssertionText::write(ctx, software, issuer, &id, now, inherited);
    // The namespaces in force where the signature sits: the root's.
    let scope = Scope::from([
        (Some("saml2".to_string()), SAML_NS.to_string()),
        (Some("xsi".to_string()), XSI_NS.to_string()),
    ]);
    let signature = signature_over(&assertion.canonical, &id, signer, &ctx.options, &scope)?;
    Ok(SignedVihf {
        text: assertion.signed(&signature.to_xml()),
        id,
        identity: SignedIdentity {
            structure: ctx.structure_id.clone(),
            actor_id: ctx.actor.id.clone(),
            patient: ctx.patient.to_cx(),
            purpose: ctx.purpose.code().to_string(),
        },
    })
}

/// Signs an assertion tree in place: enveloped signature inserted right after `Issuer`.
/// The tree must carry no `Signature` yet and declare every namespace it uses;
/// `inherited` holds the namespaces in force where it is placed (see [`sign_vihf_in`]).
pub(crate) fn sign_assertion(
    root: &mut Element,
    id: &str,
    signer: &dyn Signer,
    options: &VihfOptions,
    inherited: &Scope,
) -> Result<(), SigningError> {
    let transform_c14n = C14n::Exclusive {
        with_comments: false,
        inclusive_prefixes: options.inclusive_prefixes.clone(),
    };
    let canonical = canonicalize(root, inherited, &transform_c14n, None);
    let scope = crate::xml::scope_of(root, inherited);
    let signature = signature_over(&canonical, id, signer, options, &scope)?;
    // Right after Issuer (SAML 2.0 schema order: Issuer, Signature, Subject, ...).
    let issuer_index = root
        .children
        .iter()
        .position(|n| matches!(n, Node::Element(e) if e.local == "Issuer"))
        .ok_or_else(|| VihfError::Invalid("the assertion has no Issuer".into()))?;
    root.children
        .insert(issuer_index + 1, Node::Element(signature));
    Ok(())
}

/// The enveloped `Signature` of the assertion `id` whose canonical form (exclusive, with
/// `options`' prefix list, the signature left out) is `canonical`; `scope` holds the
/// namespaces in force where the signature is placed.
fn signature_over(
    canonical: &str,
    id: &str,
    signer: &dyn Signer,
    options: &VihfOptions,
    scope: &Scope,
) -> Result<Element, SigningError> {
    let digest = options.digest;
    let reference = ReferenceSpec {
        uri: format!("#{id}"),
        reference_type: None,
        transforms: vec![ENVELOPED, C14n::EXCLUSIVE.uri()],
        digest,
        digest_value: digest.digest(canonical.as_bytes()),
    };
    let mut reference_element = reference.element();
    if !options.inclusive_prefixes.is_empty() {
        add_inclusive_namespaces(&mut reference_element, &options.inclusive_prefixes);
    }
    let signed_info = Element::new(None, "SignedInfo")
        .child(
            Element::new(None, "CanonicalizationMethod").attr("Algorithm", C14n::EXCLUSIVE.uri()),
        )
        .child(Element::new(None, "SignatureMethod").attr("Algorithm", digest.rsa_signature_uri()))
        .child(reference_element);
    let scope = dsig::dsig_scope(scope);
    let value = dsig::signature_value(signer, digest, &signed_info, &scope, &C14n::EXCLUSIVE)?;
    Ok(Element::new(None, "Signature")
        .ns(None, DSIG_NS)
        .child(signed_info)
        .child(value)
        .child(dsig::key_info(signer)))
}

/// Adds `<ec:InclusiveNamespaces PrefixList=".."/>` to the exclusive-c14n transform.
fn add_inclusive_namespaces(reference: &mut Element, prefixes: &[String]) {
    for node in &mut reference.children {
        if let Node::Element(transforms) = node
            && transforms.local == "Transforms"
        {
            for t in &mut transforms.children {
                if let Node::Element(t) = t
                    && t.attribute("Algorithm") == Some(C14n::EXCLUSIVE.uri())
                {
                    t.children.push(Node::Element(
                        Element::new(Some("ec"), "InclusiveNamespaces")
                            .ns(Some("ec"), C14n::EXCLUSIVE.uri())
                            .attr("PrefixList", prefixes.join(" ")),
                    ));
                }
            }
        }
    }
}

/// Base64 of a signature or digest, for tests and tools.
pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ins_validation() {
        assert!(Ins::new("207058575627097", "1.2.250.1.213.1.4.10").is_ok());
        assert!(Ins::new("207058575627096", "1.2.250.1.213.1.4.10").is_err());
        assert!(Ins::new("207058575627097", "1.2.3").is_err());
        assert!(Ins::new("20705857562709", "1.2.250.1.213.1.4.8").is_err());
        // A one-digit key is written with its 0; a sign is not a digit.
        let nir = (2_070_585_756_270u64..)
            .find(|n| 97 - n % 97 < 10)
            .expect("a NIR with a one-digit key");
        let key = 97 - nir % 97;
        assert!(Ins::new(&format!("{nir}0{key}"), "1.2.250.1.213.1.4.10").is_ok());
        assert!(Ins::new(&format!("{nir}+{key}"), "1.2.250.1.213.1.4.10").is_err());
        let ins = Ins::new("207058575627097", "1.2.250.1.213.1.4.10").expect("valid");
        assert_eq!(
            ins.to_cx(),
            "207058575627097^^^&1.2.250.1.213.1.4.10&ISO^NH"
        );
        // Corsica: 2A counts as 19 in the key computation.
        let nir = "185022A123456";
        let key = 97 - "1850219123456".parse::<u64>().expect("digits") % 97;
        assert!(Ins::new(&format!("{nir}{key:02}"), "1.2.250.1.213.1.4.8").is_ok());
    }

    fn example() -> VihfContext {
        VihfContext::from_json(include_str!("../../examples/vihf-context.json"))
            .expect("examples/vihf-context.json")
    }

    /// Contexts that reach every branch of the writer, with markup characters in each
    /// free-text field.
    fn contexts() -> Vec<(VihfContext, SoftwareIdentity)> {
        let software = SoftwareIdentity {
            name: "LPS <&> \"é\"".into(),
            version: "1.0\t\r\n".into(),
            homologation_id: "H&1".into(),
            lps_id: None,
        };
        let mut all = vec![(example(), software.clone())];
        let mut tricky = example();
        tricky.actor.name = "Ana <b> & \"Zoé\" \r\n\t ]]> 😀".into();
        tricky.actor.id = "8999&<>".into();
        tricky.sector = "SA07&<\"^1.2.250.1.71.4.2.4".into();
        tricky.roles = vec![
            VihfRole::Automate,
            VihfRole::Professional {
                profession: Code {
                    code: "10\"&<".into(),
                    code_system: Some("1.2.3\t".into()),
                    display_name: "Méd\r\necin <>".into(),
                },
                specialty: None,
            },
        ];
        tricky.purpose = PurposeOfUse::BrisDeGlace;
        tricky.purpose_display_name = Some("\"urgent\" & <vite>".into());
        tricky.authn_class = AuthnClass::SmartcardPki;
        tricky.confidentiality = Some(Code {
            code: "R".into(),
            code_system: None,
            display_name: "restreint & secret".into(),
        });
        tricky.options.auth_mode_attribute = "Authentification_Mode&<\"".into();
        tricky.options.vihf_version = "3.0\t".into();
        let mut with_id = software.clone();
        with_id.lps_id = Some("LPS\"ID".into());
        all.push((tricky.clone(), with_id.clone()));
        // The context's own software wins over the configuration's.
        tricky.software = Some(with_id);
        all.push((tricky, software));
        all
    }

    /// The canonical form written with the wire form is exactly what Exclusive XML
    /// Canonicalization makes of the wire form once parsed, for each InclusiveNamespaces
    /// prefix list that names a prefix the assertion uses (and some that name none).
    #[test]
    fn the_canonical_form_written_is_the_canonicalization_of_the_wire_form() {
        let lists: &[&[&str]] = &[
            &[],
            &["xsi"],
            &["xs"],
            &["xs", "xsi"],
            &["ds", "saml", "#default", "xsi"],
            &["#default"],
            &["saml2"],
            &["ec", "xml"],
        ];
        let now = time::macros::datetime!(2026-12-03 21:30:00.123 UTC);
        let scope = |bindings: &[(Option<&str>, &str)]| -> Scope {
            bindings
                .iter()
                .map(|(p, u)| (p.map(str::to_string), u.to_string()))
                .collect()
        };
        // Where the token may be placed: nowhere, under a SOAP envelope in the default
        // namespace, under an envelope binding the kit's listed prefixes (and `xs` and
        // `xsi` otherwise), under HL7 as default.
        let places = [
            scope(&[]),
            scope(&[(None, "http://www.w3.org/2003/05/soap-envelope")]),
            scope(&[
                (Some("ds"), DSIG_NS),
                (Some("saml"), "urn:oasis:names:tc:SAML:2.0:assertion"),
                (Some("xs"), "urn:other&xs"),
                (Some("xsi"), "urn:other-xsi"),
            ]),
            scope(&[(None, HL7_NS), (Some("xs"), XS_NS)]),
        ];
        for (ctx, software) in contexts() {
            ctx.validate().expect("valid context");
            for (list, inherited) in lists
                .iter()
                .flat_map(|l| places.iter().map(move |p| (l, p)))
            {
                let mut ctx = ctx.clone();
                ctx.options.inclusive_prefixes = list.iter().map(|p| p.to_string()).collect();
                let software = ctx.software.clone().unwrap_or(software.clone());
                let text = AssertionText::write(
                    &ctx,
                    &software,
                    "CN=A & B, O=<x>",
                    "_id-1",
                    now,
                    inherited,
                );
                let parsed = crate::xml::parse(&text.wire).expect("the wire form parses");
                // Written as the tree's plain serializer writes (what the VIHF looked
                // like when it was built as a tree): empty elements closed with `/>`.
                assert_eq!(parsed.to_xml(), text.wire);
                let c14n = C14n::Exclusive {
                    with_comments: false,
                    inclusive_prefixes: ctx.options.inclusive_prefixes.clone(),
                };
                assert_eq!(
                    text.canonical,
                    canonicalize(&parsed, inherited, &c14n, None),
                    "prefix list {list:?}, placed under {inherited:?}"
                );
                // The signature goes right after Issuer.
                assert!(text.wire[..text.after_issuer].ends_with("</saml2:Issuer>"));
                assert!(text.wire[text.after_issuer..].starts_with("<saml2:Subject>"));
            }
        }
    }

    /// The wire form declares the namespaces where the ANS examples do, and keeps the
    /// values as given.
    #[test]
    fn the_wire_form_has_the_examples_declarations() {
        let (ctx, software) = contexts().remove(0);
        let now = time::macros::datetime!(2026-12-03 21:30:00.123 UTC);
        let text = AssertionText::write(&ctx, &software, "CN=ORG", "_id-1", now, &Scope::new());
        assert!(text.wire.starts_with(
            "<saml2:Assertion xmlns:saml2=\"urn:oasis:names:tc:SAML:2.0:assertion\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ID=\"_id-1\" \
             IssueInstant=\"2026-12-03T21:30:00.123Z\" Version=\"2.0\">"
        ));
        assert!(text.wire.contains(
            "<saml2:Attribute Name=\"Identifiant_Structure\"><saml2:AttributeValue \
             xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xsi:type=\"xs:string\">1690010012\
             </saml2:AttributeValue></saml2:Attribute>"
        ));
        assert!(text.wire.contains(
            "<saml2:AttributeValue><Role xmlns=\"urn:hl7-org:v3\" code=\"10\" \
             codeSystem=\"1.2.250.1.71.1.2.7\" displayName=\"Médecin\" xsi:type=\"CE\"/>\
             </saml2:AttributeValue>"
        ));
        assert!(
            text.wire
                .ends_with("</saml2:AttributeStatement></saml2:Assertion>")
        );
    }

    #[test]
    fn instants_have_milliseconds_and_z() {
        let t = time::macros::datetime!(2024-05-01 10:46:06.839 +02:00);
        assert_eq!(saml_instant(t), "2024-05-01T08:46:06.839Z");
        // Every field padded, across a year's end in UTC.
        let t = time::macros::datetime!(2027-01-01 00:00:00.007 +01:00);
        assert_eq!(saml_instant(t), "2026-12-31T23:00:00.007Z");
        let t = time::macros::datetime!(0999-09-09 09:09:09.099 UTC);
        assert_eq!(saml_instant(t), "0999-09-09T09:09:09.099Z");
        let t = time::macros::datetime!(-0001-01-01 00:00:00 UTC);
        assert_eq!(saml_instant(t), "-001-01-01T00:00:00.000Z");
    }
}
