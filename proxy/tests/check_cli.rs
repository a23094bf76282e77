//! `passerelle check` driven as an operator would: the real binary on the test PKI,
//! one case per bad fixture and per validation rule.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use passerelle_certs_test::{Manifest, shared_test_pki};

struct Run {
    code: i32,
    stdout: String,
}

fn check(config: &Path, json: bool) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_passerelle"));
    cmd.arg("check").arg("--config").arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run passerelle");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

fn pki() -> Manifest {
    shared_test_pki().expect("test PKI")
}

/// The sandbox configuration with absolute paths, so it can be rewritten in a temp dir.
fn sandbox_text(m: &Manifest) -> String {
    let text = std::fs::read_to_string(m.path(&m.config)).expect("sandbox config");
    let dir = m.dir.display().to_string();
    text.replace("\"ca/", &format!("\"{dir}/ca/"))
        .replace("\"tenants/", &format!("\"{dir}/tenants/"))
}

struct Case {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn case(text: &str) -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("passerelle.toml");
    std::fs::write(&config, text).expect("write config");
    Case { _dir: dir, config }
}

/// Replaces tenant A's certificate of `role_file` (`dmp-auth`, `insi-auto`, ...) by a bad fixture.
fn with_bad(m: &Manifest, role_file: &str, fixture: &str) -> (Case, PathBuf) {
    let text = sandbox_text(m).replace(
        &format!("tenants/ch-test-a/{role_file}."),
        &format!("bad/{fixture}."),
    );
    let bad = &m.bad[fixture];
    assert_eq!(
        bad.role, role_file,
        "fixture {fixture} pretends to be {}",
        bad.role
    );
    (case(&text), m.path(&bad.files.cert))
}

fn assert_refused(run: &Run, file: &Path, reason: &str) {
    assert_eq!(run.code, 1, "expected exit 1:\n{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("error:") && l.contains(reason))
        .unwrap_or_else(|| panic!("no error line with {reason:?}:\n{}", run.stdout));
    assert!(
        line.contains(&file.display().to_string()),
        "error line does not name {}: {line}",
        file.display()
    );
}

#[test]
fn sandbox_configuration_passes() {
    let m = pki();
    let run = check(&m.path(&m.config), false);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("configuration OK"));
    // One row per certificate: 2 tenants x 4 roles, with subject, OU, issuer and status.
    for t in &m.tenants {
        for (role, cn) in [
            ("dmp_auth", format!("PASSERELLE DMP {}", t.legal_name)),
            ("dmp_sign", format!("PASSERELLE DMP {}", t.legal_name)),
            ("insi_auto", "INSI-AUTO".to_string()),
            ("insi_manu", "INSI-MANU".to_string()),
        ] {
            let row = run
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("{} ", t.id)) && l.contains(&format!(" {role} ")))
                .unwrap_or_else(|| panic!("no row for {} {role}:\n{}", t.id, run.stdout));
            assert!(row.contains(&cn), "{row}");
            assert!(row.contains(&t.structure_id), "{row}");
            assert!(
                row.contains("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"),
                "{row}"
            );
            assert!(row.trim_end().ends_with("ok"), "{row}");
        }
    }
}

#[test]
fn json_report_lists_certificates_and_problems() {
    let m = pki();
    let run = check(&m.path(&m.config), true);
    assert_eq!(run.code, 0);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["ok"], true);
    let certs = v["certificates"].as_array().expect("array");
    // 2 tenants x (dmp_auth, dmp_sign, insi_auto, insi_manu, org_auth).
    assert_eq!(certs.len(), 10);
    assert!(
        certs
            .iter()
            .all(|c| c["status"] == "ok" && c["days_left"].as_i64() > Some(1000))
    );

    let (case, _) = with_bad(&m, "dmp-auth", "expired");
    let run = check(&case.config, true);
    assert_eq!(run.code, 1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["ok"], false);
    let problem = &v["problems"][0];
    assert_eq!(problem["severity"], "error");
    assert_eq!(problem["field"], "tenants[0].certificates.dmp_auth");
    assert_eq!(problem["certificate"]["role"], "dmp_auth");
    assert!(
        problem["message"]
            .as_str()
            .unwrap_or("")
            .contains("expired on")
    );
}

#[test]
fn expired_certificate_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "dmp-auth", "expired");
    let run = check(&case.config, false);
    assert_refused(&run, &file, "expired on");
    assert!(run.stdout.contains("error  ") || run.stdout.contains(" error\n"));
}

#[test]
fn not_yet_valid_certificate_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "dmp-auth", "not-yet-valid");
    assert_refused(&check(&case.config, false), &file, "not yet valid");
}

#[test]
fn sign_certificate_used_as_auth_cli_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "dmp-auth", "sign-as-auth");
    assert_refused(&check(&case.config, false), &file, "lacks clientAuth");
}

#[test]
fn insi_certificate_with_lower_case_cn_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "insi-auto", "insi-lowercase-cn");
    assert_refused(
        &check(&case.config, false),
        &file,
        "CN is \"insi-auto\"; INSi requires exactly \"INSI-AUTO\"",
    );
}

#[test]
fn insi_certificate_with_space_in_cn_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "insi-auto", "insi-space-cn");
    assert_refused(
        &check(&case.config, false),
        &file,
        "CN is \"INSI AUTO\"; INSi requires exactly \"INSI-AUTO\"",
    );
}

#[test]
fn key_not_matching_its_certificate_is_refused() {
    let m = pki();
    let (case, _) = with_bad(&m, "dmp-auth", "key-mismatch");
    let key = m.path(&m.bad["key-mismatch"].files.key);
    let run = check(&case.config, false);
    assert_refused(&run, &key, "does not match the certificate");
    assert!(run.stdout.contains("tenants[0].certificates.dmp_auth.key"));
}

#[test]
fn certificate_from_another_root_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "dmp-auth", "other-root");
    assert_refused(
        &check(&case.config, false),
        &file,
        "not anchored in the configured trust",
    );
}

#[test]
fn revoked_certificate_is_refused() {
    let m = pki();
    let (case, file) = with_bad(&m, "dmp-auth", "revoked");
    let run = check(&case.config, false);
    assert_refused(&run, &file, "revoked on");
    assert!(
        run.stdout.contains("org-intermediate.crl.pem"),
        "{}",
        run.stdout
    );
}

#[test]
fn revoked_certificate_passes_without_crl() {
    // The CRL is what detects it: without one configured, the chain alone is fine.
    let m = pki();
    let (case, _) = with_bad(&m, "dmp-auth", "revoked");
    let text = std::fs::read_to_string(&case.config)
        .expect("read")
        .replace(
            &format!(
                "crls = [\"{}/ca/org-intermediate.crl.pem\"]",
                m.dir.display()
            ),
            "crls = []",
        );
    std::fs::write(&case.config, text).expect("write");
    assert_eq!(check(&case.config, false).code, 0);
}

#[test]
fn wrong_pkcs12_password_is_refused() {
    let m = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let original = m
        .path(&m.tenants[1].dmp_auth.p12_password)
        .display()
        .to_string();
    let text = sandbox_text(&m).replace(
        &format!("password_file = \"{original}\""),
        &format!("password_file = \"{}\"", wrong.display()),
    );
    let c = case(&text);
    let run = check(&c.config, false);
    assert_refused(&run, &m.path(&m.tenants[1].dmp_auth.p12), "wrong password");
    assert!(run.stdout.contains(&wrong.display().to_string()));
}

#[test]
fn missing_file_is_refused() {
    let m = pki();
    let text = sandbox_text(&m).replace(
        "tenants/ch-test-a/insi-manu.key.pem",
        "tenants/ch-test-a/nope.key.pem",
    );
    let c = case(&text);
    let missing = m.dir.join("tenants/ch-test-a/nope.key.pem");
    assert_refused(&check(&c.config, false), &missing, "cannot read");
}

#[test]
fn unknown_keys_are_all_reported() {
    let m = pki();
    let text = sandbox_text(&m)
        .replace("[listener]\n", "[listener]\nadress = \"x\"\n")
        .replace("[insi]\n", "[insi]\nurl_typo = 1\n");
    let c = case(&text);
    let run = check(&c.config, false);
    assert_eq!(run.code, 1, "{}", run.stdout);
    for key in ["listener.adress", "insi.url_typo"] {
        assert!(
            run.stdout.lines().any(|l| l.contains(key)
                && l.contains("unknown key")
                && l.contains(&c.config.display().to_string())),
            "{key} not reported:\n{}",
            run.stdout
        );
    }
}

#[test]
fn syntax_error_names_the_line() {
    let c = case("[listener\naddress = 1\n");
    let run = check(&c.config, false);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("(syntax)"), "{}", run.stdout);
    assert!(run.stdout.contains("line 1"), "{}", run.stdout);
}

#[test]
fn structure_id_different_from_certificate_ou_is_refused() {
    let m = pki();
    let a = &m.tenants[0];
    let b = &m.tenants[1];
    let text = sandbox_text(&m).replacen(
        &format!("structure_id = \"{}\"", a.structure_id),
        &format!("structure_id = \"{}\"", b.structure_id),
        1,
    );
    let c = case(&text);
    let run = check(&c.config, false);
    assert_refused(&run, &m.path(&a.dmp_auth.cert), "certificate OU is");
    // Every certificate of tenant A is reported, not just the first.
    for leaf in [&a.dmp_sign, &a.insi_auto, &a.insi_manu] {
        assert!(
            run.stdout
                .contains(&m.path(&leaf.cert).display().to_string())
        );
    }
}

#[test]
fn dmp_sign_with_another_subject_is_refused() {
    let m = pki();
    let text =
        sandbox_text(&m).replace("tenants/ch-test-a/dmp-sign.", "tenants/ch-test-b/dmp-sign.");
    let c = case(&text);
    let run = check(&c.config, false);
    assert!(
        run.stdout.contains("differs from dmp_auth"),
        "{}",
        run.stdout
    );
    assert_eq!(run.code, 1);
}

#[test]
fn group_readable_key_is_refused_unless_allowed() {
    let m = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("open.key.pem");
    std::fs::copy(m.path(&m.tenants[0].insi_auto.key), &key).expect("copy");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let original = m.path(&m.tenants[0].insi_auto.key).display().to_string();
    let text = sandbox_text(&m).replace(&original, &key.display().to_string());
    let c = case(&text);
    let run = check(&c.config, false);
    assert_refused(&run, &key, "readable by group or others (mode 0644)");

    let allowed = case(&format!(
        "{text}\n[security]\nallow_insecure_key_permissions = true\n"
    ));
    let run = check(&allowed.config, false);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("warning:") && run.stdout.contains("accepted because"));
}

#[test]
fn expiring_certificates_warn_but_pass() {
    let m = pki();
    let c = case(&format!(
        "{}\n[security]\nexpiry_warning_days = 2000\n",
        sandbox_text(&m)
    ));
    let run = check(&c.config, false);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        run.stdout.matches("warning: ").count(),
        10,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("renew it now"));
    assert!(run.stdout.contains("0 error(s), 10 warning(s)"));
}

#[test]
fn every_value_error_is_reported_at_once() {
    let m = pki();
    let text = sandbox_text(&m)
        .replace("address = \"127.0.0.1:8080\"", "address = \"localhost\"")
        .replace(
            "instance_id = \"00000000-0000-4000-8000-000000000001\"",
            "instance_id = \"abc\"",
        )
        .replace("connect = \"5s\"", "connect = \"soon\"")
        .replace("\"127.0.0.0/8\"", "\"127.0.0.0/33\"")
        .replacen(
            "geographic_structure_ids = [\"",
            "geographic_structure_ids = [\"9999\", \"",
            1,
        )
        .replace(
            "services = [\"dmp\", \"insi\", \"svc/echo\"]",
            "services = [\"dmp/nope\", \"insi\", \"svc/echo\"]",
        )
        .replace(
            "tenants = [\"ch-test-a\", \"ch-test-b\"]",
            "tenants = [\"ch-test-a\", \"ch-test-z\"]",
        );
    let c = case(&text);
    let run = check(&c.config, false);
    assert_eq!(run.code, 1);
    for expected in [
        "listener.address",
        "software.instance_id",
        "dmp.timeouts.connect",
        "clients[0].source_cidrs[0]",
        "tenants[0].geographic_structure_ids[0]",
        "clients[0].services[0]",
        "no tenant has id \"ch-test-z\"",
    ] {
        assert!(
            run.stdout.contains(expected),
            "{expected} missing:\n{}",
            run.stdout
        );
    }
}

#[test]
fn same_certificate_for_two_tenants_is_refused() {
    let m = pki();
    // Tenant B's INSi manual certificate replaced by tenant A's (PEM form of the same cert).
    let a = &m.tenants[0].insi_manu;
    let b = &m.tenants[1].insi_manu;
    let text = sandbox_text(&m).replace(
        &format!(
            "pkcs12 = \"{}\"\npassword_file = \"{}\"",
            m.path(&b.p12).display(),
            m.path(&b.p12_password).display()
        ),
        &format!(
            "cert = \"{0}/{1}\"\nkey = \"{0}/{2}\"",
            m.dir.display(),
            a.cert.display(),
            a.key.display()
        ),
    );
    let c = case(&text);
    let run = check(&c.config, false);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("already configured for tenant ch-test-a insi_manu"),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_config_file_is_an_error_not_a_panic() {
    let run = check(Path::new("/nonexistent/passerelle.toml"), false);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("cannot read the configuration"));
}

#[test]
fn signing_options_and_limits_are_validated() {
    let m = pki();
    let text = sandbox_text(&m).replace(
        "[dmp.timeouts]",
        "[dmp.signing]\nvihf_digest = \"md5\"\nauth_mode_attribute = \"AuthMode\"\nlot_signature_passthrough = true\n\n[dmp.timeouts]",
    ) + "\n[limits]\nmax_body_bytes = 100\n";
    let c = case(&text);
    let run = check(&c.config, false);
    assert_eq!(run.code, 1, "{}", run.stdout);
    for (field, reason) in [
        ("dmp.signing.vihf_digest", "\"md5\" is not a digest"),
        ("dmp.signing.auth_mode_attribute", "Authentification_mode"),
        ("limits.max_body_bytes", "at least 65536"),
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.contains("error:") && l.contains(field) && l.contains(reason)),
            "{field} not reported:\n{}",
            run.stdout
        );
    }
    // Valid values load, and reach the typed configuration.
    let good = sandbox_text(&m).replace(
        "[dmp.timeouts]",
        "[dmp.signing]\nlot_digest = \"sha1\"\nlot_signature_passthrough = true\n\n[dmp.timeouts]",
    ) + "\n[limits]\nmax_body_bytes = 1048576\n";
    let c = case(&good);
    let config = passerelle_config::load(&c.config).expect("loads");
    let signing = &config.dmp.as_ref().expect("dmp").signing;
    assert_eq!(signing.lot_digest, passerelle_config::SignatureDigest::Sha1);
    assert!(signing.lot_signature_passthrough);
    assert_eq!(config.limits.max_body_bytes, 1_048_576);
}

/// `check --online`, the real binary against the mocks: one handshake per tenant
/// certificate and upstream, exit 0; a wrong DMP anchor fails under its setting, exit 1.
#[tokio::test(flavor = "multi_thread")]
async fn online_check_handshakes_with_every_upstream() {
    use passerelle_certs_test::ConfigAddresses;
    use passerelle_mocks::faults::Faults;
    let m = pki();
    let any = "127.0.0.1:0".parse().expect("addr");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec");
    let (dmp, _service) =
        passerelle_mocks::start_dmp(&m, &spec.join("dmp"), any, any, Faults::default())
            .await
            .expect("mock DMP");
    let insi =
        passerelle_mocks::start_insi(&m, &spec.join("insi/xsd"), any, any, Faults::default())
            .await
            .expect("mock INSi");
    let audit = tempfile::tempdir().expect("tempdir");
    let name = format!("check-online-{}.toml", dmp.address.port());
    let config = m
        .write_config(
            &name,
            &ConfigAddresses {
                listener: "127.0.0.1:0".into(),
                admin: "127.0.0.1:0".into(),
                dmp_port: dmp.address.port(),
                insi_port: insi.address.port(),
                echo_port: None,
                audit: Some(audit.path().join("audit.jsonl")),
            },
        )
        .expect("config");
    let online = |config: PathBuf, json: bool| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_passerelle"));
            cmd.arg("check")
                .arg("--online")
                .arg("--config")
                .arg(&config);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().expect("run passerelle");
            Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            }
        })
    };
    let run = online(config.clone(), false).await.expect("join");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("6 handshake(s), 0 failed"),
        "{}",
        run.stdout
    );

    // The DMP server anchored in a look-alike root.
    let text = std::fs::read_to_string(&config).expect("read");
    let root = m.ca.root.display().to_string();
    let wrong = text.replacen(
        &format!("[dmp]\nbase_url = \"https://localhost:{}/si-dmp-server/v2/services\"\ntrust_anchors = [\"{root}\"]", dmp.address.port()),
        &format!("[dmp]\nbase_url = \"https://localhost:{}/si-dmp-server/v2/services\"\ntrust_anchors = [\"bad/other-root.foreign-root.pem\"]", dmp.address.port()),
        1,
    );
    assert_ne!(wrong, text, "{text}");
    let wrong_path = m.dir.join(format!("wrong-{name}"));
    std::fs::write(&wrong_path, wrong).expect("write");
    let run = online(wrong_path.clone(), true).await.expect("join");
    assert_eq!(run.code, 1, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(v["ok"], false);
    let failed: Vec<_> = v["online"]
        .as_array()
        .expect("online results")
        .iter()
        .filter(|p| p["outcome"] == "error")
        .collect();
    assert_eq!(failed.len(), 2, "{}", run.stdout);
    assert!(failed.iter().all(|p| p["setting"] == "dmp.trust_anchors"));
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&wrong_path);
}
