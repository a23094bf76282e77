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

/// A signed assertion and its `ID`. The tree is what is placed in the envelope (no
/// second parse of the token); [`SignedVihf::xml`] serializes it.
#[derive(Debug, Clone)]
pub struct SignedVihf {
    pub id: String,
    pub assertion: Element,
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
    /// The signed assertion, serialized.
    pub fn xml(&self) -> String {
        self.assertion.to_xml()
    }
}

impl fmt::Display for SignedVihf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.xml())
    }
}

/// `2024-05-01T08:46:06.839Z`.
pub fn saml_instant(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    // Written digit by digit: `format!` with widths was 2 % of a VIHF's build.
    let mut out = String::with_capacity(24);
    let mut digits = |value: u32, width: u32, after: char| {
        for place in (0..width).rev() {
            let digit = value / 10u32.pow(place) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
        out.push(after);
    };
    // Four-digit years (the `time` crate, without its large-dates feature, has none
    // past 9999).
    digits(t.year().clamp(0, 9999) as u32, 4, '-');
    digits(u32::from(u8::from(t.month())), 2, '-');
    digits(u32::from(t.day()), 2, 'T');
    digits(u32::from(t.hour()), 2, ':');
    digits(u32::from(t.minute()), 2, ':');
    digits(u32::from(t.second()), 2, '.');
    digits(u32::from(t.millisecond()), 3, 'Z');
    out
}

fn string_value(value: &str) -> Element {
    Element::new(Some("saml2"), "AttributeValue")
        .ns(Some("xs"), XS_NS)
        .attr("xsi:type", "xs:string")
        .text(value.to_string())
}

fn hl7_value(
    name: &'static str,
    code: &str,
    system: &str,
    display: &str,
    extra: Option<(&'static str, &'static str)>,
) -> Element {
    let mut e = Element::new(None, name)
        .ns(None, HL7_NS)
        .attr("code", code.to_string())
        .attr("codeSystem", system.to_string());
    if let Some((k, v)) = extra {
        e = e.attr(k, v);
    }
    Element::new(Some("saml2"), "AttributeValue").child(
        e.attr("displayName", display.to_string())
            .attr("xsi:type", "CE"),
    )
}

fn attribute(name: &str, values: Vec<Element>) -> Element {
    let mut a = Element::new(Some("saml2"), "Attribute").attr("Name", name.to_string());
    for v in values {
        a = a.child(v);
    }
    a
}

/// The assertion without signature, in domain.md §5 order.
fn assertion(
    ctx: &VihfContext,
    software: &SoftwareIdentity,
    issuer: &str,
    id: &str,
    now: OffsetDateTime,
) -> Element {
    let instant = saml_instant(now);
    let mut roles = Vec::new();
    for role in &ctx.roles {
        match role {
            VihfRole::Professional {
                profession,
                specialty,
            } => {
                roles.push(hl7_value(
                    "Role",
                    &profession.code,
                    profession
                        .code_system
                        .as_deref()
                        .unwrap_or(PROFESSION_SYSTEM),
                    &profession.display_name,
                    None,
                ));
                if let Some(s) = specialty {
                    roles.push(hl7_value(
                        "Role",
                        &s.code,
                        s.code_system.as_deref().unwrap_or(SPECIALTY_SYSTEM),
                        &s.display_name,
                        None,
                    ));
                }
            }
            VihfRole::Automate => roles.push(hl7_value(
                "Role",
                "AUTOMATE",
                AUTOMATE_SYSTEM,
                "Automate",
                None,
            )),
        }
    }
    let purpose_display = ctx
        .purpose_display_name
        .as_deref()
        .unwrap_or(ctx.purpose.default_display());
    let mut attributes = vec![
        attribute(
            "Identifiant_Structure",
            vec![string_value(&ctx.structure_id)],
        ),
        attribute("Secteur_Activite", vec![string_value(&ctx.sector)]),
        attribute(
            "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
            vec![string_value(&ctx.actor.name)],
        ),
        attribute("urn:oasis:names:tc:xacml:2.0:subject:role", roles),
        attribute(
            "VIHF_Version",
            vec![string_value(&ctx.options.vihf_version)],
        ),
        attribute(
            &ctx.options.auth_mode_attribute,
            vec![string_value("INDIRECTE")],
        ),
        attribute(
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
            vec![string_value(&ctx.patient.to_cx())],
        ),
        attribute("Ressource_URN", vec![string_value("urn:dmp")]),
        attribute(
            "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
            vec![hl7_value(
                "PurposeOfUse",
                ctx.purpose.code(),
                PURPOSE_SYSTEM,
                purpose_display,
                Some(("codeSystemName", "mode acces VIHF 2.0")),
            )],
        ),
    ];
    if let Some(c) = &ctx.confidentiality {
        attributes.push(attribute(
            "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code",
            vec![hl7_value(
                "ConfidentialityCode",
                &c.code,
                c.code_system.as_deref().unwrap_or("1.2.250.1.213.1.1.4.13"),
                &c.display_name,
                None,
            )],
        ));
    }
    if let Some(lps_id) = &software.lps_id {
        attributes.push(attribute("LPS_ID", vec![string_value(lps_id)]));
    }
    attributes.push(attribute("LPS_Nom", vec![string_value(&software.name)]));
    attributes.push(attribute(
        "LPS_Version",
        vec![string_value(&software.version)],
    ));
    attributes.push(attribute(
        "LPS_ID_HOMOLOGATION_DMP",
        vec![string_value(&software.homologation_id)],
    ));

    let mut statement = Element::new(Some("saml2"), "AttributeStatement");
    for a in attributes {
        statement = statement.child(a);
    }
    Element::new(Some("saml2"), "Assertion")
        .ns(Some("saml2"), SAML_NS)
        .ns(Some("xsi"), XSI_NS)
        .attr("ID", id.to_string())
        .attr("IssueInstant", instant.clone())
        .attr("Version", "2.0")
        .child(
            Element::new(Some("saml2"), "Issuer")
                .attr(
                    "Format",
                    "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
                )
                .text(issuer.to_string()),
        )
        .child(
            Element::new(Some("saml2"), "Subject")
                .child(Element::new(Some("saml2"), "NameID").text(ctx.actor.id.clone())),
        )
        .child(
            Element::new(Some("saml2"), "AuthnStatement")
                .attr("AuthnInstant", instant)
                .child(Element::new(Some("saml2"), "AuthnContext").child(
                    Element::new(Some("saml2"), "AuthnContextClassRef").text(ctx.authn_class.uri()),
                )),
        )
        .child(statement)
}

/// A fresh assertion ID: `_` + UUID (an NCName).
pub fn new_assertion_id() -> String {
    format!("_{}", uuid::Uuid::new_v4())
}

/// Builds the VIHF of `ctx` and signs it with `signer` (the tenant's ORG SIGN key).
/// `software` is used when the context has none.
pub fn sign_vihf(
    ctx: &VihfContext,
    software: &SoftwareIdentity,
    signer: &dyn Signer,
    now: OffsetDateTime,
) -> Result<SignedVihf, SigningError> {
    ctx.validate()?;
    let software = ctx.software.as_ref().unwrap_or(software);
    let id = new_assertion_id();
    let mut root = assertion(ctx, software, &signer.certificate().subject, &id, now);
    sign_assertion(&mut root, &id, signer, &ctx.options)?;
    Ok(SignedVihf {
        id,
        assertion: root,
        identity: SignedIdentity {
            structure: ctx.structure_id.clone(),
            actor_id: ctx.actor.id.clone(),
            patient: ctx.patient.to_cx(),
            purpose: ctx.purpose.code().to_string(),
        },
    })
}

/// Signs an assertion tree in place: enveloped signature inserted right after `Issuer`.
/// The tree must carry no `Signature` yet and declare every namespace it uses.
pub(crate) fn sign_assertion(
    root: &mut Element,
    id: &str,
    signer: &dyn Signer,
    options: &VihfOptions,
) -> Result<(), SigningError> {
    let digest = options.digest;
    let transform_c14n = C14n::Exclusive {
        with_comments: false,
        inclusive_prefixes: options.inclusive_prefixes.clone(),
    };
    let canonical = canonicalize(root, &Scope::new(), &transform_c14n, None);
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
    let scope = dsig::dsig_scope(&crate::xml::scope_of(root, &Scope::new()));
    let value = dsig::signature_value(signer, digest, &signed_info, &scope, &C14n::EXCLUSIVE)?;
    let signature = Element::new(None, "Signature")
        .ns(None, DSIG_NS)
        .child(signed_info)
        .child(value)
        .child(dsig::key_info(signer));
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

    #[test]
    fn instants_have_milliseconds_and_z() {
        let t = time::macros::datetime!(2024-05-01 10:46:06.839 +02:00);
        assert_eq!(saml_instant(t), "2024-05-01T08:46:06.839Z");
        // Every field padded, across a year's end in UTC.
        let t = time::macros::datetime!(2027-01-01 00:00:00.007 +01:00);
        assert_eq!(saml_instant(t), "2026-12-31T23:00:00.007Z");
        let t = time::macros::datetime!(0999-09-09 09:09:09.099 UTC);
        assert_eq!(saml_instant(t), "0999-09-09T09:09:09.099Z");
    }
}
