//! MTOM/XOP (`multipart/related; type="application/xop+xml"`): parsing a request into
//! its root SOAP part and attachments by Content-ID, and building a response.

use std::collections::HashMap;

use bytes::Bytes;

/// A parsed multipart/related message. Every content is a slice of the original body.
#[derive(Debug, Clone)]
pub struct Mtom {
    /// The root part (the SOAP envelope).
    pub root: Bytes,
    /// The other parts, in message order.
    pub attachments: Vec<Attachment>,
    /// Content-ID (without angle brackets) to index in `attachments`.
    pub parts: HashMap<String, Bytes>,
}

impl Mtom {
    /// The part with this Content-ID.
    pub fn part(&self, content_id: &str) -> Option<&Bytes> {
        self.parts.get(content_id)
    }
}

/// The value of parameter `name` in a header like `multipart/related; boundary="x"`.
pub fn header_param(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_string())
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|i| i + from)
}

/// Parses a multipart/related body given its Content-Type header.
pub fn parse(content_type: &str, body: &Bytes) -> Result<Mtom, String> {
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/related")
    {
        return Err(format!(
            "Content-Type {content_type:?} is not multipart/related"
        ));
    }
    let boundary =
        header_param(content_type, "boundary").ok_or("multipart/related without boundary")?;
    let start = header_param(content_type, "start").map(|s| s.trim_matches(['<', '>']).to_string());
    let delimiter = format!("--{boundary}").into_bytes();
    let mut pos = find(body, &delimiter, 0).ok_or("no MIME boundary in the body")?;
    let mut root = None;
    let mut first = None;
    let mut parts = HashMap::new();
    let mut attachments = Vec::new();
    loop {
        pos += delimiter.len();
        if body[pos..].starts_with(b"--") {
            break;
        }
        // Skip the line end after the delimiter.
        let header_start = find(body, b"\r\n", pos).ok_or("truncated MIME part")? + 2;
        let header_end =
            find(body, b"\r\n\r\n", header_start).ok_or("MIME part without header end")?;
        let headers = std::str::from_utf8(&body[header_start..header_end])
            .map_err(|_| "MIME part headers are not UTF-8")?;
        let content_start = header_end + 4;
        let next =
            find(body, &delimiter, content_start).ok_or("MIME part without closing boundary")?;
        // The CRLF before the delimiter belongs to the delimiter.
        let content_end = if next >= 2 && &body[next - 2..next] == b"\r\n" {
            next - 2
        } else {
            next
        };
        let content = body.slice(content_start..content_end);
        let header = |name: &str| {
            headers.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        let id = header("content-id").map(|v| v.trim_matches(['<', '>']).to_string());
        let mime_type = header("content-type")
            .unwrap_or("application/octet-stream")
            .to_string();
        match (&id, &start) {
            (Some(id), Some(start)) if id == start => root = Some(content),
            (Some(id), _) => {
                if first.is_none() {
                    first = Some(content.clone());
                }
                parts.insert(id.clone(), content.clone());
                attachments.push(Attachment {
                    content_id: id.clone(),
                    mime_type,
                    content,
                });
            }
            (None, _) => {
                if first.is_none() {
                    first = Some(content);
                }
            }
        }
        pos = next;
    }
    // Without `start`, the root is the first part.
    let root = match (root, &start) {
        (Some(r), _) => r,
        (None, None) => first.ok_or("multipart/related without parts")?,
        (None, Some(s)) => return Err(format!("no MIME part has the start Content-ID <{s}>")),
    };
    // Without `start`, the first part was the root, not an attachment.
    if start.is_none()
        && let Some(first) = attachments.first()
        && first.content == root
    {
        parts.remove(&first.content_id);
        attachments.remove(0);
    }
    Ok(Mtom {
        root,
        attachments,
        parts,
    })
}

/// Resolves an `xop:Include` href (`cid:...`, percent-encoded) to its Content-ID.
pub fn cid(href: &str) -> String {
    let raw = href.strip_prefix("cid:").unwrap_or(href);
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn cid_is_percent_decoded() {
        assert_eq!(cid("cid:doc%401.example"), "doc@1.example");
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
