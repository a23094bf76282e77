//! `passerelle vihf sign` and `passerelle verify`, driven as an operator would.

use std::path::Path;
use std::process::Command;

use passerelle_certs_test::shared_test_pki;
use passerelle_config::CertRole;
use passerelle_signing::{DigestAlgorithm, DocumentDigest, LotRequest, SoftwareSigner, sign_lot};

fn passerelle(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// `passerelle verify --trust <root> --untrusted <ORG intermediate> [extra...]`.
fn verify(m: &passerelle_certs_test::Manifest, extra: &[&str]) -> (i32, String, String) {
    let root = m.path(&m.ca.root);
    let inter = m.path(&m.ca.org_intermediate);
    let mut args = vec!["verify", "--trust", s(&root), "--untrusted", s(&inter)];
    args.extend_from_slice(extra);
    passerelle(&args)
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/vihf-context.json");

#[test]
fn vihf_sign_then_verify() {
    let m = shared_test_pki().expect("PKI");
    let config = m.path(&m.config);
    let (code, xml, err) = passerelle(&[
        "vihf",
        "sign",
        "--config",
        s(&config),
        "--tenant",
        "ch-test-a",
        "--context",
        EXAMPLE,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(xml.starts_with("<saml2:Assertion"));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("vihf.xml");
    std::fs::write(&file, &xml).expect("write");
    let (code, out, _) = verify(&m, &[s(&file)]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("valid: VIHF _") && out.contains("structure 1690010012"),
        "{out}"
    );

    std::fs::write(&file, xml.replace("MAX LIBRE", "MAX LIBRF")).expect("write");
    let (code, out, _) = verify(&m, &[s(&file)]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("invalid: signature check failed") && out.contains("digest"),
        "{out}"
    );
}

#[test]
fn vihf_sign_refuses_a_structure_of_another_tenant() {
    let m = shared_test_pki().expect("PKI");
    let (code, _, err) = passerelle(&[
        "vihf",
        "sign",
        "--config",
        s(&m.path(&m.config)),
        "--tenant",
        "ch-test-b",
        "--context",
        EXAMPLE,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("structure_id 1690010012 is neither tenant ch-test-b's legal entity"),
        "{err}"
    );
    let (code, _, err) = passerelle(&[
        "vihf",
        "sign",
        "--config",
        s(&m.path(&m.config)),
        "--tenant",
        "nobody",
        "--context",
        EXAMPLE,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no tenant nobody"), "{err}");
}

#[test]
fn verify_lot_signature_with_documents() {
    let m = shared_test_pki().expect("PKI");
    let config = passerelle_config::load(&m.path(&m.config)).expect("config");
    let signer = SoftwareSigner::from_material(&config.tenants[0].certificates[&CertRole::DmpSign])
        .expect("signer");
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).expect("mkdir");
    let files = [
        (
            "1.2.250.1.999.5.1",
            "xml",
            "text/xml",
            b"<doc><a>1</a></doc>".to_vec(),
        ),
        (
            "1.2.250.1.999.5.2",
            "pdf",
            "application/pdf",
            b"%PDF-1.4 test".to_vec(),
        ),
    ];
    for (id, ext, _, bytes) in &files {
        std::fs::write(docs.join(format!("{id}.{ext}")), bytes).expect("write");
    }
    let signed = sign_lot(
        &LotRequest {
            submission_set_unique_id: "1.2.250.1.999.5.100".into(),
            signature_unique_id: "1.2.250.1.999.5.200".into(),
            documents: files
                .iter()
                .map(|(id, _, mime, bytes)| {
                    DocumentDigest::compute(id, mime, bytes, DigestAlgorithm::Sha256)
                        .expect("digest")
                })
                .collect(),
            digest: DigestAlgorithm::Sha256,
            signing_time: time::OffsetDateTime::now_utc(),
        },
        &signer,
    )
    .expect("sign");
    let sig = dir.path().join("signature.xml");
    std::fs::write(&sig, &signed.xml).expect("write");
    let (code, out, _) = verify(&m, &["--documents", s(&docs), s(&sig)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 document(s) match the manifest"), "{out}");

    std::fs::write(docs.join("1.2.250.1.999.5.2.pdf"), b"%PDF-1.4 changed").expect("write");
    let (code, out, _) = verify(&m, &["--documents", s(&docs), s(&sig)]);
    assert_eq!(code, 1);
    assert!(
        out.contains("urn:oid:1.2.250.1.999.5.2") && out.contains("does not match"),
        "{out}"
    );
    let root = m.path(&m.ca.root);
    let (code, out, _) = passerelle(&["verify", "--trust", s(&root), s(&sig)]);
    assert_eq!(code, 1);
    assert!(out.contains("--documents"), "{out}");
}
