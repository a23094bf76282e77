//! The certificate lifecycle with the real binaries: `passerelle csr`, then
//! `passerelle-certs-test sign-csr` as the IGC-Santé portal, then `passerelle install`
//! while a `passerelle run` serves 200 concurrent DMP requests and reloads on its own
//! file watch; `install --rollback` the same way. Then every bad delivery an operator
//! may hand to `install`, each refused with the file and the reason, nothing replaced.
//!
//! The binaries are built once per run (`cargo build -p passerelle-proxy -p
//! passerelle-certs-test --bins`) into the workspace's own target folder.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use passerelle_certs_test::{ConfigAddresses, Manifest, shared_test_pki};
use passerelle_e2e::binaries::{Passerelle, run, sandbox_config_elsewhere, text};
use passerelle_e2e::{SOAP_CT, TOKEN, messages, spec};
use passerelle_mocks::faults::{FaultSpec, Faults};
use passerelle_mocks::server::Running;

const TENANT: &str = "ch-test-a";

/// A private configuration folder: tenant A's PEM files copied under `tenants/a/`
/// (relative paths), tenant B's PKCS#12 under `tenants/b/`, everything else pointing
/// into the shared test PKI by absolute path. `pending/` and `previous/` go here too.
struct Site {
    dir: PathBuf,
    config: PathBuf,
    pki: Manifest,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Site {
    fn new(dmp_port: u16, insi_port: u16, echo_port: u16) -> Self {
        let pki = shared_test_pki().expect("PKI");
        let dir = std::env::temp_dir().join(format!(
            "passerelle-e2e-lifecycle-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("tenants/a")).expect("dir");
        std::fs::create_dir_all(dir.join("tenants/b")).expect("dir");
        let name = format!("lifecycle-{}.toml", uuid::Uuid::new_v4().simple());
        let written = pki
            .write_config(
                &name,
                &ConfigAddresses {
                    listener: "127.0.0.1:0".into(),
                    admin: "127.0.0.1:0".into(),
                    dmp_port,
                    insi_port,
                    echo_port: Some(echo_port),
                    audit: Some(dir.join("audit.jsonl")),
                },
            )
            .expect("config");
        let mut doc = sandbox_config_elsewhere(&written, &pki.dir);
        let tenants = doc
            .get_mut("tenants")
            .and_then(|t| t.as_array_mut())
            .expect("tenants");
        // Tenant A: PEM files, relative to the configuration.
        let a = &pki.tenants[0];
        let certs = tenants[0]
            .get_mut("certificates")
            .and_then(|c| c.as_table_mut())
            .expect("certificates");
        for (role, leaf, file) in [
            ("dmp_auth", &a.dmp_auth, "dmp-auth"),
            ("dmp_sign", &a.dmp_sign, "dmp-sign"),
            ("insi_auto", &a.insi_auto, "insi-auto"),
            ("insi_manu", &a.insi_manu, "insi-manu"),
            ("org_auth", &a.org_auth, "org-auth"),
        ] {
            let mut t = toml::Table::new();
            for (key, from, suffix) in [
                ("cert", &leaf.cert, "cert.pem"),
                ("chain", &leaf.chain, "chain.pem"),
                ("key", &leaf.key, "key.pem"),
            ] {
                let rel = format!("tenants/a/{file}.{suffix}");
                std::fs::copy(pki.path(from), dir.join(&rel)).expect("copy");
                t.insert(key.into(), rel.into());
            }
            let key = dir.join(format!("tenants/a/{file}.key.pem"));
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            certs.insert(role.into(), toml::Value::Table(t));
        }
        // Tenant B: its dmp_auth as PKCS#12 in the folder.
        let b = &pki.tenants[1];
        let certs = tenants[1]
            .get_mut("certificates")
            .and_then(|c| c.as_table_mut())
            .expect("certificates");
        let mut t = toml::Table::new();
        for (key, from, rel) in [
            ("pkcs12", &b.dmp_auth.p12, "tenants/b/dmp-auth.p12"),
            (
                "password_file",
                &b.dmp_auth.p12_password,
                "tenants/b/dmp-auth.password",
            ),
        ] {
            std::fs::copy(pki.path(from), dir.join(rel)).expect("copy");
            std::fs::set_permissions(dir.join(rel), std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
            t.insert(key.into(), rel.into());
        }
        certs.insert("dmp_auth".into(), toml::Value::Table(t));
        let config = dir.join("passerelle.toml");
        std::fs::write(&config, toml::to_string(&doc).expect("TOML")).expect("write");
        Self { dir, config, pki }
    }

    fn config(&self) -> &str {
        self.config.to_str().expect("UTF-8 path")
    }

    fn pki_dir(&self) -> &str {
        self.pki.dir.to_str().expect("UTF-8 path")
    }

    fn csr(&self, tenant: &str, role: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "csr",
            "--config",
            self.config(),
            "--tenant",
            tenant,
            "--role",
            role,
        ];
        args.extend_from_slice(extra);
        run("passerelle", &args)
    }

    /// Signs `csr` with the test CA into `out`; returns the serial it printed.
    fn sign(&self, csr: &Path, out: &Path, extra: &[&str]) -> String {
        let mut args = vec![
            "sign-csr",
            "--pki",
            self.pki_dir(),
            "--csr",
            csr.to_str().expect("path"),
            "--out",
            out.to_str().expect("path"),
        ];
        args.extend_from_slice(extra);
        let o = run("passerelle-certs-test", &args);
        assert!(o.status.success(), "sign-csr: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        stdout
            .split("serial ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("serial printed")
            .to_string()
    }

    fn install(&self, tenant: &str, role: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "install",
            "--config",
            self.config(),
            "--tenant",
            tenant,
            "--role",
            role,
        ];
        all.extend_from_slice(args);
        run("passerelle", &all)
    }

    fn pending_csr(&self, role: &str) -> PathBuf {
        self.dir
            .join("pending")
            .join(TENANT)
            .join(role)
            .join("csr.pem")
    }

    /// Every file under the folder (pending and previous areas included), with its
    /// bytes: what "nothing replaced" compares (the audit trail and install's lock file
    /// aside).
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.is_file()
                    && p.extension().is_none_or(|x| x != "jsonl")
                    // install's empty lock file is not material.
                    && p.file_name().is_none_or(|n| n != ".lock")
                {
                    out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.dir, &mut out);
        out
    }
}

struct Mocks {
    dmp: Running,
    _insi: Running,
    _echo: Running,
}

async fn mocks() -> Mocks {
    let pki = shared_test_pki().expect("PKI");
    let any = "127.0.0.1:0".parse().expect("address");
    let (dmp, _) =
        passerelle_mocks::start_dmp(&pki, &spec().join("dmp"), any, any, Faults::default())
            .await
            .expect("mock DMP");
    let insi =
        passerelle_mocks::start_insi(&pki, &spec().join("insi/xsd"), any, any, Faults::default())
            .await
            .expect("mock INSi");
    let echo = passerelle_mocks::start_echo(&pki, any, any, Faults::default())
        .await
        .expect("mock echo");
    Mocks {
        dmp,
        _insi: insi,
        _echo: echo,
    }
}

async fn dmp_query(address: std::net::SocketAddr, eg: &str) -> passerelle_e2e::Reply {
    let mut headers: Vec<(String, String)> = messages::vihf_headers(eg)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    headers.push(("x-passerelle-tenant".into(), TENANT.into()));
    headers.push(("authorization".into(), format!("Bearer {TOKEN}")));
    passerelle_e2e::post(
        address,
        "/dmp/registry",
        &headers,
        SOAP_CT,
        messages::find_documents().into(),
    )
    .await
}

fn normal(serial: &str) -> String {
    serial.trim_start_matches('0').to_uppercase()
}

/// The client serials the mock DMP saw, oldest first.
fn serials_seen(dmp: &Running) -> Vec<String> {
    dmp.stats.to_json()["recent"]
        .as_array()
        .expect("recent")
        .iter()
        .map(|r| normal(r["client_serial"].as_str().unwrap_or("")))
        .collect()
}

/// 200 DMP requests spread over 6 s (150 ms each at the mock), while `during` runs
/// after 300 ms; then until the mock sees `expected` (the file watch reloads within
/// about 4 s). Returns the failures, and the serials the mock saw for the 200 in the
/// order it answered them.
async fn under_load(
    address: std::net::SocketAddr,
    eg: &str,
    dmp: &Running,
    during: impl FnOnce(),
    expected: &str,
) -> (Vec<String>, Vec<String>) {
    let seen_before = serials_seen(dmp).len();
    let mut load = Vec::new();
    for i in 0..200u64 {
        let eg = eg.to_string();
        load.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 30)).await;
            dmp_query(address, &eg).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(during);
    let mut failed = Vec::new();
    for task in load {
        let reply = task.await.expect("task");
        if reply.status != 200 {
            failed.push(format!("{} {}", reply.status, reply.text()));
        }
    }
    let during_load: Vec<String> = serials_seen(dmp).into_iter().skip(seen_before).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    while serials_seen(dmp).last().map(String::as_str) != Some(expected) {
        assert!(Instant::now() < deadline, "the mock never saw {expected}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = dmp_query(address, eg).await;
        if reply.status != 200 {
            failed.push(format!("{} {}", reply.status, reply.text()));
        }
    }
    (failed, during_load)
}

/// `n` DMP requests at once; their statuses.
async fn futures_join(address: std::net::SocketAddr, eg: &str, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let eg = eg.to_string();
            tokio::spawn(async move { dmp_query(address, &eg).await.status })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// Asserts that the 200 requests went out with `from` first and with `to` at the end:
/// the reload happened while they ran. (Requests in flight at the reload finish on
/// their connection with `from`, so the two may interleave for a moment.) Returns how
/// many used `from`.
fn switched(during: &[String], from: &str, to: &str) -> usize {
    assert_eq!(during.len(), 200, "every request reached the mock");
    assert_eq!(during.first().map(String::as_str), Some(from), "{during:?}");
    assert_eq!(during.last().map(String::as_str), Some(to), "{during:?}");
    assert!(
        during.iter().all(|s| s == from || s == to),
        "only the two certificates: {during:?}"
    );
    during.iter().filter(|s| *s == from).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn csr_sign_install_and_rollback_under_load_lose_no_request() {
    let m = mocks().await;
    m.dmp
        .faults
        .replace(BTreeMap::from([(
            "*".to_string(),
            FaultSpec {
                latency_ms: 150,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let site = Site::new(
        m.dmp.address.port(),
        m._insi.address.port(),
        m._echo.address.port(),
    );
    let old_serial = normal(&site.pki.tenants[0].dmp_auth.serial);
    let eg = site.pki.tenants[0].geographic_structure_ids[0].clone();
    let proxy = Passerelle::start(site.config());
    assert_eq!(dmp_query(proxy.address, &eg).await.status, 200);

    // 1. The CSR: printed on stdout, the key kept private.
    let o = site.csr(TENANT, "dmp_auth", &[]);
    assert!(o.status.success(), "csr: {}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{stdout}"
    );
    assert!(
        !text(&o).contains("PRIVATE KEY"),
        "the key is never printed"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("product ORG, usage AUTH_CLI"));
    let pending = site.dir.join("pending").join(TENANT).join("dmp_auth");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&pending.join("key.pem")), 0o600);
    assert_eq!(mode(&pending), 0o700);
    // OpenSSL's own reading: signature, subject, key size.
    let req = Command::new("openssl")
        .args(["req", "-verify", "-noout", "-text", "-in"])
        .arg(site.pending_csr("dmp_auth"))
        .output()
        .expect("openssl req");
    let req_text = text(&req);
    assert!(req.status.success(), "{req_text}");
    assert!(
        req_text.contains("verify OK")
            || req_text.contains("Certificate request self-signature verify OK"),
        "{req_text}"
    );
    let t = &site.pki.tenants[0];
    assert!(
        req_text.contains(&format!("OU = {}", t.structure_id)),
        "{req_text}"
    );
    assert!(req_text.contains("C = FR"), "{req_text}");
    assert!(req_text.contains("(2048 bit)"), "{req_text}");
    assert!(req_text.contains("sha256WithRSAEncryption"), "{req_text}");
    // The O, ST and CN of the certificate it renews.
    let subject = &t.dmp_auth.subject;
    let cn = subject
        .split(',')
        .next()
        .and_then(|c| c.strip_prefix("CN="))
        .expect("CN");
    assert!(req_text.contains(&format!("CN = {cn}")), "{req_text}");
    // A second CSR would lose the pending key: refused without --force.
    let key_before = std::fs::read(pending.join("key.pem")).expect("key");
    let again = site.csr(TENANT, "dmp_auth", &[]);
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"), "{}", text(&again));
    assert_eq!(
        std::fs::read(pending.join("key.pem")).expect("key"),
        key_before
    );

    // 2. The portal signs (a PKCS#7 with the chain, as portals deliver).
    let delivered = site.dir.join("delivered.p7b");
    let new_serial = normal(&site.sign(
        &site.pending_csr("dmp_auth"),
        &delivered,
        &["--format", "p7b"],
    ));

    // 3. Install while 200 requests run.
    let cert_file = site.dir.join("tenants/a/dmp-auth.cert.pem");
    let mut installed = None;
    let (failed, during) = under_load(
        proxy.address,
        &eg,
        &m.dmp,
        || installed = Some(site.install(TENANT, "dmp_auth", &[delivered.to_str().expect("path")])),
        &new_serial,
    )
    .await;
    let o = installed.expect("install ran");
    assert!(o.status.success(), "install: {}", text(&o));
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let before_install = switched(&during, &old_serial, &new_serial);
    assert!(
        !pending.join("key.pem").exists(),
        "the pending key went into service"
    );
    // OpenSSL agrees with the installed files.
    let verify = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(site.pki.path(&site.pki.ca.root))
        .arg("-untrusted")
        .arg(site.dir.join("tenants/a/dmp-auth.chain.pem"))
        .arg(&cert_file)
        .output()
        .expect("openssl verify");
    assert!(verify.status.success(), "{}", text(&verify));
    let modulus = |args: &[&str], file: &Path| {
        let o = Command::new("openssl")
            .args(args)
            .arg(file)
            .output()
            .expect("openssl");
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(
        modulus(&["x509", "-noout", "-modulus", "-in"], &cert_file),
        modulus(
            &["rsa", "-noout", "-modulus", "-in"],
            &site.dir.join("tenants/a/dmp-auth.key.pem")
        ),
        "the installed key is the certificate's"
    );
    assert_eq!(mode(&site.dir.join("tenants/a/dmp-auth.key.pem")), 0o600);
    let previous = site.dir.join("previous").join(TENANT).join("dmp_auth");
    assert_eq!(mode(&previous), 0o700);
    assert!(
        proxy.log().contains("certificate changed"),
        "{}",
        proxy.log()
    );

    // `check` shows the revocation status and its source.
    let check = run("passerelle", &["check", "--config", site.config()]);
    let check_text = text(&check);
    assert!(check.status.success(), "{check_text}");
    assert!(check_text.contains("REVOCATION"), "{check_text}");
    assert!(check_text.contains("good (CRL "), "{check_text}");
    assert!(check_text.contains(&new_serial), "{check_text}");

    // 4. Roll back under load: the old serial comes back.
    let mut rolled = None;
    let (failed, during) = under_load(
        proxy.address,
        &eg,
        &m.dmp,
        || rolled = Some(site.install(TENANT, "dmp_auth", &["--rollback"])),
        &old_serial,
    )
    .await;
    let o = rolled.expect("rollback ran");
    assert!(o.status.success(), "rollback: {}", text(&o));
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let before_rollback = switched(&during, &new_serial, &old_serial);
    assert_eq!(
        std::fs::read(&cert_file).expect("cert"),
        std::fs::read(site.pki.path(&t.dmp_auth.cert)).expect("original"),
        "the original certificate file is back, byte for byte"
    );
    // Nothing older to go back to: the restored set is marked, the replaced one kept.
    let again = site.install(TENANT, "dmp_auth", &["--rollback"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("no previous set"), "{}", text(&again));
    let names: Vec<String> = std::fs::read_dir(&previous)
        .expect("previous")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("-restored")), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("-rolled-back")),
        "{names:?}"
    );

    // A pair caught half-replaced (new key, old certificate) by a SIGHUP: the reload is
    // refused and the running pair keeps serving. This is what makes the key-first
    // renames of install safe even without the watch's quiet period.
    let key_file = site.dir.join("tenants/a/dmp-auth.key.pem");
    let original_key = std::fs::read(&key_file).expect("key");
    let stray = site.dir.join("stray.key");
    let genkey = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&stray)
        .output()
        .expect("openssl genpkey");
    assert!(genkey.status.success(), "{}", text(&genkey));
    std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&stray, &key_file).expect("half install");
    let hup = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.log().contains("reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refused reload: {}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    m.dmp.faults.replace(BTreeMap::new()).expect("faults");
    let replies = futures_join(proxy.address, &eg, 20).await;
    assert!(replies.iter().all(|s| *s == 200), "{replies:?}");
    assert_eq!(serials_seen(&m.dmp).last(), Some(&old_serial));
    std::fs::write(&key_file, &original_key).expect("restore the key");
    println!(
        "lifecycle: install and rollback each under 200 concurrent requests, 0 failed; serials {old_serial} -> {new_serial} (after {before_install} of 200) -> {old_serial} (after {before_rollback} of 200)"
    );
}

/// Asserts `install` failed naming `file` and `reason`, and that no file changed.
fn refused(site: &Site, args: &[&str], role: &str, file: &str, reason: &str) {
    let before = site.snapshot();
    let o = site.install(TENANT, role, args);
    let out = text(&o);
    assert!(!o.status.success(), "accepted: {args:?}: {out}");
    assert!(
        out.contains(file),
        "{args:?}: the message names {file}: {out}"
    );
    assert!(
        out.contains(reason),
        "{args:?}: the message says {reason:?}: {out}"
    );
    assert!(
        !out.contains("PRIVATE KEY-----"),
        "no key material in messages"
    );
    assert_eq!(before, site.snapshot(), "{args:?}: something was replaced");
}

#[tokio::test]
async fn bad_deliveries_are_refused_and_nothing_is_replaced() {
    // No proxy runs here: only files are at stake (ports are never dialled).
    let site = Site::new(1, 1, 1);
    let d = |name: &str| site.dir.join(name).display().to_string();
    let o = site.csr(TENANT, "dmp_auth", &[]);
    assert!(o.status.success(), "csr: {}", text(&o));
    let csr = site.pending_csr("dmp_auth");

    // A certificate for another key: a CSR made elsewhere.
    let other_key = site.dir.join("other.key");
    let other_csr = site.dir.join("other.csr");
    let structure = site.pki.tenants[0].structure_id.clone();
    let st = Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&other_key)
        .arg("-out")
        .arg(&other_csr)
        .args(["-subj", &format!("/C=FR/ST=X/O=Y/OU={structure}/CN=Other")])
        .output()
        .expect("openssl req");
    assert!(st.status.success(), "{}", text(&st));
    site.sign(&other_csr, &site.dir.join("other-key.pem"), &[]);
    refused(
        &site,
        &[&d("other-key.pem")],
        "dmp_auth",
        "other-key.pem",
        "issued for another key",
    );

    // The wrong role: an ORG SIGN certificate where AUTH_CLI is needed.
    site.sign(&csr, &site.dir.join("sign.pem"), &["--profile", "sign"]);
    refused(
        &site,
        &[&d("sign.pem")],
        "dmp_auth",
        "sign.pem",
        "lacks clientAuth",
    );

    // The wrong CN: an INSi certificate for the DMP.
    site.sign(&csr, &site.dir.join("insi-cn.pem"), &["--cn", "INSI-AUTO"]);
    refused(
        &site,
        &[&d("insi-cn.pem")],
        "dmp_auth",
        "insi-cn.pem",
        "this is an INSi certificate",
    );

    // The wrong OU: another legal entity's structure id.
    let other_ou = site.pki.tenants[1].structure_id.clone();
    site.sign(&csr, &site.dir.join("ou.pem"), &["--ou", &other_ou]);
    refused(
        &site,
        &[&d("ou.pem")],
        "dmp_auth",
        "ou.pem",
        "certificate OU is",
    );

    // Another root: same names, other keys.
    site.sign(
        &csr,
        &site.dir.join("foreign.p7b"),
        &["--issuer", "foreign", "--format", "p7b"],
    );
    refused(
        &site,
        &[&d("foreign.p7b")],
        "dmp_auth",
        "foreign.p7b",
        "not anchored in the configured trust",
    );

    // Expired.
    site.sign(
        &csr,
        &site.dir.join("expired.der"),
        &["--format", "der", "--backdate-days", "30", "--days", "10"],
    );
    refused(
        &site,
        &[&d("expired.der")],
        "dmp_auth",
        "expired.der",
        "expired on",
    );

    // Corrupt, empty, a key instead of a certificate.
    site.sign(&csr, &site.dir.join("good.pem"), &[]);
    let good = std::fs::read_to_string(site.dir.join("good.pem")).expect("good");
    // Base64 damage in the body (the header and footer intact).
    let mut lines: Vec<&str> = good.lines().collect();
    lines[3] = "!!!!damaged!!!!";
    std::fs::write(site.dir.join("corrupt.pem"), lines.join("\n")).expect("write");
    refused(
        &site,
        &[&d("corrupt.pem")],
        "dmp_auth",
        "corrupt.pem",
        "damaged",
    );
    std::fs::write(site.dir.join("truncated.der"), &b"\x30\x82\x05\x00\x30"[..]).expect("write");
    refused(
        &site,
        &[&d("truncated.der")],
        "dmp_auth",
        "truncated.der",
        "neither a certificate",
    );
    std::fs::write(site.dir.join("empty.pem"), b"").expect("write");
    refused(
        &site,
        &[&d("empty.pem")],
        "dmp_auth",
        "empty.pem",
        "is empty",
    );
    refused(
        &site,
        &[other_key.to_str().expect("path")],
        "dmp_auth",
        "other.key",
        "holds a private key",
    );

    // Not a regular file (a FIFO would block a plain read forever), too large.
    let fifo = site.dir.join("cert.fifo");
    let mk = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(mk.success());
    refused(
        &site,
        &[&d("cert.fifo")],
        "dmp_auth",
        "cert.fifo",
        "not a regular file",
    );
    std::fs::remove_file(&fifo).expect("rm fifo");
    std::fs::write(site.dir.join("huge.pem"), vec![b'A'; 2 << 20]).expect("write");
    refused(
        &site,
        &[&d("huge.pem")],
        "dmp_auth",
        "huge.pem",
        "too large",
    );
    std::fs::remove_file(site.dir.join("huge.pem")).expect("rm");

    // A chain that does not link: the server intermediate instead of the ORG one.
    let server_ca = site.dir.join("server-ca.pem");
    let server_chain =
        std::fs::read_to_string(site.pki.path(&site.pki.server.chain)).expect("chain");
    let last = server_chain
        .rfind("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    std::fs::write(&server_ca, &server_chain[last..]).expect("write");
    refused(
        &site,
        &[&d("good.pem"), "--chain", &d("server-ca.pem")],
        "dmp_auth",
        "server-ca.pem",
        "the chain does not link",
    );

    // A PKCS#7 with two leaves.
    let two = Command::new("openssl")
        .args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-certfile"])
        .arg(site.dir.join("good.pem"))
        .arg("-certfile")
        .arg(site.pki.path(&site.pki.tenants[0].dmp_sign.cert))
        .arg("-out")
        .arg(site.dir.join("two.p7b"))
        .output()
        .expect("openssl crl2pkcs7");
    assert!(two.status.success(), "{}", text(&two));
    refused(
        &site,
        &[&d("two.p7b")],
        "dmp_auth",
        "two.p7b",
        "end-entity certificates",
    );

    // A PKCS#12 given as a certificate, and --rollback with no previous set.
    let b12 = site
        .dir
        .join("tenants/b/dmp-auth.p12")
        .display()
        .to_string();
    refused(&site, &[&b12], "dmp_auth", "dmp-auth.p12", "use --p12");
    refused(
        &site,
        &["--rollback"],
        "dmp_auth",
        "previous",
        "no previous set",
    );

    // Another tenant's id, and a role the tenant does not have.
    let before = site.snapshot();
    let o = site.install("ch-test-zz", "dmp_auth", &[&d("good.pem")]);
    assert!(
        !o.status.success() && text(&o).contains("tenant \"ch-test-zz\" is not configured"),
        "{}",
        text(&o)
    );
    assert_eq!(before, site.snapshot());

    // A symbolic link where the configuration names the certificate.
    let link = site.dir.join("tenants/a/dmp-auth.cert.pem");
    let real = site.dir.join("tenants/a/real.cert.pem");
    std::fs::rename(&link, &real).expect("rename");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    refused(
        &site,
        &[&d("good.pem")],
        "dmp_auth",
        "dmp-auth.cert.pem",
        "symbolic link",
    );
    std::fs::remove_file(&link).expect("unlink");
    std::fs::rename(&real, &link).expect("rename back");

    // After all that, the good delivery goes in (the pending key was never consumed).
    let o = site.install(TENANT, "dmp_auth", &[&d("good.pem")]);
    assert!(o.status.success(), "{}", text(&o));
}

#[tokio::test]
async fn a_portal_pkcs12_installs_into_pem_and_pkcs12_entries() {
    let site = Site::new(1, 1, 1);
    // A PKCS#12 as the portal makes one: tenant B's own dmp_auth (the fixture).
    let b = &site.pki.tenants[1];
    let p12 = site.pki.path(&b.dmp_auth.p12);
    let password = site.pki.path(&b.dmp_auth.p12_password);
    // Into tenant B's PKCS#12 entry: the new files are the delivered ones.
    let p12_target = site.dir.join("tenants/b/dmp-auth.p12");
    std::fs::write(&p12_target, b"placeholder").expect("write");
    std::fs::set_permissions(&p12_target, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let o = site.install(
        "ch-test-b",
        "dmp_auth",
        &[
            "--p12",
            p12.to_str().expect("path"),
            "--password-file",
            password.to_str().expect("path"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(&p12_target).expect("p12"),
        std::fs::read(&p12).expect("p12")
    );
    // A wrong password: refused, naming the files.
    let wrong = site.dir.join("wrong.password");
    std::fs::write(&wrong, "nope\n").expect("write");
    let before = site.snapshot();
    let o = site.install(
        "ch-test-b",
        "dmp_auth",
        &[
            "--p12",
            p12.to_str().expect("path"),
            "--password-file",
            wrong.to_str().expect("path"),
        ],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("wrong password in") && text(&o).contains("wrong.password"),
        "{}",
        text(&o)
    );
    assert_eq!(before, site.snapshot());

    // Tenant A's renewed dmp_auth as a PKCS#12 into its PEM entry: key, chain and
    // certificate extracted.
    let a = &site.pki.tenants[0];
    let a_p12 = site.pki.path(&a.dmp_auth.p12);
    let a_password = site.pki.path(&a.dmp_auth.p12_password);
    std::fs::write(site.dir.join("tenants/a/dmp-auth.cert.pem"), b"").expect("blank it");
    let o = site.install(
        TENANT,
        "dmp_auth",
        &[
            "--p12",
            a_p12.to_str().expect("path"),
            "--password-file",
            a_password.to_str().expect("path"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let check = run("passerelle", &["check", "--config", site.config()]);
    assert!(check.status.success(), "{}", text(&check));
}
