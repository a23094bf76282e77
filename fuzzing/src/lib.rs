//! The fuzz targets' bodies, one function per parser, with the assertions each input
//! must meet beyond "no panic". The libFuzzer targets in `fuzz/` (nightly, `cargo fuzz`)
//! call them; so does the corpus replay test (`tests/corpus.rs`, stable, part of the
//! suite), so that every input a fuzzer kept, and every crash it found, is checked by
//! CI without fuzzing.
//!
//! Targets:
//! - [`envelope`]: a request as the internal listener reads it (`SoapMessage::read`:
//!   the media type, MTOM, the envelope with DTDs refused), then an ITI-41 submission's
//!   metadata and parts when it is one;
//! - [`insi`]: an INSi request completed for a tenant's certificate (the contexts
//!   Passerelle adds); the envelope it sends must be well-formed XML that libxml2 reads;
//! - [`c14n`]: the canonicaliser, differential against libxml2's (`xmlC14NExecute`, as
//!   `xmllint --c14n`) on every document both parsers accept;
//! - [`config`]: the configuration loader (`passerelle check`) on any TOML text;
//! - [`dmp`]: a DMP request through phases 5 and 6 for tenant A (identity, structure,
//!   lot, then the VIHF and lot signed and the envelope rewritten with WS-Addressing);
//!   what would go out must read back, and carry one of the tenant's structures;
//! - [`vihf`]: an internal system's VIHF re-signed with tenant A's ORG SIGN key; what is
//!   signed verifies (libxmlsec1) and names one of the tenant's structures;
//! - [`vihf_headers`]: the `X-Vihf-*` headers made into a VIHF context, validated and
//!   signed; the assertion verifies and carries the headers' values.
//!
//! Inputs of `dmp` and `vihf_headers` begin with HTTP-like header lines
//! (`Name: value`, see [`head_and_body`]).
//!
//! Under the fuzzer (`cfg(fuzzing)`), each input must also be handled within a time
//! linear in its size ([`within_linear_time`]): a quadratic path shows as a crash rather
//! than as a slow unit nobody reads. The replay test does not time (debug builds, CI
//! machines).

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use libxml::parser::{Parser, ParserOptions};
use libxml::tree::c14n::{CanonicalizationMode, CanonicalizationOptions};
use passerelle_proxy::exchange::Exchange;
use passerelle_proxy::message::SoapMessage;
use passerelle_proxy::state::{ProxyState, TenantRuntime};
use passerelle_signing::{TrustAnchors, resign_vihf, sign_vihf, verify_vihf};
use passerelle_soap::envelope::find_text;
use passerelle_soap::xds::descendants;
use passerelle_xml::{
    C14n, Limits, canonicalize_document, canonicalize_document_str, parse_document,
};

/// Runs `f` on `data`; under the fuzzer, panics when it takes longer than 100 ms plus
/// 4 µs per byte (a 256 KiB input: about 1.1 s), far above what a linear parser needs,
/// twice in a row: a slow path is slow every time, while a stall of the machine (disk,
/// another process) is not, and is not a finding.
fn within_linear_time(data: &[u8], f: impl Fn(&[u8])) {
    #[cfg(fuzzing)]
    let start = std::time::Instant::now();
    f(data);
    #[cfg(fuzzing)]
    {
        let bound = std::time::Duration::from_millis(100)
            + std::time::Duration::from_micros(4 * data.len() as u64);
        let first = start.elapsed();
        if first > bound {
            let again = std::time::Instant::now();
            f(data);
            let took = again.elapsed();
            assert!(
                took <= bound,
                "{} bytes took {first:?}, then {took:?} (bound {bound:?}): not linear",
                data.len()
            );
        }
    }
}

/// Splits an input into a Content-Type (its first line, when short) and a body.
fn content_type_and_body(data: &[u8], default: &str) -> (String, Bytes) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) if i <= 256 => match std::str::from_utf8(&data[..i]) {
            Ok(ct) if ct.contains('/') => (
                ct.trim().to_string(),
                Bytes::copy_from_slice(&data[i + 1..]),
            ),
            _ => (default.to_string(), Bytes::copy_from_slice(data)),
        },
        _ => (default.to_string(), Bytes::copy_from_slice(data)),
    }
}

/// libxml2 reads `xml` as a well-formed document (no network, no recovery).
fn libxml_reads(xml: &str) -> Result<libxml::tree::Document, String> {
    let options = ParserOptions {
        recover: false,
        no_net: true,
        ..ParserOptions::default()
    };
    Parser::default()
        .parse_string_with_options(xml, options)
        .map_err(|e| format!("{e:?}"))
}

/// A request body as the internal listener reads it, with the Content-Type on the
/// input's first line; then, for an envelope that holds an ITI-41 submission, its
/// metadata and documents.
fn envelope_body(data: &[u8]) {
    let (content_type, body) = content_type_and_body(data, "application/soap+xml; charset=utf-8");
    let Ok(message) = SoapMessage::read(&content_type, body) else {
        return;
    };
    // Every envelope accepted is one libxml2 reads too: nothing Passerelle parses
    // differently from the service's XML stack goes on.
    if let Ok(text) = std::str::from_utf8(&message.root) {
        assert!(
            libxml_reads(text).is_ok(),
            "accepted an envelope libxml2 refuses"
        );
    }
    if let Some((body, _)) = message.envelope.body_element() {
        let _ = passerelle_soap::xds::Submission::read(body, message.mtom.as_ref());
    }
}

/// The sandbox's state and the anchors its signatures chain to (test PKI generated
/// once per machine, read once per process).
struct Sandbox {
    state: ProxyState,
    trust: TrustAnchors,
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let pki = passerelle_certs_test::shared_test_pki().expect("test PKI");
        let mut config =
            passerelle_config::load(&pki.path(&pki.config)).expect("sandbox configuration");
        // A checked-in seed's AuthnInstant must not age out of what is signed: the age
        // limit is the one setting the targets change (its check is a unit test's).
        if let Some(dmp) = config.dmp.as_mut() {
            dmp.signing.max_authn_age = std::time::Duration::from_secs(100 * 365 * 86_400);
        }
        let trust = TrustAnchors::from_files(
            &[&pki.path(&pki.ca.root)],
            &[&pki.path(&pki.ca.org_intermediate)],
        )
        .expect("trust anchors");
        Sandbox {
            state: ProxyState::new(config).expect("sandbox state"),
            trust,
        }
    })
}

fn state() -> &'static ProxyState {
    &sandbox().state
}

/// Tenant A (the first by id): the one every target acts for.
fn tenant_a() -> Option<&'static TenantRuntime> {
    state().tenants.values().min_by_key(|t| t.id.to_string())
}

/// Splits an input into HTTP-like header lines and a body: when its first line is
/// `Name: value` (a valid header name) and it holds an empty line within its first
/// 8 KiB, the lines before it are headers and the rest is the body; otherwise there
/// are no headers. A later line that is not a valid header is skipped (hyper would
/// refuse the whole request: skipping it lets the fuzzer keep the other headers).
fn head_and_body(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let window = &data[..data.len().min(8192)];
    let Some(end) = window.windows(2).position(|w| w == b"\n\n") else {
        return (headers, data);
    };
    let first = window.split(|&b| b == b'\n').next().unwrap_or_default();
    let starts_with_header = first
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|colon| HeaderName::from_bytes(&first[..colon]).is_ok());
    if !starts_with_header {
        return (headers, data);
    }
    for line in data[..end].split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    (headers, &data[end + 2..])
}

/// An INSi request completed for tenant A's INSI-AUTO certificate: whatever comes in,
/// what would go out is well-formed XML, read the same way by our parser and libxml2.
fn insi_body(data: &[u8]) {
    let state = state();
    let Some(tenant) = tenant_a() else {
        return;
    };
    let (content_type, body) = content_type_and_body(data, "application/soap+xml; charset=utf-8");
    let mut exchange = Exchange::new("fuzz".into());
    let Ok(outgoing) = passerelle_proxy::insi::identify(
        state,
        tenant,
        Some(passerelle_proxy::state::InsiMode::Auto),
        &content_type,
        body,
        &mut exchange,
    ) else {
        return;
    };
    let sent = sent_bytes(&outgoing);
    let text = std::str::from_utf8(&sent).expect("the completed envelope is UTF-8");
    parse_document(text).expect("the completed envelope reads back");
    assert!(
        libxml_reads(text).is_ok(),
        "libxml2 refuses the completed envelope"
    );
}

/// The bytes a request would send, in one piece.
fn sent_bytes(outgoing: &passerelle_proxy::upstream::Outgoing) -> Bytes {
    outgoing
        .chunks
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect::<Vec<u8>>()
        .into()
}

/// A DMP request for tenant A, headers first ([`head_and_body`]): `X-Route` names the
/// `[dmp.services]` route (default `registry`), `Content-Type` the body's type (default
/// SOAP 1.2), the `X-Vihf-*` headers the identity when the envelope has no VIHF. What
/// would be sent reads back as the message it is (MTOM included), libxml2 reads its
/// envelope, the VIHF signed names one of the tenant's structures, and the identity
/// recorded (structure, actor, patient) is what the VIHF sent says.
pub fn dmp_body(data: &[u8]) -> Result<(), String> {
    let state = state();
    let tenant = tenant_a().ok_or("no tenant")?;
    let (mut headers, body) = head_and_body(data);
    let route = headers
        .remove("x-route")
        .and_then(|v| v.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| "registry".into());
    let content_type = headers
        .remove(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok().map(str::to_string))
        .unwrap_or_else(|| "application/soap+xml; charset=utf-8".into());
    let mut exchange = Exchange::new("fuzz".into());
    let request = passerelle_proxy::dmp::identify(
        state,
        tenant,
        &route,
        &headers,
        &content_type,
        Bytes::copy_from_slice(body),
        &mut exchange,
    )
    .map_err(|e| e.to_string())?;
    let outgoing =
        passerelle_proxy::dmp::sign(request, tenant, &mut exchange).map_err(|e| e.to_string())?;
    let identity = exchange
        .identity
        .as_ref()
        .expect("a signed request's identity");
    let structure = identity
        .structure
        .parse::<passerelle_config::StructureId>()
        .expect("the signed structure is a structure id");
    assert!(
        tenant.owns_structure(&structure),
        "signed structure {} is not the tenant's",
        identity.structure
    );
    let sent_type = outgoing
        .content_type
        .clone()
        .expect("a DMP request has a body type");
    let message = SoapMessage::read(&sent_type, sent_bytes(&outgoing))
        .expect("what is sent reads back as a SOAP message");
    let envelope = std::str::from_utf8(&message.root).expect("the sent envelope is UTF-8");
    assert!(
        libxml_reads(envelope).is_ok(),
        "libxml2 refuses the envelope sent"
    );
    // The audit trail records what the VIHF sent says, nothing else.
    let assertion = *descendants(&message.envelope.root, "Assertion")
        .first()
        .expect("a VIHF is sent");
    let sent = |name: &str| {
        descendants(assertion, "Attribute")
            .into_iter()
            .find(|a| a.attribute("Name") == Some(name))
            .and_then(|a| find_text(a, "AttributeValue"))
    };
    assert_eq!(
        sent("Identifiant_Structure").as_deref(),
        Some(identity.structure.as_str()),
        "structure recorded"
    );
    assert_eq!(
        find_text(assertion, "NameID").as_deref(),
        Some(identity.actor_id.as_str()),
        "actor recorded"
    );
    assert_eq!(
        sent("urn:oasis:names:tc:xacml:2.0:resource:resource-id").as_deref(),
        Some(identity.patient.as_str()),
        "patient recorded"
    );
    Ok(())
}

/// An internal system's VIHF, re-signed for tenant A: when accepted, the assertion
/// verifies (libxmlsec1, chain to the test root), names one of the tenant's structures,
/// and its identity is the one recorded.
pub fn vihf_body(data: &[u8]) -> Result<(), String> {
    let tenant = tenant_a().ok_or("no tenant")?;
    let dmp = tenant.dmp.as_ref().ok_or("no DMP certificates")?;
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let options = state()
        .config
        .dmp
        .as_ref()
        .map(|d| passerelle_proxy::dmp::vihf_options(&d.signing))
        .unwrap_or_default();
    let owns = |s: &passerelle_config::StructureId| tenant.owns_structure(s);
    let signed = resign_vihf(
        text,
        owns,
        dmp.signer.as_ref(),
        &options,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())?;
    check_signed_vihf(tenant, &signed);
    Ok(())
}

/// A signed VIHF verifies, is read the same by libxml2, and carries the identity recorded.
fn check_signed_vihf(tenant: &TenantRuntime, signed: &passerelle_signing::SignedVihf) {
    assert!(
        libxml_reads(&signed.xml()).is_ok(),
        "libxml2 refuses the signed VIHF"
    );
    let verified = verify_vihf(&signed.xml(), &sandbox().trust)
        .unwrap_or_else(|e| panic!("the signed VIHF does not verify: {e}"));
    let structure = verified
        .attributes
        .get("Identifiant_Structure")
        .and_then(|v| v.first())
        .expect("Identifiant_Structure signed");
    assert_eq!(structure, &signed.identity.structure, "structure recorded");
    let id = structure
        .parse::<passerelle_config::StructureId>()
        .expect("a structure id");
    assert!(
        tenant.owns_structure(&id),
        "signed structure {structure} is not the tenant's"
    );
    assert_eq!(
        verified.subject_id, signed.identity.actor_id,
        "actor recorded"
    );
    let attribute = |name: &str| {
        verified
            .attributes
            .get(name)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        attribute("urn:oasis:names:tc:xacml:2.0:resource:resource-id"),
        signed.identity.patient,
        "patient recorded"
    );
    assert_eq!(
        attribute("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"),
        signed.identity.purpose,
        "purpose recorded"
    );
}

/// `X-Vihf-*` header lines ([`head_and_body`]; the body is ignored) made into a VIHF
/// for tenant A: when the context validates and names one of the tenant's structures,
/// the assertion signed verifies and carries the values the headers gave.
pub fn vihf_headers_body(data: &[u8]) -> Result<(), String> {
    let tenant = tenant_a().ok_or("no tenant")?;
    let dmp = tenant.dmp.as_ref().ok_or("no DMP certificates")?;
    let state = state();
    let settings = state.config.dmp.as_ref().ok_or("no [dmp]")?;
    let (headers, _) = head_and_body(data);
    let software = passerelle_proxy::dmp::software_identity(&state.config.software);
    let ctx = passerelle_proxy::dmp::identity::from_headers(
        &headers,
        &tenant.structure_id.to_string(),
        software.clone(),
        passerelle_proxy::dmp::vihf_options(&settings.signing),
    )
    .map_err(|e| e.to_string())?;
    let structure = ctx.validate().map_err(|e| e.to_string())?;
    if !tenant.owns_structure(&structure) {
        return Err(format!("{structure} is not the tenant's"));
    }
    let signed = sign_vihf(
        &ctx,
        &software,
        dmp.signer.as_ref(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap_or_else(|e| panic!("a validated context does not sign: {e}"));
    check_signed_vihf(tenant, &signed);
    // What is signed is what the headers said, read here without Passerelle's code:
    // percent-decoded, XML white space trimmed.
    let header = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .trim_matches([' ', '\t', '\n', '\r'])
                .to_string()
        })
    };
    assert_eq!(
        signed.identity.structure,
        header("x-vihf-structure").unwrap_or_else(|| tenant.structure_id.to_string()),
        "structure signed"
    );
    assert_eq!(
        Some(signed.identity.actor_id.as_str()),
        header("x-vihf-subject-id").as_deref(),
        "actor signed"
    );
    let patient = header("x-vihf-patient").unwrap_or_default();
    assert_eq!(
        signed.identity.patient.get(..15),
        patient.get(..15),
        "patient signed"
    );
    assert_eq!(
        signed.identity.purpose,
        header("x-vihf-purpose").map_or_else(|| "normal".to_string(), |p| p.to_ascii_lowercase()),
        "purpose signed"
    );
    Ok(())
}

/// Our canonical XML against libxml2's, inclusive and exclusive, on a document both
/// parsers accept (ours refuses DTDs: those inputs are skipped); the canonical form
/// written while parsing (no tree) against the tree's, on every input.
fn c14n_body(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_document(text);
    for with_comments in [false, true] {
        let streamed = canonicalize_document_str(text, &Limits::DEFAULT, with_comments, |_| {})
            .map(|d| (d.canonical, d.declared_encoding));
        let from_tree = parsed.as_ref().map_err(Clone::clone).map(|doc| {
            (
                canonicalize_document(doc, &C14n::Inclusive { with_comments }),
                doc.declared_encoding.clone(),
            )
        });
        if streamed != from_tree {
            let (s, t) = (format!("{streamed:?}"), format!("{from_tree:?}"));
            panic!(
                "the streamed canonical form (with comments: {with_comments}) differs from the tree's at byte {} of their debug forms:\nstream: {s}\ntree:   {t}",
                first_difference(&s, &t)
            );
        }
    }
    let Ok(ours) = parsed else {
        return;
    };
    // We read text already decoded; a document that declares another encoding speaks
    // of bytes we did not see (its caller decodes it): libxml2 would decode them again.
    if ours
        .declared_encoding
        .as_deref()
        .is_some_and(|e| !e.eq_ignore_ascii_case("utf-8"))
    {
        return;
    }
    let Ok(theirs) = libxml_reads(text) else {
        // Accepted by us, refused by libxml2: a well-formedness gap.
        panic!("our parser accepts a document libxml2 refuses");
    };
    // libxml2 writes a namespace URI without escaping it (`xmlns:p="a&b"` from
    // `a&amp;b`, and `&#38;` through the libxml crate), where Canonical XML escapes it as
    // an attribute value (`&amp;`, as ours): no reference for such a document.
    if namespace_uri_escaped(&ours.root) {
        return;
    }
    for (algorithm, mode, xmllint_flag) in [
        (
            C14n::Inclusive {
                with_comments: false,
            },
            CanonicalizationMode::Canonical1_0,
            "--c14n",
        ),
        (
            C14n::Exclusive {
                with_comments: false,
                inclusive_prefixes: Vec::new(),
            },
            CanonicalizationMode::ExclusiveCanonical1_0,
            "--exc-c14n",
        ),
    ] {
        let mine = canonicalize_document(&ours, &algorithm);
        // libxml2 refuses to canonicalise some documents it parses (a namespace name
        // that is not an absolute URI, as C14N requires): nothing to compare then.
        let Ok(reference) = theirs.canonicalize(
            CanonicalizationOptions {
                mode,
                with_comments: false,
                inclusive_ns_prefixes: Vec::new(),
            },
            None,
        ) else {
            continue;
        };
        if mine == reference {
            continue;
        }
        if same_canonical_form(&mine, &reference) {
            // The crate's U+FFFD cannot say which character they stand for: libxml2's
            // own bytes then, from xmllint (which writes the forms with comments only),
            // against ours with comments.
            let with_comments = match &algorithm {
                C14n::Exclusive { .. } => C14n::Exclusive {
                    with_comments: true,
                    inclusive_prefixes: Vec::new(),
                },
                _ => C14n::Inclusive {
                    with_comments: true,
                },
            };
            let ours_with_comments = canonicalize_document(&ours, &with_comments);
            assert_eq!(
                xmllint_canonical(text, xmllint_flag).as_deref(),
                Some(ours_with_comments.as_bytes()),
                "{with_comments:?} differs from xmllint {xmllint_flag}'s"
            );
            continue;
        }
        let at = first_difference(&mine, &reference);
        let around = |s: &str| -> String {
            s.char_indices()
                .filter(|(i, _)| i + 60 >= at && *i <= at + 60)
                .map(|(_, c)| c)
                .collect()
        };
        panic!(
            "{algorithm:?} differs from libxml2's at byte {at} (ours {} bytes, libxml2's {}):\nours:    {:?}\nlibxml2: {:?}",
            mine.len(),
            reference.len(),
            around(&mine),
            around(&reference),
        );
    }
}

/// `xmllint --nonet FLAG -` on `text`: libxml2's canonical form, its bytes as written
/// (None when xmllint fails or is missing).
fn xmllint_canonical(text: &str, flag: &str) -> Option<Vec<u8>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("xmllint")
        .args(["--nonet", flag, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

/// Whether `reference`, libxml2's canonical form as the libxml crate returns it, may be
/// `mine`. The crate decodes libxml2's output chunk by chunk (`from_utf8_lossy` in its
/// write callback), so a character that straddles two chunks comes back as two to four
/// U+FFFD (found by the fuzzer: U+FFED at byte 16,104 of a 19 KB form): such a run
/// stands for some multi-byte character of ours at that place. Which one it was is
/// lost, so a match here is confirmed against xmllint's bytes ([`c14n_body`]).
fn same_canonical_form(mine: &str, reference: &str) -> bool {
    let mut theirs = reference.chars().peekable();
    for ours in mine.chars() {
        match theirs.next() {
            Some(c) if c == ours => {}
            Some('\u{FFFD}') if ours.len_utf8() > 1 => {
                let mut run = 1;
                while run < ours.len_utf8() && theirs.peek() == Some(&'\u{FFFD}') {
                    theirs.next();
                    run += 1;
                }
                if run < 2 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    theirs.next().is_none()
}

/// The byte offset of the first difference between `a` and `b`.
fn first_difference(a: &str, b: &str) -> usize {
    a.bytes()
        .zip(b.bytes())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// The configuration loader on any TOML text, in a folder of its own (relative paths
/// resolve there, to nothing).
fn config_body(data: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("passerelle-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz folder");
        dir
    });
    let path = dir.join("passerelle.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let inspection = passerelle_config::inspect(&path);
    // A configuration is given only when nothing blocks it.
    assert!(
        inspection.config.is_none() || !inspection.has_errors(),
        "a configuration with errors was accepted"
    );
}

/// The `envelope` target: [`envelope_body`]'s checks, within a linear time under the fuzzer.
pub fn envelope(data: &[u8]) {
    within_linear_time(data, envelope_body);
}

/// The `insi` target: [`insi_body`]'s checks, within a linear time under the fuzzer.
pub fn insi(data: &[u8]) {
    // The state is built once, outside the timing.
    let _ = state();
    within_linear_time(data, insi_body);
}

/// Whether a namespace URI declared in `e` or below holds a character Canonical XML
/// escapes in attribute values.
fn namespace_uri_escaped(e: &passerelle_xml::Element) -> bool {
    e.namespaces
        .iter()
        .any(|(_, uri)| uri.contains(['&', '<', '"', '\t', '\n', '\r']))
        || e.elements().any(namespace_uri_escaped)
}

/// The `c14n` target: [`c14n_body`]'s checks, within a linear time under the fuzzer.
pub fn c14n(data: &[u8]) {
    within_linear_time(data, c14n_body);
}

/// The `dmp` target: [`dmp_body`]'s checks, within a linear time under the fuzzer (the
/// signatures included: two RSA signatures are far under the bound's 100 ms).
pub fn dmp(data: &[u8]) {
    let _ = state();
    within_linear_time(data, |d| {
        let _ = dmp_body(d);
    });
}

/// The `vihf` target: [`vihf_body`]'s checks, within a linear time under the fuzzer.
pub fn vihf(data: &[u8]) {
    let _ = state();
    within_linear_time(data, |d| {
        let _ = vihf_body(d);
    });
}

/// The `vihf_headers` target: [`vihf_headers_body`]'s checks, within a linear time
/// under the fuzzer.
pub fn vihf_headers(data: &[u8]) {
    let _ = state();
    within_linear_time(data, |d| {
        let _ = vihf_headers_body(d);
    });
}

/// The `config` target: [`config_body`]'s checks, within a linear time under the fuzzer.
pub fn config(data: &[u8]) {
    within_linear_time(data, config_body);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A character split between two of the libxml crate's output chunks reads as the
    /// character; any other difference does not.
    #[test]
    fn a_character_split_by_the_libxml_crate_is_the_same_form() {
        let split = |s: &str, at: usize| {
            let b = s.as_bytes();
            let mut out = String::from_utf8_lossy(&b[..at]).into_owned();
            out.push_str(&String::from_utf8_lossy(&b[at..]));
            out
        };
        let mine = "<a>x\u{FFED}y é \u{1F600}</a>";
        for at in 1..mine.len() {
            assert!(same_canonical_form(mine, &split(mine, at)), "split at {at}");
        }
        assert!(same_canonical_form(mine, mine));
        assert!(!same_canonical_form(mine, "<a>x\u{FFFD}y é \u{1F600}</a>"));
        assert!(!same_canonical_form(mine, "<a>x\u{FFED}y e \u{1F600}</a>"));
        assert!(!same_canonical_form(mine, "<a>x\u{FFED}y é \u{1F600}</a>x"));
        assert!(!same_canonical_form(
            "<a>é</a>",
            "<a>\u{FFFD}\u{FFFD}\u{FFFD}</a>"
        ));
        assert_eq!(first_difference("abc", "abd"), 2);
        assert_eq!(first_difference("ab", "abc"), 2);
    }
}
