//! An internal request as a SOAP message: its media type, its envelope (parsed with the
//! DTD-refusing parser), MTOM parts, and the header edits the proxy makes (adding a
//! missing WS-Addressing or INSi context block, replacing `wsse:Security`).

use bytes::Bytes;
use passerelle_signing::xml::{Element, Node, Str, XmlError};
use passerelle_soap::mtom::{self, Mtom};
use passerelle_soap::{Envelope, EnvelopeError, WSA};

use crate::fault::ProxyError;

/// The body of an internal request, split into its envelope and MTOM parts.
#[derive(Debug)]
pub struct SoapMessage {
    pub envelope: Envelope,
    /// The envelope's bytes as received (forwarded unchanged when nothing is edited).
    pub root: Bytes,
    /// The request's Content-Type.
    pub content_type: String,
    /// Present for `multipart/related` requests.
    pub mtom: Option<Mtom>,
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Parses the envelope; a DTD or entity gets its own code.
pub fn parse_envelope(root: &[u8]) -> Result<Envelope, ProxyError> {
    // XML 1.0 forbids C0 controls but tab, LF and CR; a lenient parser would let them
    // through into a signed token or a forwarded envelope the service cannot read.
    if let Some(at) = root
        .iter()
        .position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(ProxyError::MalformedXml(format!(
            "byte {at} of the SOAP envelope is the control character 0x{:02X}, which XML 1.0 forbids",
            root[at]
        )));
    }
    let text = std::str::from_utf8(root).map_err(|e| {
        ProxyError::MalformedXml(format!(
            "the SOAP envelope is not UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    Envelope::parse(text).map_err(|e| match e {
        EnvelopeError::Xml(XmlError::Dtd) => ProxyError::DtdForbidden(e.to_string()),
        EnvelopeError::Xml(x) => ProxyError::MalformedXml(x.to_string()),
        EnvelopeError::NotAnEnvelope
        | EnvelopeError::MissingBody
        | EnvelopeError::DuplicateBody
        | EnvelopeError::DuplicateHeader
        | EnvelopeError::HeaderAfterBody
        | EnvelopeError::UnexpectedElement(_)
        | EnvelopeError::UnexpectedText(_) => ProxyError::NotSoap(e.to_string()),
    })
}

impl SoapMessage {
    /// Reads a SOAP (`application/soap+xml`, `text/xml`) or MTOM (`multipart/related`)
    /// request body.
    pub fn read(content_type: &str, body: Bytes) -> Result<Self, ProxyError> {
        let media = media_type(content_type);
        let (root, mtom) = match media.as_str() {
            "application/soap+xml" | "text/xml" | "application/xml" => (body, None),
            "multipart/related" => {
                let m = mtom::parse(content_type, &body)
                    .map_err(|e| ProxyError::BadMultipart(e.to_string()))?;
                (m.root.clone(), Some(m))
            }
            _ => return Err(ProxyError::UnsupportedMediaType(content_type.to_string())),
        };
        Ok(Self {
            envelope: parse_envelope(&root)?,
            root,
            content_type: content_type.to_string(),
            mtom,
        })
    }

    /// Whether the envelope is SOAP 1.2.
    pub fn is_soap12(&self) -> bool {
        self.envelope.soap_ns == passerelle_soap::SOAP12
    }

    /// The SOAP Header, created (before the Body) when absent.
    pub fn header_mut(&mut self) -> Result<&mut Element, ProxyError> {
        let root = &mut self.envelope.root;
        let soap_ns = self.envelope.soap_ns;
        let position = root
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.local == "Header"));
        let index = match position {
            Some(i) => i,
            None => {
                let header = Element {
                    prefix: Some(Str::Borrowed("passerelle-soap")),
                    local: Str::Borrowed("Header"),
                    namespaces: vec![(
                        Some(Str::Borrowed("passerelle-soap")),
                        Str::Borrowed(soap_ns),
                    )],
                    ..Element::default()
                };
                let body = root
                    .children
                    .iter()
                    .position(|n| matches!(n, Node::Element(e) if e.local == "Body"))
                    .unwrap_or(root.children.len());
                root.children.insert(body, Node::Element(header));
                body
            }
        };
        match root.children.get_mut(index) {
            Some(Node::Element(e)) => Ok(e),
            _ => Err(ProxyError::Internal(
                "SOAP Header lost while editing".into(),
            )),
        }
    }

    /// Appends a header block.
    pub fn add_header(&mut self, block: Element) -> Result<(), ProxyError> {
        self.header_mut()?.children.push(Node::Element(block));
        Ok(())
    }

    /// The media type of the envelope's SOAP version: `application/soap+xml` (1.2) or
    /// `text/xml` (1.1).
    pub fn soap_media_type(&self) -> &'static str {
        if self.is_soap12() {
            mtom::SOAP12_MEDIA_TYPE
        } else {
            mtom::SOAP11_MEDIA_TYPE
        }
    }

    /// The Content-Type to send upstream with `root` (the envelope as written) and
    /// `attachments`, and the body's chunks. The media type always matches the envelope's
    /// SOAP version: official examples send SOAP 1.2 as `text/xml`, or label an MTOM root
    /// part SOAP 1.1 `application/soap+xml`; refusing them would break internal systems
    /// built from those examples, so the label is corrected (logged at debug). It is
    /// always written by Passerelle, never copied: a client's `action` or `charset`
    /// parameter could name another operation or encoding than the envelope's (the
    /// envelope Passerelle writes is UTF-8).
    pub fn upstream_body(
        &self,
        root: Bytes,
        attachments: &[mtom::Attachment],
    ) -> (String, Vec<Bytes>) {
        let soap = self.soap_media_type();
        let declared = match &self.mtom {
            Some(_) => mtom::header_param(&self.content_type, "start-info")
                .map(|t| media_type(&t))
                .unwrap_or_default(),
            None => media_type(&self.content_type),
        };
        if declared != soap {
            tracing::debug!(declared = %declared, sent = soap, "media type corrected to the envelope's SOAP version");
        }
        if self.mtom.is_some() {
            return mtom::build_chunks_for(soap, root, attachments);
        }
        (format!("{soap}; charset=utf-8"), vec![root])
    }

    /// Refuses a second `MessageID`, `To`, `ReplyTo` or `Action`: upstream must see exactly
    /// one of each, and which one a receiver reads is not defined.
    pub fn check_single_addressing(&self) -> Result<(), ProxyError> {
        for (local, header) in [
            ("MessageID", "wsa:MessageID"),
            ("To", "wsa:To"),
            ("ReplyTo", "wsa:ReplyTo"),
            ("Action", "wsa:Action"),
        ] {
            let count = self.envelope.header_count(WSA, local);
            if count > 1 {
                return Err(ProxyError::DuplicateHeader { header, count });
            }
        }
        Ok(())
    }

    /// Text of a WS-Addressing header, if present.
    pub fn wsa(&self, local: &str) -> Option<String> {
        self.envelope
            .header_text(WSA, local)
            .filter(|t| !t.is_empty())
    }
}

/// A WS-Addressing header block with its own namespace declaration.
pub fn wsa_block(local: &'static str, text: impl Into<Str>) -> Element {
    Element::new(Some("wsa"), local)
        .ns(Some("wsa"), WSA)
        .text(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_header_creation() {
        let env = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x xmlns="urn:x"/></s:Body></s:Envelope>"#;
        let mut m = SoapMessage::read("application/soap+xml; charset=utf-8", Bytes::from(env))
            .expect("soap");
        assert!(m.is_soap12());
        m.add_header(wsa_block("MessageID", "urn:uuid:1"))
            .expect("header");
        let out = m.envelope.root.to_xml();
        let again =
            SoapMessage::read("application/soap+xml", Bytes::from(out.clone())).expect("reparse");
        assert_eq!(
            again.wsa("MessageID").as_deref(),
            Some("urn:uuid:1"),
            "{out}"
        );
        assert!(
            out.find("Header").expect("header") < out.find("Body").expect("body"),
            "{out}"
        );

        let code = |ct: &str, body: &str| {
            SoapMessage::read(ct, Bytes::from(body.to_string()))
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code("application/json", env), Some("UnsupportedMediaType"));
        assert_eq!(
            code(
                "text/xml",
                "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>"
            ),
            Some("DtdForbidden")
        );
        assert_eq!(code("text/xml", "<a><b></a>"), Some("MalformedXml"));
        assert_eq!(code("text/xml", "<a/>"), Some("NotSoap"));
        assert_eq!(
            code("multipart/related; boundary=x", "junk"),
            Some("BadMultipart")
        );
    }
}
