//! MTOM/XOP (`multipart/related; type="application/xop+xml"`): parsing a request into
//! its root SOAP part and attachments by Content-ID, and building a response.
//!
//! # What [`parse`] accepts, and what it refuses
//!
//! The proxy signs what it parsed and forwards it re-serialized, and the mock DMP reads
//! with the same parser: a message two readers could split differently is refused with
//! an [`MtomError`] naming the part (parts are counted from 1, in message order), never
//! guessed at. Following RFC 2046 §5.1.1, the delimiter of a part is CRLF `--boundary`;
//! the delimiter line may carry transport padding (spaces, tabs) before its CRLF, the
//! close delimiter is `--boundary--`.
//!
//! Accepted, being unambiguous: a preamble before the first delimiter when that
//! delimiter starts a line; transport padding; an epilogue after the close delimiter
//! and its line end (ignored); headers folded over several lines; a part whose content
//! holds `CRLF--boundary` followed by a proper line end is, by the RFC, cut there, and
//! what follows must then itself be a well-formed part.
//!
//! Refused:
//! - `--boundary` anywhere not at the start of a line (preamble, headers, content):
//!   a strict reader keeps it as content while a lenient one cuts the part there;
//! - a delimiter line followed by anything but transport padding and CRLF (or `--`):
//!   `CRLF--boundaryXYZ` is a delimiter for the RFC's prefix match, content for others;
//! - a part without headers (its delimiter line followed by a blank line, or directly by
//!   the next delimiter: a reader looking for the blank line would take the next part's
//!   headers), a part whose headers do not end with a blank line of their own before the
//!   next delimiter (`headers CRLF CRLF--boundary`, where the blank line is the
//!   delimiter's CRLF: a reader looking for CRLF `--boundary` after the blank line would
//!   swallow the next part), a malformed or control-character header line, a `Content-ID`,
//!   `Content-Type` or `Content-Transfer-Encoding` header given twice, a transfer
//!   encoding other than `binary`, `8bit` or `7bit` (a receiver would decode it);
//! - a part without a `Content-ID` (only the root may lack one, and only when `start` is
//!   absent), a `Content-ID` that is empty or holds spaces, controls or angle brackets,
//!   two parts whose Content-IDs are equal ignoring ASCII case;
//! - a `start` that names no part, or names a part other than the first (a receiver
//!   ignoring `start` would read the first part as the envelope);
//! - a body that ends before the close delimiter, anything but transport padding and a
//!   line end after it, or the boundary appearing again in the epilogue;
//! - a Content-Type parameter given twice, a malformed parameter list, a boundary that
//!   is not 1 to 70 RFC 2046 characters.
//!
//! Whether every attachment is used exactly once by an `xop:Include` is the reader's
//! business: [`crate::xds::Submission::read`] checks it for ITI-41.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

/// A parsed multipart/related message. Every content is a slice of the original body.
#[derive(Debug, Clone)]
pub struct Mtom {
    /// The root part (the SOAP envelope).
    pub root: Bytes,
    /// The root part's Content-ID (without angle brackets), when it has one.
    pub root_content_id: Option<String>,
    /// The other parts, in message order.
    pub attachments: Vec<Attachment>,
    /// Content-ID (without angle brackets) to content, for each attachment.
    pub parts: HashMap<String, Bytes>,
}

impl Mtom {
    /// The part with this Content-ID.
    pub fn part(&self, content_id: &str) -> Option<&Bytes> {
        self.parts.get(content_id)
    }
}

/// Why a multipart/related body was refused. `part` counts from 1, in message order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MtomError {
    #[error("Content-Type {0:?} is not multipart/related")]
    NotMultipartRelated(String),
    #[error("Content-Type {0:?}: malformed parameter list")]
    MalformedContentType(String),
    #[error("Content-Type parameter {0:?} is given more than once")]
    DuplicateParameter(String),
    #[error("multipart/related without boundary")]
    MissingBoundary,
    #[error("boundary {0:?} is not 1 to 70 characters allowed by RFC 2046")]
    InvalidBoundary(String),
    #[error("no MIME boundary in the body")]
    NoBoundary,
    #[error("the boundary first appears inside a line of the preamble, not at a line start")]
    BoundaryInPreamble,
    #[error(
        "the boundary delimiter opening MIME part {part} is followed by {found:?}, not a line end"
    )]
    BadDelimiterLine { part: usize, found: String },
    #[error(
        "MIME part {part}{}: the boundary appears inside the part, not at a line start (a reader could cut the part there)",
        named(.content_id)
    )]
    BoundaryInContent {
        part: usize,
        content_id: Option<String>,
    },
    #[error("MIME part {part} has no headers")]
    PartWithoutHeaders { part: usize },
    #[error("MIME part {part}: no blank line ends its headers before the next boundary")]
    UnterminatedHeaders { part: usize },
    #[error("MIME part {part}: malformed header line {line:?}")]
    MalformedHeader { part: usize, line: String },
    #[error("MIME part {part}{}: header {name} is given more than once", named(.content_id))]
    DuplicateHeader {
        part: usize,
        content_id: Option<String>,
        name: String,
    },
    #[error(
        "MIME part {part}{}: Content-Transfer-Encoding {encoding:?} is not supported (binary, 8bit or 7bit only)",
        named(.content_id)
    )]
    UnsupportedTransferEncoding {
        part: usize,
        content_id: Option<String>,
        encoding: String,
    },
    #[error("MIME part {part} has no Content-ID")]
    MissingContentId { part: usize },
    #[error(
        "MIME part {part}: Content-ID {value:?} is empty or holds spaces, controls or angle brackets"
    )]
    InvalidContentId { part: usize, value: String },
    #[error("MIME parts {first} and {second} have the same Content-ID <{content_id}>")]
    DuplicateContentId {
        content_id: String,
        first: usize,
        second: usize,
    },
    #[error("no MIME part has the start Content-ID <{0}>")]
    StartNotFound(String),
    #[error(
        "the start Content-ID <{start}> names MIME part {part}: the root must be the first part"
    )]
    StartNotFirst { start: String, part: usize },
    #[error("multipart/related without parts")]
    NoParts,
    #[error("no closing boundary delimiter: the body ends in MIME part {part}")]
    MissingCloseDelimiter { part: usize },
    #[error("{0:?} follows the closing boundary delimiter, not a line end")]
    ContentAfterClose(String),
    #[error("the boundary appears again after the closing boundary delimiter")]
    BoundaryInEpilogue,
}

/// ` <content-id>` for error messages, empty when unknown.
fn named(content_id: &Option<String>) -> String {
    content_id
        .as_deref()
        .map(|id| format!(" <{id}>"))
        .unwrap_or_default()
}

/// The parameters of a header like `multipart/related; boundary="x"`: names in ASCII
/// lower case, values unquoted (quoted-string with backslash escapes, or a token).
/// `None` when the list is malformed (a parameter without `=`, an unterminated quote).
fn parameters(header: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let Some((_, mut rest)) = header.split_once(';') else {
        return Some(out);
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return Some(out);
        }
        let (name, after) = rest.split_once('=')?;
        let name = name.trim();
        if name.is_empty() || name.contains([';', '"', ' ', '\t']) {
            return None;
        }
        let after = after.trim_start_matches([' ', '\t']);
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => value.push(chars.next()?.1),
                        (i, '"') => break i + 1,
                        (_, c) => value.push(c),
                    }
                };
                (value, quoted.get(end..)?)
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim_end().to_string(), &after[end..])
            }
        };
        out.push((name.to_ascii_lowercase(), value));
        let tail = tail.trim_start_matches([' ', '\t']);
        if !(tail.is_empty() || tail.starts_with(';')) {
            return None;
        }
        rest = tail;
    }
}

/// The value of parameter `name` in a header like `multipart/related; boundary="x"`.
pub fn header_param(header: &str, name: &str) -> Option<String> {
    parameters(header)?
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|i| i + from)
}

const CRLF: &[u8] = b"\r\n";

/// RFC 2046 `boundary := 0*69<bchars> bcharsnospace` (at least one character).
fn valid_boundary(b: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    (1..=70).contains(&b.len()) && b.chars().all(allowed) && !b.ends_with(' ')
}

/// The position after any transport padding (spaces and tabs) from `from`.
fn skip_padding(body: &[u8], from: usize) -> usize {
    from + body
        .get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()
}

/// A few bytes, readable, for an error message.
fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(24)]).into_owned()
}

/// `<id>` (or a bare `id`) without its angle brackets.
fn bare_id(value: &str) -> &str {
    let value = value.trim();
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(value)
}

/// One part as cut from the body, before the root is chosen.
struct RawPart {
    content_id: Option<String>,
    mime_type: String,
    content: Bytes,
}

/// The header lines of a part (unfolded) as lower-case name and trimmed value.
fn header_lines(block: &[u8], part: usize) -> Result<Vec<(String, String)>, MtomError> {
    let malformed = |line: &str| MtomError::MalformedHeader {
        part,
        line: line.chars().take(60).collect(),
    };
    let text = std::str::from_utf8(block).map_err(|_| malformed(&excerpt(block)))?;
    let mut logical: Vec<String> = Vec::new();
    for line in text.split("\r\n") {
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(malformed(line));
        }
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the previous header.
            let previous = logical.last_mut().ok_or_else(|| malformed(line))?;
            previous.push(' ');
            previous.push_str(line.trim());
        } else {
            logical.push(line.to_string());
        }
    }
    logical
        .iter()
        .map(|line| {
            let (name, value) = line.split_once(':').ok_or_else(|| malformed(line))?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(malformed(line));
            }
            Ok((name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// The Content-ID of a part's headers, for an error message (best effort).
fn content_id_of(block: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(block).ok()?;
    text.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-id")
            .then(|| bare_id(value).to_string())
    })
}

/// Reads one part: `region` runs from after its delimiter line to before the CRLF of
/// the next delimiter, at `offset` in `body`.
fn read_part(body: &Bytes, offset: usize, end: usize, part: usize) -> Result<RawPart, MtomError> {
    let region = &body[offset..end];
    if region.is_empty() || region.starts_with(CRLF) {
        return Err(MtomError::PartWithoutHeaders { part });
    }
    let header_end = find(region, b"\r\n\r\n", 0).ok_or(MtomError::UnterminatedHeaders { part })?;
    let headers = header_lines(&region[..header_end], part)?;
    let single = |name: &str| -> Result<Option<&str>, MtomError> {
        let mut values = headers.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(MtomError::DuplicateHeader {
                part,
                content_id: content_id_of(&region[..header_end]),
                name: name.to_string(),
            });
        }
        Ok(first)
    };
    let content_id = match single("content-id")? {
        Some(value) => {
            let id = bare_id(value);
            let valid = !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '<' && c != '>');
            if !valid {
                return Err(MtomError::InvalidContentId {
                    part,
                    value: value.to_string(),
                });
            }
            Some(id.to_string())
        }
        None => None,
    };
    let mime_type = single("content-type")?
        .unwrap_or("application/octet-stream")
        .to_string();
    if let Some(encoding) = single("content-transfer-encoding")? {
        let identity = ["binary", "8bit", "7bit"]
            .iter()
            .any(|e| encoding.eq_ignore_ascii_case(e));
        if !identity {
            return Err(MtomError::UnsupportedTransferEncoding {
                part,
                content_id,
                encoding: encoding.to_string(),
            });
        }
    }
    Ok(RawPart {
        content_id,
        mime_type,
        content: body.slice(offset + header_end + 4..end),
    })
}

/// Parses a multipart/related body given its Content-Type header (see the module
/// documentation for what is refused).
pub fn parse(content_type: &str, body: &Bytes) -> Result<Mtom, MtomError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return Err(MtomError::NotMultipartRelated(content_type.to_string()));
    }
    let params = parameters(content_type)
        .ok_or_else(|| MtomError::MalformedContentType(content_type.to_string()))?;
    let mut seen = HashSet::new();
    if let Some((name, _)) = params.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(MtomError::DuplicateParameter(name.clone()));
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let boundary = param("boundary").ok_or(MtomError::MissingBoundary)?;
    if !valid_boundary(boundary) {
        return Err(MtomError::InvalidBoundary(boundary.to_string()));
    }
    let start = param("start").map(|s| bare_id(s).to_string());
    let dash = format!("--{boundary}").into_bytes();

    let first = find(body, &dash, 0).ok_or(MtomError::NoBoundary)?;
    if first != 0 && !body[..first].ends_with(CRLF) {
        return Err(MtomError::BoundaryInPreamble);
    }
    let mut raw: Vec<RawPart> = Vec::new();
    // Just after a `--boundary`.
    let mut pos = first + dash.len();
    loop {
        let part = raw.len() + 1;
        if body[pos..].starts_with(b"--") {
            if raw.is_empty() {
                return Err(MtomError::NoParts);
            }
            let rest = &body[skip_padding(body, pos + 2)..];
            if !rest.is_empty() {
                if !rest.starts_with(CRLF) {
                    return Err(MtomError::ContentAfterClose(excerpt(rest)));
                }
                if find(rest, &dash, 0).is_some() {
                    return Err(MtomError::BoundaryInEpilogue);
                }
            }
            break;
        }
        let line_end = skip_padding(body, pos);
        if !body[line_end..].starts_with(CRLF) {
            if body[line_end..].is_empty() {
                return Err(MtomError::MissingCloseDelimiter { part });
            }
            return Err(MtomError::BadDelimiterLine {
                part,
                found: excerpt(&body[pos..]),
            });
        }
        let offset = line_end + 2;
        let next = find(body, &dash, offset).ok_or(MtomError::MissingCloseDelimiter { part })?;
        if next == offset {
            // The delimiter line is followed by the next delimiter: an empty part.
            return Err(MtomError::PartWithoutHeaders { part });
        }
        if !body[offset..next].ends_with(CRLF) {
            let headers = &body[offset..next];
            let content_id =
                find(headers, b"\r\n\r\n", 0).and_then(|e| content_id_of(&headers[..e]));
            return Err(MtomError::BoundaryInContent { part, content_id });
        }
        raw.push(read_part(body, offset, next - 2, part)?);
        pos = next + dash.len();
    }

    // Content-ID in ASCII lower case to the part (from 1) that has it.
    let mut ids: HashMap<String, usize> = HashMap::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let Some(id) = &p.content_id else {
            if i > 0 || start.is_some() {
                return Err(MtomError::MissingContentId { part: i + 1 });
            }
            continue;
        };
        if let Some(first) = ids.insert(id.to_ascii_lowercase(), i + 1) {
            return Err(MtomError::DuplicateContentId {
                content_id: id.clone(),
                first,
                second: i + 1,
            });
        }
    }
    if let Some(start) = start {
        match raw
            .iter()
            .position(|p| p.content_id.as_deref() == Some(start.as_str()))
        {
            Some(0) => {}
            Some(i) => return Err(MtomError::StartNotFirst { start, part: i + 1 }),
            None => return Err(MtomError::StartNotFound(start)),
        }
    }
    let mut parts = raw.into_iter();
    let root = parts.next().ok_or(MtomError::NoParts)?;
    let attachments: Vec<Attachment> = parts
        .filter_map(|p| {
            Some(Attachment {
                content_id: p.content_id?,
                mime_type: p.mime_type,
                content: p.content,
            })
        })
        .collect();
    Ok(Mtom {
        root: root.content,
        root_content_id: root.content_id,
        parts: attachments
            .iter()
            .map(|a| (a.content_id.clone(), a.content.clone()))
            .collect(),
        attachments,
    })
}

/// Resolves an `xop:Include` href (`cid:...`, scheme in any case, percent-encoded) to
/// its Content-ID; an href without the `cid:` scheme is returned decoded as it is.
pub fn cid(href: &str) -> String {
    let raw = match href.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("cid:") => &href[4..],
        _ => href,
    };
    // `%` and two hexadecimal digits decoded, anything else kept as it is.
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// One attachment of an MTOM message.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Content-ID without angle brackets (`doc1@example`).
    pub content_id: String,
    pub mime_type: String,
    pub content: Bytes,
}

/// Builds a multipart/related MTOM message: the SOAP root then the attachments.
/// Returns the Content-Type header value and the body as chunks: the attachments'
/// contents are not copied (they are usually slices of the request being forwarded).
pub fn build_chunks(root_xml: Bytes, attachments: &[Attachment]) -> (String, Vec<Bytes>) {
    build_chunks_for(SOAP12_MEDIA_TYPE, root_xml, attachments)
}

/// SOAP 1.2's media type; SOAP 1.1 uses `text/xml`.
pub const SOAP12_MEDIA_TYPE: &str = "application/soap+xml";
pub const SOAP11_MEDIA_TYPE: &str = "text/xml";

/// [`build_chunks`] for an envelope of the SOAP version whose media type is `soap_type`
/// (`application/soap+xml` or `text/xml`): the root part's `type` and the message's
/// `start-info` name it.
pub fn build_chunks_for(
    soap_type: &str,
    root_xml: Bytes,
    attachments: &[Attachment],
) -> (String, Vec<Bytes>) {
    let boundary = format!("MIMEBoundary_{}", uuid::Uuid::new_v4().simple());
    let mut chunks = Vec::with_capacity(2 * attachments.len() + 3);
    chunks.push(Bytes::from(format!(
        "--{boundary}\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"{soap_type}\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root.message@passerelle>\r\n\r\n"
    )));
    chunks.push(root_xml);
    for a in attachments {
        chunks.push(Bytes::from(format!(
            "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{}>\r\n\r\n",
            a.mime_type, a.content_id
        )));
        chunks.push(a.content.clone());
    }
    chunks.push(Bytes::from(format!("\r\n--{boundary}--\r\n")));
    let content_type = format!(
        "multipart/related; type=\"application/xop+xml\"; boundary=\"{boundary}\"; start=\"<root.message@passerelle>\"; start-info=\"{soap_type}\""
    );
    (content_type, chunks)
}

/// [`build_chunks`] in one buffer.
pub fn build(root_xml: &str, attachments: &[Attachment]) -> (String, Bytes) {
    let (content_type, chunks) =
        build_chunks(Bytes::copy_from_slice(root_xml.as_bytes()), attachments);
    (content_type, Bytes::from(chunks.concat()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_round_trips_binary_parts() {
        let binary = Bytes::from((0..=255u8).cycle().take(5000).collect::<Vec<_>>());
        let (ct, body) = build(
            "<soap/>",
            &[Attachment {
                content_id: "doc1@x".into(),
                mime_type: "application/pdf".into(),
                content: binary.clone(),
            }],
        );
        let m = parse(&ct, &body).expect("parse");
        assert_eq!(&m.root[..], b"<soap/>");
        assert_eq!(m.parts["doc1@x"], binary);
        assert_eq!(m.attachments.len(), 1);
        assert_eq!(m.attachments[0].mime_type, "application/pdf");
        assert!(parse("application/soap+xml", &body).is_err());
        assert!(parse(&ct, &Bytes::from_static(b"garbage")).is_err());
    }

    const CT: &str = "multipart/related; type=\"application/xop+xml\"; boundary=\"MIMEBoundary_t\"; start=\"<root@x>\"; start-info=\"application/soap+xml\"";
    const CT_NO_START: &str =
        "multipart/related; type=\"application/xop+xml\"; boundary=\"MIMEBoundary_t\"";
    const ROOT: &str = "--MIMEBoundary_t\r\nContent-Type: application/xop+xml\r\nContent-ID: <root@x>\r\n\r\n<soap/>\r\n";
    const DOC: &str =
        "--MIMEBoundary_t\r\nContent-Type: application/pdf\r\nContent-ID: <doc1@x>\r\n\r\n";
    const CLOSE: &str = "\r\n--MIMEBoundary_t--\r\n";

    fn body(parts: &[&str]) -> Bytes {
        Bytes::from(parts.concat())
    }

    fn refused(ct: &str, parts: &[&str]) -> MtomError {
        match parse(ct, &body(parts)) {
            Ok(m) => panic!(
                "accepted {:?}: root {:?}, parts {:?}",
                parts.concat(),
                m.root,
                m.attachments
            ),
            Err(e) => e,
        }
    }

    #[test]
    fn a_well_formed_message_parses() {
        let m = parse(CT, &body(&[ROOT, DOC, "PDF", CLOSE])).expect("parse");
        assert_eq!(&m.root[..], b"<soap/>");
        assert_eq!(m.root_content_id.as_deref(), Some("root@x"));
        assert_eq!(&m.parts["doc1@x"][..], b"PDF");
        assert_eq!(m.attachments[0].mime_type, "application/pdf");
        // Without start, the first part is the root and may lack a Content-ID.
        let m = parse(
            CT_NO_START,
            &body(&[
                "--MIMEBoundary_t\r\nContent-Type: text/xml\r\n\r\n<soap/>\r\n",
                DOC,
                "PDF",
                CLOSE,
            ]),
        )
        .expect("parse");
        assert_eq!(&m.root[..], b"<soap/>");
        assert_eq!(m.root_content_id, None);
        assert_eq!(m.attachments.len(), 1);
    }

    #[test]
    fn unambiguous_variants_are_accepted() {
        // Preamble (ending in CRLF), transport padding on delimiter lines, a folded
        // header, an epilogue, a close delimiter without line end, an empty attachment.
        let m = parse(
            CT,
            &body(&[
                "This is a preamble.\r\n",
                "--MIMEBoundary_t \t\r\nContent-ID:\r\n\t<root@x>\r\n\r\n<soap/>\r\n",
                DOC,
                "",
                "\r\n--MIMEBoundary_t--  \r\nepilogue\r\n",
            ]),
        )
        .expect("parse");
        assert_eq!(&m.root[..], b"<soap/>");
        assert_eq!(&m.parts["doc1@x"][..], b"");
        let m = parse(CT, &body(&[ROOT, DOC, "PDF\r\n--MIMEBoundary_t--"])).expect("no CRLF");
        assert_eq!(&m.parts["doc1@x"][..], b"PDF");
        // A boundary-like line that is not the boundary, and dashes mid-line.
        let content = "a\r\n--MIMEBoundary-t\r\n-- --MIMEBoundary\r\n";
        let m = parse(CT, &body(&[ROOT, DOC, content, CLOSE])).expect("parse");
        assert_eq!(&m.parts["doc1@x"][..], content.as_bytes());
    }

    #[test]
    fn duplicate_content_ids_are_refused() {
        let second =
            "--MIMEBoundary_t\r\nContent-Type: application/pdf\r\nContent-ID: <doc1@x>\r\n\r\n";
        let err = refused(CT, &[ROOT, DOC, "first", "\r\n", second, "second", CLOSE]);
        assert_eq!(
            err,
            MtomError::DuplicateContentId {
                content_id: "doc1@x".into(),
                first: 2,
                second: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "MIME parts 2 and 3 have the same Content-ID <doc1@x>"
        );
        // Content-IDs equal but for case are refused as well.
        let upper = second.replace("doc1@x", "DOC1@X");
        let err = refused(CT, &[ROOT, DOC, "first", "\r\n", &upper, "second", CLOSE]);
        assert!(
            matches!(
                err,
                MtomError::DuplicateContentId {
                    first: 2,
                    second: 3,
                    ..
                }
            ),
            "{err}"
        );
        // An attachment with the root's Content-ID.
        let err = refused(
            CT,
            &[
                ROOT,
                &ROOT.replace("<soap/>", "<evil/>"),
                CLOSE.trim_start(),
            ],
        );
        assert!(
            matches!(
                err,
                MtomError::DuplicateContentId {
                    first: 1,
                    second: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn the_boundary_inside_a_part_is_refused() {
        // Mid-line: a strict reader keeps it as content, a lenient one truncates.
        let err = refused(CT, &[ROOT, DOC, "AAA--MIMEBoundary_t--", CLOSE]);
        assert_eq!(
            err,
            MtomError::BoundaryInContent {
                part: 2,
                content_id: Some("doc1@x".into())
            }
        );
        assert!(
            err.to_string()
                .starts_with("MIME part 2 <doc1@x>: the boundary appears inside the part"),
            "{err}"
        );
        // At a line start but followed by more than padding and CRLF: a delimiter for
        // the RFC's prefix match, content for an exact-line reader.
        let err = refused(
            CT,
            &[
                ROOT,
                DOC,
                "data\r\n--MIMEBoundary_t_more\r\nContent-ID: <y@x>\r\n\r\nstuff",
                CLOSE,
            ],
        );
        assert!(
            matches!(err, MtomError::BadDelimiterLine { part: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("\"_more"), "{err}");
        // In the headers, and in the preamble.
        let err = refused(
            CT,
            &[
                ROOT,
                "--MIMEBoundary_t\r\nX-A: --MIMEBoundary_t\r\n\r\nx",
                CLOSE,
            ],
        );
        assert!(
            matches!(
                err,
                MtomError::BoundaryInContent {
                    part: 2,
                    content_id: None
                }
            ),
            "{err}"
        );
        let err = refused(
            CT,
            &["preamble --MIMEBoundary_t\r\n", ROOT, DOC, "PDF", CLOSE],
        );
        assert_eq!(err, MtomError::BoundaryInPreamble);
        // Right after a delimiter's line: an empty part.
        let err = refused(CT, &[ROOT, "--MIMEBoundary_t\r\n", DOC, "x", CLOSE]);
        assert_eq!(err, MtomError::PartWithoutHeaders { part: 2 });
    }

    #[test]
    fn parts_without_headers_or_content_id_are_refused() {
        // No headers: a reader looking for the blank line would take the next part's.
        let err = refused(
            CT_NO_START,
            &["--MIMEBoundary_t\r\n\r\n<soap/>\r\n", DOC, "PDF", CLOSE],
        );
        assert_eq!(err, MtomError::PartWithoutHeaders { part: 1 });
        assert_eq!(err.to_string(), "MIME part 1 has no headers");
        let err = refused(CT, &[ROOT, "--MIMEBoundary_t\r\n\r\nPDF", CLOSE]);
        assert_eq!(err, MtomError::PartWithoutHeaders { part: 2 });
        // Headers whose blank line is the next delimiter's CRLF.
        let err = refused(
            CT,
            &[ROOT, "--MIMEBoundary_t\r\nContent-ID: <doc1@x>\r\n", CLOSE],
        );
        assert_eq!(err, MtomError::UnterminatedHeaders { part: 2 });
        // An attachment without Content-ID (it used to be dropped silently).
        let err = refused(
            CT,
            &[
                ROOT,
                "--MIMEBoundary_t\r\nContent-Type: a/b\r\n\r\nx",
                CLOSE,
            ],
        );
        assert_eq!(err, MtomError::MissingContentId { part: 2 });
        // With start, even the first part needs one.
        let err = refused(
            CT,
            &["--MIMEBoundary_t\r\nContent-Type: a/b\r\n\r\nx", CLOSE],
        );
        assert_eq!(err, MtomError::MissingContentId { part: 1 });
        for bad in ["<>", "<a b@x>", "<a>b@x>"] {
            let err = refused(CT, &[ROOT, &DOC.replace("<doc1@x>", bad), "x", CLOSE]);
            assert!(
                matches!(err, MtomError::InvalidContentId { part: 2, .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn ambiguous_headers_are_refused() {
        let twice = "--MIMEBoundary_t\r\nContent-ID: <doc1@x>\r\nContent-ID: <doc2@x>\r\n\r\nx";
        let err = refused(CT, &[ROOT, twice, CLOSE]);
        assert!(
            matches!(&err, MtomError::DuplicateHeader { part: 2, name, .. } if name == "content-id"),
            "{err}"
        );
        let b64 = DOC.replace("\r\n\r\n", "\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        let err = refused(CT, &[ROOT, &b64, "UERG", CLOSE]);
        assert!(
            matches!(err, MtomError::UnsupportedTransferEncoding { part: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("<doc1@x>"), "{err}");
        let binary = DOC.replace("\r\n\r\n", "\r\nContent-Transfer-Encoding: Binary\r\n\r\n");
        parse(CT, &body(&[ROOT, &binary, "PDF", CLOSE])).expect("binary is the identity");
        for line in ["no colon here", " leading fold", "Bad Name: x", "X-A: a\rb"] {
            let part = format!("--MIMEBoundary_t\r\nContent-ID: <doc1@x>\r\n{line}\r\n\r\nx");
            let part = if line.starts_with(' ') {
                format!("--MIMEBoundary_t\r\n{line}\r\nContent-ID: <doc1@x>\r\n\r\nx")
            } else {
                part
            };
            let err = refused(CT, &[ROOT, &part, CLOSE]);
            assert!(
                matches!(err, MtomError::MalformedHeader { part: 2, .. }),
                "{line:?}: {err}"
            );
        }
    }

    #[test]
    fn the_root_must_be_the_first_part_named_by_start() {
        let err = refused(
            &CT.replace("<root@x>", "<other@x>"),
            &[ROOT, DOC, "x", CLOSE],
        );
        assert_eq!(err, MtomError::StartNotFound("other@x".into()));
        // start naming the second part: a reader ignoring start reads part 1.
        let err = refused(
            &CT.replace("<root@x>", "<doc1@x>"),
            &[ROOT, DOC, "x", CLOSE],
        );
        assert_eq!(
            err,
            MtomError::StartNotFirst {
                start: "doc1@x".into(),
                part: 2
            }
        );
    }

    #[test]
    fn the_close_delimiter_is_required_and_ends_the_message() {
        let err = refused(CT, &[ROOT, DOC, "PDF"]);
        assert_eq!(err, MtomError::MissingCloseDelimiter { part: 2 });
        let err = refused(CT, &[ROOT, DOC, "PDF\r\n--MIMEBoundary_t"]);
        assert_eq!(err, MtomError::MissingCloseDelimiter { part: 3 });
        let err = refused(CT, &[ROOT, DOC, "PDF\r\n--MIMEBoundary_t--garbage"]);
        assert_eq!(err, MtomError::ContentAfterClose("garbage".into()));
        let err = refused(
            CT,
            &[
                ROOT,
                DOC,
                "PDF",
                CLOSE,
                "--MIMEBoundary_t\r\nContent-ID: <doc2@x>\r\n\r\nmore",
                CLOSE,
            ],
        );
        assert_eq!(err, MtomError::BoundaryInEpilogue);
        assert_eq!(refused(CT, &["--MIMEBoundary_t--"]), MtomError::NoParts);
    }

    #[test]
    fn the_content_type_is_read_strictly() {
        let b = body(&[ROOT, DOC, "x", CLOSE]);
        assert!(matches!(
            parse("application/soap+xml", &b),
            Err(MtomError::NotMultipartRelated(_))
        ));
        assert!(matches!(
            parse("multipart/relatedx; boundary=MIMEBoundary_t", &b),
            Err(MtomError::NotMultipartRelated(_))
        ));
        assert_eq!(
            parse("multipart/related", &b).err(),
            Some(MtomError::MissingBoundary)
        );
        assert_eq!(
            parse(&format!("{CT}; boundary=other"), &b).err(),
            Some(MtomError::DuplicateParameter("boundary".into()))
        );
        assert_eq!(
            parse(&format!("{CT}; START=\"<doc1@x>\""), &b).err(),
            Some(MtomError::DuplicateParameter("start".into()))
        );
        assert!(matches!(
            parse("multipart/related; boundary=\"MIMEBoundary_t", &b),
            Err(MtomError::MalformedContentType(_))
        ));
        assert!(matches!(
            parse("multipart/related; boundary=\"a;b\"", &b),
            Err(MtomError::InvalidBoundary(_))
        ));
        assert!(matches!(
            parse("multipart/related; boundary=\"\"", &b),
            Err(MtomError::InvalidBoundary(_))
        ));
        assert_eq!(
            parse(CT, &Bytes::from_static(b"garbage")).err(),
            Some(MtomError::NoBoundary)
        );
        // A token (unquoted) boundary and quoted parameters with escapes and semicolons.
        let ct = "Multipart/Related;boundary=MIMEBoundary_t ; start=\"<root@x>\"; start-info=\"a;\\\"b\"";
        parse(ct, &b).expect("token boundary");
        assert_eq!(header_param(ct, "start-info").as_deref(), Some("a;\"b"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Bytes with the separators a parser trips on mixed in.
        fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![
                    4 => prop::collection::vec(any::<u8>(), 1..16),
                    1 => Just(b"\r\n".to_vec()),
                    1 => Just(b"\r\n\r\n".to_vec()),
                    1 => Just(b"--".to_vec()),
                    1 => Just(b"\r\n--MIMEBoundary_".to_vec()),
                    1 => Just(b"--MIMEBoundary_".to_vec()),
                    1 => Just(b"Content-ID: <a@x>\r\n".to_vec()),
                ],
                0..max,
            )
            .prop_map(|chunks| chunks.concat())
        }

        /// Bodies for [`CT`] made of the pieces of a message in random order: delimiters,
        /// header lines, line ends, content bytes.
        fn message_pieces() -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(
                prop_oneof![
                    2 => prop::collection::vec(any::<u8>(), 1..8),
                    3 => Just(b"\r\n".to_vec()),
                    2 => Just(b"--MIMEBoundary_t".to_vec()),
                    2 => Just(b"\r\n--MIMEBoundary_t\r\n".to_vec()),
                    1 => Just(b"\r\n--MIMEBoundary_t--".to_vec()),
                    1 => Just(b"--".to_vec()),
                    1 => Just(b" ".to_vec()),
                    2 => Just(b"Content-ID: <root@x>\r\n".to_vec()),
                    2 => Just(b"Content-ID: <a@x>\r\n".to_vec()),
                    1 => Just(b"Content-Type: text/xml\r\n".to_vec()),
                ],
                0..24,
            )
            .prop_map(|pieces| pieces.concat())
        }

        fn attachments() -> impl Strategy<Value = Vec<Attachment>> {
            prop::collection::vec(
                (
                    "[a-zA-Z0-9._-]{1,16}",
                    prop::sample::select(vec![
                        "application/pdf",
                        "text/xml",
                        "text/plain; charset=UTF-8",
                        "application/octet-stream",
                    ]),
                    tricky_bytes(200),
                ),
                0..5,
            )
            .prop_map(|specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, mime, content))| Attachment {
                        content_id: format!("{i}.{id}@example"),
                        mime_type: mime.to_string(),
                        content: Bytes::from(content),
                    })
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn build_chunks_output_parses_to_the_same_parts(
                root in tricky_bytes(100),
                attachments in attachments(),
                soap11 in any::<bool>(),
            ) {
                let soap = if soap11 { SOAP11_MEDIA_TYPE } else { SOAP12_MEDIA_TYPE };
                let (ct, chunks) = build_chunks_for(soap, Bytes::from(root.clone()), &attachments);
                let m = parse(&ct, &Bytes::from(chunks.concat())).expect("own output parses");
                prop_assert_eq!(&m.root[..], &root[..]);
                prop_assert_eq!(m.root_content_id.as_deref(), Some("root.message@passerelle"));
                prop_assert_eq!(m.attachments.len(), attachments.len());
                for (got, sent) in m.attachments.iter().zip(&attachments) {
                    prop_assert_eq!(&got.content_id, &sent.content_id);
                    prop_assert_eq!(&got.mime_type, &sent.mime_type);
                    prop_assert_eq!(&got.content, &sent.content);
                    prop_assert_eq!(m.part(&sent.content_id), Some(&sent.content));
                }
                prop_assert_eq!(m.parts.len(), attachments.len());
            }

            #[test]
            fn parse_never_panics_on_shuffled_message_pieces(
                body in message_pieces(),
                start in any::<bool>(),
            ) {
                let _ = parse(if start { CT } else { CT_NO_START }, &Bytes::from(body));
            }

            #[test]
            fn parse_never_panics_on_arbitrary_input(
                ct in prop_oneof![Just(CT.to_string()), Just(CT_NO_START.to_string()), ".{0,80}"],
                body in tricky_bytes(64),
            ) {
                let _ = parse(&ct, &Bytes::from(body));
            }

            #[test]
            fn parse_never_panics_on_edited_messages(
                attachments in attachments(),
                at in any::<prop::sample::Index>(),
                cut in 0usize..8,
                insert in tricky_bytes(4),
            ) {
                let (ct, body) = build("<soap/>", &attachments);
                let mut edited = body.to_vec();
                let at = at.index(edited.len() + 1);
                let end = (at + cut).min(edited.len());
                edited.splice(at..end, insert);
                let boundary = header_param(&ct, "boundary").unwrap_or_default();
                let mut with_boundary = edited.clone();
                with_boundary.splice(at.min(with_boundary.len())..at.min(with_boundary.len()), format!("--{boundary}").into_bytes());
                let _ = parse(&ct, &Bytes::from(edited));
                let _ = parse(&ct, &Bytes::from(with_boundary));
            }
        }
    }

    #[test]
    fn cid_is_percent_decoded() {
        assert_eq!(cid("cid:doc%401.example"), "doc@1.example");
        assert_eq!(cid("CID:doc"), "doc");
        assert_eq!(cid("cid:cid:doc"), "cid:doc");
        // Two hexadecimal digits, no sign (`u8::from_str_radix` would take "+a").
        assert_eq!(cid("cid:a%+ab"), "a%+ab");
        assert_eq!(
            header_param(
                "multipart/related; boundary=\"a b\"; start=\"<r>\"",
                "start"
            )
            .as_deref(),
            Some("<r>")
        );
    }
}
