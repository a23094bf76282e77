//! What `check` used to accept and `run` then refused or misused (issue 13, point 4),
//! one test per gap, on the test PKI's sandbox configuration with one change each; and
//! the `[admin] token_sha256` and `[audit] instance` settings.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use passerelle_certs_test::{Manifest, shared_test_pki};

use super::{Inspection, inspect};
use crate::report::{Problem, Severity};

fn pki() -> Manifest {
    shared_test_pki().expect("test PKI")
}

/// The sandbox configuration with absolute paths, so it can be written anywhere.
fn sandbox_text(m: &Manifest) -> String {
    let dir = m.dir.display().to_string();
    std::fs::read_to_string(m.path(&m.config))
        .expect("sandbox configuration")
        .replace("\"ca/", &format!("\"{dir}/ca/"))
        .replace("\"tenants/", &format!("\"{dir}/tenants/"))
}

/// A configuration written in its own temporary folder, and its inspection.
struct Case {
    dir: tempfile::TempDir,
    inspection: Inspection,
}

impl Case {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("passerelle.toml");
        std::fs::write(&path, text).expect("write");
        let inspection = inspect(&path);
        Self { dir, inspection }
    }

    /// The problems on `field`.
    fn on(&self, field: &str) -> Vec<&Problem> {
        self.inspection
            .problems
            .iter()
            .filter(|p| p.field == field)
            .collect()
    }

    /// The one error on `field` whose message holds every word of `words`.
    fn error(&self, field: &str, words: &[&str]) -> &Problem {
        let found: Vec<_> = self
            .on(field)
            .into_iter()
            .filter(|p| {
                p.severity == Severity::Error && words.iter().all(|w| p.message.contains(w))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one error on {field} with {words:?}, got:\n{}",
            self.listing()
        );
        found[0]
    }

    fn listing(&self) -> String {
        self.inspection
            .problems
            .iter()
            .map(|p| format!("  {p}\n"))
            .collect()
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} not in the configuration");
    text.replacen(from, to, 1)
}

const SANDBOX_TOKEN: &str = "24b9cd79145e7e5dbc8a202c85b29f5c13a1b7a9bf060a5d9dfa6c1e756c0a92";

#[test]
fn the_sandbox_passes_with_the_new_checks() {
    let m = pki();
    let case = Case::new(&sandbox_text(&m));
    assert!(!case.inspection.has_errors(), "{}", case.listing());
    let config = case.inspection.config.as_ref().expect("config");
    assert_eq!(config.admin_token_sha256, None);
    assert!(
        !config.audit.instance.is_empty(),
        "defaults to the host name"
    );
}

#[test]
fn two_clients_with_one_token_are_refused() {
    let m = pki();
    // The same digest, written in upper case with ':' separators: still the same token.
    let upper: String = SANDBOX_TOKEN
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let text = format!(
        "{}\n[[clients]]\nname = \"dpi\"\nsource_cidrs = [\"10.0.0.0/8\"]\ntoken_sha256 = \"{upper}\"\ntenants = [\"ch-test-a\"]\nservices = [\"insi\"]\n",
        sandbox_text(&m)
    );
    let case = Case::new(&text);
    let p = case.error(
        "clients[1].token_sha256",
        &[
            "the same token_sha256 as clients[0].token_sha256",
            "own credential",
        ],
    );
    assert_eq!(p.severity, Severity::Error);
    assert!(case.inspection.config.is_none());
}

#[test]
fn two_clients_with_one_certificate_fingerprint_are_refused() {
    let m = pki();
    let fingerprint = "ab".repeat(32);
    let client = |name: &str, fp: &str| {
        format!(
            "\n[[clients]]\nname = \"{name}\"\nsource_cidrs = [\"10.0.0.0/8\"]\ncert_sha256 = \"{fp}\"\ntenants = [\"ch-test-a\"]\nservices = [\"insi\"]\n"
        )
    };
    let text = sandbox_text(&m)
        + &client("dpi", &fingerprint)
        + &client("lab", &fingerprint.to_ascii_uppercase());
    let case = Case::new(&text);
    case.error(
        "clients[2].cert_sha256",
        &["the same cert_sha256 as clients[1].cert_sha256"],
    );
    // A third one names the first declaration, not the second.
    let case = Case::new(&(text.clone() + &client("rad", &fingerprint)));
    case.error(
        "clients[3].cert_sha256",
        &["the same cert_sha256 as clients[1].cert_sha256"],
    );
    // Subjects too.
    let by_subject = |name: &str| {
        format!(
            "\n[[clients]]\nname = \"{name}\"\nsource_cidrs = [\"10.0.0.0/8\"]\ncert_subject = \"CN=dpi,O=CHU\"\ntenants = [\"ch-test-a\"]\nservices = [\"insi\"]\n"
        )
    };
    let case = Case::new(&(sandbox_text(&m) + &by_subject("dpi") + &by_subject("lab")));
    case.error(
        "clients[2].cert_subject",
        &["the same cert_subject as clients[1].cert_subject"],
    );
}

fn with_audit(m: &Manifest, path: &Path) -> String {
    format!(
        "{}\n[audit]\npath = \"{}\"\n",
        sandbox_text(m),
        path.display()
    )
}

#[test]
fn an_audit_path_that_cannot_be_written_is_refused() {
    let m = pki();
    let scratch = tempfile::tempdir().expect("tempdir");

    // Its folder would have to be created under a file.
    let file = scratch.path().join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let case = Case::new(&with_audit(&m, &file.join("audit/trail.jsonl")));
    case.error(
        "audit.path",
        &[&file.display().to_string(), "is not a folder"],
    );

    // The path is a folder.
    let case = Case::new(&with_audit(&m, scratch.path()));
    case.error("audit.path", &["is not a file"]);

    // A folder group or others may write: `run` refuses it, so does `check`.
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let case = Case::new(&with_audit(&m, &shared.join("trail.jsonl")));
    case.error(
        "audit.path",
        &[
            "the trail's folder",
            "writable by group or others (mode 0770)",
            "chmod go-w",
        ],
    );

    // An existing trail others may write.
    let own = scratch.path().join("own");
    std::fs::create_dir(&own).expect("mkdir");
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let trail = own.join("trail.jsonl");
    std::fs::write(&trail, "").expect("write");
    std::fs::set_permissions(&trail, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let case = Case::new(&with_audit(&m, &trail));
    case.error("audit.path", &["the trail", "(mode 0666)"]);

    // A folder this process may not write (not testable as root, who may write anywhere
    // on a writable file system).
    let locked = scratch.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    if std::fs::write(locked.join("probe"), "").is_err() {
        let case = Case::new(&with_audit(&m, &locked.join("sub/trail.jsonl")));
        case.error(
            "audit.path",
            &[
                "cannot create the trail's folder",
                &locked.display().to_string(),
                "not writable",
            ],
        );
        let case = Case::new(&with_audit(&m, &locked.join("trail.jsonl")));
        case.error("audit.path", &["cannot create the trail", "not writable"]);
    }
    let _ = std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700));

    // Nothing was created by the check itself.
    let case = Case::new(&with_audit(&m, &scratch.path().join("new/dir/trail.jsonl")));
    assert!(case.on("audit.path").is_empty(), "{}", case.listing());
    assert!(!scratch.path().join("new").exists());
}

#[test]
fn a_finess_with_a_wrong_check_key_is_refused() {
    let m = pki();
    let a = &m.tenants[0];
    // 69001000 has key 4: 1690010009 has the right shape and the wrong key.
    let text = replace_once(
        &sandbox_text(&m),
        &format!("structure_id = \"{}\"", a.structure_id),
        "structure_id = \"1690010009\"",
    );
    let text = replace_once(
        &text,
        &format!("\"{}\"", a.geographic_structure_ids[1]),
        "\"1690010021\"",
    );
    let case = Case::new(&text);
    case.error(
        "tenants[0].structure_id",
        &[
            "FINESS 690010009 fails its check key",
            "the key of 69001000 is '4'",
        ],
    );
    case.error(
        "tenants[0].geographic_structure_ids[1]",
        &["FINESS 690010021 fails its check key", "is '0'"],
    );
    // Corsica's letters count for the key: a published 2B number passes.
    let text = replace_once(
        &sandbox_text(&m),
        &format!("\"{}\"", a.geographic_structure_ids[1]),
        "\"12B0000020\"",
    );
    let case = Case::new(&text);
    assert!(
        case.on("tenants[0].geographic_structure_ids[1]").is_empty(),
        "{}",
        case.listing()
    );
}

#[test]
fn an_insi_certificate_as_dmp_auth_is_blamed_on_dmp_auth() {
    let m = pki();
    let a = &m.tenants[0];
    let text = sandbox_text(&m)
        .replace(
            &m.path(&a.dmp_auth.cert).display().to_string(),
            &m.path(&a.insi_auto.cert).display().to_string(),
        )
        .replace(
            &m.path(&a.dmp_auth.chain).display().to_string(),
            &m.path(&a.insi_auto.chain).display().to_string(),
        )
        .replace(
            &m.path(&a.dmp_auth.key).display().to_string(),
            &m.path(&a.insi_auto.key).display().to_string(),
        );
    let case = Case::new(&text);
    case.error(
        "tenants[0].certificates.dmp_auth",
        &["this is an INSi certificate (CN INSI-AUTO): put it under insi_auto"],
    );
    // Not dmp_sign's DN, which is right.
    assert!(
        case.on("tenants[0].certificates.dmp_sign").is_empty(),
        "{}",
        case.listing()
    );
}

#[test]
fn an_intermediate_in_the_anchors_is_named_as_such() {
    let m = pki();
    let org = m.path(&m.ca.org_intermediate).display().to_string();
    let root = m.path(&m.ca.root).display().to_string();
    let text = replace_once(
        &sandbox_text(&m),
        &format!("anchors = [\"{root}\"]"),
        &format!("anchors = [\"{org}\"]"),
    );
    let case = Case::new(&text);
    let p = case.error(
        "trust.anchors[0]",
        &[
            "is not a root but an intermediate",
            "move it to trust.intermediates",
        ],
    );
    assert_eq!(p.file, PathBuf::from(&org));
    // An upstream's anchors: a warning (the server's path may end at any anchor).
    let text = replace_once(
        &sandbox_text(&m),
        &format!(
            "[dmp]\nbase_url = \"https://localhost:9443/si-dmp-server/v2/services\"\ntrust_anchors = [\"{root}\"]"
        ),
        &format!(
            "[dmp]\nbase_url = \"https://localhost:9443/si-dmp-server/v2/services\"\ntrust_anchors = [\"{org}\"]"
        ),
    );
    let case = Case::new(&text);
    let warnings = case.on("dmp.trust_anchors[0]");
    assert_eq!(warnings.len(), 1, "{}", case.listing());
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(warnings[0].message.contains("name the root it chains to"));

    // Root and intermediate together, in one bundle file or in two entries: fine for
    // both [trust] and an upstream (the setup docs/certificates.md recommends).
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        std::fs::read_to_string(&org).expect("org")
            + &std::fs::read_to_string(&root).expect("root"),
    )
    .expect("bundle");
    let bundle = bundle.display().to_string();
    let text = sandbox_text(&m)
        .replacen(
            &format!("anchors = [\"{root}\"]"),
            &format!("anchors = [\"{bundle}\"]"),
            1,
        )
        .replacen(
            &format!("trust_anchors = [\"{root}\"]"),
            &format!("trust_anchors = [\"{root}\", \"{org}\"]"),
            1,
        );
    let case = Case::new(&text);
    assert!(case.on("trust.anchors[0]").is_empty(), "{}", case.listing());
    assert!(
        case.on("dmp.trust_anchors[1]").is_empty(),
        "{}",
        case.listing()
    );
    assert!(case.inspection.config.is_some(), "{}", case.listing());
}

#[test]
fn listener_addresses_may_be_host_names() {
    let m = pki();
    let text = replace_once(
        &sandbox_text(&m),
        "address = \"127.0.0.1:8080\"",
        "address = \"localhost:8080\"",
    );
    let text = replace_once(
        &text,
        "address = \"127.0.0.1:9090\"",
        "address = \"localhost:9090\"",
    );
    let case = Case::new(&text);
    let config = case
        .inspection
        .config
        .as_ref()
        .unwrap_or_else(|| panic!("{}", case.listing()));
    assert!(config.listener.ip().is_loopback(), "{}", config.listener);
    assert_eq!(config.listener.port(), 8080);
    assert_eq!(config.admin.port(), 9090);

    let text = replace_once(
        &sandbox_text(&m),
        "address = \"127.0.0.1:9090\"",
        "address = \"no-such-host.invalid:9090\"",
    );
    let case = Case::new(&text);
    case.error(
        "admin.address",
        &["cannot resolve host name \"no-such-host.invalid\""],
    );
    let text = replace_once(
        &sandbox_text(&m),
        "address = \"127.0.0.1:9090\"",
        "address = \"localhost\"",
    );
    Case::new(&text).error(
        "admin.address",
        &["is not an address of the form host:port"],
    );
}

#[test]
fn admin_token_and_audit_instance() {
    let m = pki();
    // An admin token of its own (sha256sum of "admin-token").
    let admin = "e3e4b4b4a8d9c0f5a7b4c0b3e0a0f3e5d8c6b2a1f0e9d8c7b6a5f4e3d2c1b0a9";
    let text = replace_once(
        &sandbox_text(&m),
        "[admin]\naddress = \"127.0.0.1:9090\"\n",
        &format!(
            "[admin]\naddress = \"127.0.0.1:9090\"\ntoken_sha256 = \"{}\"\n",
            admin.to_ascii_uppercase()
        ),
    ) + "\n[audit]\ninstance = \"passerelle-2\"\n";
    let case = Case::new(&text);
    let config = case
        .inspection
        .config
        .as_ref()
        .unwrap_or_else(|| panic!("{}", case.listing()));
    let expected: [u8; 32] = hex::decode(admin)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    assert_eq!(config.admin_token_sha256, Some(expected));
    assert_eq!(config.audit.instance, "passerelle-2");
    assert!(case.dir.path().exists());

    // The sandbox client's token as the admin token: refused.
    let text = replace_once(
        &sandbox_text(&m),
        "[admin]\naddress = \"127.0.0.1:9090\"\n",
        &format!("[admin]\naddress = \"127.0.0.1:9090\"\ntoken_sha256 = \"{SANDBOX_TOKEN}\"\n"),
    );
    let case = Case::new(&text);
    case.error(
        "admin.token_sha256",
        &["client \"sandbox\"", "its own token"],
    );

    let text = replace_once(
        &sandbox_text(&m),
        "[admin]\naddress = \"127.0.0.1:9090\"\n",
        "[admin]\naddress = \"127.0.0.1:9090\"\ntoken_sha256 = \"sandbox-token\"\n",
    ) + "\n[audit]\ninstance = \"two\\nlines\"\n";
    let case = Case::new(&text);
    case.error("admin.token_sha256", &["must be a SHA-256 in hexadecimal"]);
    case.error("audit.instance", &["printable"]);
}

#[test]
fn the_unattributed_metric_label_is_not_a_tenant_or_client_name() {
    let m = pki();
    let text = sandbox_text(&m)
        .replacen("id = \"ch-test-b\"", "id = \"none\"", 1)
        .replacen("name = \"sandbox\"", "name = \"none\"", 1);
    let case = Case::new(&text);
    case.error("tenants[1].id", &["reserved", "choose another id"]);
    case.error("clients[0].name", &["reserved", "choose another name"]);
}

#[test]
fn egress_settings_are_validated_and_routed() {
    let m = pki();
    let with = |egress: &str, dmp_egress: &str| {
        sandbox_text(&m)
            .replacen("[insi]", &format!("{egress}\n\n[insi]"), 1)
            .replacen("[dmp]\n", &format!("[dmp]\n{dmp_egress}"), 1)
    };
    // A valid proxy: both services go through it, unless `no_proxy` or `direct` says not.
    let case = Case::new(&with(
        "[egress]\nproxy = \"http://proxy.chu.local:3128\"\nno_proxy = [\"10.0.0.0/8\"]",
        "",
    ));
    let config = case.inspection.config.as_ref().expect("valid");
    let dmp = config.dmp.as_ref().expect("dmp");
    assert_eq!(
        dmp.egress.as_ref().map(|e| e.address()).as_deref(),
        Some("proxy.chu.local:3128")
    );
    let case = Case::new(&with(
        "[egress]\nproxy = \"http://proxy.chu.local:3128\"\nno_proxy = [\".localhost\"]",
        "egress = \"proxy\"\n",
    ));
    let config = case.inspection.config.as_ref().expect("valid");
    assert!(
        config.dmp.as_ref().is_some_and(|d| d.egress.is_some()),
        "explicit proxy"
    );
    assert!(
        config.insi.as_ref().is_some_and(|i| i.egress.is_none()),
        "no_proxy"
    );

    let case = Case::new(&with("[egress]\nproxy = \"https://proxy:3128\"", ""));
    case.error("egress.proxy", &["only http://"]);
    let case = Case::new(&with("[egress]\nproxy = \"http://u:p@proxy:3128\"", ""));
    case.error("egress.proxy", &["egress.username"]);
    let case = Case::new(&with(
        "[egress]\nproxy = \"http://proxy:3128\"\nusername = \"u\"",
        "",
    ));
    case.error("egress", &["go together"]);
    let case = Case::new(&with(
        "[egress]\nproxy = \"http://proxy:3128\"\nno_proxy = [\"bad host!\"]",
        "",
    ));
    case.error("egress.no_proxy[0]", &["neither"]);
    let case = Case::new(&with("", "egress = \"proxy\"\n"));
    case.error("dmp.egress", &["[egress]"]);
    let case = Case::new(&with("", "egress = \"tunnel\"\n"));
    case.error("dmp.egress", &["\"direct\""]);
}

#[test]
fn the_sandbox_echo_service_loads_with_its_org_auth_certificates() {
    let m = pki();
    let case = Case::new(&sandbox_text(&m));
    let config = case.inspection.config.as_ref().expect("config");
    let echo = config.service("echo").expect("[[services]] echo");
    assert_eq!(echo.role, crate::CertRole::OrgAuth);
    assert_eq!(
        echo.methods,
        [crate::ServiceMethod::Get, crate::ServiceMethod::Post]
    );
    assert_eq!(echo.retry, crate::ServiceRetry::Never, "none by default");
    assert_eq!(echo.allowed_prefix("/messages/12"), Some("/messages"));
    assert_eq!(echo.allowed_prefix("/messages"), Some("/messages"));
    assert_eq!(echo.allowed_prefix("/messagesX"), None);
    assert_eq!(echo.allowed_prefix("/admin"), None);
    for t in &config.tenants {
        let org = &t.certificates[&crate::CertRole::OrgAuth];
        assert_eq!(
            org.info.organizational_unit.as_deref(),
            Some(t.structure_id.as_str())
        );
    }
    assert!(
        config.clients[0]
            .services
            .contains(&crate::ServiceScope::Service("echo".into())),
        "{:?}",
        config.clients[0].services
    );
}

#[test]
fn services_settings_are_checked_one_by_one() {
    let m = pki();
    let sandbox = sandbox_text(&m);
    let case = Case::new(&replace_once(
        &sandbox,
        "certificate = \"org_auth\"",
        "certificate = \"dmp_auth\"",
    ));
    case.error(
        "services[0].certificate",
        &[
            "\"dmp_auth\"",
            "org_auth",
            "one certificate per teleservice",
        ],
    );
    let case = Case::new(&replace_once(
        &sandbox,
        "methods = [\"GET\", \"POST\"]",
        "methods = [\"GET\", \"TRACE\"]",
    ));
    case.error("services[0].methods[1]", &["\"TRACE\"", "GET, HEAD, POST"]);
    let case = Case::new(&replace_once(
        &sandbox,
        "path_prefixes = [\"/messages\", \"/forms\"]",
        "path_prefixes = [\"/messages/../admin\"]\nforward_headers = [\"X-Trace\", \"Authorization\"]\nretry = \"always\"",
    ));
    case.error("services[0].path_prefixes[0]", &["'..'"]);
    case.error("services[0].forward_headers[1]", &["never passed on"]);
    assert!(case.on("services[0].forward_headers[0]").is_empty());
    case.error("services[0].retry", &["\"none\" or \"if_not_sent\""]);
    let case = Case::new(&replace_once(
        &sandbox,
        "name = \"echo\"",
        "name = \"Echo!\"",
    ));
    case.error("services[0].name", &["a-z, 0-9"]);
    // The client names a service that no longer exists.
    case.error(
        "clients[0].services[2]",
        &["no [[services]] entry is named \"echo\""],
    );
}

#[test]
fn an_org_auth_certificate_is_an_org_auth_cli_of_the_tenant() {
    let m = pki();
    let (a, b) = (&m.tenants[0], &m.tenants[1]);
    // Tenant B's own PKCS#12 org_auth, given to tenant A: another legal entity's OU.
    let b_p12 = m.path(&b.org_auth.p12).display().to_string();
    let text = sandbox_text(&m).replacen(
        &format!(
            "cert = \"{}\"\nchain = \"{}\"\nkey = \"{}\"",
            m.path(&a.org_auth.cert).display(),
            m.path(&a.org_auth.chain).display(),
            m.path(&a.org_auth.key).display()
        ),
        &format!(
            "pkcs12 = \"{b_p12}\"\npassword_file = \"{}\"",
            m.path(&b.org_auth.p12_password).display()
        ),
        1,
    );
    let case = Case::new(&text);
    case.error(
        "tenants[0].certificates.org_auth",
        &["OU is", "structure_id"],
    );
    // An INSi certificate is not an org_auth one.
    let text = sandbox_text(&m)
        .replace(
            &m.path(&a.org_auth.cert).display().to_string(),
            &m.path(&a.insi_manu.cert).display().to_string(),
        )
        .replace(
            &m.path(&a.org_auth.chain).display().to_string(),
            &m.path(&a.insi_manu.chain).display().to_string(),
        )
        .replace(
            &m.path(&a.org_auth.key).display().to_string(),
            &m.path(&a.insi_manu.key).display().to_string(),
        );
    let case = Case::new(&text);
    case.error(
        "tenants[0].certificates.org_auth",
        &["this is an INSi certificate (CN INSI-MANU): put it under insi_manu"],
    );
}

/// `[audit] sink = "postgres"`: the URL, its password file, the failure policy and the
/// spool are checked before anything connects.
#[test]
fn the_postgres_audit_sink_is_checked_before_connecting() {
    use crate::model::{AuditSink, OnAuditFailure};
    let m = pki();
    let scratch = tempfile::tempdir().expect("tempdir");
    let password = scratch.path().join("pg.password");
    std::fs::write(&password, "secret\n").expect("write");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let with = |settings: &str| {
        format!(
            "{}\n[audit]\npath = \"{}\"\n{settings}",
            sandbox_text(&m),
            scratch.path().join("audit/trail.jsonl").display()
        )
    };
    let good = format!(
        "sink = \"postgres\"\nurl = \"postgres://passerelle@db.example:5432/audit?sslmode=require\"\npassword_file = \"{}\"\non_failure = \"refuse\"\n",
        password.display()
    );
    let case = Case::new(&with(&good));
    let config = case
        .inspection
        .config
        .as_ref()
        .unwrap_or_else(|| panic!("{}", case.listing()));
    let AuditSink::Postgres(pg) = &config.audit.sink else {
        panic!("{:?}", config.audit.sink)
    };
    assert_eq!(pg.on_failure, OnAuditFailure::Refuse);
    assert_eq!(pg.password.as_deref().map(String::as_str), Some("secret"));
    assert_eq!(
        pg.spool,
        scratch.path().join("audit/trail.spool.jsonl"),
        "the spool sits beside the trail's path by default"
    );
    assert!(
        !format!("{pg:?}").contains("secret"),
        "no password in Debug"
    );

    let cases: [(&str, &str, &[&str]); 9] = [
        (
            "sink = \"syslog\"\n",
            "audit.sink",
            &["\"file\"", "\"postgres\""],
        ),
        (
            "sink = \"postgres\"\n",
            "audit.url",
            &["needs the database"],
        ),
        (
            "sink = \"postgres\"\nurl = \"postgres://passerelle:hunter2@db/audit\"\n",
            "audit.url",
            &["no password in the URL", "password_file"],
        ),
        (
            "sink = \"postgres\"\nurl = \"mysql://passerelle@db/audit\"\n",
            "audit.url",
            &["postgres://"],
        ),
        (
            "sink = \"postgres\"\nurl = \"postgres://passerelle@db\"\n",
            "audit.url",
            &["names no database"],
        ),
        (
            "sink = \"postgres\"\nurl = \"postgres://passerelle@db/audit?sslmode=verify-full\"\n",
            "audit.url",
            &["sslmode=verify-full"],
        ),
        (
            "sink = \"postgres\"\nurl = \"postgres://passerelle@db/audit\"\non_failure = \"ignore\"\n",
            "audit.on_failure",
            &["\"spool\"", "\"refuse\""],
        ),
        (
            "url = \"postgres://passerelle@db/audit\"\n",
            "audit.url",
            &["only for sink = \"postgres\""],
        ),
        (
            "sink = \"postgres\"\nurl = \"postgres://passerelle@db/audit\"\npassword_file = \"/nonexistent/pw\"\n",
            "audit.password_file",
            &["cannot read"],
        ),
    ];
    for (settings, field, words) in cases {
        Case::new(&with(settings)).error(field, words);
    }
    // A password others may read.
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    Case::new(&with(&good)).error("audit.password_file", &["readable by group or others"]);
    // The spool's folder follows the trail's rules.
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).expect("dir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let spool = format!(
        "{good}spool = \"{}\"\n",
        shared.join("spool.jsonl").display()
    );
    Case::new(&with(&spool)).error("audit.spool", &["writable by group or others"]);
}

/// The sandbox configuration with a `[capture]` table of `body`.
fn with_capture(m: &Manifest, body: &str) -> String {
    format!("{}\n[capture]\n{body}\n", sandbox_text(m))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

#[test]
fn a_capture_names_known_clients_and_tenants_and_stops_soon() {
    let m = pki();
    let now = time::OffsetDateTime::now_utc();
    let soon = rfc3339(now + time::Duration::hours(2));
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("captures");

    // Valid: the typed model, the folder resolved (not created by the check).
    let case = Case::new(&with_capture(
        &m,
        &format!(
            "clients = [\"sandbox\"]\ntenants = [\"ch-test-a\"]\nuntil = \"{soon}\"\ndir = \"{}\"",
            dir.display()
        ),
    ));
    let config = case
        .inspection
        .config
        .as_ref()
        .unwrap_or_else(|| panic!("{}", case.listing()));
    let capture = config.capture.as_ref().expect("capture");
    assert_eq!(capture.dir, dir);
    assert!(capture.clients.contains("sandbox"));
    assert_eq!(capture.tenants.len(), 1);
    assert!(capture.active(now));
    assert!(!dir.exists(), "check creates nothing");
    // The default folder: `capture` next to the configuration.
    let case = Case::new(&with_capture(
        &m,
        &format!("clients = [\"sandbox\"]\nuntil = \"{soon}\""),
    ));
    let capture = case
        .inspection
        .config
        .as_ref()
        .and_then(|c| c.capture.clone())
        .unwrap_or_else(|| panic!("{}", case.listing()));
    assert_eq!(capture.dir, case.dir.path().join("capture"));
    assert!(capture.tenants.is_empty(), "every tenant");

    // An unknown client, an unknown tenant, no client at all.
    let case = Case::new(&with_capture(
        &m,
        &format!(
            "clients = [\"sandbox\", \"lab\"]\ntenants = [\"ch-nowhere\"]\nuntil = \"{soon}\""
        ),
    ));
    case.error("capture.clients", &["\"lab\"", "[[clients]]"]);
    case.error("capture.tenants", &["\"ch-nowhere\"", "[[tenants]]"]);
    assert!(case.inspection.config.is_none());
    let case = Case::new(&with_capture(&m, &format!("until = \"{soon}\"")));
    case.error("capture.clients", &["at least one"]);
}

#[test]
fn a_capture_until_is_required_rfc3339_and_within_a_week() {
    let m = pki();
    let now = time::OffsetDateTime::now_utc();
    let case = Case::new(&with_capture(&m, "clients = [\"sandbox\"]"));
    case.error("capture.until", &["required"]);
    let case = Case::new(&with_capture(
        &m,
        "clients = [\"sandbox\"]\nuntil = \"tomorrow 6pm\"",
    ));
    case.error("capture.until", &["RFC 3339"]);
    let case = Case::new(&with_capture(
        &m,
        &format!(
            "clients = [\"sandbox\"]\nuntil = \"{}\"",
            rfc3339(now + time::Duration::days(8))
        ),
    ));
    case.error("capture.until", &["more than 7 days ahead", "patient data"]);
    assert!(case.inspection.config.is_none());

    // Past: a warning, and the configuration loads with the capture off.
    let case = Case::new(&with_capture(
        &m,
        &format!(
            "clients = [\"sandbox\"]\nuntil = \"{}\"",
            rfc3339(now - time::Duration::hours(1))
        ),
    ));
    let warnings = case.on("capture.until");
    assert_eq!(warnings.len(), 1, "{}", case.listing());
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(warnings[0].message.contains("nothing is captured"));
    let config = case
        .inspection
        .config
        .as_ref()
        .unwrap_or_else(|| panic!("{}", case.listing()));
    assert!(
        !config
            .capture
            .as_ref()
            .expect("capture")
            .active(time::OffsetDateTime::now_utc())
    );
}

#[test]
fn a_capture_folder_others_may_write_is_refused() {
    let m = pki();
    let soon = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    let scratch = tempfile::tempdir().expect("tempdir");
    let shared = scratch.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let text = |dir: &Path| {
        with_capture(
            &m,
            &format!(
                "clients = [\"sandbox\"]\nuntil = \"{soon}\"\ndir = \"{}\"",
                dir.display()
            ),
        )
    };
    let case = Case::new(&text(&shared));
    case.error(
        "capture.dir",
        &["writable by group or others (mode 0777)", "chmod 700"],
    );
    // Owner only: accepted.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let case = Case::new(&text(&shared));
    assert!(case.on("capture.dir").is_empty(), "{}", case.listing());
    // Under a file: refused.
    let file = scratch.path().join("plain-file");
    std::fs::write(&file, "x").expect("write");
    let case = Case::new(&text(&file.join("capture")));
    case.error("capture.dir", &["is not a folder"]);
}

/// Issue 15, point 6: each row says what the CRLs say and which file said it; "not
/// checked" when no configured CRL speaks for the certificate.
#[test]
fn each_certificate_row_carries_its_revocation_status_and_source() {
    use crate::report::RevocationStatus;
    let m = pki();
    let crl = m.path(&m.ca.org_crl);
    // The sandbox: the ORG CRL covers every tenant certificate.
    let case = Case::new(&sandbox_text(&m));
    assert!(!case.inspection.certificates.is_empty());
    for row in &case.inspection.certificates {
        let r = row.revocation.as_ref().expect("read");
        assert_eq!(r.status, RevocationStatus::Good, "{row:?}");
        assert_eq!(r.source.as_deref(), Some(crl.as_path()));
        assert!(r.to_string().starts_with("good (CRL "), "{r}");
    }
    // No CRL: said so, not "good".
    let text = sandbox_text(&m).replace(&format!("crls = [\"{}\"]", crl.display()), "crls = []");
    let case = Case::new(&text);
    assert!(!case.inspection.has_errors(), "{}", case.listing());
    for row in &case.inspection.certificates {
        let r = row.revocation.as_ref().expect("read");
        assert_eq!(r.status, RevocationStatus::NotChecked, "{row:?}");
        assert_eq!(r.source, None);
        assert_eq!(r.to_string(), "not checked");
    }
    // The CRL's revoked fixture as tenant A's dmp_auth: revoked, with the date and file.
    let revoked = &m.bad["revoked"].files;
    let a = &m.tenants[0].dmp_auth;
    let text = sandbox_text(&m)
        .replacen(
            &m.path(&a.cert).display().to_string(),
            &m.path(&revoked.cert).display().to_string(),
            1,
        )
        .replacen(
            &m.path(&a.chain).display().to_string(),
            &m.path(&revoked.chain).display().to_string(),
            1,
        )
        .replacen(
            &m.path(&a.key).display().to_string(),
            &m.path(&revoked.key).display().to_string(),
            1,
        );
    let case = Case::new(&text);
    let row = case
        .inspection
        .certificates
        .iter()
        .find(|c| c.tenant == m.tenants[0].id && c.role == crate::CertRole::DmpAuth)
        .expect("row");
    let r = row.revocation.as_ref().expect("read");
    assert_eq!(r.status, RevocationStatus::Revoked, "{}", case.listing());
    assert_eq!(r.source.as_deref(), Some(crl.as_path()));
    assert!(r.revoked_on.is_some());
    assert!(r.to_string().starts_with("REVOKED on "), "{r}");
}

/// `inspect_candidate` checks other files in place of one (tenant, role)'s with every
/// rule, and blames the candidate: what `passerelle install` relies on.
#[test]
fn a_candidate_is_checked_in_place_of_the_configured_files() {
    use crate::file::CertSource;
    use crate::{Candidate, CertRole, CertificateKey};
    let m = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("passerelle.toml");
    std::fs::write(&path, sandbox_text(&m)).expect("write");
    let now = time::OffsetDateTime::now_utc();
    let a = &m.tenants[0];
    let candidate = |leaf: &passerelle_certs_test::LeafFiles| Candidate {
        tenant: a.id.clone(),
        role: CertRole::DmpAuth,
        source: CertSource {
            cert: Some(m.path(&leaf.cert)),
            chain: Some(m.path(&leaf.chain)),
            key: Some(m.path(&leaf.key)),
            ..CertSource::default()
        },
    };
    // Its own files: nothing to say.
    let same = super::inspect_candidate(&path, now, candidate(&a.dmp_auth));
    assert!(!same.has_errors(), "{:?}", same.problems);
    // The INSi certificate as dmp_auth: refused, and the problems name the candidate.
    let wrong = super::inspect_candidate(&path, now, candidate(&a.insi_auto));
    let key = CertificateKey {
        tenant: a.id.clone(),
        role: CertRole::DmpAuth,
    };
    let ours: Vec<_> = wrong
        .problems
        .iter()
        .filter(|p| p.certificate.as_ref() == Some(&key) && p.severity == Severity::Error)
        .collect();
    assert!(
        ours.iter()
            .any(|p| p.message.contains("this is an INSi certificate")
                && p.file == m.path(&a.insi_auto.cert)),
        "{:?}",
        wrong.problems
    );
    // The row shows the candidate, and the configured file on disk did not matter.
    let row = wrong
        .certificates
        .iter()
        .find(|c| c.tenant == a.id && c.role == CertRole::DmpAuth)
        .expect("row");
    assert_eq!(row.subject_cn.as_deref(), Some("INSI-AUTO"));
    // Without a candidate, the same configuration is fine.
    assert!(!inspect(&path).has_errors());
}

/// `[trust] revocation` and `revocation_failure`: the defaults, contradictions named
/// on the setting at fault, and the policy given to every upstream.
#[test]
fn the_revocation_policy_is_checked_and_reaches_every_upstream() {
    let m = pki();
    let crls = "crls = [\"";
    let with = |trust_keys: &str, ocsp: &str| {
        let text = replace_once(
            &sandbox_text(&m),
            "[trust]\n",
            &format!("[trust]\n{trust_keys}"),
        );
        replace_once(&text, "\n[dmp]\n", &format!("\n{ocsp}\n[dmp]\n"))
    };
    let upstreams = |c: &crate::Config| {
        let mut all = vec![
            c.dmp.as_ref().expect("dmp").trust.revocation.clone(),
            c.insi.as_ref().expect("insi").trust.revocation.clone(),
        ];
        all.extend(c.services.iter().map(|s| s.trust.revocation.clone()));
        all
    };

    // No policy, no [trust.ocsp]: CRLs, soft-fail, no OCSP anywhere.
    let case = Case::new(&sandbox_text(&m));
    let config = case.inspection.config.as_ref().expect("valid");
    assert!(config.ocsp.is_none());
    for r in upstreams(config) {
        assert!(r.crl && r.ocsp.is_none() && !r.hard(), "{r:?}");
    }

    // [trust.ocsp] alone means "both": the servers are asked too, at their own
    // responder when `server_responder` says so.
    let case = Case::new(&with(
        "",
        "[trust.ocsp]\nresponder = \"http://ocsp.own.test/\"\nserver_responder = \"http://ocsp.servers.test/\"\n",
    ));
    let config = case.inspection.config.as_ref().expect("valid");
    // `check` names the responder next to the CRL that answered.
    let shown: Vec<String> = case
        .inspection
        .certificates
        .iter()
        .filter_map(|r| r.revocation.as_ref().map(ToString::to_string))
        .collect();
    assert!(
        !shown.is_empty()
            && shown
                .iter()
                .all(|s| s.starts_with("good (CRL ")
                    && s.ends_with("+ OCSP ocsp.own.test at run time")),
        "{shown:?}"
    );
    for r in upstreams(config) {
        let ocsp = r.ocsp.as_ref().expect("OCSP for the servers");
        assert!(r.crl, "both");
        assert_eq!(
            ocsp.responder.as_ref().map(url::Url::as_str),
            Some("http://ocsp.servers.test/")
        );
    }

    // "ocsp" without a section: its defaults; the servers' CRLs are not consulted, so
    // a CRL setting left in the file is an error naming it.
    let case = Case::new(&with("revocation = \"ocsp\"\n", ""));
    case.error("trust.crls", &["consults no CRL", "\"both\""]);
    let text = with("revocation = \"ocsp\"\n", "").replacen(crls, "#crls = [\"", 1);
    let case = Case::new(&text);
    let config = case.inspection.config.as_ref().expect("valid");
    let check = config.ocsp.as_ref().expect("[trust.ocsp] defaults");
    assert_eq!(check.refresh, std::time::Duration::from_secs(3600));
    for r in upstreams(config) {
        assert!(!r.crl && r.ocsp.is_some(), "{r:?}");
    }

    // "crl" with a [trust.ocsp] section: contradictory.
    let case = Case::new(&with("revocation = \"crl\"\n", "[trust.ocsp]\n"));
    case.error("trust.revocation", &["\"crl\"", "[trust.ocsp]"]);
    // Not a policy: refused by name.
    let case = Case::new(&with("revocation = \"sometimes\"\n", ""));
    assert!(case.inspection.has_errors());
    assert!(
        case.listing().contains("sometimes") && case.listing().contains("both"),
        "{}",
        case.listing()
    );

    // Hard-fail with CRLs and no CRL for the servers: every connection would be
    // refused; an error naming each upstream, a warning when downloads will fetch them.
    let case = Case::new(&with("revocation_failure = \"hard\"\n", ""));
    case.error("trust.revocation_failure", &["[dmp]", "no CRL"]);
    case.error("trust.revocation_failure", &["[insi]", "no CRL"]);
    let case = Case::new(&with(
        "revocation_failure = \"hard\"\n",
        "[trust.crl_download]\ndiscover = false\nurls = [\"http://crl.test/servers.crl\"]\n",
    ));
    let config = case.inspection.config.as_ref().expect("a warning only");
    assert!(upstreams(config).iter().all(|r| r.hard()));
    assert!(
        case.on("trust.revocation_failure")
            .iter()
            .all(|p| p.severity == Severity::Warning),
        "{}",
        case.listing()
    );
    // Hard-fail with OCSP: our own certificates' checks are hard too.
    let text = with(
        "revocation = \"ocsp\"\nrevocation_failure = \"hard\"\n",
        "[trust.ocsp]\n",
    )
    .replacen(crls, "#crls = [\"", 1);
    let case = Case::new(&text);
    let config = case.inspection.config.as_ref().expect("valid");
    assert!(config.ocsp.as_ref().is_some_and(|o| o.hard_fail));
}
