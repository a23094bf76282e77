//! A small XML element tree for the structures the proxy signs, with:
//!
//! - a plain serializer (what goes on the wire),
//! - Canonical XML 1.0 (inclusive, with or without comments) and Exclusive XML
//!   Canonicalization 1.0 (with an optional InclusiveNamespaces prefix list) over any
//!   subtree, optionally leaving one element out (the enveloped-signature transform),
//! - a parser for foreign XML (a VIHF supplied by an internal system) that refuses DTDs,
//!   entity declarations and processing instructions instead of expanding them.
//!
//! Generated structures are written straight into this tree and canonicalised here, so
//! the hot path never goes through libxml; libxmlsec1 verifies the result in tests.
//! Text content uses no whitespace-only nodes unless the source had them.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// The XML namespace, bound to `xml` without declaration.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    Comment(String),
}

/// An element: qualified name, namespace declarations, attributes, children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Prefix of the element name (`None`: default namespace).
    pub prefix: Option<String>,
    pub local: String,
    /// Declarations on this element: prefix (`None` = default) and URI (`""` undeclares).
    pub namespaces: Vec<(Option<String>, String)>,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub prefix: Option<String>,
    pub local: String,
    pub value: String,
}

/// Why foreign XML was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    #[error(
        "a DTD (<!DOCTYPE ...>) is not allowed: entities and external references are never expanded"
    )]
    Dtd,
    #[error("processing instructions are not allowed inside the document")]
    ProcessingInstruction,
    #[error("the document has no root element")]
    NoRoot,
    #[error("content after the root element")]
    TrailingContent,
    #[error("prefix {0:?} is not declared")]
    UndeclaredPrefix(String),
    #[error("the document nests deeper than {0} elements")]
    TooDeep(usize),
}

/// Most nesting accepted in foreign XML (a VIHF is about 6 deep).
const MAX_DEPTH: usize = 64;

impl Element {
    /// A new element `prefix:local` (or unprefixed with `prefix = None`).
    pub fn new(prefix: Option<&str>, local: &str) -> Self {
        Self {
            prefix: prefix.map(str::to_string),
            local: local.to_string(),
            ..Self::default()
        }
    }

    /// Declares a namespace on this element.
    pub fn ns(mut self, prefix: Option<&str>, uri: &str) -> Self {
        self.namespaces
            .push((prefix.map(str::to_string), uri.to_string()));
        self
    }

    /// Adds an attribute, optionally prefixed (`xsi:type`).
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        let (prefix, local) = match name.split_once(':') {
            Some((p, l)) => (Some(p.to_string()), l.to_string()),
            None => (None, name.to_string()),
        };
        self.attributes.push(Attribute {
            prefix,
            local,
            value: value.into(),
        });
        self
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// The value of an unprefixed attribute.
    pub fn attribute(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.prefix.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Child elements.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// Concatenated text of the direct children.
    pub fn text_content(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Plain serialization, declarations as written.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.write_plain(&mut out);
        out
    }

    fn write_plain(&self, out: &mut String) {
        out.push('<');
        push_qname(out, self.prefix.as_deref(), &self.local);
        for (prefix, uri) in &self.namespaces {
            push_ns_decl(out, prefix.as_deref(), uri);
        }
        for a in &self.attributes {
            out.push(' ');
            push_qname(out, a.prefix.as_deref(), &a.local);
            out.push_str("=\"");
            escape_attr(out, &a.value);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_plain(out),
                Node::Text(t) => escape_text(out, t),
                Node::Comment(c) => {
                    out.push_str("<!--");
                    out.push_str(c);
                    out.push_str("-->");
                }
            }
        }
        out.push_str("</");
        push_qname(out, self.prefix.as_deref(), &self.local);
        out.push('>');
    }
}

fn push_qname(out: &mut String, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(local);
}

fn push_ns_decl(out: &mut String, prefix: Option<&str>, uri: &str) {
    match prefix {
        Some(p) => {
            out.push_str(" xmlns:");
            out.push_str(p);
        }
        None => out.push_str(" xmlns"),
    }
    out.push_str("=\"");
    escape_attr(out, uri);
    out.push('"');
}

/// Text escaping of Canonical XML (also fine for plain output).
pub fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

/// Attribute escaping of Canonical XML (also fine for plain output).
pub fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

/// A canonicalization algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum C14n {
    /// Canonical XML 1.0 (inclusive).
    Inclusive { with_comments: bool },
    /// Exclusive XML Canonicalization 1.0, with an InclusiveNamespaces prefix list
    /// (`"#default"` names the default namespace).
    Exclusive {
        with_comments: bool,
        inclusive_prefixes: Vec<String>,
    },
}

impl C14n {
    pub const EXCLUSIVE: C14n = C14n::Exclusive {
        with_comments: false,
        inclusive_prefixes: Vec::new(),
    };
    pub const INCLUSIVE: C14n = C14n::Inclusive {
        with_comments: false,
    };
    pub const INCLUSIVE_WITH_COMMENTS: C14n = C14n::Inclusive {
        with_comments: true,
    };

    /// The algorithm URI.
    pub fn uri(&self) -> &'static str {
        match self {
            C14n::Inclusive {
                with_comments: false,
            } => "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
            C14n::Inclusive {
                with_comments: true,
            } => "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments",
            C14n::Exclusive {
                with_comments: false,
                ..
            } => "http://www.w3.org/2001/10/xml-exc-c14n#",
            C14n::Exclusive {
                with_comments: true,
                ..
            } => "http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
        }
    }

    fn with_comments(&self) -> bool {
        match self {
            C14n::Inclusive { with_comments } | C14n::Exclusive { with_comments, .. } => {
                *with_comments
            }
        }
    }
}

/// Namespaces in scope: prefix (`None` = default) to URI.
pub type Scope = BTreeMap<Option<String>, String>;

/// Canonicalizes `element` (the apex of the node set) whose ancestors declared
/// `inherited`; `exclude` is left out with its subtree (compared by address), which is
/// how the enveloped-signature transform removes the `Signature` element.
pub fn canonicalize(
    element: &Element,
    inherited: &Scope,
    algorithm: &C14n,
    exclude: Option<&Element>,
) -> String {
    let mut out = String::with_capacity(4096);
    let rendered = Scope::new();
    write_c14n(element, inherited, &rendered, algorithm, exclude, &mut out);
    out
}

fn write_c14n(
    e: &Element,
    parent_scope: &Scope,
    rendered: &Scope,
    algorithm: &C14n,
    exclude: Option<&Element>,
    out: &mut String,
) {
    let mut scope = parent_scope.clone();
    for (p, uri) in &e.namespaces {
        scope.insert(p.clone(), uri.clone());
    }
    // Namespace nodes to output: (prefix, uri), default first then by prefix.
    let mut decls: BTreeMap<Option<String>, String> = BTreeMap::new();
    let mut consider = |prefix: &Option<String>| {
        let uri = scope.get(prefix).cloned().unwrap_or_default();
        let already = rendered.get(prefix).cloned().unwrap_or_default();
        if uri != already {
            decls.insert(prefix.clone(), uri);
        }
    };
    match algorithm {
        C14n::Inclusive { .. } => {
            for prefix in scope.keys() {
                if prefix.as_deref() != Some("xml") {
                    consider(prefix);
                }
            }
            // An undeclared default only matters when an output ancestor declared one.
            if !scope.contains_key(&None) {
                consider(&None);
            }
        }
        C14n::Exclusive {
            inclusive_prefixes, ..
        } => {
            consider(&e.prefix);
            for a in &e.attributes {
                if let Some(p) = &a.prefix
                    && p != "xml"
                {
                    consider(&Some(p.clone()));
                }
            }
            for p in inclusive_prefixes {
                let key = if p == "#default" {
                    None
                } else {
                    Some(p.clone())
                };
                if scope.contains_key(&key) {
                    consider(&key);
                }
            }
        }
    }
    out.push('<');
    push_qname(out, e.prefix.as_deref(), &e.local);
    let mut now_rendered = rendered.clone();
    for (prefix, uri) in &decls {
        push_ns_decl(out, prefix.as_deref(), uri);
        now_rendered.insert(prefix.clone(), uri.clone());
    }
    // Attributes sorted by namespace URI (none first), then local name.
    let mut attrs: Vec<(&str, &Attribute)> = e
        .attributes
        .iter()
        .map(|a| {
            let uri = match a.prefix.as_deref() {
                None => "",
                Some("xml") => XML_NS,
                Some(p) => scope
                    .get(&Some(p.to_string()))
                    .map(String::as_str)
                    .unwrap_or(""),
            };
            (uri, a)
        })
        .collect();
    attrs.sort_by(|(u1, a1), (u2, a2)| (u1, &a1.local).cmp(&(u2, &a2.local)));
    for (_, a) in attrs {
        out.push(' ');
        push_qname(out, a.prefix.as_deref(), &a.local);
        out.push_str("=\"");
        escape_attr(out, &a.value);
        out.push('"');
    }
    out.push('>');
    for child in &e.children {
        match child {
            Node::Element(c) => {
                if exclude.is_some_and(|x| std::ptr::eq(x, c)) {
                    continue;
                }
                write_c14n(c, &scope, &now_rendered, algorithm, exclude, out);
            }
            Node::Text(t) => escape_text(out, t),
            Node::Comment(c) => {
                if algorithm.with_comments() {
                    out.push_str("<!--");
                    out.push_str(c);
                    out.push_str("-->");
                }
            }
        }
    }
    out.push_str("</");
    push_qname(out, e.prefix.as_deref(), &e.local);
    out.push('>');
}

/// Resolves a prefix against the scope.
pub fn resolve<'s>(scope: &'s Scope, prefix: Option<&str>) -> Option<&'s str> {
    scope
        .get(&prefix.map(str::to_string))
        .map(String::as_str)
        .filter(|u| !u.is_empty())
}

/// Parses foreign XML into a tree. DTDs, entity declarations, unknown entity
/// references and processing instructions are refused; comments are kept (Canonical
/// XML without comments drops them); the XML declaration is dropped.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().expand_empty_elements = false;
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let malformed = |reader: &Reader<&[u8]>, message: String| XmlError::Malformed {
        position: reader.buffer_position(),
        message,
    };
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(&reader, e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Decl(_) => {}
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(XmlError::TrailingContent);
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep(MAX_DEPTH));
                }
                stack.push(element_from(&reader, &start)?);
            }
            Event::Empty(start) => {
                let e = element_from(&reader, &start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(e)),
                    None => root = Some(e),
                }
            }
            Event::End(_) => {
                let e = stack
                    .pop()
                    .ok_or_else(|| malformed(&reader, "unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(e)),
                    None => root = Some(e),
                }
            }
            Event::Text(t) => {
                let raw = std::str::from_utf8(t.as_ref())
                    .map_err(|e| malformed(&reader, e.to_string()))?;
                let text = unescape(&normalize_newlines(raw)).map_err(|m| malformed(&reader, m))?;
                push_text(&mut stack, &root, text, &reader)?;
            }
            Event::GeneralRef(r) => {
                let name = std::str::from_utf8(r.as_ref())
                    .map_err(|e| malformed(&reader, e.to_string()))?;
                let text = unescape(&format!("&{name};")).map_err(|m| malformed(&reader, m))?;
                push_text(&mut stack, &root, text, &reader)?;
            }
            Event::CData(t) => {
                let raw = std::str::from_utf8(t.as_ref())
                    .map_err(|e| malformed(&reader, e.to_string()))?;
                push_text(&mut stack, &root, normalize_newlines(raw), &reader)?;
            }
            Event::Comment(c) => {
                let raw = std::str::from_utf8(c.as_ref())
                    .map_err(|e| malformed(&reader, e.to_string()))?;
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Comment(normalize_newlines(raw)));
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed(
            &reader,
            "unclosed element at end of input".into(),
        ));
    }
    let root = root.ok_or(XmlError::NoRoot)?;
    check_prefixes(&root, &Scope::new())?;
    Ok(root)
}

fn push_text(
    stack: &mut [Element],
    root: &Option<Element>,
    text: String,
    reader: &Reader<&[u8]>,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => {
            // Merge adjacent text (text, reference, text).
            if let Some(Node::Text(prev)) = parent.children.last_mut() {
                prev.push_str(&text);
            } else {
                parent.children.push(Node::Text(text));
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if root.is_some() => Err(XmlError::TrailingContent),
        None => Err(XmlError::Malformed {
            position: reader.buffer_position(),
            message: "text outside the root element".into(),
        }),
    }
}

fn element_from(
    reader: &Reader<&[u8]>,
    start: &quick_xml::events::BytesStart<'_>,
) -> Result<Element, XmlError> {
    let malformed = |message: String| XmlError::Malformed {
        position: reader.buffer_position(),
        message,
    };
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| malformed(e.to_string()))?
        .to_string();
    let (prefix, local) = split_qname(&name);
    let mut e = Element {
        prefix,
        local,
        ..Element::default()
    };
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| malformed(e.to_string()))?;
        let key = std::str::from_utf8(attr.key.as_ref()).map_err(|e| malformed(e.to_string()))?;
        let raw = std::str::from_utf8(&attr.value).map_err(|e| malformed(e.to_string()))?;
        // Attribute-value normalization (XML 1.0 §3.3.3) for CDATA attributes:
        // literal white space becomes a space, references keep their character.
        let normalized: String = normalize_newlines(raw)
            .chars()
            .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
            .collect();
        let value = unescape(&normalized).map_err(malformed)?;
        if key == "xmlns" {
            e.namespaces.push((None, value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            e.namespaces.push((Some(p.to_string()), value));
        } else {
            let (prefix, local) = split_qname(key);
            e.attributes.push(Attribute {
                prefix,
                local,
                value,
            });
        }
    }
    Ok(e)
}

fn split_qname(name: &str) -> (Option<String>, String) {
    match name.split_once(':') {
        Some((p, l)) => (Some(p.to_string()), l.to_string()),
        None => (None, name.to_string()),
    }
}

fn normalize_newlines(s: &str) -> String {
    if s.contains('\r') {
        s.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        s.to_string()
    }
}

/// Resolves the five predefined entities and character references; any other entity
/// reference is an error (there is no DTD to define it, and none is ever read).
fn unescape(s: &str) -> Result<String, String> {
    if !s.contains('&') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .ok_or_else(|| "an '&' that starts no reference".to_string())?;
        let name = &after[..end];
        match name {
            "amp" => out.push('&'),
            "lt" => out.push('<'),
            "gt" => out.push('>'),
            "quot" => out.push('"'),
            "apos" => out.push('\''),
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    return Err(format!(
                        "entity reference &{name}; is not allowed (no DTD is read)"
                    ));
                };
                let c = code
                    .and_then(char::from_u32)
                    .filter(|c| is_xml_char(*c))
                    .ok_or_else(|| format!("&{name}; is not a valid character reference"))?;
                out.push(c);
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn check_prefixes(e: &Element, parent: &Scope) -> Result<(), XmlError> {
    let mut scope = parent.clone();
    for (p, uri) in &e.namespaces {
        scope.insert(p.clone(), uri.clone());
    }
    let declared = |p: &str| p == "xml" || p == "xmlns" || resolve(&scope, Some(p)).is_some();
    if let Some(p) = &e.prefix
        && !declared(p)
    {
        return Err(XmlError::UndeclaredPrefix(p.clone()));
    }
    for a in &e.attributes {
        if let Some(p) = &a.prefix
            && !declared(p)
        {
            return Err(XmlError::UndeclaredPrefix(p.clone()));
        }
    }
    for c in e.elements() {
        check_prefixes(c, &scope)?;
    }
    Ok(())
}

/// The namespace URI of an element, given the scope of its parent.
pub fn namespace_of(e: &Element, parent_scope: &Scope) -> Option<String> {
    let mut scope = parent_scope.clone();
    for (p, uri) in &e.namespaces {
        scope.insert(p.clone(), uri.clone());
    }
    resolve(&scope, e.prefix.as_deref()).map(str::to_string)
}

/// The scope inside `e` given its parent's.
pub fn scope_of(e: &Element, parent_scope: &Scope) -> Scope {
    let mut scope = parent_scope.clone();
    for (p, uri) in &e.namespaces {
        scope.insert(p.clone(), uri.clone());
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_renders_only_visibly_used_namespaces() {
        let doc = parse(
            r#"<a:root xmlns:a="urn:a" xmlns:b="urn:b" xmlns:unused="urn:u"><b:x attr="1" a:y="2"/><c xmlns="urn:c"/></a:root>"#,
        )
        .expect("parse");
        assert_eq!(
            canonicalize(&doc, &Scope::new(), &C14n::EXCLUSIVE, None),
            r#"<a:root xmlns:a="urn:a"><b:x xmlns:b="urn:b" attr="1" a:y="2"></b:x><c xmlns="urn:c"></c></a:root>"#
        );
    }

    #[test]
    fn inclusive_renders_scope_at_apex_and_sorts_attributes() {
        let doc = parse(r#"<r xmlns="urn:d" xmlns:z="urn:z"><s z:b="1" a="2" z:a="3"/></r>"#)
            .expect("parse");
        let inner = doc.elements().next().expect("child");
        let scope = scope_of(&doc, &Scope::new());
        assert_eq!(
            canonicalize(inner, &scope, &C14n::INCLUSIVE, None),
            r#"<s xmlns="urn:d" xmlns:z="urn:z" a="2" z:a="3" z:b="1"></s>"#
        );
    }

    #[test]
    fn escaping_and_comments() {
        let doc =
            parse("<r a=\"&lt;&quot;&#9;x\">&amp;&gt;<!--c--><![CDATA[<&]]></r>").expect("parse");
        assert_eq!(
            canonicalize(&doc, &Scope::new(), &C14n::INCLUSIVE, None),
            "<r a=\"&lt;&quot;&#x9;x\">&amp;&gt;&lt;&amp;</r>"
        );
        assert_eq!(
            canonicalize(&doc, &Scope::new(), &C14n::INCLUSIVE_WITH_COMMENTS, None),
            "<r a=\"&lt;&quot;&#x9;x\">&amp;&gt;<!--c-->&lt;&amp;</r>"
        );
    }

    #[test]
    fn hostile_inputs_are_refused() {
        assert_eq!(
            parse("<!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>"),
            Err(XmlError::Dtd)
        );
        assert!(matches!(
            parse("<r>&x;</r>"),
            Err(XmlError::Malformed { .. })
        ));
        assert_eq!(
            parse("<r><?pi x?></r>"),
            Err(XmlError::ProcessingInstruction)
        );
        assert_eq!(parse("<r/><r/>"), Err(XmlError::TrailingContent));
        assert_eq!(parse("<p:r/>"), Err(XmlError::UndeclaredPrefix("p".into())));
        assert!(parse("<r>").is_err());
        assert_eq!(parse(""), Err(XmlError::NoRoot));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse(&deep), Err(XmlError::TooDeep(MAX_DEPTH)));
    }

    #[test]
    fn plain_output_round_trips() {
        let src = r#"<a:r xmlns:a="urn:a" k="v&amp;"><b>t&lt;</b><c/></a:r>"#;
        let doc = parse(src).expect("parse");
        assert_eq!(doc.to_xml(), src);
        assert_eq!(parse(&doc.to_xml()).expect("reparse"), doc);
    }
}
