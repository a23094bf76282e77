//! SOAP envelopes: parsing (through the signing crate's DTD-refusing parser), header
//! and body access, standalone serialization of a nested element (for XSD validation), and
//! SOAP 1.2 faults.

use passerelle_signing::xml::{self, Element, Node, Scope};

pub const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
pub const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const WSA: &str = "http://www.w3.org/2005/08/addressing";

/// Why a message is not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0}")]
    Xml(#[from] xml::XmlError),
    #[error("the root element is not a SOAP 1.2 (or 1.1) Envelope")]
    NotAnEnvelope,
    #[error("the SOAP Envelope has no Body")]
    MissingBody,
    #[error("the SOAP Envelope has more than one Body")]
    DuplicateBody,
    #[error("the SOAP Envelope has more than one Header")]
    DuplicateHeader,
    #[error("the SOAP Header comes after the Body")]
    HeaderAfterBody,
    #[error("the SOAP Envelope may only hold a Header then a Body, found element {0}")]
    UnexpectedElement(String),
    #[error("the SOAP Envelope holds text {0:?} outside its Header and Body")]
    UnexpectedText(String),
}

/// A parsed envelope (SOAP 1.2, or 1.1 tolerated).
#[derive(Debug)]
pub struct Envelope {
    pub root: Element,
    pub soap_ns: &'static str,
    root_scope: Scope,
}

fn is(e: &Element, scope: &Scope, ns: &str, local: &str) -> bool {
    e.local == local && xml::namespace_of(e, scope).as_deref() == Some(ns)
}

/// XML's white space (not Unicode's: a no-break space is text).
fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The Envelope's children must be an optional `Header` then one `Body`, in its own SOAP
/// namespace, with only whitespace and comments around them: a second Body or Header, a
/// Header after the Body, or anything else (SOAP 1.1's trailing elements included) is
/// refused, since which one a receiver reads is not defined.
fn check_children(root: &Element, scope: &Scope, soap_ns: &str) -> Result<(), EnvelopeError> {
    let (mut header, mut body) = (false, false);
    for node in &root.children {
        match node {
            Node::Comment(_) => {}
            Node::Text(t) if t.chars().all(is_xml_space) => {}
            Node::Text(t) => {
                return Err(EnvelopeError::UnexpectedText(
                    t.trim_matches(is_xml_space).chars().take(40).collect(),
                ));
            }
            Node::Element(e) if is(e, scope, soap_ns, "Header") => {
                if body {
                    return Err(EnvelopeError::HeaderAfterBody);
                }
                if header {
                    return Err(EnvelopeError::DuplicateHeader);
                }
                header = true;
            }
            Node::Element(e) if is(e, scope, soap_ns, "Body") => {
                if body {
                    return Err(EnvelopeError::DuplicateBody);
                }
                body = true;
            }
            Node::Element(e) => {
                let ns = xml::namespace_of(e, scope).unwrap_or_default();
                return Err(EnvelopeError::UnexpectedElement(format!(
                    "{{{ns}}}{}",
                    e.local
                )));
            }
        }
    }
    if body {
        Ok(())
    } else {
        Err(EnvelopeError::MissingBody)
    }
}

impl Envelope {
    /// Parses an envelope: the root must be a SOAP 1.2 (or 1.1) `Envelope` holding an
    /// optional `Header` then exactly one `Body`, and nothing else.
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        let root = xml::parse(text.trim_start_matches('\u{feff}'))?;
        let root_scope = xml::scope_of(&root, &Scope::new());
        let soap_ns = [SOAP12, SOAP11]
            .into_iter()
            .find(|ns| is(&root, &Scope::new(), ns, "Envelope"))
            .ok_or(EnvelopeError::NotAnEnvelope)?;
        check_children(&root, &root_scope, soap_ns)?;
        Ok(Self {
            root,
            soap_ns,
            root_scope,
        })
    }

    fn part(&self, local: &str) -> Option<(&Element, Scope)> {
        self.root
            .elements()
            .find(|e| is(e, &self.root_scope, self.soap_ns, local))
            .map(|e| (e, xml::scope_of(e, &self.root_scope)))
    }

    /// The `Header` element and the scope it sits in.
    pub fn header_element(&self) -> Option<(&Element, Scope)> {
        self.part("Header")
            .map(|(h, _)| (h, self.root_scope.clone()))
    }

    /// The first header block named `(ns, local)`.
    pub fn header(&self, ns: &str, local: &str) -> Option<(&Element, Scope)> {
        let (header, scope) = self.part("Header")?;
        header
            .elements()
            .find(|e| is(e, &scope, ns, local))
            .map(|e| (e, scope.clone()))
    }

    /// How many header blocks are named `(ns, local)`.
    pub fn header_count(&self, ns: &str, local: &str) -> usize {
        self.part("Header").map_or(0, |(header, scope)| {
            header
                .elements()
                .filter(|e| is(e, &scope, ns, local))
                .count()
        })
    }

    /// Text of a header block (`wsa:Action`, `wsa:MessageID`).
    pub fn header_text(&self, ns: &str, local: &str) -> Option<String> {
        self.header(ns, local)
            .map(|(e, _)| e.text_content().trim().to_string())
    }

    /// The body's first element and the scope it sits in.
    pub fn body_element(&self) -> Option<(&Element, Scope)> {
        let (body, scope) = self.part("Body")?;
        body.elements().next().map(|e| (e, scope))
    }

    /// How many elements the Body holds (a document/literal operation has exactly one).
    pub fn body_element_count(&self) -> usize {
        self.part("Body")
            .map_or(0, |(body, _)| body.elements().count())
    }

    /// Namespace URI of the body's first element and its local name.
    pub fn body_name(&self) -> Option<(String, String)> {
        let (e, scope) = self.body_element()?;
        Some((xml::namespace_of(e, &scope)?, e.local.to_string()))
    }
}

/// `e` serialized on its own, with every namespace in force where it sits declared on it.
pub fn standalone(e: &Element, scope: &Scope) -> String {
    let mut copy = e.clone();
    for (prefix, uri) in scope {
        if !copy
            .namespaces
            .iter()
            .any(|(p, _)| p.as_deref() == prefix.as_deref())
        {
            copy.namespaces
                .push((prefix.clone().map(Into::into), uri.clone().into()));
        }
    }
    copy.to_xml()
}

/// SOAP 1.2 fault code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCode {
    Sender,
    Receiver,
}

/// A SOAP 1.2 fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub code: FaultCode,
    /// Subcode value as (namespace, prefix, local).
    pub subcode: Option<(&'static str, &'static str, String)>,
    pub reason: String,
    pub detail: Option<Element>,
}

/// Serializes a SOAP 1.2 envelope with `header` blocks and one body element.
pub fn envelope(header: Vec<Element>, body: Element) -> String {
    let mut h = Element::new(Some("soap"), "Header");
    for block in header {
        h = h.child(block);
    }
    let mut env = Element::new(Some("soap"), "Envelope").ns(Some("soap"), SOAP12);
    if !h.children.is_empty() {
        env = env.child(h);
    }
    env.child(Element::new(Some("soap"), "Body").child(body))
        .to_xml()
}

/// The fault as a SOAP 1.2 envelope.
pub fn fault_envelope(f: &Fault) -> String {
    let code = match f.code {
        FaultCode::Sender => "soap:Sender",
        FaultCode::Receiver => "soap:Receiver",
    };
    let mut code_el =
        Element::new(Some("soap"), "Code").child(Element::new(Some("soap"), "Value").text(code));
    if let Some((ns, prefix, local)) = &f.subcode {
        let mut value = Element::new(Some("soap"), "Value").text(format!("{prefix}:{local}"));
        value
            .namespaces
            .push((Some((*prefix).into()), (*ns).into()));
        code_el = code_el.child(Element::new(Some("soap"), "Subcode").child(value));
    }
    let mut fault = Element::new(Some("soap"), "Fault").child(code_el).child(
        Element::new(Some("soap"), "Reason").child(
            Element::new(Some("soap"), "Text")
                .attr("xml:lang", "fr")
                .text(f.reason.clone()),
        ),
    );
    if let Some(detail) = &f.detail {
        fault = fault.child(Element::new(Some("soap"), "Detail").child(detail.clone()));
    }
    envelope(vec![], fault)
}

/// Text content of the first descendant named `local` (any namespace).
pub fn find_text(e: &Element, local: &str) -> Option<String> {
    if e.local == local {
        return Some(e.text_content());
    }
    e.children.iter().find_map(|n| match n {
        Node::Element(c) => find_text(c, local),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_body_access_in_both_versions() {
        for ns in [SOAP12, SOAP11] {
            let text = format!(
                r#"<s:Envelope xmlns:s="{ns}" xmlns:wsa="{WSA}" xmlns:q="urn:q"><s:Header><wsa:Action>urn:a</wsa:Action></s:Header><s:Body><q:Req><q:X>1</q:X></q:Req></s:Body></s:Envelope>"#
            );
            let env = Envelope::parse(&text).expect("parse");
            assert_eq!(env.soap_ns, ns);
            assert_eq!(env.header_text(WSA, "Action").as_deref(), Some("urn:a"));
            assert_eq!(env.body_name(), Some(("urn:q".into(), "Req".into())));
            let (body, scope) = env.body_element().expect("body");
            let alone = standalone(body, &scope);
            assert!(
                alone.starts_with("<q:Req") && alone.contains("xmlns:q=\"urn:q\""),
                "{alone}"
            );
        }
        assert!(Envelope::parse("<x/>").is_err());
        assert!(Envelope::parse("<!DOCTYPE x><x/>").is_err());
    }

    #[test]
    fn envelope_children_are_one_optional_header_then_one_body() {
        let env = |inner: &str| {
            Envelope::parse(&format!(
                r#"<s:Envelope xmlns:s="{SOAP12}" xmlns:q="urn:q">{inner}</s:Envelope>"#
            ))
        };
        let h = "<s:Header><q:H/></s:Header>";
        let b = "<s:Body><q:Req/></s:Body>";
        env(&format!("{h}{b}")).expect("header then body");
        env(b).expect("body alone");
        env(&format!("\n  <!-- c -->\n  {h}\r\n\t{b}\n")).expect("whitespace and comments");
        let cases = [
            (format!("{h}{b}{b}"), EnvelopeError::DuplicateBody),
            (format!("{h}{h}{b}"), EnvelopeError::DuplicateHeader),
            (format!("{b}{h}"), EnvelopeError::HeaderAfterBody),
            (h.to_string(), EnvelopeError::MissingBody),
            (String::new(), EnvelopeError::MissingBody),
            (
                format!("{h}{b}<q:Trailer/>"),
                EnvelopeError::UnexpectedElement("{urn:q}Trailer".into()),
            ),
            (
                format!("{h}<q:Between/>{b}"),
                EnvelopeError::UnexpectedElement("{urn:q}Between".into()),
            ),
            // A Body of the other SOAP version is not this envelope's Body.
            (
                format!(r#"{h}<b:Body xmlns:b="{SOAP11}"><q:Req/></b:Body>"#),
                EnvelopeError::UnexpectedElement(format!("{{{SOAP11}}}Body")),
            ),
            (
                format!("{h} text {b}"),
                EnvelopeError::UnexpectedText("text".into()),
            ),
            (
                format!("{h}{b}&#160;"),
                EnvelopeError::UnexpectedText("\u{a0}".into()),
            ),
        ];
        for (inner, expected) in cases {
            assert_eq!(env(&inner).expect_err(&inner), expected, "{inner}");
        }
        assert_eq!(
            EnvelopeError::HeaderAfterBody.to_string(),
            "the SOAP Header comes after the Body"
        );
    }

    #[test]
    fn fault_is_soap12_with_subcode() {
        let f = fault_envelope(&Fault {
            code: FaultCode::Sender,
            subcode: Some(("urn:siram", "siram", "siram_30".into())),
            reason: "Niveau d'accès insuffisant".into(),
            detail: None,
        });
        assert!(f.contains("<soap:Value>soap:Sender</soap:Value>"));
        assert!(f.contains("<soap:Value xmlns:siram=\"urn:siram\">siram:siram_30</soap:Value>"));
        assert!(f.contains("xml:lang=\"fr\""));
        xml::parse(&f).expect("well-formed");
    }
}
