//! The generated PKI, checked with Debian's `openssl` command as an operator would.

use std::path::Path;
use std::process::Command;

use passerelle_certs_test::{LeafFiles, Manifest, PkiOptions, generate, shared_test_pki};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn verify(m: &Manifest, leaf: &Path, root: &Path, intermediate: &Path) -> (bool, String) {
    openssl(&[
        "verify",
        "-CAfile",
        s(&m.path(root)),
        "-untrusted",
        s(&m.path(intermediate)),
        s(&m.path(leaf)),
    ])
}

fn text(m: &Manifest, leaf: &LeafFiles) -> String {
    openssl(&[
        "x509",
        "-in",
        s(&m.path(&leaf.cert)),
        "-noout",
        "-text",
        "-nameopt",
        "oneline,-esc_msb",
    ])
    .1
}

#[test]
fn every_good_leaf_verifies_and_has_the_igc_sante_profile() {
    let m = shared_test_pki().expect("PKI");
    for t in &m.tenants {
        for (leaf, cn, ku, eku) in [
            (
                &t.dmp_auth,
                format!("PASSERELLE DMP {}", t.legal_name),
                "Digital Signature\n",
                "TLS Web Client Authentication",
            ),
            (
                &t.dmp_sign,
                format!("PASSERELLE DMP {}", t.legal_name),
                "Digital Signature, Non Repudiation",
                "E-mail Protection",
            ),
            (
                &t.insi_auto,
                "INSI-AUTO".to_string(),
                "Digital Signature\n",
                "TLS Web Client Authentication",
            ),
            (
                &t.insi_manu,
                "INSI-MANU".to_string(),
                "Digital Signature\n",
                "TLS Web Client Authentication",
            ),
        ] {
            let (ok, out) = verify(&m, &leaf.cert, &m.ca.root, &m.ca.org_intermediate);
            assert!(ok, "{}: {out}", leaf.cert.display());
            let x = text(&m, leaf);
            let subject = format!(
                "Subject: C = FR, ST = {}, O = {}, OU = {}, CN = {cn}",
                t.department, t.legal_name, t.structure_id
            );
            for needle in [
                subject.as_str(),
                "Issuer: C = FR, O = ASIP-SANTE, OU = 0002 187512751, OU = IGC-SANTE TEST, CN = TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS",
                "Public-Key: (2048 bit)",
                "Signature Algorithm: sha256WithRSAEncryption",
                "X509v3 Key Usage: critical",
                ku,
                eku,
                "Policy: 1.2.250.1.213.1.7.2.1.1.1.1",
                "URI:http://igc-sante.esante.gouv.fr/CRL/ACI-EL-ORG-TEST.crl",
                "OCSP - URI:http://ocsp.esante.gouv.fr",
                "CA Issuers - URI:",
                "X509v3 Private Key Usage Period",
                "CA:FALSE",
            ] {
                assert!(
                    x.contains(needle),
                    "{} lacks {needle:?}:\n{x}",
                    leaf.cert.display()
                );
            }
            // Three years of validity.
            let dates = openssl(&[
                "x509",
                "-in",
                s(&m.path(&leaf.cert)),
                "-noout",
                "-startdate",
                "-enddate",
            ])
            .1;
            let year = |prefix: &str| -> i32 {
                let line = dates
                    .lines()
                    .find(|l| l.starts_with(prefix))
                    .expect("date line");
                line.split_whitespace()
                    .rev()
                    .nth(1)
                    .and_then(|y| y.parse().ok())
                    .expect("year")
            };
            assert_eq!(year("notAfter") - year("notBefore"), 3, "{dates}");
        }
        // The DMP compares the VIHF Issuer with the TLS client DN: same subject.
        assert_eq!(t.dmp_auth.subject, t.dmp_sign.subject);
        assert!(t.dmp_auth.subject.starts_with("CN=PASSERELLE DMP"));
    }
    let (ok, out) = verify(&m, &m.server.cert, &m.ca.root, &m.ca.server_intermediate);
    assert!(ok, "{out}");
    let x = text(&m, &m.server);
    for needle in [
        "TLS Web Server Authentication",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "Digital Signature, Key Encipherment",
    ] {
        assert!(x.contains(needle), "server lacks {needle:?}:\n{x}");
    }
}

#[test]
fn cas_have_the_test_hierarchy_shape() {
    let m = shared_test_pki().expect("PKI");
    for (cert, cn, pathlen) in [
        (&m.ca.root, "TEST AC RACINE IGC-SANTE ELEMENTAIRE", None),
        (
            &m.ca.org_intermediate,
            "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS",
            Some("pathlen:0"),
        ),
        (
            &m.ca.server_intermediate,
            "TEST AC IGC-SANTE ELEMENTAIRE SERVEURS",
            Some("pathlen:0"),
        ),
    ] {
        let x = openssl(&["x509", "-in", s(&m.path(cert)), "-noout", "-text"]).1;
        assert!(x.contains(&format!("Subject: C = FR, O = ASIP-SANTE, OU = 0002 187512751, OU = IGC-SANTE TEST, CN = {cn}")), "{x}");
        assert!(x.contains("Public-Key: (4096 bit)"), "{x}");
        assert!(x.contains("CA:TRUE"), "{x}");
        assert!(x.contains("Certificate Sign, CRL Sign"), "{x}");
        if let Some(p) = pathlen {
            assert!(x.contains(p), "{x}");
        }
    }
}

#[test]
fn every_pkcs12_opens_with_its_password_file_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let m = shared_test_pki().expect("PKI");
    let mut leaves: Vec<&LeafFiles> = m
        .tenants
        .iter()
        .flat_map(|t| [&t.dmp_auth, &t.dmp_sign, &t.insi_auto, &t.insi_manu])
        .collect();
    leaves.push(&m.server);
    leaves.extend(m.bad.values().map(|b| &b.files));
    for leaf in leaves {
        let pass = format!("file:{}", s(&m.path(&leaf.p12_password)));
        let (ok, out) = openssl(&[
            "pkcs12",
            "-info",
            "-in",
            s(&m.path(&leaf.p12)),
            "-passin",
            &pass,
            "-noout",
        ]);
        assert!(ok, "{}: {out}", leaf.p12.display());
        for secret in [&leaf.key, &leaf.p12, &leaf.p12_password] {
            let mode = std::fs::metadata(m.path(secret))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{}", secret.display());
        }
        let (ok, out) = openssl(&["pkey", "-in", s(&m.path(&leaf.key)), "-noout"]);
        assert!(ok, "{out}");
    }
}

#[test]
fn bad_fixtures_fail_where_they_should() {
    let m = shared_test_pki().expect("PKI");
    let bad = |name: &str| &m.bad[name].files;
    let (ok, out) = verify(&m, &bad("expired").cert, &m.ca.root, &m.ca.org_intermediate);
    assert!(!ok && out.contains("certificate has expired"), "{out}");
    let (ok, out) = verify(
        &m,
        &bad("not-yet-valid").cert,
        &m.ca.root,
        &m.ca.org_intermediate,
    );
    assert!(!ok && out.contains("not yet valid"), "{out}");
    let (ok, out) = verify(
        &m,
        &bad("other-root").cert,
        &m.ca.root,
        &m.ca.org_intermediate,
    );
    assert!(!ok, "{out}");
    let foreign = m.bad["other-root"]
        .foreign_root
        .as_ref()
        .expect("foreign root");
    assert!(m.path(foreign).is_file());

    // Revoked: fine without the CRL, refused with it.
    let revoked = bad("revoked");
    let (ok, _) = verify(&m, &revoked.cert, &m.ca.root, &m.ca.org_intermediate);
    assert!(ok);
    let (ok, out) = openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        s(&m.path(&m.ca.root)),
        "-untrusted",
        s(&m.path(&m.ca.org_intermediate)),
        "-CRLfile",
        s(&m.path(&m.ca.org_crl)),
        s(&m.path(&revoked.cert)),
    ]);
    assert!(!ok && out.contains("certificate revoked"), "{out}");

    let x = text(&m, bad("sign-as-auth"));
    assert!(x.contains("E-mail Protection") && !x.contains("TLS Web Client Authentication"));
    assert!(text(&m, bad("insi-lowercase-cn")).contains("CN = insi-auto"));
    assert!(text(&m, bad("insi-space-cn")).contains("CN = INSI AUTO"));

    // key-mismatch: the key file's public key differs from the certificate's.
    let mismatch = bad("key-mismatch");
    let cert_pub = openssl(&[
        "x509",
        "-in",
        s(&m.path(&mismatch.cert)),
        "-noout",
        "-pubkey",
    ])
    .1;
    let key_pub = openssl(&["pkey", "-in", s(&m.path(&mismatch.key)), "-pubout"]).1;
    assert_ne!(cert_pub, key_pub);
}

#[test]
fn generation_is_idempotent_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = PkiOptions::new(dir.path());
    options.tenants = 1;
    let started = std::time::Instant::now();
    let first = generate(&options).expect("first");
    eprintln!("generated 1 tenant in {:?}", started.elapsed());
    let second = generate(&options).expect("second");
    assert_eq!(
        first.tenants[0].dmp_auth.serial,
        second.tenants[0].dmp_auth.serial
    );

    options.tenants = 2;
    let err = generate(&options).expect_err("other options");
    assert!(err.to_string().contains("--force"), "{err}");

    options.force = true;
    let third = generate(&options).expect("forced");
    assert_eq!(third.tenants.len(), 2);
    assert_ne!(
        first.tenants[0].dmp_auth.serial,
        third.tenants[0].dmp_auth.serial
    );
}

#[test]
fn binary_writes_a_pki_and_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle-certs-test"))
        .args([
            "--out",
            s(dir.path()),
            "--tenants",
            "1",
            "--server-name",
            "mock.example",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Manifest::load(dir.path()).expect("manifest");
    assert!(text(&m, &m.server).contains("DNS:mock.example"));
    assert!(m.path(&m.config).is_file());

    let out = Command::new(env!("CARGO_BIN_EXE_passerelle-certs-test"))
        .args(["--out", s(dir.path()), "--tenants", "0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tenants must be between 1 and 26"));
}
