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
