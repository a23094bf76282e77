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
//! - [`config`]: the configuration loader (`passerelle check`) on any TOML text.
//!
//! Under the fuzzer (`cfg(fuzzing)`), each input must also be handled within a time
//! linear in its size ([`within_linear_time`]): a quadratic path shows as a crash rather
//! than as a slow unit nobody reads. The replay test does not time (debug builds, CI
//! machines).

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use libxml::parser::{Parser, ParserOptions};
use libxml::tree::c14n::{CanonicalizationMode, CanonicalizationOptions};
use passerelle_proxy::exchange::Exchange;
use passerelle_proxy::message::SoapMessage;
use passerelle_proxy::state::ProxyState;
use passerelle_xml::{C14n, canonicalize_document, parse_document};

/// Runs `f` on `data`; under the fuzzer, panics when it takes longer than 100 ms plus
/// 4 µs per byte (a 256 KiB input: about 1.1 s), far above what a linear parser needs.
fn within_linear_time(data: &[u8], f: impl FnOnce(&[u8])) {
    #[cfg(fuzzing)]
    let start = std::time::Instant::now();
    f(data);
    #[cfg(fuzzing)]
    {
        let bound = std::time::Duration::from_millis(100)
            + std::time::Duration::from_micros(4 * data.len() as u64);
        let took = start.elapsed();
        assert!(
            took <= bound,
            "{} bytes took {took:?} (bound {bound:?}): not linear",
            data.len()
        );
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

/// The sandbox's state (test PKI generated once per process).
fn state() -> &'static ProxyState {
    static STATE: OnceLock<ProxyState> = OnceLock::new();
    STATE.get_or_init(|| {
        let pki = passerelle_certs_test::shared_test_pki().expect("test PKI");
        let config =
            passerelle_config::load(&pki.path(&pki.config)).expect("sandbox configuration");
        ProxyState::new(config).expect("sandbox state")
    })
}

/// An INSi request completed for tenant A's INSI-AUTO certificate: whatever comes in,
/// what would go out is well-formed XML, read the same way by our parser and libxml2.
fn insi_body(data: &[u8]) {
    let state = state();
    let Some(tenant) = state.tenants.values().min_by_key(|t| t.id.to_string()) else {
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
    let sent: Vec<u8> = outgoing
        .chunks
        .iter()
        .flat_map(|c| c.iter().copied())
        .collect();
    let text = std::str::from_utf8(&sent).expect("the completed envelope is UTF-8");
    parse_document(text).expect("the completed envelope reads back");
    assert!(
        libxml_reads(text).is_ok(),
        "libxml2 refuses the completed envelope"
    );
}

/// Our canonical XML against libxml2's, inclusive and exclusive, on a document both
/// parsers accept (ours refuses DTDs: those inputs are skipped).
fn c14n_body(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ours) = parse_document(text) else {
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
    for (algorithm, mode) in [
        (
            C14n::Inclusive {
                with_comments: false,
            },
            CanonicalizationMode::Canonical1_0,
        ),
        (
            C14n::Exclusive {
                with_comments: false,
                inclusive_prefixes: Vec::new(),
            },
            CanonicalizationMode::ExclusiveCanonical1_0,
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
        assert_eq!(mine, reference, "{algorithm:?} differs from libxml2's");
    }
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

/// The `c14n` target: [`c14n_body`]'s checks, within a linear time under the fuzzer.
pub fn c14n(data: &[u8]) {
    within_linear_time(data, c14n_body);
}

/// The `config` target: [`config_body`]'s checks, within a linear time under the fuzzer.
pub fn config(data: &[u8]) {
    within_linear_time(data, config_body);
}
