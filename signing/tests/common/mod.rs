//! Shared fixtures: the test PKI, its sandbox configuration, signers, and Debian's
//! `xmlsec1` / `xmllint` run as subprocesses.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use passerelle_certs_test::{Manifest, shared_test_pki};
use passerelle_config::{CertRole, Config};
use passerelle_signing::{SoftwareSigner, TrustAnchors};

pub struct Fixture {
    pub pki: Manifest,
    pub config: Config,
}

pub fn fixture() -> Fixture {
    let pki = shared_test_pki().expect("test PKI");
    let config = passerelle_config::load(&pki.path(&pki.config)).expect("sandbox config");
    Fixture { pki, config }
}

impl Fixture {
    pub fn signer(&self, tenant: usize, role: CertRole) -> SoftwareSigner {
        SoftwareSigner::from_material(&self.config.tenants[tenant].certificates[&role])
            .expect("signer")
    }

    pub fn root(&self) -> PathBuf {
        self.pki.path(&self.pki.ca.root)
    }

    pub fn intermediate(&self) -> PathBuf {
        self.pki.path(&self.pki.ca.org_intermediate)
    }

    pub fn trust(&self) -> TrustAnchors {
        TrustAnchors::from_files(&[&self.root()], &[&self.intermediate()]).expect("trust")
    }
}

pub fn shared_spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec")
}

/// `xmlsec1 --verify` with only the trust anchors (and the untrusted intermediate).
pub fn xmlsec1_verify(
    xml: &str,
    root: &Path,
    intermediate: &Path,
    extra: &[&str],
) -> (bool, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(xml.as_bytes()).expect("write");
    let out = Command::new("xmlsec1")
        .arg("--verify")
        .arg("--enabled-reference-uris")
        .arg("same-doc")
        .arg("--trusted-pem")
        .arg(root)
        .arg("--untrusted-pem")
        .arg(intermediate)
        .args(extra)
        .arg(file.path())
        .output()
        .expect("run xmlsec1 (apt-get install xmlsec1)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What Debian's `xmlsec1 --verify` said of a lot signature with its Manifest processed.
#[derive(Debug)]
pub struct XmlsecLot {
    /// Exit status 0: SignedInfo and the signature value verify (a failing manifest
    /// reference does not change it, as XML-DSig core validation has it).
    pub ok: bool,
    /// Each Manifest reference's URI and status (`succeeded`, `invalid`), in order.
    pub manifest: Vec<(String, String)>,
    pub output: String,
}

impl XmlsecLot {
    pub fn status(&self, uri: &str) -> Option<&str> {
        self.manifest
            .iter()
            .find(|(u, _)| u == uri)
            .map(|(_, s)| s.as_str())
    }
}

/// `xmlsec1 --verify` of a lot signature as a standard processor: Manifests processed
/// (no `--ignore-manifests`), each `urn:oid:<uniqueId>` mapped to the document's file
/// (`--url-map`), the submission set's to an empty file, and the references' statuses
/// read from `--print-debug`.
pub fn xmlsec1_verify_lot(
    xml: &str,
    root: &Path,
    intermediate: &Path,
    documents: &[(&str, &[u8])],
    submission_set_unique_id: &str,
) -> XmlsecLot {
    let dir = tempfile::tempdir().expect("temp dir");
    let signature = dir.path().join("signature.xml");
    std::fs::write(&signature, xml).expect("write signature");
    let mut command = Command::new("xmlsec1");
    command
        .arg("--verify")
        .arg("--enabled-reference-uris")
        .arg("same-doc,remote")
        .arg("--trusted-pem")
        .arg(root)
        .arg("--untrusted-pem")
        .arg(intermediate)
        .arg("--print-debug");
    let empty = dir.path().join("submission-set");
    std::fs::write(&empty, b"").expect("write empty");
    command
        .arg(format!("--url-map:urn:oid:{submission_set_unique_id}"))
        .arg(&empty);
    for (i, (unique_id, bytes)) in documents.iter().enumerate() {
        let file = dir.path().join(format!("document-{i}"));
        std::fs::write(&file, bytes).expect("write document");
        command
            .arg(format!("--url-map:urn:oid:{unique_id}"))
            .arg(file);
    }
    let out = command
        .arg(&signature)
        .output()
        .expect("run xmlsec1 (apt-get install xmlsec1)");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // --print-debug lists "== Manifest References List:" then, per reference,
    // "== Status: <status>" followed by "== URI: \"<uri>\"".
    let mut manifest = Vec::new();
    if let Some((_, list)) = output.split_once("== Manifest References List:") {
        let mut status = None;
        for line in list.lines() {
            if let Some(s) = line.strip_prefix("== Status: ") {
                status = Some(s.trim().to_string());
            } else if let Some(u) = line.strip_prefix("== URI: ") {
                let uri = u.trim().trim_matches('"').to_string();
                manifest.push((uri, status.take().unwrap_or_default()));
            }
        }
    }
    XmlsecLot {
        ok: out.status.success(),
        manifest,
        output,
    }
}

/// `xmllint --noout --schema XSD` on a document.
pub fn xmllint_schema(xml: &str, xsd: &Path) -> (bool, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp");
    file.write_all(xml.as_bytes()).expect("write");
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .arg(file.path())
        .output()
        .expect("run xmllint (apt-get install libxml2-utils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A schema set of the SAML 2.0 assertion schema plus the HL7 v3 datatypes, so that the
/// `xsi:type="CE"` of VIHF roles and purpose of use resolves as the DMP expects.
pub fn vihf_schema(dir: &Path) -> PathBuf {
    let spec = shared_spec()
        .canonicalize()
        .expect("../shared/spec is present");
    let wrapper = format!(
        r#"<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:passerelle:test:vihf">
  <xs:import namespace="urn:oasis:names:tc:SAML:2.0:assertion" schemaLocation="{}"/>
  <xs:import namespace="urn:hl7-org:v3" schemaLocation="{}"/>
</xs:schema>"#,
        spec.join("insi/xsd/SAML/saml-schema-assertion-2.0.xsd")
            .display(),
        spec.join("dmp/schema/HL7V3/NE2008/coreschemas/datatypes.xsd")
            .display()
    );
    let path = dir.join("vihf-schema.xsd");
    std::fs::write(&path, wrapper).expect("write schema");
    path
}

pub const SAML_ID_ATTR: [&str; 2] = [
    "--id-attr:ID",
    "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
];
