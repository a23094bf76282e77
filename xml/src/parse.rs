//! The parser for foreign XML: quick-xml events, checked, handed to a [`Sink`] (the tree,
//! [`crate::Element`], or the streaming canonicalizer of [`crate::stream`]), refusing
//! what would make the proxy expand entities, and bounding what a document may ask of
//! it ([`Limits`]). Both sinks see the same checked events, so a document the tree
//! refuses the canonicalizer refuses with the same error.
//!
//! Work is linear in the input whatever the limits: prefixes are checked while parsing
//! against one map of declaration stacks that each element's end undoes (no namespace
//! scope is copied per element), and attribute names are checked for duplicates by a
//! short scan that turns into a hash set on elements with many attributes (quick-xml's
//! own check compares every pair).

use std::borrow::Cow;
use std::collections::HashMap;

use quick_xml::events::attributes::{AttrError, Attribute as RawAttribute};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::{Attribute, Document, Element, Misc, Node, Str};

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
    /// [`Limits::max_depth`] exceeded.
    #[error("the document nests deeper than {0} elements (limit: nesting depth)")]
    TooDeep(usize),
    /// [`Limits::max_elements`] exceeded.
    #[error("the document has more than {0} elements (limit: elements per document)")]
    TooManyElements(usize),
    /// [`Limits::max_attributes_per_element`] exceeded.
    #[error("an element has more than {0} attributes (limit: attributes per element)")]
    TooManyAttributes(usize),
    /// [`Limits::max_namespaces_per_element`] exceeded.
    #[error(
        "an element declares more than {0} namespaces (limit: namespace declarations per element)"
    )]
    TooManyNamespacesOnElement(usize),
    /// [`Limits::max_namespaces_in_scope`] exceeded.
    #[error(
        "more than {0} namespace declarations are in scope on an element (limit: namespace declarations in scope)"
    )]
    TooManyNamespacesInScope(usize),
    /// [`Limits::max_namespace_declarations`] exceeded.
    #[error(
        "the document declares more than {0} namespaces (limit: namespace declarations per document)"
    )]
    TooManyNamespaceDeclarations(usize),
}

/// What one document may ask of the parser. The parser's work is linear in the input
/// without them; they bound what the tree costs the code that walks it afterwards
/// ([`crate::scope_of`] copies the declarations in scope, canonicalization looks
/// prefixes up through them, the serializers recurse), and they refuse early, with a
/// message naming the limit, inputs no SOAP client sends.
///
/// The defaults ([`Limits::DEFAULT`]) leave ample room for the largest legitimate
/// inputs: a SOAP envelope carrying ITI-41 metadata for a large submission, a VIHF, a
/// CDA document. A caller that knows its input is larger (a very large structured
/// clinical document) passes its own to [`parse_with`] or [`parse_document_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most nesting of elements: 64 by default. A VIHF is about 6 deep, an ITI-41
    /// envelope about 10, CDA documents rarely exceed 30; the serializers and
    /// canonicalization recurse, so depth is also stack.
    pub max_depth: usize,
    /// Most elements in a document (the root included): 100,000 by default. ITI-41
    /// metadata takes about 15,000 elements a megabyte (slots, classifications,
    /// external identifiers), so this admits metadata far beyond any real submission
    /// while bounding the tree's memory (an element costs about 120 bytes before its
    /// names and values) to a few tens of megabytes.
    pub max_elements: usize,
    /// Most attributes on one element, namespace declarations not counted: 256 by
    /// default. The XDS, SAML and WS-* vocabularies use fewer than 10; 256 leaves room
    /// for extension attributes while refusing the attribute floods that only stress a
    /// parser.
    pub max_attributes_per_element: usize,
    /// Most namespace declarations on one element: 64 by default. A SOAP envelope's root
    /// that declares every vocabulary of the message (SOAP, WS-Addressing, WS-Security,
    /// SAML, XML-DSig, ebRIM, ebRS, XDS, XOP, XSI, ...) needs about 20.
    pub max_namespaces_per_element: usize,
    /// Most namespace declarations in scope on one element (its own and its
    /// ancestors'): 256 by default, four times what one element may declare. Every
    /// [`crate::scope_of`] call copies them and canonicalization looks prefixes up
    /// through them, so this bounds the work per element of the code that uses the tree.
    pub max_namespaces_in_scope: usize,
    /// Most namespace declarations in the whole document: 4,096 by default. Some
    /// serializers redeclare a namespace on every element whose namespace differs from
    /// its parent's, which can reach a few thousand on large metadata; every declaration
    /// costs canonicalization a lookup through what is in scope, so with the in-scope
    /// limit this bounds that work to about a million steps per document.
    pub max_namespace_declarations: usize,
}

impl Limits {
    /// The defaults, documented on each field.
    pub const DEFAULT: Limits = Limits {
        max_depth: 64,
        max_elements: 100_000,
        max_attributes_per_element: 256,
        max_namespaces_per_element: 64,
        max_namespaces_in_scope: 256,
        max_namespace_declarations: 4_096,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Parses foreign XML into a tree, within the default [`Limits`]. DTDs, entity
/// declarations, unknown entity references and processing instructions are refused,
/// and so is anything libxml2 would refuse as not well-formed that quick-xml lets
/// through (characters XML forbids, names, attribute separation, comments, the XML
/// declaration, the reserved namespace prefixes: found by the `c14n` fuzz target);
/// comments are kept (Canonical XML without comments drops them); the XML declaration
/// is dropped.
pub fn parse(input: &str) -> Result<Element, XmlError> {
    parse_with(input, &Limits::DEFAULT)
}

/// [`parse`] within the given limits.
pub fn parse_with(input: &str, limits: &Limits) -> Result<Element, XmlError> {
    parse_inner(input, false, limits).map(|d| d.root)
}

/// Parses a whole document (a submitted clinical document) as [`parse`] does, except
/// that processing instructions are accepted outside the root element (CDA documents
/// often start with `<?xml-stylesheet ...?>`), and comments there are kept.
pub fn parse_document(input: &str) -> Result<Document, XmlError> {
    parse_document_with(input, &Limits::DEFAULT)
}

/// [`parse_document`] within the given limits.
pub fn parse_document_with(input: &str, limits: &Limits) -> Result<Document, XmlError> {
    parse_inner(input, true, limits)
}

/// Elements with at most this many attributes are checked for duplicate names by a
/// scan (cheaper than hashing for the handful of attributes real elements carry).
const LINEAR_SCAN: usize = 16;

/// A start tag as the parser reads it, before any tree: names are slices of the input,
/// values borrowed from it unless normalization or a reference changed them. The tree
/// ([`crate::Element`]) and the streaming canonicalizer ([`crate::stream`]) are both
/// built from these.
pub(crate) struct Tag<'t, 'a> {
    pub prefix: Option<&'a str>,
    pub local: &'a str,
    /// Declarations on this element: prefix (`None` = default) and URI.
    pub namespaces: &'t [(Option<&'a str>, Cow<'a, str>)],
    pub attributes: &'t [TagAttribute<'a>],
}

#[derive(Debug)]
pub(crate) struct TagAttribute<'a> {
    pub prefix: Option<&'a str>,
    pub local: &'a str,
    pub value: Cow<'a, str>,
}

impl Tag<'_, '_> {
    /// The element of the tree, without children.
    fn to_element(&self) -> Element {
        let owned = |s: &str| -> Str { Cow::Owned(s.to_owned()) };
        Element {
            prefix: self.prefix.map(owned),
            local: owned(self.local),
            namespaces: self
                .namespaces
                .iter()
                .map(|(p, u)| (p.map(owned), owned(u)))
                .collect(),
            attributes: self
                .attributes
                .iter()
                .map(|a| Attribute {
                    prefix: a.prefix.map(owned),
                    local: owned(a.local),
                    value: owned(&a.value),
                })
                .collect(),
            children: Vec::new(),
        }
    }
}

/// What the parser hands its events to, in document order: the tree builder
/// ([`TreeSink`]) or the streaming canonicalizer. The parser has checked each event
/// before; a sink only records or writes it.
pub(crate) trait Sink<'a> {
    /// A start tag (an empty-element tag is a start then an [`Sink::end`]).
    fn start(&mut self, tag: &Tag<'_, 'a>);
    fn end(&mut self);
    /// Character data in a row (text, references and CDATA sections), resolved.
    fn text(&mut self, text: &str);
    /// A comment inside the root element, line ends normalized.
    fn comment(&mut self, comment: &str);
    /// A comment or processing instruction before (or, `after_root`, after) the root
    /// element (whole documents only).
    fn misc(&mut self, misc: Misc, after_root: bool);
}

/// Namespace bookkeeping and counters of one parse.
struct Builder<'l> {
    /// The document: what quick-xml hands out are slices of it (see [`str_in`]).
    input: &'l str,
    limits: Limits,
    elements: usize,
    declarations: usize,
    /// Per prefix, one entry per open declaration of it: the URI it binds the prefix to
    /// (never empty now that `xmlns:p=""` is refused). An element's end pops its own
    /// declarations, so resolving a prefix never walks or copies a scope.
    prefixes: HashMap<&'l str, Vec<Cow<'l, str>>>,
    /// The declarations of the open elements, outermost first (their number is the
    /// count in scope), and where each open element's own declarations start in it.
    declared: Vec<Option<&'l str>>,
    open: Vec<usize>,
    /// The first undeclared prefix in document order. It is reported only once the
    /// whole input has parsed, so that a malformed document keeps its own error (the
    /// check used to run on the finished tree).
    undeclared: Option<String>,
    /// The current tag's declarations and attributes (kept across tags: one allocation
    /// per parse, not per element).
    namespaces: Vec<(Option<&'l str>, Cow<'l, str>)>,
    attributes: Vec<TagAttribute<'l>>,
    /// Where the attribute names of the current tag are in its bytes, for the
    /// duplicate check (kept across tags to save an allocation per element).
    names: Vec<(usize, usize)>,
}

impl<'l> Builder<'l> {
    /// Open elements.
    fn depth(&self) -> usize {
        self.open.len()
    }

    /// Reads a start (or empty-element) tag and brings its namespace declarations into
    /// scope; [`Builder::close`] takes them out.
    fn open<'s>(
        &'s mut self,
        reader: &Reader<&[u8]>,
        start: &BytesStart<'l>,
    ) -> Result<Tag<'s, 'l>, XmlError> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(XmlError::TooManyElements(self.limits.max_elements));
        }
        let (prefix, local) = self.read_tag(reader, start)?;
        self.open.push(self.declared.len());
        for (prefix, uri) in &self.namespaces {
            self.declared.push(*prefix);
            let Some(prefix) = prefix else { continue };
            self.prefixes.entry(prefix).or_default().push(uri.clone());
        }
        if self.declared.len() > self.limits.max_namespaces_in_scope {
            return Err(XmlError::TooManyNamespacesInScope(
                self.limits.max_namespaces_in_scope,
            ));
        }
        if self.undeclared.is_none() {
            let undeclared = prefix
                .iter()
                .chain(self.attributes.iter().filter_map(|a| a.prefix.as_ref()))
                .find(|p| !self.is_declared(p));
            self.undeclared = undeclared.map(|p| p.to_string());
        }
        self.distinct_expanded_names(reader)?;
        Ok(Tag {
            prefix,
            local,
            namespaces: &self.namespaces,
            attributes: &self.attributes,
        })
    }

    /// Takes the declarations of the innermost open element out of scope.
    fn close(&mut self) {
        let Some(from) = self.open.pop() else { return };
        for prefix in self.declared.drain(from..).flatten() {
            if let Some(stack) = self.prefixes.get_mut(prefix) {
                stack.pop();
            }
        }
    }

    fn is_declared(&self, prefix: &str) -> bool {
        prefix == "xml" || prefix == "xmlns" || self.uri_of(prefix).is_some_and(|u| !u.is_empty())
    }

    fn uri_of(&self, prefix: &str) -> Option<&str> {
        match prefix {
            "xml" => Some(XML_NAMESPACE),
            p => self.prefixes.get(p)?.last().map(AsRef::as_ref),
        }
    }

    /// Namespaces in XML 1.0 §6.3: no two attributes of the current tag have the same
    /// namespace name and local name (`a:k` and `b:k` with `a` and `b` bound to one URI).
    /// Canonical XML sorts attributes by those two: tied, their order would be each
    /// implementation's own, and so would a digest. Only prefixed attributes with one
    /// local name (rare) have their URIs compared; no allocation unless a tag has more
    /// than [`LINEAR_SCAN`] prefixed attributes.
    fn distinct_expanded_names(&self, reader: &Reader<&[u8]>) -> Result<(), XmlError> {
        let prefixed = || self.attributes.iter().filter(|a| a.prefix.is_some());
        let count = prefixed().count();
        let tie = if count < 2 {
            None
        } else if count <= LINEAR_SCAN {
            let mut pairs = prefixed()
                .enumerate()
                .flat_map(|(i, a)| prefixed().skip(i + 1).map(move |b| (a, b)));
            pairs
                .find(|(a, b)| {
                    a.local == b.local
                        && self.uri_of(a.prefix.unwrap_or_default())
                            == self.uri_of(b.prefix.unwrap_or_default())
                })
                .map(|(a, _)| (self.uri_of(a.prefix.unwrap_or_default()), a.local))
        } else {
            let mut names: Vec<(Option<&str>, &str)> = prefixed()
                .map(|a| (self.uri_of(a.prefix.unwrap_or_default()), a.local))
                .collect();
            names.sort_unstable();
            names.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
        };
        match tie {
            // An undeclared prefix is reported as such once the document has parsed.
            None | Some((None, _)) => Ok(()),
            Some((Some(uri), local)) => Err(XmlError::Malformed {
                position: reader.buffer_position(),
                message: format!(
                    "two attributes named {local:?} in the namespace {uri:?} (Namespaces in XML 1.0 §6.3 forbids it)"
                ),
            }),
        }
    }

    /// Checks the tag and gathers its declarations and attributes into
    /// `self.namespaces` / `self.attributes`; gives its prefix and local name.
    fn read_tag(
        &mut self,
        reader: &Reader<&[u8]>,
        start: &BytesStart<'l>,
    ) -> Result<(Option<&'l str>, &'l str), XmlError> {
        let malformed = |message: String| XmlError::Malformed {
            position: reader.buffer_position(),
            message,
        };
        let input = self.input;
        let name = in_input(input, start.name().into_inner())
            .ok_or_else(|| malformed(NOT_FROM_INPUT.into()))?;
        if !is_qname(name) {
            return Err(malformed(format!("{name:?} is not an XML element name")));
        }
        let (prefix, local) = split_qname(name);
        self.namespaces.clear();
        self.attributes.clear();
        // Names seen so far on this tag: scanned while few, hashed past LINEAR_SCAN.
        // quick-xml hands attribute names out as slices of the tag's bytes (`Attributes`
        // borrows them), so an offset locates a name; the duplicate-message test pins
        // the positions this gives.
        let tag: &[u8] = start;
        let at = |name: &[u8]| (name.as_ptr() as usize).saturating_sub(tag.as_ptr() as usize);
        let name_at = |(from, len): (usize, usize)| tag.get(from..from + len).unwrap_or_default();
        self.names.clear();
        // Built only past LINEAR_SCAN names (creating a map seeds its hasher).
        let mut hashed: Option<HashMap<&[u8], usize>> = None;
        for attr in start.attributes().with_checks(false) {
            let RawAttribute { key, value: raw } = match attr {
                Ok(attr) => attr,
                Err(error) => {
                    let seen = self
                        .names
                        .len()
                        .max(hashed.as_ref().map_or(0, HashMap::len));
                    return Err(malformed(attribute_error(start, error, seen)));
                }
            };
            let key = key.into_inner();
            // quick-xml reads whatever lies between two values as the next name: the
            // name must be one, and white space must separate the attributes.
            if !str_in(input, key).is_ok_and(is_qname) {
                return Err(malformed(format!(
                    "{:?} is not an XML attribute name",
                    String::from_utf8_lossy(key)
                )));
            }
            if let Cow::Borrowed(value) = &raw {
                // The byte after the closing quote.
                let next = at(value) + value.len() + 1;
                if tag
                    .get(next)
                    .is_some_and(|b| !b.is_ascii_whitespace() && *b != b'/')
                {
                    return Err(malformed(
                        "attributes must be separated by white space".into(),
                    ));
                }
            }
            let previous = if self.names.len() < LINEAR_SCAN {
                let previous = self
                    .names
                    .iter()
                    .find(|&&range| name_at(range) == key)
                    .map(|&(from, _)| from);
                self.names.push((at(key), key.len()));
                previous
            } else {
                let hashed = hashed.get_or_insert_with(|| {
                    self.names
                        .iter()
                        .map(|&range| (name_at(range), range.0))
                        .collect()
                });
                match hashed.get(key) {
                    Some(&from) => Some(from),
                    None => {
                        hashed.insert(key, at(key));
                        None
                    }
                }
            };
            if let Some(previous) = previous {
                // quick-xml's own error, with the positions of both names in the tag.
                let error = AttrError::Duplicated(at(key), previous);
                return Err(malformed(error.to_string()));
            }
            let key = in_input(input, key).ok_or_else(|| malformed(NOT_FROM_INPUT.into()))?;
            let declaration = if key == "xmlns" {
                Some(None)
            } else {
                key.strip_prefix("xmlns:").map(Some)
            };
            match declaration {
                Some(_) if self.namespaces.len() >= self.limits.max_namespaces_per_element => {
                    return Err(XmlError::TooManyNamespacesOnElement(
                        self.limits.max_namespaces_per_element,
                    ));
                }
                Some(_) if self.declarations >= self.limits.max_namespace_declarations => {
                    return Err(XmlError::TooManyNamespaceDeclarations(
                        self.limits.max_namespace_declarations,
                    ));
                }
                None if self.attributes.len() >= self.limits.max_attributes_per_element => {
                    return Err(XmlError::TooManyAttributes(
                        self.limits.max_attributes_per_element,
                    ));
                }
                _ => {}
            }
            let raw = in_input(input, &raw).ok_or_else(|| malformed(NOT_FROM_INPUT.into()))?;
            if memchr::memchr(b'<', raw.as_bytes()).is_some() {
                return Err(malformed(
                    "'<' in an attribute value (XML 1.0 forbids it unescaped: &lt;)".into(),
                ));
            }
            let value = attribute_value(raw).map_err(malformed)?;
            if let Some(prefix) = declaration {
                namespace_rules(prefix, &value).map_err(malformed)?;
            }
            match declaration {
                Some(prefix) => {
                    self.declarations += 1;
                    self.namespaces.push((prefix, value));
                }
                None => {
                    let (prefix, local) = split_qname(key);
                    self.attributes.push(TagAttribute {
                        prefix,
                        local,
                        value,
                    });
                }
            }
        }
        Ok((prefix, local))
    }
}

/// Tags with at most this many attributes before a malformed one are read again with
/// quick-xml's pairwise duplicate check (see [`attribute_error`]).
const RECHECK: usize = 1_024;

/// The message for a malformed attribute after `seen` good ones. quick-xml checks a
/// name for duplicates before reading its value, so a duplicated name with a malformed
/// value is reported as the duplicate: reading the tag again with its checks on gives
/// exactly that error. Its check compares every pair, hence only on tags of a size the
/// default limits admit; past that, the syntax error is reported as found.
fn attribute_error(start: &BytesStart<'_>, error: AttrError, seen: usize) -> String {
    let checked = (seen <= RECHECK)
        .then(|| start.attributes().with_checks(true).find_map(Result::err))
        .flatten();
    checked.unwrap_or(error).to_string()
}

/// The first character XML 1.0 forbids anywhere (its `Char` production): the C0
/// controls but tab, LF and CR, and U+FFFE / U+FFFF. quick-xml lets them through; a
/// document holding one is refused by libxml2 (xmlsec1, the services), so a canonical
/// form or digest computed here would describe a document nobody else can read.
fn forbidden_char(input: &str) -> Option<(usize, u32)> {
    // Every forbidden character is one byte (C0) or EF BF BE / EF BF BF: a scan of
    // 64-byte blocks without branches (which the compiler vectorises; a `position` with
    // this test is not), the exact position looked for only in a block that has one,
    // and memchr's search for EF BF.
    let forbidden = |x: u8| (x < 0x20) & (x != 0x09) & (x != 0x0A) & (x != 0x0D);
    let b = input.as_bytes();
    let control = b
        .chunks(64)
        .position(|block| block.iter().fold(false, |any, &x| any | forbidden(x)))
        .and_then(|block| {
            let from = block * 64;
            let at = from + b.get(from..)?.iter().position(|&x| forbidden(x))?;
            Some((at, u32::from(*b.get(at)?)))
        });
    let nonchar = memchr::memmem::find_iter(b, b"\xEF\xBF").find_map(|i| match b.get(i + 2) {
        Some(0xBE) => Some((i, 0xFFFE)),
        Some(0xBF) => Some((i, 0xFFFF)),
        _ => None,
    });
    match (control, nonchar) {
        (Some(c), Some(n)) => Some(if c.0 < n.0 { c } else { n }),
        (c, n) => c.or(n),
    }
}

fn parse_inner(input: &str, whole_document: bool, limits: &Limits) -> Result<Document, XmlError> {
    let mut tree = TreeSink::default();
    let declared_encoding = parse_into(input, whole_document, limits, &mut tree)?;
    Ok(Document {
        declared_encoding,
        before: tree.before,
        root: tree.root.ok_or(XmlError::NoRoot)?,
        after: tree.after,
    })
}

/// Builds the tree from the parser's events.
#[derive(Default)]
struct TreeSink {
    /// Open elements, each with where its children start in `nodes`: children gather
    /// there and move into a vector of their exact size when their parent ends.
    stack: Vec<(Element, usize)>,
    nodes: Vec<Node>,
    root: Option<Element>,
    before: Vec<Misc>,
    after: Vec<Misc>,
}

impl<'a> Sink<'a> for TreeSink {
    fn start(&mut self, tag: &Tag<'_, 'a>) {
        self.stack.push((tag.to_element(), self.nodes.len()));
    }

    fn end(&mut self) {
        let Some((mut e, first_child)) = self.stack.pop() else {
            return;
        };
        if self.nodes.len() > first_child {
            e.children = self.nodes.drain(first_child..).collect();
        }
        if self.stack.is_empty() {
            self.root = Some(e);
        } else {
            self.nodes.push(Node::Element(e));
        }
    }

    fn text(&mut self, text: &str) {
        self.nodes.push(Node::Text(Cow::Owned(text.to_owned())));
    }

    fn comment(&mut self, comment: &str) {
        self.nodes.push(Node::Comment(comment.to_owned()));
    }

    fn misc(&mut self, misc: Misc, after_root: bool) {
        if after_root {
            self.after.push(misc);
        } else {
            self.before.push(misc);
        }
    }
}

/// Parses `input`, handing its events to `sink` once each has been checked; gives the
/// encoding its XML declaration names. `whole_document`: processing instructions
/// outside the root element are kept and the declared encoding read; otherwise any
/// processing instruction is refused. On an error the sink holds a part of the document.
pub(crate) fn parse_into<'a>(
    input: &'a str,
    whole_document: bool,
    limits: &Limits,
    sink: &mut impl Sink<'a>,
) -> Result<Option<String>, XmlError> {
    if let Some((at, c)) = forbidden_char(input) {
        return Err(XmlError::Malformed {
            position: at as u64,
            message: format!("the character U+{c:04X}, which XML 1.0 forbids"),
        });
    }
    let mut reader = Reader::from_str(input);
    reader.config_mut().expand_empty_elements = false;
    reader.config_mut().trim_text(false);
    let mut builder = Builder {
        input,
        limits: *limits,
        elements: 0,
        declarations: 0,
        prefixes: HashMap::new(),
        declared: Vec::new(),
        open: Vec::new(),
        undeclared: None,
        namespaces: Vec::new(),
        attributes: Vec::new(),
        names: Vec::new(),
    };
    // The innermost open element's character data not yet handed to the sink: text,
    // references and CDATA sections in a row (quick-xml reads `a &amp; b` as three
    // events) make one text node, handed over when something else comes.
    let mut text = String::new();
    let mut root_read = false;
    let mut declared_encoding = None;
    let malformed = |reader: &Reader<&[u8]>, message: String| XmlError::Malformed {
        position: reader.buffer_position(),
        message,
    };
    let mut first = true;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| malformed(&reader, e.to_string()))?;
        let at_start = std::mem::replace(&mut first, false);
        if !text.is_empty()
            && !matches!(
                event,
                Event::Text(_) | Event::GeneralRef(_) | Event::CData(_)
            )
        {
            sink.text(&text);
            text.clear();
        }
        let outside = builder.depth() == 0;
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Decl(_) if !at_start || !input.starts_with("<?xml") => {
                return Err(malformed(
                    &reader,
                    "the XML declaration is allowed only at the very start".into(),
                ));
            }
            Event::Decl(ref decl) if let Err(m) = check_declaration(decl.as_ref()) => {
                return Err(malformed(&reader, m));
            }
            Event::PI(pi) if whole_document && outside => {
                let target = str_in(input, pi.target())
                    .map_err(|e| malformed(&reader, e.to_string()))?
                    .to_string();
                let data =
                    str_in(input, pi.content()).map_err(|e| malformed(&reader, e.to_string()))?;
                // XML 1.0 §2.6: the target is a name other than "xml", and white
                // space separates it from the data.
                if !is_qname(&target)
                    || target.eq_ignore_ascii_case("xml")
                    || !data.is_empty() && !data.starts_with([' ', '\t', '\r', '\n'])
                {
                    return Err(malformed(
                        &reader,
                        format!("malformed processing instruction {target:?}"),
                    ));
                }
                let data = normalize_newlines(data.trim_start_matches([' ', '\t', '\r', '\n']))
                    .into_owned();
                sink.misc(Misc::Pi { target, data }, root_read);
            }
            Event::PI(_) => return Err(XmlError::ProcessingInstruction),
            Event::Decl(_) if !whole_document => {}
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(|e| malformed(&reader, e.to_string()))?;
                    declared_encoding = Some(String::from_utf8_lossy(&encoding).into_owned());
                }
            }
            Event::Start(_) | Event::Empty(_) if root_read => {
                return Err(XmlError::TrailingContent);
            }
            Event::Start(start) => {
                if builder.depth() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                sink.start(&builder.open(&reader, &start)?);
            }
            Event::Empty(start) => {
                sink.start(&builder.open(&reader, &start)?);
                builder.close();
                sink.end();
                root_read = builder.depth() == 0;
            }
            Event::End(_) => {
                if outside {
                    return Err(malformed(&reader, "unbalanced end tag".into()));
                }
                builder.close();
                sink.end();
                root_read = builder.depth() == 0;
            }
            Event::Text(t) => {
                let raw =
                    str_in(input, t.as_ref()).map_err(|e| malformed(&reader, e.to_string()))?;
                // XML 1.0 §2.4: character data never holds "]]>".
                if holds_cdata_end(raw.as_bytes()) {
                    return Err(malformed(
                        &reader,
                        "\"]]>\" in text (XML 1.0 forbids it unescaped: ]]&gt;)".into(),
                    ));
                }
                if outside {
                    outside_root(raw, root_read, &reader)?;
                } else {
                    unescape_into(&mut text, &normalize_newlines(raw))
                        .map_err(|m| malformed(&reader, m))?;
                }
            }
            Event::GeneralRef(_) | Event::CData(_) if outside => {
                return Err(if root_read {
                    XmlError::TrailingContent
                } else {
                    malformed(
                        &reader,
                        "a reference or CDATA section outside the root element".into(),
                    )
                });
            }
            Event::GeneralRef(r) => {
                let name =
                    str_in(input, r.as_ref()).map_err(|e| malformed(&reader, e.to_string()))?;
                text.push(reference(name).map_err(|m| malformed(&reader, m))?);
            }
            Event::CData(t) => {
                let raw =
                    str_in(input, t.as_ref()).map_err(|e| malformed(&reader, e.to_string()))?;
                text.push_str(&normalize_newlines(raw));
            }
            Event::Comment(c) => {
                let raw =
                    str_in(input, c.as_ref()).map_err(|e| malformed(&reader, e.to_string()))?;
                // XML 1.0 §2.5: no "--" inside a comment, and none ending in "-".
                if raw.contains("--") || raw.ends_with('-') {
                    return Err(malformed(
                        &reader,
                        "\"--\" inside a comment (XML 1.0 forbids it)".into(),
                    ));
                }
                let comment = normalize_newlines(raw);
                if !outside {
                    sink.comment(&comment);
                } else {
                    sink.misc(Misc::Comment(comment.into_owned()), root_read);
                }
            }
            Event::Eof => break,
        }
    }
    if builder.depth() > 0 {
        return Err(malformed(
            &reader,
            "unclosed element at end of input".into(),
        ));
    }
    if !root_read {
        return Err(XmlError::NoRoot);
    }
    if let Some(prefix) = builder.undeclared {
        return Err(XmlError::UndeclaredPrefix(prefix));
    }
    Ok(declared_encoding)
}

/// Whether `text` holds `]]>`. Looked for from its `>` (rare in text): `memmem::find`
/// sets a searcher up at each call, which cost more than the search on the short texts
/// of a clinical document.
fn holds_cdata_end(text: &[u8]) -> bool {
    memchr::memchr_iter(b'>', text).any(|i| i >= 2 && text.get(i - 2..i) == Some(b"]]"))
}

/// Text around the root element: only white space is allowed.
fn outside_root(text: &str, root_read: bool, reader: &Reader<&[u8]>) -> Result<(), XmlError> {
    // XML's white space only (Rust's `trim` would also take U+0085, U+2028...).
    if text.trim_matches([' ', '\t', '\r', '\n']).is_empty() {
        Ok(())
    } else if root_read {
        Err(XmlError::TrailingContent)
    } else {
        Err(XmlError::Malformed {
            position: reader.buffer_position(),
            message: "text outside the root element".into(),
        })
    }
}

/// The text of `bytes`, a slice quick-xml cut from `input` (reading a `&str`, it hands
/// out slices of it): taken back from the input, which is UTF-8 already, instead of
/// being checked again (that check was 6 % of a parse). Bytes from anywhere else (none
/// today) are checked.
fn str_in<'a>(input: &'a str, bytes: &'a [u8]) -> Result<&'a str, std::str::Utf8Error> {
    match in_input(input, bytes) {
        Some(text) => Ok(text),
        None => std::str::from_utf8(bytes),
    }
}

/// `bytes` as the slice of `input` it is, for as long as the input lives (names and
/// values of a [`Tag`]); `None` when it is not a slice of the input.
fn in_input<'i>(input: &'i str, bytes: &[u8]) -> Option<&'i str> {
    // Allocations do not overlap: a range inside the input's is a slice of it.
    (bytes.as_ptr() as usize)
        .checked_sub(input.as_ptr() as usize)
        .and_then(|from| input.get(from..from.checked_add(bytes.len())?))
}

/// quick-xml reading a `&str` hands out slices of it; a name or value that is not one
/// would be a change in quick-xml, refused rather than copied.
const NOT_FROM_INPUT: &str = "internal: the XML reader handed out bytes that are not the input's";

/// Attribute-value normalization (XML 1.0 §3.3.3) for CDATA attributes: literal white
/// space becomes a space, references keep their character. Values with nothing to
/// normalize (nearly all) are copied once.
fn attribute_value(raw: &str) -> Result<Cow<'_, str>, String> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b'\t' | b'\n' | b'\r' | b'&'))
    {
        return Ok(Cow::Borrowed(raw));
    }
    let normalized: String = normalize_newlines(raw)
        .chars()
        .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
        .collect();
    unescape(Cow::Owned(normalized)).map(Cow::Owned)
}

const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NAMESPACE: &str = "http://www.w3.org/2000/xmlns/";

/// Namespaces in XML 1.0 §3: `xmlns` is never declared, `xml` only to its own name,
/// neither name bound to another prefix, and a prefixed declaration is never empty.
fn namespace_rules(prefix: Option<&str>, uri: &str) -> Result<(), String> {
    let broken = match prefix {
        Some("xmlns") => Some("the prefix xmlns cannot be declared"),
        Some("xml") if uri != XML_NAMESPACE => {
            Some("the prefix xml is bound to its own namespace only")
        }
        Some("xml") => None,
        Some(_) if uri.is_empty() => Some("a prefixed namespace declaration cannot be empty"),
        _ if uri == XML_NAMESPACE || uri == XMLNS_NAMESPACE => {
            Some("the xml and xmlns namespaces cannot be bound to another prefix")
        }
        _ => None,
    };
    broken.map_or(Ok(()), |m| Err(m.to_string()))
}

/// The XML declaration's content (`xml version="1.0" ...`, without `<?` `?>`): XML 1.0
/// §2.8 `VersionInfo EncodingDecl? SDDecl?` in that order, version `1.x`, an `EncName`,
/// standalone `yes` or `no`.
fn check_declaration(content: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(content).map_err(|e| e.to_string())?;
    let mut rest = text.strip_prefix("xml").ok_or("not an XML declaration")?;
    let mut expected = ["version", "encoding", "standalone"].as_slice();
    let bad = |what: &str| format!("malformed XML declaration: {what}");
    loop {
        let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        if trimmed.len() == rest.len() {
            return Err(bad("white space must separate its parts"));
        }
        let (name, after) = trimmed.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim_end_matches([' ', '\t', '\r', '\n']);
        let position = expected
            .iter()
            .position(|e| *e == name)
            .ok_or_else(|| bad(&format!("{name:?} out of place")))?;
        if name != "version" && expected.first() == Some(&"version") {
            return Err(bad("version comes first"));
        }
        expected = expected.get(position + 1..).unwrap_or_default();
        let after = after.trim_start_matches([' ', '\t', '\r', '\n']);
        let quote = after.chars().next().filter(|q| matches!(q, '"' | '\''));
        let quote = quote.ok_or_else(|| bad("a value must be quoted"))?;
        let (value, tail) = after[1..]
            .split_once(quote)
            .ok_or_else(|| bad("a value is not closed"))?;
        let ok = match name {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
            "encoding" => {
                let mut b = value.bytes();
                b.next().is_some_and(|c| c.is_ascii_alphabetic())
                    && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
            }
            _ => matches!(value, "yes" | "no"),
        };
        if !ok {
            return Err(bad(&format!("{name} {value:?}")));
        }
        rest = tail;
    }
    if expected.first() == Some(&"version") {
        return Err(bad("no version"));
    }
    Ok(())
}

/// An XML 1.0 `Name` (§2.3) with at most one ':' neither first nor last (a QName in
/// a namespace-aware document).
fn is_qname(name: &str) -> bool {
    if name.is_ascii() {
        ascii_qname(name.as_bytes())
    } else {
        qname_by_parts(name)
    }
}

/// [`is_qname`] for an ASCII name (nearly all), in one pass over its bytes: splitting at
/// ':' first was a tenth of a clinical document's parse.
fn ascii_qname(b: &[u8]) -> bool {
    let ncname_start = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
    let mut colons = 0;
    let rest = b.iter().enumerate().skip(1).all(|(i, c)| match c {
        b':' => {
            colons += 1;
            ncname_start(b.get(i + 1))
        }
        c => c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'),
    });
    ncname_start(b.first()) && rest && colons <= 1
}

/// [`is_qname`] for any name: split at ':', each part a `NCName`.
fn qname_by_parts(name: &str) -> bool {
    fn start(c: char) -> bool {
        matches!(c, 'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
            | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
            | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
            | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
            | '\u{10000}'..='\u{EFFFF}')
    }
    fn other(c: char) -> bool {
        start(c)
            || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
    }
    let mut parts = name.split(':');
    let ncname = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(start) && chars.all(other)
    };
    match (parts.next(), parts.next(), parts.next()) {
        (Some(local), None, _) => ncname(local),
        (Some(prefix), Some(local), None) => ncname(prefix) && ncname(local),
        _ => false,
    }
}

fn split_qname(name: &str) -> (Option<&str>, &str) {
    // A byte scan: names are short, and ':' is ASCII so the split is a char boundary.
    match name.bytes().position(|b| b == b':') {
        Some(i) => (Some(&name[..i]), &name[i + 1..]),
        None => (None, name),
    }
}

fn normalize_newlines(s: &str) -> Cow<'_, str> {
    if memchr::memchr(b'\r', s.as_bytes()).is_some() {
        Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Resolves the five predefined entities and character references; any other entity
/// reference is an error (there is no DTD to define it, and none is ever read).
fn unescape(s: Cow<'_, str>) -> Result<String, String> {
    if memchr::memchr(b'&', s.as_bytes()).is_none() {
        return Ok(s.into_owned());
    }
    let mut out = String::with_capacity(s.len());
    unescape_into(&mut out, &s)?;
    Ok(out)
}

/// [`unescape`], appending to `out`.
fn unescape_into(out: &mut String, s: &str) -> Result<(), String> {
    let mut rest = s;
    while let Some(i) = memchr::memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = memchr::memchr(b';', after.as_bytes())
            .ok_or_else(|| "an '&' that starts no reference".to_string())?;
        out.push(reference(&after[..end])?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// The character of the reference `&name;`: one of the five predefined entities or a
/// character reference.
fn reference(name: &str) -> Result<char, String> {
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => {
            // Digits only: Rust's integer parsing also takes a leading '+'
            // (`&#x+a;`), which XML does not.
            let number = |digits: &str, radix: u32| {
                (!digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)))
                    .then(|| u32::from_str_radix(digits, radix).ok())
                    .flatten()
            };
            let code = if let Some(hex) = name.strip_prefix("#x") {
                number(hex, 16)
            } else if let Some(dec) = name.strip_prefix('#') {
                number(dec, 10)
            } else {
                return Err(format!(
                    "entity reference &{name}; is not allowed (no DTD is read)"
                ));
            };
            code.and_then(char::from_u32)
                .filter(|c| is_xml_char(*c))
                .ok_or_else(|| format!("&{name}; is not a valid character reference"))
        }
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Element;

    /// Found by the c14n fuzz target: a C0 control in a comment was accepted (libxml2,
    /// hence xmlsec1 and the services, refuse it). Refused anywhere, with its offset.
    #[test]
    fn characters_xml_forbids_are_refused_wherever_they_are() {
        for (doc, at) in [
            ("<!-- a\u{15}b --><r/>", 6),
            ("<r a=\"\u{1}\"/>", 6),
            ("<r>\u{0}</r>", 3),
            ("<r><!-- x\u{1F} --></r>", 9),
            ("<r>\u{FFFF}</r>", 3),
            ("<r>\u{FFFE}</r>", 3),
        ] {
            match parse_document(doc) {
                Err(XmlError::Malformed { position, message }) => {
                    assert_eq!(position, at, "{doc:?}");
                    assert!(message.contains("XML 1.0 forbids"), "{message}");
                }
                other => panic!("{doc:?}: {other:?}"),
            }
        }
        parse_document("<r>\t\r\n\u{FFFD}\u{10000}</r>").expect("allowed characters");
        assert!(
            matches!(
                parse_document("<r/>\u{2028}"),
                Err(XmlError::TrailingContent)
            ),
            "only XML's white space may follow the root"
        );
    }

    /// Found by the c14n fuzz target: `a="x"!b="y"` was read as attributes `a` and
    /// `!b` (libxml2 refuses it). Names must be XML names, attributes separated by
    /// white space, comments free of "--".
    #[test]
    fn names_attribute_separation_and_comments_are_checked() {
        for doc in [
            "<r a=\"1\"!b=\"2\"/>",
            "<r a=\"1\"b=\"2\"/>",
            "<r a='1'b='2'></r>",
            "<r 1a=\"1\"/>",
            "<r a:b:c=\"1\"/>",
            "<1r/>",
            "<r:/>",
            "<r><!-- a -- b --></r>",
            "<r><!-- a ---></r>",
            "<?xml version=\"1c.0\"?><r/>",
            "<?xml encoding=\"UTF-8\"?><r/>",
            "<?xml version=\"1.0\" standalone=\"maybe\"?><r/>",
            "<?xml version=\"1.0\"encoding=\"UTF-8\"?><r/>",
            "<?xml version=\"1.0\" standalone=\"yes\" encoding=\"UTF-8\"?><r/>",
            " <?xml version=\"1.0\"?><r/>",
            "<r/><?xml version=\"1.0\"?>",
            "<r a=\"<\"/>",
            "<r>a]]>b</r>",
            "<?xml-stylesheet, x?><r/>",
            "<?XML x?><r/>",
            "<?a?b?><r/>",
            "\u{85}<r/>",
            "&#9;<r/>",
            "<![CDATA[ ]]><r/>",
            "<r xmlns:xmlns=\"urn:x\"/>",
            "<r xmlns:xml=\"urn:x\"/>",
            "<r xmlns:p=\"\"/>",
            "<r xmlns:p=\"http://www.w3.org/XML/1998/namespace\"/>",
            "<r xmlns=\"http://www.w3.org/2000/xmlns/\"/>",
        ] {
            assert!(
                matches!(parse_document(doc), Err(XmlError::Malformed { .. })),
                "{doc:?}: {:?}",
                parse_document(doc)
            );
        }
        for doc in [
            "<r a=\"1\" b=\"2\"/>",
            "<r a=\"1\"\n\tb='2'/>",
            "<r a=\"1\"/>",
            "<é·-x.y _a=\"1\"><!-- - a - --></é·-x.y>",
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone='no' ?><r/>",
            "<?xml version='1.1'?>\n<r/>",
            "<?xml-stylesheet type=\"text/xsl\" href=\"cda.xsl\"?><r/>",
            "<?pi?><r/>",
            "<r xmlns:xml=\"http://www.w3.org/XML/1998/namespace\" xmlns=\"\"/>",
        ] {
            parse_document(doc).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
        }
    }

    /// One element with `n` attributes (`n = 100_000` is 1.1 MB: 14.7 s of CPU before
    /// the parser was made linear).
    fn many_attributes(n: usize) -> String {
        let mut s = String::from("<r");
        for i in 0..n {
            s.push_str(&format!(" a{i}=\"v\""));
        }
        s.push_str("/>");
        s
    }

    /// A root declaring `declarations` prefixes over `elements` empty children
    /// (8,000 x 20,000: 6 s of CPU before, every element copied the whole scope).
    fn many_declarations(declarations: usize, elements: usize) -> String {
        let mut s = String::from("<r");
        for i in 0..declarations {
            s.push_str(&format!(" xmlns:p{i}=\"urn:p\""));
        }
        s.push('>');
        for i in 0..elements {
            s.push_str(&format!("<p{}:e/>", i % declarations.max(1)));
        }
        s.push_str("</r>");
        s
    }

    const RAISED: Limits = Limits {
        max_depth: 64,
        max_elements: usize::MAX,
        max_attributes_per_element: usize::MAX,
        max_namespaces_per_element: usize::MAX,
        max_namespaces_in_scope: usize::MAX,
        max_namespace_declarations: usize::MAX,
    };

    #[test]
    fn pathological_inputs_are_refused_by_their_limit() {
        let defaults = Limits::default();
        assert_eq!(
            parse(&many_attributes(100_000)),
            Err(XmlError::TooManyAttributes(
                defaults.max_attributes_per_element
            ))
        );
        assert_eq!(
            parse(&many_declarations(8_000, 20_000)),
            Err(XmlError::TooManyNamespacesOnElement(
                defaults.max_namespaces_per_element
            ))
        );
    }

    #[test]
    fn pathological_inputs_parse_when_the_limits_are_raised() {
        // Not timed here (the `xml_parse` bench is): this checks that the linear paths
        // (hashed duplicate check, declaration stacks) build the same tree.
        let e = parse_with(&many_attributes(5_000), &RAISED).expect("attributes");
        assert_eq!(e.attributes.len(), 5_000);
        assert_eq!(e.attribute("a4999"), Some("v"));
        let e = parse_with(&many_declarations(1_000, 2_000), &RAISED).expect("namespaces");
        assert_eq!(e.namespaces.len(), 1_000);
        assert_eq!(e.elements().count(), 2_000);
        assert_eq!(
            crate::namespace_of(
                e.elements().nth(1_999).expect("last"),
                &crate::scope_of(&e, &crate::Scope::new())
            )
            .as_deref(),
            Some("urn:p")
        );
    }

    #[test]
    fn each_limit_admits_its_value_and_refuses_one_more() {
        let limits = Limits {
            max_depth: 3,
            max_elements: 4,
            max_attributes_per_element: 2,
            max_namespaces_per_element: 2,
            max_namespaces_in_scope: 3,
            max_namespace_declarations: 4,
        };
        let ok = |s: &str| parse_with(s, &limits).map(|_| ());
        assert_eq!(ok("<a><b><c/></b></a>"), Ok(()));
        assert_eq!(ok("<a><b><c></c></b></a>"), Ok(()));
        assert_eq!(
            ok("<a><b><c><d/></c></b></a>"),
            Ok(()),
            "an empty element adds no open level"
        );
        assert_eq!(
            ok("<a><b><c><d></d></c></b></a>"),
            Err(XmlError::TooDeep(3))
        );
        assert_eq!(ok("<a><b/><b/><b/></a>"), Ok(()));
        assert_eq!(
            ok("<a><b/><b/><b/><b/></a>"),
            Err(XmlError::TooManyElements(4))
        );
        assert_eq!(ok("<a x='1' y='2' xmlns='urn:a'/>"), Ok(()));
        assert_eq!(
            ok("<a x='1' y='2' z='3'/>"),
            Err(XmlError::TooManyAttributes(2))
        );
        assert_eq!(ok("<a xmlns='urn:a' xmlns:p='urn:p' p:x='1'/>"), Ok(()));
        assert_eq!(
            ok("<a xmlns='urn:a' xmlns:p='urn:p' xmlns:q='urn:q'/>"),
            Err(XmlError::TooManyNamespacesOnElement(2))
        );
        assert_eq!(
            ok("<a xmlns:p='urn:p'><b xmlns:q='urn:q' xmlns:r='urn:r'/></a>"),
            Ok(())
        );
        assert_eq!(
            ok("<a xmlns:p='urn:p' xmlns:s='urn:s'><b xmlns:q='urn:q' xmlns:r='urn:r'/></a>"),
            Err(XmlError::TooManyNamespacesInScope(3))
        );
        // Declarations of closed siblings leave the scope but count for the document.
        assert_eq!(
            ok("<a><b xmlns:p='urn:p' xmlns:q='urn:q'/><b xmlns:p='urn:p' xmlns:q='urn:q'/></a>"),
            Ok(())
        );
        assert_eq!(
            ok(
                "<a xmlns:x='urn:x'><b xmlns:p='urn:p' xmlns:q='urn:q'/><b xmlns:p='urn:p' xmlns:q='urn:q'/></a>"
            ),
            Err(XmlError::TooManyNamespaceDeclarations(4))
        );
    }

    #[test]
    fn limit_errors_name_the_limit_and_its_value() {
        let d = Limits::default();
        for (error, words) in [
            (XmlError::TooDeep(d.max_depth), "nesting depth"),
            (
                XmlError::TooManyElements(d.max_elements),
                "elements per document",
            ),
            (
                XmlError::TooManyAttributes(d.max_attributes_per_element),
                "attributes per element",
            ),
            (
                XmlError::TooManyNamespacesOnElement(d.max_namespaces_per_element),
                "namespace declarations per element",
            ),
            (
                XmlError::TooManyNamespacesInScope(d.max_namespaces_in_scope),
                "namespace declarations in scope",
            ),
            (
                XmlError::TooManyNamespaceDeclarations(d.max_namespace_declarations),
                "namespace declarations per document",
            ),
        ] {
            let message = error.to_string();
            assert!(message.contains(words), "{message}");
        }
        assert_eq!(
            parse(&many_attributes(300)).map_err(|e| e.to_string()),
            Err("an element has more than 256 attributes (limit: attributes per element)".into())
        );
    }

    #[test]
    fn duplicate_attributes_keep_quick_xml_s_message() {
        // Few attributes (scanned) and many (hashed): the message has both positions.
        assert_eq!(
            parse("<r a='1' b='2' a='3'/>"),
            Err(XmlError::Malformed {
                position: 22,
                message: "position 14: duplicated attribute, previous declaration at position 2"
                    .into()
            })
        );
        let mut many = String::from("<r");
        for i in 0..40 {
            many.push_str(&format!(" a{i:02}='v'"));
        }
        many.push_str(" a07='w'/>");
        match parse(&many) {
            Err(XmlError::Malformed { message, .. }) => assert_eq!(
                message,
                "position 322: duplicated attribute, previous declaration at position 58"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("<r xmlns:p='urn:a' xmlns:p='urn:b'/>"),
            Err(XmlError::Malformed { .. })
        ));
    }

    #[test]
    fn prefixes_are_scoped_to_their_element() {
        assert_eq!(
            parse("<r><x xmlns:p='urn:p'/><p:y/></r>"),
            Err(XmlError::UndeclaredPrefix("p".into()))
        );
        assert_eq!(
            parse("<r><x xmlns:p='urn:p'></x><y p:a='1'/></r>"),
            Err(XmlError::UndeclaredPrefix("p".into()))
        );
        // Unbinding a prefix (`xmlns:p=''`) is XML 1.1 only: Namespaces in XML 1.0
        // (and libxml2) refuse it.
        assert!(matches!(
            parse("<r xmlns:p='urn:p'><x xmlns:p=''><p:y/></x></r>"),
            Err(XmlError::Malformed { .. })
        ));
        assert!(parse("<p:r xmlns:p='urn:p' p:a='1' xml:lang='fr' xmlns:q='urn:q'/>").is_ok());
        assert!(parse("<r xmlns='urn:d'><x xmlns=''/></r>").is_ok());
        // The first undeclared prefix in document order: element before attributes.
        assert_eq!(
            parse("<r><a:x b:y='1'/><c:z/></r>"),
            Err(XmlError::UndeclaredPrefix("a".into()))
        );
        assert_eq!(
            parse("<r><x b:y='1' c:z='2'/></r>"),
            Err(XmlError::UndeclaredPrefix("b".into()))
        );
    }

    #[test]
    fn structural_errors_come_before_undeclared_prefixes() {
        // The prefix check used to run on the finished tree: keep its precedence.
        assert!(matches!(parse("<p:r>"), Err(XmlError::Malformed { .. })));
        assert_eq!(parse("<p:r/><r/>"), Err(XmlError::TrailingContent));
        assert!(matches!(
            parse("<p:r>&bogus;</p:r>"),
            Err(XmlError::Malformed { .. })
        ));
    }

    #[test]
    fn values_are_normalized_and_unescaped() {
        let e = parse("<r a=\"x\ty\r\nz&#9;&amp;\">l1\r\nl2\r&lt;</r>").expect("parse");
        assert_eq!(e.attribute("a"), Some("x y z\t&"));
        assert_eq!(e.text_content(), "l1\nl2\n<");
        let _: &Element = &e;
    }

    /// Text, references and CDATA sections in a row are one text node; a comment or an
    /// element between them starts another.
    #[test]
    fn character_data_in_a_row_is_one_text_node() {
        let e =
            parse("<r>a &amp; b<![CDATA[<c>\r\n]]>&#x41;&#66;<!--x-->d<e/>f\r</r>").expect("parse");
        let text = |s: &str| Node::Text(Cow::Owned(s.to_string()));
        assert_eq!(
            e.children,
            vec![
                text("a & b<c>\nAB"),
                Node::Comment("x".into()),
                text("d"),
                Node::Element(Element::new(None, "e")),
                text("f\n"),
            ]
        );
        // Each element's own: nothing of the parent's text goes to a child, or back.
        let e = parse("<r>a<s>b&lt;</s>&gt;c</r>").expect("parse");
        assert_eq!(e.children.len(), 3);
        assert_eq!(e.children[0], text("a"));
        assert_eq!(e.children[2], text(">c"));
        assert_eq!(
            e.elements().next().map(Element::text_content),
            Some("b<".into())
        );
        assert!(parse("<r>a &unknown; b</r>").is_err());
    }

    /// The forbidden-character scan reads 64-byte blocks: a character at either side of
    /// a block's edge, in a last partial block, or after a U+FFFE of an earlier block is
    /// found at its own offset (the first of them).
    #[test]
    fn forbidden_characters_are_found_across_block_edges() {
        for at in [0, 1, 62, 63, 64, 65, 127, 128, 129, 190] {
            let mut text = "a".repeat(200);
            text.replace_range(at..at + 1, "\u{1}");
            assert_eq!(forbidden_char(&text), Some((at, 1)), "control at {at}");
        }
        let mut text = "a".repeat(130);
        text.replace_range(10..13, "\u{FFFE}");
        text.replace_range(100..101, "\u{2}");
        assert_eq!(forbidden_char(&text), Some((10, 0xFFFE)));
        let mut text = "a".repeat(130);
        text.replace_range(10..11, "\u{2}");
        text.replace_range(100..103, "\u{FFFF}");
        assert_eq!(forbidden_char(&text), Some((10, 2)));
        assert_eq!(forbidden_char(&"\t\r\n a".repeat(50)), None);
    }

    /// An empty CDATA section adds no text node.
    #[test]
    fn an_empty_cdata_section_is_no_text() {
        assert!(
            parse("<x><![CDATA[]]></x>")
                .expect("parse")
                .children
                .is_empty()
        );
        assert_eq!(
            parse("<r><![CDATA[]]><!--c--></r>")
                .expect("parse")
                .children,
            vec![Node::Comment("c".into())]
        );
    }

    /// Slices of the input are taken back from it; any other bytes are checked.
    #[test]
    fn str_in_takes_slices_of_the_input_and_checks_the_rest() {
        let input = "<r>é</r>";
        let inner = &input.as_bytes()[3..5];
        assert_eq!(str_in(input, inner), Ok("é"));
        assert!(
            str_in(input, &input.as_bytes()[3..4]).is_err(),
            "half a character"
        );
        let elsewhere = b"\xC3\xA9".to_vec();
        assert_eq!(str_in(input, &elsewhere), Ok("é"));
        assert!(str_in(input, b"\xFF").is_err());
    }

    /// The one-pass check of ASCII names says what the check by parts (with the full
    /// character table) says, on every string of up to five characters over an alphabet
    /// of each class that matters.
    #[test]
    fn ascii_names_are_checked_as_by_parts() {
        let alphabet = ['a', 'Z', '_', '-', '.', ':', '7', ' ', '<'];
        let mut names = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = names
                .iter()
                .filter(|n| n.len() == names.last().map_or(0, String::len))
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        assert!(names.len() > 60_000);
        for name in &names {
            assert_eq!(
                ascii_qname(name.as_bytes()),
                qname_by_parts(name),
                "{name:?}"
            );
        }
        assert!(is_qname("a:b") && is_qname("_x.y-1") && is_qname("é:b"));
        assert!(!is_qname("a:b:c") && !is_qname(":a") && !is_qname("a:") && !is_qname("1a"));
    }

    #[test]
    fn attributes_with_one_expanded_name_are_refused() {
        // Past LINEAR_SCAN prefixed attributes, the check sorts.
        let many: String = (0..20).map(|i| format!(" a:n{i}=''")).collect();
        for input in [
            r#"<r xmlns:a="urn:x" xmlns:b="urn:x" a:k="1" b:k="2"/>"#,
            r#"<r xmlns:a="urn:x"><s xmlns:b="urn:x" b:k="1" a:k="2"/></r>"#,
            &format!(r#"<r xmlns:a="urn:x" xmlns:b="urn:x"{many} a:k="1" b:k="2"/>"#),
        ] {
            let error = parse(input).expect_err(input).to_string();
            assert!(
                error.contains("two attributes named \"") && error.contains("§6.3"),
                "{error}"
            );
        }
        for input in [
            r#"<r xmlns:a="urn:x" xmlns:b="urn:y" a:k="1" b:k="2" k="3"/>"#,
            r#"<r xmlns:a="urn:x" a:k="1" a:j="2"/>"#,
            &format!(r#"<r xmlns:a="urn:x" xmlns:b="urn:y"{many} a:k="1" b:k="2"/>"#),
        ] {
            assert!(parse(input).is_ok(), "{input}");
        }
        // Two attributes tied through undeclared prefixes: the undeclared prefix is
        // what is reported.
        assert_eq!(
            parse(r#"<r x:k="1" y:k="2"/>"#),
            Err(XmlError::UndeclaredPrefix("x".into()))
        );
    }

    #[test]
    fn text_holding_the_cdata_end_is_found() {
        for (text, holds) in [
            ("]]>", true),
            ("a]]>b", true),
            ("]>]]]>", true),
            ("]] >", false),
            ("]>", false),
            (">", false),
            ("", false),
            ("]]", false),
        ] {
            assert_eq!(holds_cdata_end(text.as_bytes()), holds, "{text:?}");
        }
    }

    /// A character reference is `&#` digits `;` or `&#x` hex digits `;`, nothing else:
    /// the fuzzer found `&#x+a;` accepted (Rust's integer parsing takes a sign).
    #[test]
    fn character_references_are_digits_only() {
        assert_eq!(
            parse("<r a=\"&#x41;&#65;\">&#x42;&#66;</r>")
                .expect("parse")
                .text_content(),
            "BB"
        );
        for bad in [
            "&#x+a;", "&#+65;", "&#x-1;", "&#-65;", "&#x;", "&#;", "&#x 41;", "&#65 ;",
        ] {
            for doc in [format!("<r>{bad}</r>"), format!("<r a=\"{bad}\"/>")] {
                assert!(
                    matches!(parse(&doc), Err(XmlError::Malformed { .. })),
                    "{doc} accepted"
                );
            }
        }
    }
}
