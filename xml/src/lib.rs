//! `passerelle-xml`: the XML that Passerelle reads and signs, with no dependency on the
//! rest of Passerelle. It owns:
//!
//! - a small element tree ([`Element`], [`Node`], [`Attribute`]) for the structures the
//!   proxy signs and the envelopes it reads, and its plain serializer ([`Element::to_xml`],
//!   what goes on the wire);
//! - Canonical XML 1.0 (inclusive, with or without comments) and Exclusive XML
//!   Canonicalization 1.0 (with an optional InclusiveNamespaces prefix list) over any
//!   subtree, optionally leaving one element out (the enveloped-signature transform):
//!   [`canonicalize`], [`C14n`], and namespace scopes ([`Scope`], [`scope_of`],
//!   [`namespace_of`], [`resolve`]);
//! - a parser for foreign, possibly hostile XML (envelopes and a VIHF supplied by an
//!   internal system) that refuses DTDs, entity declarations and processing
//!   instructions instead of expanding them, runs in time linear in its input, and
//!   bounds what one document may ask of it ([`Limits`], [`parse_with`]); and its
//!   whole-document variant for submitted XML documents ([`parse_document`],
//!   [`canonicalize_document`]: comments and processing instructions around the root
//!   element are part of the document's Canonical XML).
//!
//! Generated structures are written straight into this tree and canonicalised here, so
//! the hot path never goes through libxml; libxmlsec1 verifies the result in the
//! signing crate's tests. Text content uses no whitespace-only nodes unless the source
//! had them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

mod parse;
mod stream;

pub use parse::{Limits, XmlError, parse, parse_document, parse_document_with, parse_with};
pub use stream::{CanonicalDocument, StartTag, canonicalize_document_str};

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
        self.write_plain(&mut out, None);
        out
    }

    /// [`Self::to_xml`], with `content` written as it is, unescaped, as the whole content
    /// of the element `at` (found by address in this tree; its own children are not
    /// written). XML this process wrote itself and signed, a VIHF, goes on the wire
    /// this way without being held as a tree; `content` must be well-formed and declare
    /// every namespace it uses.
    pub fn to_xml_with(&self, at: &Element, content: &str) -> String {
        let mut out = String::with_capacity(4096 + content.len());
        self.write_plain(&mut out, Some((at, content)));
        out
    }

    fn write_plain(&self, out: &mut String, written: Option<(&Element, &str)>) {
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
        let content = written
            .filter(|(at, _)| std::ptr::eq(*at, self))
            .map(|(_, content)| content);
        if self.children.is_empty() && content.is_none() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        if let Some(content) = content {
            out.push_str(content);
        }
        for child in self.children.iter().filter(|_| content.is_none()) {
            match child {
                Node::Element(e) => e.write_plain(out, written),
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

pub(crate) fn push_qname(out: &mut String, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(local);
}

/// Appends a namespace declaration: ` xmlns:prefix="uri"` (or ` xmlns="uri"`), the URI
/// escaped.
pub fn push_ns_decl(out: &mut String, prefix: Option<&str>, uri: &str) {
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

/// Below this length a string is checked for characters to escape byte by byte: the
/// vectorised scans' set-up costs more than the loop on a short value (the attribute
/// values and texts of a VIHF are mostly a few dozen bytes).
const SHORT: usize = 64;

fn text_escape(b: u8) -> Option<&'static str> {
    match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'>' => Some("&gt;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    }
}

fn attr_escape(b: u8) -> Option<&'static str> {
    match b {
        b'&' => Some("&amp;"),
        b'<' => Some("&lt;"),
        b'"' => Some("&quot;"),
        b'\t' => Some("&#x9;"),
        b'\n' => Some("&#xA;"),
        b'\r' => Some("&#xD;"),
        _ => None,
    }
}

/// Text escaping of Canonical XML (also fine for plain output).
pub fn escape_text(out: &mut String, s: &str) {
    let b = s.as_bytes();
    // Most text has nothing to escape: it is copied whole after a scan with no early
    // exit (the compiler makes it vector compares) or, when long, memchr's scans.
    let dirty = if b.len() < SHORT {
        b.iter().fold(false, |found, &c| {
            found | matches!(c, b'&' | b'<' | b'>' | b'\r')
        })
    } else {
        memchr::memchr3(b'&', b'<', b'>', b).is_some() || memchr::memchr(b'\r', b).is_some()
    };
    if dirty {
        escape_with(out, s, text_escape);
    } else {
        out.push_str(s);
    }
}

/// Attribute escaping of Canonical XML (also fine for plain output).
pub fn escape_attr(out: &mut String, s: &str) {
    let b = s.as_bytes();
    let dirty = if b.len() < SHORT {
        b.iter().fold(false, |found, &c| {
            found | matches!(c, b'&' | b'<' | b'"' | b'\t' | b'\n' | b'\r')
        })
    } else {
        memchr::memchr3(b'&', b'<', b'"', b).is_some()
            || memchr::memchr3(b'\t', b'\n', b'\r', b).is_some()
    };
    if dirty {
        escape_with(out, s, attr_escape);
    } else {
        out.push_str(s);
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
    // Namespace stacks (later entries shadow earlier ones): no map is cloned per element.
    let mut scope = Bindings::default();
    for (p, u) in inherited {
        scope.push(p.as_deref(), u.as_str());
    }
    let mut rendered = Bindings::default();
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
    writer.element(element, true, &mut scope, &mut rendered, &mut out);
    out
}

struct C14nWriter<'a> {
    inclusive: bool,
    with_comments: bool,
    inclusive_prefixes: &'a [Option<&'a str>],
    exclude: Option<&'a Element>,
}

/// `a.cmp(b)`, except that empty strings are told apart without `memcmp`. An empty
/// string's pointer is dangling (`""`, `String::new()`), and glibc's AVX-512 `memcmp`
/// takes about 80 ns on such a pointer even for zero bytes (masked loads that must
/// suppress a fault; measured on AMD EPYC Zen 4, where comparing a non-empty string
/// takes 2 ns): unprefixed attributes, whose namespace URI is empty, made sorting the
/// attributes of an element most of its canonicalization.
pub(crate) fn cmp_str(a: &str, b: &str) -> std::cmp::Ordering {
    // The same string (a namespace URI constant, borrowed twice) needs no comparing.
    if std::ptr::eq(a, b) {
        return std::cmp::Ordering::Equal;
    }
    match (a.is_empty(), b.is_empty()) {
        (false, false) => a.cmp(b),
        (a_empty, b_empty) => b_empty.cmp(&a_empty),
    }
}

/// Namespace bindings in document order, later entries shadowing earlier ones: pushed
/// on entering an element, truncated on leaving it. Searched from the end while short
/// (the usual handful of declarations); past [`Bindings::INDEX_FROM`] entries, through
/// a per-prefix index, so that an element using many prefixes under many declarations
/// does not cost a scan of the scope per prefix. `U` is the URI as held: borrowed from
/// the tree here, from the input (or resolved) in the streaming canonicalizer.
pub(crate) struct Bindings<'t, U = &'t str> {
    pub(crate) entries: Vec<(Option<&'t str>, U)>,
    /// Per prefix, where its bindings are in `entries`.
    index: Option<HashMap<Option<&'t str>, Vec<usize>>>,
}

impl<U> Default for Bindings<'_, U> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: None,
        }
    }
}

impl<'t, U> Bindings<'t, U> {
    const INDEX_FROM: usize = 32;

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn push(&mut self, prefix: Option<&'t str>, uri: U) {
        self.entries.push((prefix, uri));
        let at = self.entries.len() - 1;
        match &mut self.index {
            Some(index) => index.entry(prefix).or_default().push(at),
            None if self.entries.len() > Self::INDEX_FROM => {
                let mut index: HashMap<Option<&'t str>, Vec<usize>> = HashMap::new();
                for (i, (p, _)) in self.entries.iter().enumerate() {
                    index.entry(*p).or_default().push(i);
                }
                self.index = Some(index);
            }
            None => {}
        }
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        if let Some(index) = &mut self.index {
            for (p, _) in self.entries.iter().skip(len) {
                if let Some(at) = index.get_mut(p) {
                    at.pop();
                }
            }
        }
        self.entries.truncate(len);
    }

    /// The innermost binding of `prefix`.
    pub(crate) fn find(&self, prefix: Option<&str>) -> Option<&U> {
        let found = match &self.index {
            Some(index) => index
                .get(&prefix)
                .and_then(|at| at.last())
                .and_then(|&i| self.entries.get(i)),
            None => self.entries.iter().rev().find(|(p, _)| *p == prefix),
        };
        found.map(|(_, uri)| uri)
    }
}

impl<'t> Bindings<'t> {
    fn lookup(&self, prefix: Option<&str>) -> Option<&'t str> {
        self.find(prefix).copied()
    }
}

impl<'t> C14nWriter<'t> {
    /// `apex`: `e` is the element canonicalization started from (its whole scope is
    /// rendered in inclusive mode, not only what it declares).
    fn element(
        &self,
        e: &'t Element,
        apex: bool,
        scope: &mut Bindings<'t>,
        rendered: &mut Bindings<'t>,
        out: &mut String,
    ) {
        let scope_len = scope.len();
        let rendered_len = rendered.len();
        for (p, uri) in &e.namespaces {
            scope.push(p.as_deref(), uri.as_ref());
        }
        // Namespace nodes to output, default first then by prefix. A prefix considered
        // twice gives the same node both times (nothing changes the bindings meanwhile),
        // so duplicates are dropped after sorting rather than searched for each time.
        let mut decls: Vec<(Option<&'t str>, &'t str)> = Vec::new();
        let mut consider = |prefix: Option<&'t str>, scope: &Bindings<'t>| {
            let uri = scope.lookup(prefix).unwrap_or("");
            let already = rendered.lookup(prefix).unwrap_or("");
            if cmp_str(uri, already).is_ne() {
                decls.push((prefix, uri));
            }
        };
        if self.inclusive && apex {
            for (prefix, _) in &scope.entries {
                if *prefix != Some("xml") {
                    consider(*prefix, scope);
                }
            }
            consider(None, scope);
        } else if self.inclusive {
            // Below the apex only this element's own declarations can differ from what
            // is rendered: every ancestor rendered each namespace of its scope that
            // differed from its parent's, so for the others `rendered` already matches
            // the scope. Considering the whole scope again, as at the apex, would cost
            // every element a pass over all declarations in scope.
            for (prefix, _) in &e.namespaces {
                if prefix.as_deref() != Some("xml") {
                    consider(prefix.as_deref(), scope);
                }
            }
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
                if scope.lookup(*p).is_some() {
                    consider(*p, scope);
                }
            }
        }
        decls.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        decls.dedup_by(|a, b| a.0 == b.0);
        out.push('<');
        push_qname(out, e.prefix.as_deref(), &e.local);
        for (prefix, uri) in &decls {
            push_ns_decl(out, *prefix, uri);
            rendered.push(*prefix, uri);
        }
        // Attributes sorted by namespace URI (none first), then local name.
        let uri_of = |a: &Attribute| match a.prefix.as_deref() {
            None => "",
            Some("xml") => XML_NS,
            Some(p) => scope.lookup(Some(p)).unwrap_or(""),
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
            attrs.sort_unstable_by(|(u1, a1), (u2, a2)| {
                cmp_str(u1, u2).then_with(|| cmp_str(&a1.local, &a2.local))
            });
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
                    self.element(c, false, scope, rendered, out);
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

pub(crate) fn write_misc(out: &mut String, m: &Misc) {
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

/// The namespace URI of an element, given the scope of its parent.
pub fn namespace_of(e: &Element, parent_scope: &Scope) -> Option<String> {
    // The element's own declarations first, then its parent's scope: no copy of the
    // scope (callers test many elements against one parent scope).
    let prefix = e.prefix.as_deref();
    if prefix == Some("xml") {
        return Some(XML_NS.to_string());
    }
    match e.namespaces.iter().find(|(p, _)| p.as_deref() == prefix) {
        Some((_, uri)) => (!uri.is_empty()).then(|| uri.to_string()),
        None => resolve(parent_scope, prefix).map(str::to_string),
    }
}

/// The namespace of `e` from the declarations on it and on its `ancestors` (outermost
/// first, its parent last), copying nothing: a walk that carries its ancestors costs no
/// more than the tree whatever the number or length of the declarations, where
/// [`scope_of`] at every element would copy the whole scope each time.
pub fn namespace_in<'a>(e: &'a Element, ancestors: &[&'a Element]) -> Option<&'a str> {
    let prefix = e.prefix.as_deref();
    if prefix == Some("xml") {
        return Some(XML_NS);
    }
    std::iter::once(e)
        .chain(ancestors.iter().rev().copied())
        .find_map(|x| {
            x.namespaces
                .iter()
                .find(|(p, _)| p.as_deref() == prefix)
                .map(|(_, uri)| uri.as_ref())
        })
        .filter(|uri| !uri.is_empty())
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

    /// The text given is written as it is, as the whole content of the element found by
    /// address: not of another one with the same name, and not escaped.
    #[test]
    fn to_xml_with_writes_the_text_inside_the_element_given() {
        let tree = Element::new(Some("s"), "Envelope")
            .ns(Some("s"), "urn:s")
            .child(Element::new(None, "Slot"))
            .child(Element::new(None, "Slot").child(Element::new(None, "replaced")))
            .child(Element::new(None, "After").text("a&b"));
        let Some(Node::Element(second)) = tree.children.get(1) else {
            panic!("second slot");
        };
        assert_eq!(
            tree.to_xml_with(second, "<t:x xmlns:t=\"urn:t\">&amp;</t:x>"),
            "<s:Envelope xmlns:s=\"urn:s\"><Slot/><Slot><t:x xmlns:t=\"urn:t\">&amp;</t:x></Slot>\
             <After>a&amp;b</After></s:Envelope>"
        );
        let elsewhere = Element::new(None, "Slot");
        assert_eq!(tree.to_xml_with(&elsewhere, "<x/>"), tree.to_xml());
    }

    /// Short strings (checked byte by byte) and long ones (vectorised scans) escape
    /// alike: each ASCII character, alone and at either end of a clean run.
    #[test]
    fn escaping_is_the_same_below_and_above_the_short_length() {
        for len in [0, 1, SHORT - 2, SHORT - 1, SHORT, SHORT + 1, 200] {
            for c in (0u8..128).map(char::from) {
                let run = "é".repeat(len / 2);
                for s in [
                    format!("{run}{c}"),
                    format!("{c}{run}"),
                    format!("{run}{c}{run}"),
                ] {
                    for (escape, table) in [
                        (
                            escape_text as fn(&mut String, &str),
                            text_escape as fn(u8) -> _,
                        ),
                        (escape_attr, attr_escape),
                    ] {
                        let mut fast = String::new();
                        escape(&mut fast, &s);
                        let mut expected = String::new();
                        for ch in s.chars() {
                            match u8::try_from(ch).ok().and_then(table) {
                                Some(rep) => expected.push_str(rep),
                                None => expected.push(ch),
                            }
                        }
                        assert_eq!(fast, expected, "{s:?}");
                    }
                }
            }
        }
        let mut out = String::new();
        escape_attr(&mut out, "a&b<c>d\"e\tf\ng\rh");
        assert_eq!(out, "a&amp;b&lt;c>d&quot;e&#x9;f&#xA;g&#xD;h");
        out.clear();
        escape_text(&mut out, "a&b<c>d\"e\tf\ng\rh");
        assert_eq!(out, "a&amp;b&lt;c&gt;d\"e\tf\ng&#xD;h");
    }

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
        assert_eq!(
            parse(&deep),
            Err(XmlError::TooDeep(Limits::default().max_depth))
        );
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

            /// The comparison that spares `memcmp` empty strings orders as `str` does.
            #[test]
            fn cmp_str_orders_as_str(a in "[ab]{0,2}", b in "[ab]{0,2}") {
                prop_assert_eq!(cmp_str(&a, &b), a.cmp(&b));
                prop_assert_eq!(cmp_str(&a, ""), a.as_str().cmp(""));
            }

            /// Well-formed documents with namespaces (redeclared, default ones undeclared)
            /// and attributes: parsing gives the tree that was written, and writing and
            /// parsing it again gives the same tree.
            #[test]
            fn parse_to_xml_parse_round_trips(tree in document()) {
                let parsed = parse(&tree.to_xml()).expect("well-formed");
                prop_assert_eq!(&parsed, &tree);
                let again = parse(&parsed.to_xml()).expect("own output parses");
                prop_assert_eq!(again, parsed);
            }
        }

        const PREFIXES: [&str; 3] = ["a", "b", "c"];

        /// Text for the tree (no control characters but white space: XML refuses them).
        fn owned(s: String) -> Str {
            Cow::Owned(s)
        }

        /// An element without children: its name, declarations and attributes. Prefixed
        /// declarations bind to non-empty URIs only, so that every prefix the root declares
        /// stays in scope; the default namespace may be undeclared (`xmlns=""`).
        fn head() -> impl Strategy<Value = Element> {
            let prefix = prop::option::of(prop::sample::select(&PREFIXES[..]));
            let attribute_prefix =
                prop::option::of(prop::sample::select(&["a", "b", "c", "xml"][..]));
            (
                prefix.clone(),
                "[a-z][a-z0-9_.-]{0,6}",
                prop::collection::vec(
                    (
                        prefix,
                        prop::sample::select(&["urn:x", "urn:y", "http://e.org/n?a=1&b=<2>"][..]),
                        any::<bool>(),
                    ),
                    0..3,
                ),
                prop::collection::vec((attribute_prefix, "[a-w][a-z0-9]{0,4}", "\\PC{0,12}"), 0..5),
            )
                .prop_map(|(prefix, local, declarations, attributes)| {
                    let mut e = Element {
                        prefix: prefix.map(Cow::Borrowed),
                        local: owned(local),
                        ..Element::default()
                    };
                    for (p, uri, undeclare) in declarations {
                        let uri = if p.is_none() && undeclare { "" } else { uri };
                        if !e.namespaces.iter().any(|(q, _)| q.as_deref() == p) {
                            e.namespaces
                                .push((p.map(Cow::Borrowed), Cow::Borrowed(uri)));
                        }
                    }
                    for (p, local, value) in attributes {
                        // Two prefixes may be bound to one URI: prefixed attributes get
                        // distinct local names (Namespaces in XML §6.3).
                        let dup = e.attributes.iter().any(|a| {
                            (a.prefix.as_deref() == p || a.prefix.is_some() && p.is_some())
                                && a.local == local.as_str()
                        });
                        if !dup {
                            e.attributes.push(Attribute {
                                prefix: p.map(Cow::Borrowed),
                                local: owned(local),
                                value: owned(value),
                            });
                        }
                    }
                    e
                })
        }

        /// A root declaring every prefix, over nested elements, text and comments.
        fn document() -> impl Strategy<Value = Element> {
            let element = head().prop_recursive(4, 48, 5, |inner| {
                let child = prop_oneof![
                    3 => inner.prop_map(Node::Element),
                    1 => "\\PC{1,16}".prop_map(|t| Node::Text(owned(t))),
                    1 => "[a-z ]{0,8}".prop_map(Node::Comment),
                ];
                (head(), prop::collection::vec(child, 0..5)).prop_map(|(mut e, children)| {
                    for child in children {
                        // Adjacent text is one text node once parsed.
                        match (e.children.last_mut(), child) {
                            (Some(Node::Text(prev)), Node::Text(t)) => prev.to_mut().push_str(&t),
                            (_, child) => e.children.push(child),
                        }
                    }
                    e
                })
            });
            element.prop_map(|mut root| {
                for p in PREFIXES {
                    if !root.namespaces.iter().any(|(q, _)| q.as_deref() == Some(p)) {
                        root.namespaces
                            .push((Some(Cow::Borrowed(p)), Cow::Borrowed("urn:root")));
                    }
                }
                root
            })
        }
    }
}
