//! Re-signing a VIHF supplied by an internal system (unsigned, or signed by someone
//! else): parsed without DTDs or entities, checked (one assertion, required attributes,
//! `INDIRECTE` mode, structure of the tenant), stripped of any signature, given the
//! signer's DN as `Issuer` and a fresh `IssueInstant`, then signed.

use passerelle_config::StructureId;
use time::OffsetDateTime;

use crate::dsig::DSIG_NS;
use crate::signer::Signer;
use crate::vihf::{SAML_NS, SignedIdentity, SignedVihf, VihfOptions, saml_instant, sign_assertion};
use std::collections::HashMap;

use crate::xml::{self, Element, Node, Scope};
use crate::{SigningError, VihfError};

/// Attributes a VIHF must carry (domain.md §5), besides the authentication mode.
pub const REQUIRED_ATTRIBUTES: [&str; 10] = [
    "Identifiant_Structure",
    "Secteur_Activite",
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
    "urn:oasis:names:tc:xacml:2.0:subject:role",
    "VIHF_Version",
    "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
    "Ressource_URN",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "LPS_Nom",
    "LPS_Version",
];

/// Both spellings seen in the field for the authentication-mode attribute.
pub const AUTH_MODE_NAMES: [&str; 2] = ["Authentification_mode", "Authentification_Mode"];

fn is_saml(e: &Element, scope: &Scope, local: &str) -> bool {
    e.local == local && xml::namespace_of(e, scope).as_deref() == Some(SAML_NS)
}

fn ns_of<'a>(e: &'a Element, ancestors: &[&'a Element]) -> Option<&'a str> {
    xml::namespace_in(e, ancestors)
}

/// Visits every element below `root` with its ancestors.
fn walk<'a>(
    e: &'a Element,
    ancestors: &mut Vec<&'a Element>,
    visit: &mut impl FnMut(&'a Element, &[&'a Element]) -> Result<(), VihfError>,
) -> Result<(), VihfError> {
    ancestors.push(e);
    for c in e.elements() {
        visit(c, ancestors)?;
        walk(c, ancestors, visit)?;
    }
    ancestors.pop();
    Ok(())
}

/// SAML elements that carry identity values: outside their place in the VIHF they
/// would be read by some processors and not by others.
const PLACED: [&str; 10] = [
    "Assertion",
    "Issuer",
    "Subject",
    "NameID",
    "AttributeStatement",
    "Attribute",
    "AttributeValue",
    "EncryptedID",
    "EncryptedAttribute",
    "EncryptedAssertion",
];

/// The VIHF's shape (domain.md §5): the assertion holds one `Issuer`, one `Subject`
/// (one `NameID`, nothing else), one `AuthnStatement`, its `AttributeStatement`s, and
/// optionally `Conditions` and its old signature; nothing else (no `Advice`, no
/// `SubjectConfirmation`, no encrypted identifiers), and no identity element anywhere
/// below `Conditions` or `AuthnStatement`. Values are read where the proxy reads them
/// and nowhere else.
fn check_shape(root: &Element) -> Result<(), VihfError> {
    let mut issuers = 0;
    let mut subjects = 0;
    let ancestors = [root];
    for c in root.elements() {
        let ns = ns_of(c, &ancestors);
        match (ns, c.local.as_ref()) {
            (Some(SAML_NS), "Issuer") => {
                issuers += 1;
                if c.elements().next().is_some() {
                    return Err(VihfError::Invalid("Issuer holds elements".into()));
                }
            }
            (Some(DSIG_NS), "Signature") => {}
            (Some(SAML_NS), "Subject") => {
                subjects += 1;
                let inner = [root, c];
                for s in c.elements() {
                    if !(ns_of(s, &inner) == Some(SAML_NS) && s.local == "NameID") {
                        return Err(VihfError::Invalid(format!(
                            "Subject holds {:?}: a VIHF's Subject holds its NameID only",
                            s.local.as_ref()
                        )));
                    }
                }
            }
            (Some(SAML_NS), "AttributeStatement") => {}
            (Some(SAML_NS), "Conditions" | "AuthnStatement") => {
                let mut stack = vec![root];
                walk(c, &mut stack, &mut |e, anc| {
                    if ns_of(e, anc) == Some(SAML_NS) && PLACED.contains(&e.local.as_ref()) {
                        return Err(VihfError::Invalid(format!(
                            "{} holds a {:?} element: identity elements have one place in a VIHF",
                            c.local.as_ref(),
                            e.local.as_ref()
                        )));
                    }
                    Ok(())
                })?;
            }
            (_, other) => {
                return Err(VihfError::Invalid(format!(
                    "the assertion holds {other:?}: a VIHF holds Issuer, Subject, AuthnStatement, AttributeStatement (and Conditions) only"
                )));
            }
        }
    }
    if issuers == 0 {
        return Err(VihfError::MissingIssuer);
    }
    if issuers != 1 {
        return Err(VihfError::AmbiguousAttribute {
            name: "Issuer".into(),
            found: format!("{issuers} Issuer elements"),
        });
    }
    if subjects != 1 {
        return Err(VihfError::AmbiguousAttribute {
            name: "Subject".into(),
            found: format!("{subjects} Subject elements"),
        });
    }
    Ok(())
}

/// Longest `Subject/NameID` accepted (an RPPS or ADELI id with its type prefix is 12).
const MAX_NAME_ID: usize = 64;

/// XML white space only: `str::trim` would also drop U+00A0 and others, and the proxy
/// would check a value other than the one it signs.
fn xml_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r'])
}

/// Attributes whose value is an HL7 coded element (read by its `code`).
const CODED: [&str; 3] = [
    "urn:oasis:names:tc:xacml:2.0:subject:role",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code",
];

/// Attributes whose single value the proxy reads or vouches for: each must occur at most
/// once (one `Attribute` of that Name in all `AttributeStatement`s) with exactly one
/// value. A second `Identifiant_Structure` would otherwise let a structure the proxy
/// never checked be signed with the tenant's key.
const SINGLE_VALUED: [&str; 14] = [
    "Identifiant_Structure",
    "Secteur_Activite",
    "urn:oasis:names:tc:xspa:1.0:subject:subject-id",
    "VIHF_Version",
    "Authentification_mode",
    "Authentification_Mode",
    "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
    "Ressource_URN",
    "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse",
    "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code",
    "LPS_ID",
    "LPS_Nom",
    "LPS_Version",
    "LPS_ID_HOMOLOGATION_DMP",
];

/// The values of every SAML attribute, by Name, read by namespace and name only:
/// `saml:AttributeStatement/saml:Attribute/saml:AttributeValue`. Anything else inside a
/// statement or an attribute is refused, so that no reader, however it looks for the
/// values, can find one the proxy did not check. A string value has text only; a coded
/// value (role, purpose of use, confidentiality) is one HL7 element and no text.
fn attribute_values(root: &Element) -> Result<HashMap<String, Vec<String>>, VihfError> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for statement in root
        .elements()
        .filter(|e| e.local == "AttributeStatement" && ns_of(e, &[root]) == Some(SAML_NS))
    {
        let st = [root, statement];
        for attr in statement.elements() {
            if !(attr.local == "Attribute" && ns_of(attr, &st) == Some(SAML_NS)) {
                return Err(VihfError::Invalid(format!(
                    "AttributeStatement holds {:?}: only saml:Attribute elements are allowed",
                    attr.local.as_ref()
                )));
            }
            let name = attr.attribute("Name").unwrap_or_default().to_string();
            let coded = CODED.contains(&name.as_str());
            let at = [root, statement, attr];
            let mut values = Vec::new();
            for v in attr.elements() {
                if !(v.local == "AttributeValue" && ns_of(v, &at) == Some(SAML_NS)) {
                    return Err(VihfError::Invalid(format!(
                        "attribute {name:?} holds {:?}: only saml:AttributeValue elements are allowed",
                        v.local.as_ref()
                    )));
                }
                let children: Vec<&Element> = v.elements().collect();
                let raw = v.text_content();
                let text = xml_trim(&raw).to_string();
                let value = match (coded, children.as_slice()) {
                    (false, []) if text != raw => {
                        return Err(padded(&format!("attribute {name:?}"), &text));
                    }
                    (false, []) => text,
                    (true, [code]) if text.is_empty() && code.elements().next().is_none() => {
                        let inner = [root, statement, attr, v];
                        if ns_of(code, &inner) != Some(crate::vihf::HL7_NS) {
                            return Err(VihfError::Invalid(format!(
                                "attribute {name:?}: the coded value must be an HL7 v3 element (urn:hl7-org:v3)"
                            )));
                        }
                        code.attribute("code").unwrap_or_default().to_string()
                    }
                    (false, _) => {
                        return Err(VihfError::Invalid(format!(
                            "attribute {name:?}: a string value holds text only, no element"
                        )));
                    }
                    (true, _) => {
                        return Err(VihfError::Invalid(format!(
                            "attribute {name:?}: a coded value is exactly one HL7 element and no text"
                        )));
                    }
                };
                values.push(value);
            }
            match out.get_mut(&name) {
                Some(existing) => {
                    if SINGLE_VALUED.contains(&name.as_str()) {
                        return Err(VihfError::AmbiguousAttribute {
                            name,
                            found: "two Attribute elements".into(),
                        });
                    }
                    existing.extend(values);
                }
                None => {
                    out.insert(name, values);
                }
            }
        }
    }
    for (name, values) in &out {
        if SINGLE_VALUED.contains(&name.as_str()) && values.len() != 1 {
            return Err(VihfError::AmbiguousAttribute {
                name: name.clone(),
                found: format!("{} values", values.len()),
            });
        }
    }
    Ok(out)
}

/// The text of the single `saml:Subject/saml:NameID`.
fn subject_name_id(root: &Element, scope: &Scope) -> Result<String, VihfError> {
    let subjects: Vec<&Element> = root
        .elements()
        .filter(|e| is_saml(e, scope, "Subject"))
        .collect();
    let [subject] = subjects.as_slice() else {
        return Err(VihfError::AmbiguousAttribute {
            name: "Subject".into(),
            found: format!("{} Subject elements", subjects.len()),
        });
    };
    let inner = xml::scope_of(subject, scope);
    let ids: Vec<&Element> = subject
        .elements()
        .filter(|e| is_saml(e, &inner, "NameID"))
        .collect();
    match ids.as_slice() {
        [id] if id.elements().next().is_some() => Err(VihfError::Invalid(
            "Subject/NameID holds elements: its value is text only".into(),
        )),
        [id] if !xml_trim(&id.text_content()).is_empty() => {
            let raw = id.text_content();
            let text = xml_trim(&raw);
            if text != raw {
                return Err(padded("Subject/NameID", text));
            }
            Ok(text.to_string())
        }
        [_] => Err(VihfError::MissingAttribute("Subject/NameID".into())),
        other => Err(VihfError::AmbiguousAttribute {
            name: "Subject/NameID".into(),
            found: format!("{} NameID elements", other.len()),
        }),
    }
}

/// Checks and re-signs `xml_text`. `owns` says whether a structure belongs to the tenant
/// whose key signs (its legal entity or one of its geographic entities). For a token
/// placed where no namespace is bound; [`resign_vihf_in`] for one placed in an envelope.
pub fn resign_vihf(
    xml_text: &str,
    owns: impl Fn(&StructureId) -> bool,
    signer: &dyn Signer,
    options: &VihfOptions,
    now: OffsetDateTime,
) -> Result<SignedVihf, SigningError> {
    resign_vihf_in(xml_text, owns, signer, options, now, &Scope::new())
}

/// [`resign_vihf`] for a token placed where the namespaces of `inherited` are in force
/// (see [`crate::vihf::sign_vihf_in`]).
pub fn resign_vihf_in(
    xml_text: &str,
    owns: impl Fn(&StructureId) -> bool,
    signer: &dyn Signer,
    options: &VihfOptions,
    now: OffsetDateTime,
    inherited: &Scope,
) -> Result<SignedVihf, SigningError> {
    let mut root = xml::parse(xml_text).map_err(VihfError::Xml)?;
    let scope = xml::scope_of(&root, &Scope::new());
    if !is_saml(&root, &Scope::new(), "Assertion") {
        return Err(VihfError::NotAnAssertion.into());
    }
    let mut assertions = 1;
    walk(&root, &mut Vec::new(), &mut |e, anc| {
        if e.local == "Assertion" && ns_of(e, anc) == Some(SAML_NS) {
            assertions += 1;
        }
        Ok(())
    })?;
    if assertions != 1 {
        return Err(VihfError::AssertionCount(assertions).into());
    }
    let id = root.attribute("ID").unwrap_or_default().to_string();
    if !is_ncname(&id) {
        return Err(VihfError::Invalid(format!(
            "Assertion ID {id:?} is not an NCName (e.g. _ + UUID)"
        ))
        .into());
    }
    // Drop the assertion's own signature; a signature anywhere else is refused.
    root.children.retain(|n| {
        !matches!(n, Node::Element(e) if e.local == "Signature" && xml::namespace_of(e, &scope).as_deref() == Some(DSIG_NS))
    });
    let mut nested_signature = false;
    walk(&root, &mut Vec::new(), &mut |e, anc| {
        nested_signature |= e.local == "Signature" && ns_of(e, anc) == Some(DSIG_NS);
        Ok(())
    })?;
    if nested_signature {
        return Err(VihfError::Invalid("a Signature is nested inside the assertion".into()).into());
    }
    check_namespace_names(&root)?;
    check_shape(&root)?;
    let values = attribute_values(&root)?;
    let value = |name: &str| values.get(name).and_then(|v| v.first()).map(String::as_str);
    for name in REQUIRED_ATTRIBUTES {
        if value(name).is_none_or(|v| xml_trim(v).is_empty()) {
            return Err(VihfError::MissingAttribute(name.to_string()).into());
        }
    }
    let modes: Vec<&str> = AUTH_MODE_NAMES.iter().filter_map(|n| value(n)).collect();
    let mode = match modes.as_slice() {
        [one] => *one,
        [] => return Err(VihfError::MissingAttribute(AUTH_MODE_NAMES[0].to_string()).into()),
        _ => {
            return Err(VihfError::AmbiguousAttribute {
                name: AUTH_MODE_NAMES.join(" / "),
                found: "both spellings".into(),
            }
            .into());
        }
    };
    let actor_id = subject_name_id(&root, &scope)?;
    if actor_id.chars().count() > MAX_NAME_ID {
        return Err(VihfError::Invalid(format!(
            "Subject/NameID is longer than {MAX_NAME_ID} characters: a national professional id is expected"
        ))
        .into());
    }
    // The patient is an INS the DMP can resolve: the proxy vouches for it and audits it.
    let patient = value("urn:oasis:names:tc:xacml:2.0:resource:resource-id")
        .unwrap_or_default()
        .to_string();
    crate::vihf::Ins::from_cx(&patient).map_err(|e| {
        VihfError::Invalid(format!(
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id: {e}"
        ))
    })?;
    let purpose = value("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse")
        .unwrap_or_default()
        .to_string();
    if mode != "INDIRECTE" {
        return Err(VihfError::NotIndirect(mode.to_string()).into());
    }
    let structure_text = value("Identifiant_Structure").unwrap_or_default();
    let structure: StructureId = structure_text
        .parse()
        .map_err(|e| VihfError::Invalid(format!("Identifiant_Structure: {e}")))?;
    if !owns(&structure) {
        return Err(VihfError::ForeignStructure(structure.to_string()).into());
    }
    check_authn_instant(&root, &scope, options, now)?;
    // The proxy issues the token: its signing certificate's DN, now.
    let issuer = root
        .children
        .iter_mut()
        .find_map(|n| match n {
            Node::Element(e) if is_saml(e, &scope, "Issuer") => Some(e),
            _ => None,
        })
        .ok_or(VihfError::MissingIssuer)?;
    issuer.children = vec![Node::Text(signer.certificate().subject.clone().into())];
    // Only the Format the proxy vouches for: no NameQualifier or SPProvidedID of the SIH's.
    issuer.attributes = vec![xml::Attribute {
        prefix: None,
        local: "Format".into(),
        value: "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName".into(),
    }];
    root.attributes
        .retain(|a| !(a.prefix.is_none() && a.local == "IssueInstant"));
    root.attributes.push(xml::Attribute {
        prefix: None,
        local: "IssueInstant".into(),
        value: saml_instant(now).into(),
    });
    sign_assertion(&mut root, &id, signer, options, inherited)?;
    Ok(SignedVihf {
        id,
        text: root.to_xml(),
        identity: SignedIdentity {
            structure: structure.to_string(),
            actor_id,
            patient,
            purpose,
        },
    })
}

/// How far in the future an `AuthnInstant` may be (clocks of the internal system and of
/// the proxy differ a little).
const AUTHN_CLOCK_SKEW: time::Duration = time::Duration::seconds(60);

/// The token keeps the internal system's `AuthnInstant` (when the user logged in) while
/// `IssueInstant` becomes now: only a recent login, not one in the future, may be vouched for.
fn check_authn_instant(
    root: &Element,
    scope: &Scope,
    options: &VihfOptions,
    now: OffsetDateTime,
) -> Result<(), VihfError> {
    let statements: Vec<&Element> = root
        .elements()
        .filter(|e| is_saml(e, scope, "AuthnStatement"))
        .collect();
    let [statement] = statements.as_slice() else {
        return Err(VihfError::Invalid(format!(
            "exactly one AuthnStatement (with AuthnInstant) is required, found {}",
            statements.len()
        )));
    };
    let value = statement
        .attribute("AuthnInstant")
        .ok_or_else(|| VihfError::Invalid("AuthnStatement has no AuthnInstant".into()))?;
    let instant = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| VihfError::Invalid(format!("AuthnInstant {value:?} is not an xs:dateTime")))?;
    let max =
        time::Duration::seconds(i64::try_from(options.max_authn_age_secs).unwrap_or(i64::MAX));
    if instant > now + AUTHN_CLOCK_SKEW {
        return Err(VihfError::Invalid(format!(
            "AuthnInstant {value} is in the future (now {})",
            saml_instant(now)
        )));
    }
    if now - instant > max {
        return Err(VihfError::Invalid(format!(
            "AuthnInstant {value} is {} min old, older than dmp.signing.max_authn_age ({} min): the user must log in again",
            (now - instant).whole_minutes(),
            max.whole_minutes()
        )));
    }
    Ok(())
}

/// A value with white space around it: refused rather than trimmed, because the audit
/// trail records the values signed, and the assertion signed is the one received.
fn padded(what: &str, value: &str) -> VihfError {
    VihfError::Invalid(format!(
        "{what}: white space around the value {value:?}; send the value alone (what is signed is what the audit trail records)"
    ))
}

/// Every namespace declared in the assertion names an absolute URI (or undeclares the
/// default), as libxml2 reads URIs. Canonical XML fails on a relative or malformed
/// namespace name: libxml2, hence libxmlsec1 and the DMP, refuse to canonicalise it, so
/// a signature over it could never be verified. The check is libxml2's own URI parser
/// (a hand-written RFC 3986 reading let `XML[chema` through, which libxml2 refuses). (The fuzzer's `vihf` target found one: `xmlns:saml=
/// "1.2.250.1.71.1.2.7"`, an OID where a URI belongs.)
fn check_namespace_names(root: &Element) -> Result<(), VihfError> {
    let mut bad: Option<String> = None;
    let mut visit = |e: &Element| {
        if bad.is_some() {
            return;
        }
        if let Some((prefix, uri)) = e
            .namespaces
            .iter()
            .find(|(_, uri)| !uri.is_empty() && !crate::verify::is_absolute_uri(uri))
        {
            bad = Some(format!(
                "namespace {} = {uri:?} on element {:?} is not an absolute URI: Canonical XML (hence the VIHF signature) cannot cover it",
                prefix
                    .as_deref()
                    .map_or_else(|| "xmlns".to_string(), |p| format!("xmlns:{p}")),
                e.local.as_ref()
            ));
        }
    };
    visit(root);
    walk(root, &mut Vec::new(), &mut |e, _| {
        visit(e);
        Ok(())
    })?;
    bad.map_or(Ok(()), |reason| Err(VihfError::Invalid(reason)))
}

fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
