//! Re-signing a VIHF supplied by an internal system (unsigned, or signed by someone
//! else): parsed without DTDs or entities, checked (one assertion, required attributes,
//! `INDIRECTE` mode, structure of the tenant), stripped of any signature, given the
//! signer's DN as `Issuer` and a fresh `IssueInstant`, then signed.

use passerelle_config::StructureId;
use time::OffsetDateTime;

use crate::dsig::DSIG_NS;
use crate::signer::Signer;
use crate::vihf::{SAML_NS, SignedVihf, VihfOptions, saml_instant, sign_assertion};
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

fn count_assertions(e: &Element, scope: &Scope) -> usize {
    let inner = xml::scope_of(e, scope);
    usize::from(is_saml(e, scope, "Assertion"))
        + e.elements()
            .map(|c| count_assertions(c, &inner))
            .sum::<usize>()
}

fn has_signature_below(e: &Element, scope: &Scope) -> bool {
    let inner = xml::scope_of(e, scope);
    e.elements().any(|c| {
        (c.local == "Signature" && xml::namespace_of(c, &inner).as_deref() == Some(DSIG_NS))
            || has_signature_below(c, &inner)
    })
}

/// First value (text, or `code` of a coded value) of each attribute, by name.
fn attribute_values(root: &Element, scope: &Scope) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for statement in root
        .elements()
        .filter(|e| is_saml(e, scope, "AttributeStatement"))
    {
        let st_scope = xml::scope_of(statement, scope);
        for attr in statement
            .elements()
            .filter(|e| is_saml(e, &st_scope, "Attribute"))
        {
            let name = attr.attribute("Name").unwrap_or_default().to_string();
            let value = attr
                .elements()
                .find(|v| v.local == "AttributeValue")
                .map(|v| match v.elements().next() {
                    Some(coded) => coded.attribute("code").unwrap_or_default().to_string(),
                    None => v.text_content(),
                })
                .unwrap_or_default();
            out.push((name, value));
        }
    }
    out
}

/// Checks and re-signs `xml_text`. `owns` says whether a structure belongs to the tenant
/// whose key signs (its legal entity or one of its geographic entities).
pub fn resign_vihf(
    xml_text: &str,
    owns: impl Fn(&StructureId) -> bool,
    signer: &dyn Signer,
    options: &VihfOptions,
    now: OffsetDateTime,
) -> Result<SignedVihf, SigningError> {
    let mut root = xml::parse(xml_text).map_err(VihfError::Xml)?;
    let scope = xml::scope_of(&root, &Scope::new());
    if !is_saml(&root, &Scope::new(), "Assertion") {
        return Err(VihfError::NotAnAssertion.into());
    }
    let assertions = count_assertions(&root, &Scope::new());
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
    if has_signature_below(&root, &Scope::new()) {
        return Err(VihfError::Invalid("a Signature is nested inside the assertion".into()).into());
    }
    let values = attribute_values(&root, &scope);
    let value = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    for name in REQUIRED_ATTRIBUTES {
        if value(name).is_none_or(|v| v.trim().is_empty()) {
            return Err(VihfError::MissingAttribute(name.to_string()).into());
        }
    }
    let mode = AUTH_MODE_NAMES
        .iter()
        .find_map(|n| value(n))
        .ok_or_else(|| VihfError::MissingAttribute(AUTH_MODE_NAMES[0].to_string()))?;
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
    if let Some(a) = root
        .attributes
        .iter_mut()
        .find(|a| a.prefix.is_none() && a.local == "IssueInstant")
    {
        a.value = saml_instant(now).into();
    }
    sign_assertion(&mut root, &id, signer, options)?;
    Ok(SignedVihf {
        id,
        xml: root.to_xml(),
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

fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
