//! A small XML element tree for the structures the proxy signs, with:
//!
//! - a plain serializer (what goes on the wire),
//! - Canonical XML 1.0 (inclusive, with or without comments) and Exclusive XML
//!   Canonicalization 1.0 (with an optional InclusiveNamespaces prefix list) over any
//!   subtree, optionally leaving one element out (the enveloped-signature transform),
//! - a parser for foreign XML (a VIHF supplied by an internal system) that refuses DTDs,
//!   entity declarations and processing instructions instead of expanding them, and its
//!   whole-document variant for submitted XML documents ([`parse_document`],
//!   [`canonicalize_document`]: comments and processing instructions around the root
//!   element are part of the document's Canonical XML).
//!
//! Generated structures are written straight into this tree and canonicalised here, so
//! the hot path never goes through libxml; libxmlsec1 verifies the result in tests.
//! Text content uses no whitespace-only nodes unless the source had them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// The XML namespace, bound to `xml` without declaration.
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Text of the tree: borrowed for the names and constants of generated XML (no
/// allocation on the signing hot path), owned for parsed or computed values.
pub type Str = Cow<'static, str>;

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(Str),
    Comment(String),
}

/// An element: qualified name, namespace declarations, attributes, children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// Prefix of the element name (`None`: default namespace).
    pub prefix: Option<Str>,
    pub local: Str,
    /// Declarations on this element: prefix (`None` = default) and URI (`""` undeclares).
    pub namespaces: Vec<(Option<Str>, Str)>,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub prefix: Option<Str>,
    pub local: Str,
    pub value: Str,
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
    pub fn new(prefix: Option<&'static str>, local: &'static str) -> Self {
        Self {
            prefix: prefix.map(Cow::Borrowed),
            local: Cow::Borrowed(local),
            ..Self::default()
        }
    }

    /// Declares a namespace on this element.
    pub fn ns(mut self, prefix: Option<&'static str>, uri: &'static str) -> Self {
        self.namespaces
            .push((prefix.map(Cow::Borrowed), Cow::Borrowed(uri)));
        self
    }

    /// Adds an attribute, optionally prefixed (`xsi:type`).
    pub fn attr(mut self, name: &'static str, value: impl Into<Str>) -> Self {
        let (prefix, local) = match name.split_once(':') {
            Some((p, l)) => (Some(Cow::Borrowed(p)), Cow::Borrowed(l)),
            None => (None, Cow::Borrowed(name)),
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

    pub fn text(mut self, text: impl Into<Str>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// The value of an unprefixed attribute.
    pub fn attribute(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.prefix.is_none() && a.local == local)
            .map(|a| a.value.as_ref())
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
                Node::Text(t) => Some(t.as_ref()),
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

/// Appends `s` to `out`, replacing the bytes `escape` maps; unescaped runs are copied
/// whole (the hot path: base64 values and plain text have nothing to escape).
fn escape_with(out: &mut String, s: &str, escape: impl Fn(u8) -> Option<&'static str>) {
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        // Every escaped character is ASCII, so `i` is always a char boundary here.
        if let Some(rep) = escape(b) {
            out.push_str(&s[run..i]);
            out.push_str(rep);
            run = i + 1;
        }
    }
    out.push_str(&s[run..]);
}

/// Text escaping of Canonical XML (also fine for plain output).
pub fn escape_text(out: &mut String, s: &str) {
    escape_with(out, s, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
}

/// Attribute escaping of Canonical XML (also fine for plain output).
pub fn escape_attr(out: &mut String, s: &str) {
    escape_with(out, s, |b| match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#x9;"),
        b'\n' => Some("&#xA;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    });
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
    // Namespace stacks (later entries shadow earlier ones): no map is cloned per element.
    let mut scope: Vec<(Option<&str>, &str)> = inherited
        .iter()
        .map(|(p, u)| (p.as_deref(), u.as_str()))
        .collect();
    let mut rendered: Vec<(Option<&str>, &str)> = Vec::new();
    let inclusive_prefixes: Vec<Option<&str>> = match algorithm {
        C14n::Exclusive {
            inclusive_prefixes, ..
        } => inclusive_prefixes
            .iter()
            .map(|p| (p != "#default").then_some(p.as_str()))
            .collect(),
        C14n::Inclusive { .. } => Vec::new(),
    };
    let writer = C14nWriter {
        inclusive: matches!(algorithm, C14n::Inclusive { .. }),
        with_comments: algorithm.with_comments(),
        inclusive_prefixes: &inclusive_prefixes,
        exclude,
    };
    writer.element(element, &mut scope, &mut rendered, &mut out);
    out
}

struct C14nWriter<'a> {
    inclusive: bool,
    with_comments: bool,
    inclusive_prefixes: &'a [Option<&'a str>],
    exclude: Option<&'a Element>,
}

fn lookup<'s>(stack: &[(Option<&str>, &'s str)], prefix: Option<&str>) -> Option<&'s str> {
    stack
        .iter()
        .rev()
        .find(|(p, _)| *p == prefix)
        .map(|(_, u)| *u)
}

impl<'t> C14nWriter<'t> {
    fn element(
        &self,
        e: &'t Element,
        scope: &mut Vec<(Option<&'t str>, &'t str)>,
        rendered: &mut Vec<(Option<&'t str>, &'t str)>,
        out: &mut String,
    ) {
        let scope_len = scope.len();
        let rendered_len = rendered.len();
        for (p, uri) in &e.namespaces {
            scope.push((p.as_deref(), uri.as_ref()));
        }
        // Namespace nodes to output, default first then by prefix.
        let mut decls: Vec<(Option<&'t str>, &'t str)> = Vec::new();
        let mut consider = |prefix: Option<&'t str>, scope: &[(Option<&'t str>, &'t str)]| {
            if decls.iter().any(|(p, _)| *p == prefix) {
                return;
            }
            let uri = lookup(scope, prefix).unwrap_or("");
            let already = lookup(rendered, prefix).unwrap_or("");
            if uri != already {
                decls.push((prefix, uri));
            }
        };
        if self.inclusive {
            for (prefix, _) in scope.iter().rev() {
                if *prefix != Some("xml") {
                    consider(*prefix, scope);
                }
            }
            consider(None, scope);
        } else {
            consider(e.prefix.as_deref(), scope);
            for a in &e.attributes {
                if let Some(p) = a.prefix.as_deref()
                    && p != "xml"
                {
                    consider(Some(p), scope);
                }
            }
            for p in self.inclusive_prefixes {
                if lookup(scope, *p).is_some() {
                    consider(*p, scope);
                }
            }
        }
        decls.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out.push('<');
        push_qname(out, e.prefix.as_deref(), &e.local);
        for (prefix, uri) in &decls {
            push_ns_decl(out, *prefix, uri);
            rendered.push((*prefix, uri));
        }
        // Attributes sorted by namespace URI (none first), then local name.
        let uri_of = |a: &Attribute| match a.prefix.as_deref() {
            None => "",
            Some("xml") => XML_NS,
            Some(p) => lookup(scope, Some(p)).unwrap_or(""),
        };
        let write_attr = |out: &mut String, a: &Attribute| {
            out.push(' ');
            push_qname(out, a.prefix.as_deref(), &a.local);
            out.push_str("=\"");
            escape_attr(out, &a.value);
            out.push('"');
        };
        if e.attributes.len() <= 1 {
            for a in &e.attributes {
                write_attr(out, a);
            }
        } else {
            let mut attrs: Vec<(&str, &Attribute)> =
                e.attributes.iter().map(|a| (uri_of(a), a)).collect();
            attrs.sort_unstable_by(|(u1, a1), (u2, a2)| (u1, &a1.local).cmp(&(u2, &a2.local)));
            for (_, a) in attrs {
                write_attr(out, a);
            }
        }
        out.push('>');
        for child in &e.children {
            match child {
                Node::Element(c) => {
                    if self.exclude.is_some_and(|x| std::ptr::eq(x, c)) {
                        continue;
                    }
                    self.element(c, scope, rendered, out);
                }
                Node::Text(t) => escape_text(out, t),
                Node::Comment(c) => {
                    if self.with_comments {
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
        scope.truncate(scope_len);
        rendered.truncate(rendered_len);
    }
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
    parse_inner(input, false).map(|d| d.root)
}

/// A comment or processing instruction outside the root element of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misc {
    Comment(String),
    /// Target and data (the data without the white space that follows the target).
    Pi {
        target: String,
        data: String,
    },
}

/// A whole document: what Canonical XML of its document node covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// `encoding` of the XML declaration, as written.
    pub declared_encoding: Option<String>,
    /// Comments and processing instructions before the root element.
    pub before: Vec<Misc>,
    pub root: Element,
    /// Comments and processing instructions after the root element.
    pub after: Vec<Misc>,
}

/// Parses a whole document (a submitted clinical document) as [`parse`] does, except
/// that processing instructions are accepted outside the root element (CDA documents
/// often start with `<?xml-stylesheet ...?>`), and comments there are kept.
pub fn parse_document(input: &str) -> Result<Document, XmlError> {
    parse_inner(input, true)
}

/// Canonical XML of a whole document (the document node): top-level comments and
/// processing instructions with the line feeds that separate them from the root
/// element, as a standard XML-DSig processor canonicalises a dereferenced document.
pub fn canonicalize_document(doc: &Document, algorithm: &C14n) -> String {
    let keep = |m: &Misc| algorithm.with_comments() || matches!(m, Misc::Pi { .. });
    let mut out = String::new();
    for m in doc.before.iter().filter(|m| keep(m)) {
        write_misc(&mut out, m);
        out.push('\n');
    }
    out.push_str(&canonicalize(&doc.root, &Scope::new(), algorithm, None));
    for m in doc.after.iter().filter(|m| keep(m)) {
        out.push('\n');
        write_misc(&mut out, m);
    }
    out
}

fn write_misc(out: &mut String, m: &Misc) {
    match m {
        Misc::Comment(c) => {
            out.push_str("<!--");
            out.push_str(c);
            out.push_str("-->");
        }
        Misc::Pi { target, data } => {
            out.push_str("<?");
            out.push_str(target);
            if !data.is_empty() {
                out.push(' ');
                escape_with(out, data, |b| (b == b'\r').then_some("&#xD;"));
            }
            out.push_str("?>");
        }
    }
}

/// `whole_document`: processing instructions outside the root element are kept and the
/// declared encoding read ([`parse_document`]); otherwise any processing instruction is
/// refused ([`parse`]).
fn parse_inner(input: &str, whole_document: bool) -> Result<Document, XmlError> {
    let mut reader = Reader::from_str(input);
    reader.config_mut().expand_empty_elements = false;
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut declared_encoding = None;
    let mut before = Vec::new();
    let mut after = Vec::new();
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
            Event::PI(pi) if whole_document && stack.is_empty() => {
                let target = std::str::from_utf8(pi.target())
                    .map_err(|e| malformed(&reader, e.to_string()))?
                    .to_string();
                let data = std::str::from_utf8(pi.content())
                    .map_err(|e| malformed(&reader, e.to_string()))?;
                let data = normalize_newlines(data.trim_start_matches([' ', '\t', '\r', '\n']));
                let misc = Misc::Pi { target, data };
                if root.is_some() {
                    after.push(misc);
                } else {
                    before.push(misc);
                }
            }
            Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Decl(_) if !whole_document => {}
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| malformed(&reader, e.to_string()))?;
                    declared_encoding = Some(String::from_utf8_lossy(&encoding).into_owned());
                }
            }
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
                let comment = normalize_newlines(raw);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Comment(comment)),
                    None if root.is_some() => after.push(Misc::Comment(comment)),
                    None => before.push(Misc::Comment(comment)),
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
    Ok(Document {
        declared_encoding,
        before,
        root,
        after,
    })
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
                prev.to_mut().push_str(&text);
            } else {
                parent.children.push(Node::Text(Cow::Owned(text)));
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
            e.namespaces.push((None, Cow::Owned(value)));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            e.namespaces
                .push((Some(Cow::Owned(p.to_string())), Cow::Owned(value)));
        } else {
            let (prefix, local) = split_qname(key);
            e.attributes.push(Attribute {
                prefix,
                local,
                value: Cow::Owned(value),
            });
        }
    }
    Ok(e)
}

fn split_qname(name: &str) -> (Option<Str>, Str) {
    match name.split_once(':') {
        Some((p, l)) => (Some(Cow::Owned(p.to_string())), Cow::Owned(l.to_string())),
        None => (None, Cow::Owned(name.to_string())),
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
    let scope = scope_of(e, parent);
    let declared = |p: &str| p == "xml" || p == "xmlns" || resolve(&scope, Some(p)).is_some();
    if let Some(p) = &e.prefix
        && !declared(p)
    {
        return Err(XmlError::UndeclaredPrefix(p.to_string()));
    }
    for a in &e.attributes {
        if let Some(p) = &a.prefix
            && !declared(p)
        {
            return Err(XmlError::UndeclaredPrefix(p.to_string()));
        }
    }
    for c in e.elements() {
        check_prefixes(c, &scope)?;
    }
    Ok(())
}

/// The namespace URI of an element, given the scope of its parent.
pub fn namespace_of(e: &Element, parent_scope: &Scope) -> Option<String> {
    resolve(&scope_of(e, parent_scope), e.prefix.as_deref()).map(str::to_string)
}

/// The scope inside `e` given its parent's.
pub fn scope_of(e: &Element, parent_scope: &Scope) -> Scope {
    let mut scope = parent_scope.clone();
    for (p, uri) in &e.namespaces {
        scope.insert(p.as_deref().map(str::to_string), uri.to_string());
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Hostile or random input never panics the parser.
            #[test]
            fn parse_never_panics(input in "\\PC{0,200}") {
                let _ = parse(&input);
            }

            #[test]
            fn parse_never_panics_on_markup_soup(input in "[<>&;#x:=\"'/!?\\[\\]a-zA-Z0-9 \n-]{0,200}") {
                let _ = parse(&input);
            }

            /// What the writer emits parses back to the same tree, for any text values.
            #[test]
            fn writer_output_round_trips(text in "\\PC{0,40}", value in "\\PC{0,40}") {
                let tree = Element::new(Some("p"), "a")
                    .ns(Some("p"), "urn:p")
                    .attr("v", value.clone())
                    .child(Element::new(None, "b").text(text.clone()))
                    .child(Element::new(None, "c"));
                let parsed = parse(&tree.to_xml()).expect("own output parses");
                // Escaped \r, \t, \n and markup characters all come back as written.
                let b = parsed.elements().next().expect("b");
                prop_assert_eq!(b.text_content(), text);
                prop_assert_eq!(parsed.attribute("v"), Some(value.as_str()));
            }
        }
    }
}
