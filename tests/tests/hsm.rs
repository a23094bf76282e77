//! Keys in a PKCS#11 token: SoftHSM2 (Debian `softhsm2`) with a token store of the
//! test's own, tenant A's ORG AUTH_CLI, ORG SIGN and INSI-AUTO keys imported into it by
//! `softhsm2-util`, `passerelle run` as a child process (SoftHSM reads its store from the
//! environment). What the token signed is verified by Debian's xmlsec1 and by the mocks'
//! TLS stacks; OpenSC's `pkcs11-tool` reads the token independently.

use std::path::Path;
use std::time::Duration;

use passerelle_certs_test::softhsm::{MODULE, SoftHsm, USER_PIN};
use passerelle_certs_test::{LeafFiles, shared_test_pki};
use passerelle_e2e::binaries::{bin, text};
use passerelle_e2e::messages::{submission, three_documents, vihf_headers};
use passerelle_e2e::{Harness, Options, xmlsec1_verify, xmlsec1_verify_vihf};
use passerelle_soap::mtom;

const TOKEN: &str = "passerelle-a";

/// The `[tenants.certificates.<role>]` table: the PKI's certificate and chain files, the
/// key in the token under `label`.
fn role_table(files: &LeafFiles, label: &str, pin_file: &Path) -> toml::Table {
    let pki = shared_test_pki().expect("test PKI");
    let mut table = toml::Table::new();
    table.insert(
        "cert".into(),
        pki.path(&files.cert).display().to_string().into(),
    );
    table.insert(
        "chain".into(),
        pki.path(&files.chain).display().to_string().into(),
    );
    let mut pkcs11 = toml::Table::new();
    pkcs11.insert("module".into(), MODULE.into());
    pkcs11.insert("token_label".into(), TOKEN.into());
    pkcs11.insert("key_label".into(), label.into());
    pkcs11.insert("pin_file".into(), pin_file.display().to_string().into());
    table.insert("pkcs11".into(), toml::Value::Table(pkcs11));
    table
}

/// A token holding tenant A's dmp_auth, dmp_sign and insi_auto keys, and the harness
/// options that use it.
fn token_with_tenant_a(pin: &str) -> (SoftHsm, Options) {
    let pki = shared_test_pki().expect("test PKI");
    let hsm = SoftHsm::new();
    hsm.init_token(TOKEN);
    let a = &pki.tenants[0];
    let pin_file = hsm.pin_file(pin);
    let mut tables = Vec::new();
    for (role, files, id) in [
        ("dmp_auth", &a.dmp_auth, "01"),
        ("dmp_sign", &a.dmp_sign, "02"),
        ("insi_auto", &a.insi_auto, "03"),
    ] {
        hsm.import_key(TOKEN, &pki.path(&files.key), role, id);
        tables.push((role, role_table(files, role, &pin_file)));
    }
    let options = Options {
        tenant_a_certificates: tables,
        process_env: Some(hsm.env()),
        ..Options::default()
    };
    (hsm, options)
}

fn headers<'a>(vihf: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    let mut h: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
    h.push(("x-passerelle-tenant", "ch-test-a"));
    h
}

#[tokio::test]
async fn the_token_signs_the_vihf_the_lot_and_both_tls_handshakes() {
    let (_hsm, options) = token_with_tenant_a(USER_PIN);
    let h = Harness::start_with(options).await;

    // TD2.1 through the token: VIHF and lot signed there, mTLS with the token's key.
    let docs = three_documents("hsm");
    let (ct, body) = submission("1.2.250.1.999.hsm.100", &docs, &h.eg(0));
    let vihf = vihf_headers(&h.eg(0));
    let reply = h.post("/dmp/repository", &headers(&vihf), &ct, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("ResponseStatusType:Success"),
        "{}",
        reply.text()
    );
    // The mock DMP's TLS stack saw tenant A's ORG AUTH_CLI, and verified the lot.
    let stored = h.dmp_service.documents();
    assert_eq!(stored.len(), 4, "3 documents + the lot signature");
    assert!(
        stored
            .iter()
            .all(|d| d.client_subject == h.subject(0, "dmp_auth"))
    );
    // Both signatures made in the token verify with Debian's xmlsec1.
    let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
    let parts = mtom::parse(&sent.content_type, &sent.body).expect("MTOM sent upstream");
    xmlsec1_verify_vihf(&h.pki, &parts.root);
    let signature = parts.attachments.last().expect("signature part");
    xmlsec1_verify(&h.pki, &signature.content, &["--ignore-manifests"]);

    // INSi over mTLS with the INSI-AUTO key in the token.
    let reply = h.insi_search_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("<CodeCR>00</CodeCR>"),
        "{}",
        reply.text()
    );
    let stats = h.insi.stats.to_json();
    assert_eq!(stats["clients"][h.subject(0, "insi_auto")], 1, "{stats}");

    let (status, body) = h.admin("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn two_hundred_concurrent_signed_requests_share_the_session_pool() {
    let (_hsm, options) = token_with_tenant_a(USER_PIN);
    let h = std::sync::Arc::new(Harness::start_with(options).await);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let h = std::sync::Arc::clone(&h);
        tasks.push(tokio::spawn(async move { h.dmp_query_a().await }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        let reply = task.await.expect("task");
        if reply.status != 200 {
            failures.push(format!("{} {}", reply.status, reply.text()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 failed: {:?}",
        failures.len(),
        failures.first()
    );
    // Each of them carried a VIHF the token signed: the mock counted 200 queries.
    assert_eq!(h.dmp.stats.count("RegistryStoredQuery", "ok"), 200);

    // A reload opens the token keys again, as it reads key files again.
    let process = h.process.as_ref().expect("child process");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &process.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    assert!(
        process
            .wait_log(
                &["configuration and certificates reloaded"],
                Duration::from_secs(20)
            )
            .is_some(),
        "no reload: {}",
        process.log()
    );
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn a_token_taken_away_gives_key_unavailable_then_service_resumes() {
    let (hsm, options) = token_with_tenant_a(USER_PIN);
    let h = Harness::start_with(options).await;
    assert_eq!(h.dmp_query_a().await.status, 200);

    hsm.remove_tokens();
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(
        reply.fault_code().as_deref(),
        Some("KeyUnavailable"),
        "{}",
        reply.text()
    );
    assert!(
        reply
            .text()
            .contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>"),
        "{}",
        reply.text()
    );
    let (status, body) = h.admin("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("key token unavailable"), "{body}");
    assert!(body.contains("ch-test-a dmp_sign"), "{body}");
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics.contains(
            "passerelle_certificate_key_unavailable{tenant=\"ch-test-a\",role=\"dmp_sign\"} 1"
        ),
        "{metrics}"
    );

    hsm.restore_tokens();
    // The probe finds it again within a few seconds; requests then pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = h.admin("/readyz").await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready 30 s after the token came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn the_certificate_can_live_in_the_token_too() {
    let pki = shared_test_pki().expect("test PKI");
    let (hsm, mut options) = token_with_tenant_a(USER_PIN);
    // dmp_sign's certificate stored beside its key; the table names no `cert` file.
    hsm.import_certificate(
        TOKEN,
        &pki.path(&pki.tenants[0].dmp_sign.cert),
        "dmp_sign",
        "02",
    );
    for (role, table) in &mut options.tenant_a_certificates {
        if *role == "dmp_sign" {
            table.remove("cert");
        }
    }
    let config = config_with_token(&options, &hsm.dir);
    let (ok, out) = check(&hsm, &config);
    assert!(ok, "{out}");

    let h = Harness::start_with(options).await;
    let reply = h.dmp_query_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The VIHF carries the token's certificate and verifies with xmlsec1.
    let sent = h.dmp.stats.recent_bodies().pop().expect("body recorded");
    xmlsec1_verify_vihf(&h.pki, &sent.body);
    let leaf = std::fs::read_to_string(pki.path(&pki.tenants[0].dmp_sign.cert)).expect("PEM");
    let base64: String = leaf.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        String::from_utf8_lossy(&sent.body).contains(&base64),
        "the VIHF's X509Certificate is dmp_sign's"
    );
}

/// `passerelle check` with SoftHSM's store: its output and success.
fn check(hsm: &SoftHsm, config: &Path) -> (bool, String) {
    let output = std::process::Command::new(bin("passerelle"))
        .args(["check", "--config", &config.display().to_string()])
        .envs(hsm.env())
        .output()
        .expect("passerelle check");
    (output.status.success(), text(&output))
}

/// The sandbox configuration with tenant A's keys in the token, written in `dir`.
fn config_with_token(options: &Options, dir: &Path) -> std::path::PathBuf {
    let pki = shared_test_pki().expect("test PKI");
    let mut tables = Vec::new();
    for (role, table) in &options.tenant_a_certificates {
        tables.push((*role, table.clone()));
    }
    let path = passerelle_e2e::binaries::unchecked_config(&pki, dir, &tables);
    assert!(path.is_file());
    path
}

#[test]
fn check_names_a_wrong_pin_and_an_unknown_token() {
    let (hsm, options) = token_with_tenant_a("not-the-pin");
    let dir = hsm.dir.clone();
    let config = config_with_token(&options, &dir);
    let (ok, out) = check(&hsm, &config);
    assert!(!ok, "{out}");
    assert!(out.contains("CKR_PIN_INCORRECT"), "{out}");
    assert!(out.contains("pin_file"), "{out}");

    // The right PIN, a token label that is not there: the labels present are listed.
    let (hsm, mut options) = token_with_tenant_a(USER_PIN);
    for (_, table) in &mut options.tenant_a_certificates {
        if let Some(toml::Value::Table(p11)) = table.get_mut("pkcs11") {
            p11.insert("token_label".into(), "no-such-token".into());
        }
    }
    let config = config_with_token(&options, &hsm.dir);
    let (ok, out) = check(&hsm, &config);
    assert!(!ok, "{out}");
    assert!(out.contains("no token \"no-such-token\""), "{out}");
    assert!(out.contains(&format!("{TOKEN:?}")), "{out}");

    // As configured: passes, with the warning that imported keys existed outside.
    let (hsm, options) = token_with_tenant_a(USER_PIN);
    let config = config_with_token(&options, &hsm.dir);
    let (ok, out) = check(&hsm, &config);
    assert!(ok, "{out}");
    assert!(out.contains("imported into the token"), "{out}");
}

/// `passerelle csr --pkcs11` for tenant A's dmp_sign, key label `dmp-sign-renewed`.
fn run_csr(hsm: &SoftHsm, config: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("passerelle"))
        .args(["csr", "--config", &config.display().to_string()])
        .args(["--tenant", "ch-test-a", "--role", "dmp_sign", "--pkcs11"])
        .args(["--key-label", "dmp-sign-renewed"])
        .args(extra)
        .envs(hsm.env())
        .output()
        .expect("passerelle csr")
}

#[test]
fn csr_generates_the_key_inside_the_token() {
    let (hsm, options) = token_with_tenant_a(USER_PIN);
    let config = config_with_token(&options, &hsm.dir);
    let output = run_csr(&hsm, &config, &["--key-id", "a1b2"]);
    assert!(output.status.success(), "{}", text(&output));
    let csr = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );

    // OpenSSL: the request verifies, with the tenant's subject.
    let file = passerelle_e2e::TempFile::new(csr.as_bytes());
    let openssl = std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-subject", "-in"])
        .arg(&file.0)
        .output()
        .expect("openssl");
    let said = text(&openssl);
    assert!(openssl.status.success(), "{said}");
    assert!(
        said.contains("verify OK") || said.contains("Certificate request self-signature verify OK"),
        "{said}"
    );
    let pki = shared_test_pki().expect("test PKI");
    let structure = &pki.tenants[0].structure_id;
    assert!(said.contains(&format!("OU = {structure}")), "{said}");

    // OpenSC reads the new private key: sensitive, never extractable, made in the token.
    // pkcs11-tool lists each object as a line at the margin, then its attributes indented.
    let objects = hsm.list_objects(TOKEN);
    let mut blocks: Vec<String> = Vec::new();
    for line in objects.lines() {
        match blocks.last_mut() {
            Some(block) if line.starts_with(' ') => {
                block.push('\n');
                block.push_str(line);
            }
            _ => blocks.push(line.to_string()),
        }
    }
    let key = blocks
        .iter()
        .find(|b| b.starts_with("Private Key Object") && b.contains("dmp-sign-renewed"))
        .unwrap_or_else(|| panic!("no new key listed: {objects}"));
    assert!(key.contains("a1b2"), "the key id: {key}");
    for flag in [
        "sensitive",
        "always sensitive",
        "never extractable",
        "local",
    ] {
        assert!(key.contains(flag), "{flag}: {key}");
    }

    // The public key of the request is the token's (OpenSC reads it, OpenSSL converts).
    let pubkey = std::process::Command::new("openssl")
        .args(["req", "-noout", "-pubkey", "-in"])
        .arg(&file.0)
        .output()
        .expect("openssl");
    assert!(pubkey.status.success());
    let in_token = passerelle_e2e::TempFile::new(&hsm.public_key_der(TOKEN, "a1b2"));
    let token_pem = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-outform", "PEM", "-in"])
        .arg(&in_token.0)
        .output()
        .expect("openssl");
    assert!(token_pem.status.success(), "{}", text(&token_pem));
    assert_eq!(
        String::from_utf8_lossy(&pubkey.stdout),
        String::from_utf8_lossy(&token_pem.stdout),
        "the CSR's public key is the token's"
    );
    let table = std::fs::read_to_string(
        config
            .parent()
            .expect("folder")
            .join("pending")
            .join("ch-test-a")
            .join("dmp_sign")
            .join("pkcs11.toml"),
    );
    let table = table.expect("pkcs11.toml in the pending folder");
    assert!(table.contains("key_id = \"a1b2\""), "{table}");

    // A second key under the same label is refused.
    let again = run_csr(&hsm, &config, &["--force"]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already holds a private key"),
        "{}",
        text(&again)
    );
}
