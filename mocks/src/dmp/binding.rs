//! The SOAP/HTTP binding as a strict DMP checks it, read with parsers of the mock's own
//! (media types per RFC 9110 §8.3, the MTOM root part's headers) and libxml2's XPath
//! (`mustUnderstand`):
//! - one `Content-Type`; its media type is the envelope's SOAP version's
//!   (`application/soap+xml` for SOAP 1.2, `text/xml` for SOAP 1.1), or for MTOM
//!   `multipart/related` with `type="application/xop+xml"`, a `start-info` naming that
//!   media type, and a root part `application/xop+xml` whose `type` names it too;
//! - every `charset` parameter met is `utf-8` (any case), every `action` parameter met
//!   (in the Content-Type, `start-info`, the root part's Content-Type or its `type`)
//!   equals the `wsa:Action`;
//! - SOAP 1.1: one `SOAPAction` header equal to the `wsa:Action`, quoted or not;
//! - `wsa:Action` and `wsa:ReplyTo` carry the envelope's `mustUnderstand` set to true
//!   (SOAP 1.2: `true` or `1`; SOAP 1.1: `1`).

use http::HeaderMap;
use libxml::parser::{Parser, ParserOptions};
use libxml::xpath::Context;

use super::{Refusal, refuse};
use crate::soap::{SOAP12, WSA};

const SOAP12_MEDIA: &str = "application/soap+xml";
const SOAP11_MEDIA: &str = "text/xml";
const XOP_MEDIA: &str = "application/xop+xml";

/// A media type: `type/subtype` in lower case, and its parameters (names in lower case,
/// values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 9110 `tchar`.
fn tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn token(s: &str) -> usize {
    s.find(|c: char| !tchar(c)).unwrap_or(s.len())
}

fn ows(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// Parses `type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`.
/// A parameter given twice is refused.
pub fn parse_media_type(value: &str) -> Result<MediaType, String> {
    let bad = |why: &str| Err(format!("{value:?} is not a media type: {why}"));
    let s = ows(value);
    let t = token(s);
    if t == 0 || !s[t..].starts_with('/') {
        return bad("no type/subtype");
    }
    let rest = &s[t + 1..];
    let st = token(rest);
    if st == 0 {
        return bad("no subtype");
    }
    let essence = format!("{}/{}", &s[..t], &rest[..st]).to_ascii_lowercase();
    let mut rest = ows(&rest[st..]);
    let mut params: Vec<(String, String)> = Vec::new();
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix(';') else {
            return bad("parameters must be separated by ';'");
        };
        rest = ows(after);
        if rest.is_empty() || rest.starts_with(';') {
            continue;
        }
        let n = token(rest);
        if n == 0 || !rest[n..].starts_with('=') {
            return bad("a parameter is not name=value");
        }
        let name = rest[..n].to_ascii_lowercase();
        let after = &rest[n + 1..];
        let (val, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => out.push(c),
                        None => return bad("unterminated quoted-string"),
                    },
                    Some((i, '"')) => break i + 1,
                    Some((_, c)) => out.push(c),
                    None => return bad("unterminated quoted-string"),
                }
            };
            (out, &quoted[end..])
        } else {
            let v = token(after);
            if v == 0 {
                return bad("a parameter has no value");
            }
            (after[..v].to_string(), &after[v..])
        };
        if params.iter().any(|(p, _)| *p == name) {
            return bad(&format!("parameter {name} is given twice"));
        }
        params.push((name, val));
        rest = ows(tail);
    }
    Ok(MediaType { essence, params })
}

/// `charset`, if present, is UTF-8; `action`, if present, is the `wsa:Action`.
fn check_params(mt: &MediaType, action: &str, what: &str) -> Result<(), Refusal> {
    if let Some(charset) = mt.param("charset")
        && !charset.eq_ignore_ascii_case("utf-8")
    {
        return refuse(
            "content_type",
            format!("{what}: charset {charset:?} is not utf-8"),
        );
    }
    if let Some(a) = mt.param("action")
        && a != action
    {
        return refuse(
            "content_type",
            format!("{what}: action parameter {a:?} is not the wsa:Action {action:?}"),
        );
    }
    Ok(())
}

/// The one value of header `name`, as text.
fn one_header<'h>(
    headers: &'h HeaderMap,
    name: &str,
    outcome: &'static str,
) -> Result<&'h str, Refusal> {
    let values: Vec<_> = headers.get_all(name).iter().collect();
    match values.as_slice() {
        [one] => one.to_str().map_err(|_| Refusal {
            outcome,
            reason: format!("the {name} header is not text"),
        }),
        [] => refuse(outcome, format!("the {name} header is missing")),
        more => refuse(
            outcome,
            format!("the {name} header is given {} times", more.len()),
        ),
    }
}

/// The Content-Type of the first MIME part of a multipart `body` with `boundary` (the
/// root part: the MTOM reader already refused a `start` naming another part).
fn root_part_content_type(body: &[u8], boundary: &str) -> Result<String, String> {
    let find = |needle: &[u8], from: usize| {
        body.get(from..)
            .and_then(|h| h.windows(needle.len()).position(|w| w == needle))
            .map(|i| i + from)
    };
    let dash = format!("--{boundary}");
    let mut from = 0;
    let at = loop {
        let i = find(dash.as_bytes(), from).ok_or("no boundary delimiter")?;
        if i == 0 || body[..i].ends_with(b"\r\n") {
            break i;
        }
        from = i + dash.len();
    };
    let mut start = at + dash.len();
    while matches!(body.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    if !body[start..].starts_with(b"\r\n") {
        return Err("the first delimiter line does not end with CRLF".into());
    }
    start += 2;
    let end = find(b"\r\n\r\n", start).ok_or("the root part's headers do not end")?;
    let headers = std::str::from_utf8(&body[start..end])
        .map_err(|_| "the root part's headers are not text".to_string())?;
    let mut lines: Vec<String> = Vec::new();
    for line in headers.split("\r\n") {
        match lines.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => lines.push(line.to_string()),
        }
    }
    let types: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .collect();
    match types.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("the root part has no Content-Type".into()),
        _ => Err("the root part has more than one Content-Type".into()),
    }
}

/// Content-Type, MTOM labels and `SOAPAction` against the envelope's SOAP version and
/// its `wsa:Action`.
pub fn check_http(
    headers: &HeaderMap,
    body: &[u8],
    soap_ns: &str,
    action: &str,
) -> Result<(), Refusal> {
    let soap12 = soap_ns == SOAP12;
    let (expected, version) = if soap12 {
        (SOAP12_MEDIA, "SOAP 1.2")
    } else {
        (SOAP11_MEDIA, "SOAP 1.1")
    };
    let raw = one_header(headers, "content-type", "content_type")?;
    let ct = parse_media_type(raw).map_err(|e| Refusal {
        outcome: "content_type",
        reason: format!("Content-Type {e}"),
    })?;
    check_params(&ct, action, "Content-Type")?;
    if ct.essence == "multipart/related" {
        if !ct
            .param("type")
            .is_some_and(|t| t.eq_ignore_ascii_case(XOP_MEDIA))
        {
            return refuse(
                "content_type",
                format!(
                    "MTOM: the Content-Type's type parameter must be {XOP_MEDIA}, found {:?}",
                    ct.param("type").unwrap_or("")
                ),
            );
        }
        let labelled = |value: Option<&str>, what: &str| -> Result<(), Refusal> {
            let Some(value) = value else {
                return refuse(
                    "content_type",
                    format!(
                        "MTOM: {what} is missing (it names the {version} media type {expected})"
                    ),
                );
            };
            let mt = parse_media_type(value).map_err(|e| Refusal {
                outcome: "content_type",
                reason: format!("MTOM: {what} {e}"),
            })?;
            if mt.essence != expected {
                return refuse(
                    "content_type",
                    format!(
                        "MTOM: {what} is {}, but the envelope is {version} ({expected})",
                        mt.essence
                    ),
                );
            }
            check_params(&mt, action, &format!("MTOM {what}"))
        };
        labelled(ct.param("start-info"), "the start-info parameter")?;
        let root =
            root_part_content_type(body, ct.param("boundary").unwrap_or("")).map_err(|e| {
                Refusal {
                    outcome: "content_type",
                    reason: format!("MTOM: {e}"),
                }
            })?;
        let root = parse_media_type(&root).map_err(|e| Refusal {
            outcome: "content_type",
            reason: format!("MTOM: the root part's Content-Type {e}"),
        })?;
        if root.essence != XOP_MEDIA {
            return refuse(
                "content_type",
                format!("MTOM: the root part is {}, not {XOP_MEDIA}", root.essence),
            );
        }
        check_params(&root, action, "MTOM root part Content-Type")?;
        labelled(root.param("type"), "the root part's type parameter")?;
    } else if ct.essence != expected {
        return refuse(
            "content_type",
            format!(
                "Content-Type {} does not match the envelope: a {version} request is {expected}",
                ct.essence
            ),
        );
    }
    if !soap12 {
        let value = one_header(headers, "soapaction", "soap_action")?.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if unquoted != action {
            return refuse(
                "soap_action",
                format!("SOAPAction {value:?} is not the wsa:Action {action:?}"),
            );
        }
    }
    Ok(())
}

/// `wsa:Action` and `wsa:ReplyTo` carry `mustUnderstand` true, read by libxml2 from the
/// envelope's bytes.
pub fn check_must_understand(envelope: &[u8], soap_ns: &str) -> Result<(), Refusal> {
    let options = ParserOptions {
        recover: false,
        no_net: true,
        ..ParserOptions::default()
    };
    let failed = |what: &str| Refusal {
        outcome: "must_understand",
        reason: format!("libxml2 cannot read the envelope: {what}"),
    };
    let doc = Parser::default()
        .parse_string_with_options(envelope, options)
        .map_err(|e| failed(&format!("{e:?}")))?;
    let ctx = Context::new(&doc).map_err(|()| failed("no XPath context"))?;
    ctx.register_namespace("env", soap_ns)
        .and_then(|()| ctx.register_namespace("wsa", WSA))
        .map_err(|()| failed("namespaces"))?;
    let eval = |expr: &str| {
        ctx.evaluate(expr)
            .map(|o| o.to_string())
            .map_err(|()| failed(expr))
    };
    let allowed: &[&str] = if soap_ns == SOAP12 {
        &["true", "1"]
    } else {
        &["1"]
    };
    for local in ["Action", "ReplyTo"] {
        let block = format!("/env:Envelope/env:Header/wsa:{local}");
        let attr = format!("{block}/@env:mustUnderstand");
        let blocks = eval(&format!("count({block})"))?;
        let marks = eval(&format!("count({attr})"))?;
        let value = eval(&format!("string({attr})"))?;
        // xs:boolean collapses white space.
        let value = value.trim_matches([' ', '\t', '\r', '\n']);
        if blocks != "1" || marks != "1" || !allowed.contains(&value) {
            return refuse(
                "must_understand",
                format!(
                    "wsa:{local} must carry mustUnderstand={} in the envelope's namespace, found {}",
                    allowed
                        .iter()
                        .map(|a| format!("{a:?}"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    if marks == "0" {
                        "none".to_string()
                    } else {
                        format!("{value:?}")
                    }
                ),
            );
        }
    }
    Ok(())
}
