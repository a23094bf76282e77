//! The crate's canonicalization against libxml2's (`xmllint --c14n` and `--exc-c14n`,
//! both with comments), on documents chosen for the corner cases of the algorithms.

use std::io::Write;
use std::process::Command;

use passerelle_signing::xml::{
    C14n, Scope, canonicalize, canonicalize_document, parse, parse_document,
};
use proptest::prelude::*;

fn xmllint(flag: &str, doc: &str) -> String {
    let mut f = tempfile::NamedTempFile::new().expect("temp");
    f.write_all(doc.as_bytes()).expect("write");
    let out = Command::new("xmllint")
        .arg(flag)
        .arg(f.path())
        .output()
        .expect("xmllint");
    assert!(
        out.status.success(),
        "xmllint {flag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn ours(doc: &str, algorithm: &C14n) -> String {
    canonicalize(&parse(doc).expect("parse"), &Scope::new(), algorithm, None)
}

const DOCS: &[&str] = &[
    r#"<?xml version="1.0"?><r:a xmlns:r="urn:r" xmlns:u="urn:unused" xmlns="urn:d" z="1" r:b="2" a="3"><b/><r:c xmlns:r="urn:r2"><d xmlns=""/></r:c></r:a>"#,
    "<a>\r\n text &amp; &lt;tag&gt; \"q\" 'a' &#xD; <!-- note --> <![CDATA[<raw> & ]]>\t</a>",
    "<a attr=\"line\nbreak\ttab &#9;&#10;&#13; &amp;&lt;&gt;&quot;'\"/>",
    r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing"><s:Header><wsa:Action s:mustUnderstand="true">urn:x</wsa:Action></s:Header><s:Body><q xmlns="urn:q" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="t"/></s:Body></s:Envelope>"#,
    "<a xmlns=\"urn:x\"><b xmlns=\"\"><c xmlns=\"urn:x\"/></b></a>",
    "<é:a xmlns:é=\"urn:e\">Zoé 😀 \u{301}</é:a>",
];

#[test]
fn inclusive_with_comments_matches_libxml2() {
    for doc in DOCS {
        assert_eq!(
            ours(doc, &C14n::INCLUSIVE_WITH_COMMENTS),
            xmllint("--c14n", doc),
            "{doc}"
        );
    }
}

#[test]
fn exclusive_with_comments_matches_libxml2() {
    let exc = C14n::Exclusive {
        with_comments: true,
        inclusive_prefixes: vec![],
    };
    for doc in DOCS {
        assert_eq!(ours(doc, &exc), xmllint("--exc-c14n", doc), "{doc}");
    }
}

/// Whole documents (what a dereferenced `urn:oid:` document is canonicalised as):
/// declaration, BOM, comments and processing instructions around the root element.
const WHOLE_DOCS: &[&str] = &[
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<!--a-->\r\n<a/>\r\n<!--b-->\r\n",
    "\u{feff}<?xml version=\"1.0\"?><a>\u{e9}</a>",
    "<!--a-->\n<?pi   data with  spaces  ?><?empty?>\r\n<r><![CDATA[<x> & \r\n]]></r>\n<!--b--><?z?>\n",
    "<?xml-stylesheet type=\"text/xsl\" href=\"CDA.xsl\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><!-- c --><x/></ClinicalDocument>",
    "<?pi\r\n  multi\r\n line ?><a/>",
];

#[test]
fn whole_document_inclusive_with_comments_matches_libxml2() {
    for doc in WHOLE_DOCS {
        let parsed = parse_document(doc.trim_start_matches('\u{feff}')).expect("parse");
        assert_eq!(
            canonicalize_document(&parsed, &C14n::INCLUSIVE_WITH_COMMENTS),
            xmllint("--c14n", doc),
            "{doc:?}"
        );
    }
}

#[test]
fn processing_instructions_only_outside_the_root() {
    assert!(parse_document("<a><?pi x?></a>").is_err());
    assert!(parse("<?pi x?><a/>").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Arbitrary text and attribute values, nested under redeclared namespaces.
    #[test]
    fn arbitrary_content_matches_libxml2(text in "\\PC{0,40}", value in "\\PC{0,20}") {
        let mut esc_text = String::new();
        passerelle_signing::xml::escape_text(&mut esc_text, &text);
        let mut esc_value = String::new();
        passerelle_signing::xml::escape_attr(&mut esc_value, &value);
        let doc = format!(
            "<p:a xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" v=\"{esc_value}\"><q:b p:w=\"{esc_value}\">{esc_text}</q:b><c xmlns=\"urn:c\">{esc_text}</c></p:a>"
        );
        prop_assert_eq!(ours(&doc, &C14n::INCLUSIVE_WITH_COMMENTS), xmllint("--c14n", &doc));
        let exc = C14n::Exclusive { with_comments: true, inclusive_prefixes: vec![] };
        prop_assert_eq!(ours(&doc, &exc), xmllint("--exc-c14n", &doc));
    }
}
