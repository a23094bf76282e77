//! `load` on the test PKI's sandbox configuration: the typed result the proxy relies on.

use passerelle_certs_test::shared_test_pki;
use passerelle_config::{
    CertRole, ServiceScope, Severity, StructureId, TenantId, inspect_at, load,
};
use sha2::Digest;

#[test]
fn sandbox_loads_into_typed_config() {
    let m = shared_test_pki().expect("PKI");
    let config = load(&m.path(&m.config)).expect("valid sandbox");
    assert_eq!(config.listener.to_string(), "127.0.0.1:8080");
    assert_eq!(config.tenants.len(), 2);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let fixture = &m.tenants[0];
    let id: TenantId = fixture.id.parse().expect("id");
    let tenant = config.tenant(&id).expect("tenant a");
    // dmp_auth, dmp_sign, insi_auto, insi_manu, and org_auth for the echo service.
    assert_eq!(tenant.certificates.len(), 5);
    assert_eq!(config.services.len(), 1);
    for eg in &fixture.geographic_structure_ids {
        assert!(tenant.owns_structure(&eg.parse::<StructureId>().expect("EG")));
    }
    let other: StructureId = m.tenants[1].structure_id.parse().expect("EJ b");
    assert!(!tenant.owns_structure(&other));

    let auth = &tenant.certificates[&CertRole::DmpAuth];
    // RFC 2253 subject: what the VIHF Issuer must carry, identical for AUTH_CLI and SIGN.
    assert_eq!(auth.info.subject, fixture.dmp_auth.subject);
    assert_eq!(
        tenant.certificates[&CertRole::DmpSign].info.subject,
        auth.info.subject
    );
    assert_eq!(auth.info.serial_hex, fixture.dmp_auth.serial);
    // The chain to send in TLS: the ORG intermediate, not the root.
    assert_eq!(auth.intermediates_der.len(), 1);
    let intermediate = std::fs::read_to_string(m.path(&m.ca.org_intermediate)).expect("pem");
    let intermediate = openssl::x509::X509::from_pem(intermediate.as_bytes()).expect("x509");
    assert_eq!(
        auth.intermediates_der[0],
        intermediate.to_der().expect("der")
    );
    // The key is PKCS#8 DER and matches the certificate; Debug never shows it.
    let passerelle_config::KeyMaterial::File(key) = &auth.key else {
        panic!("a key file is read into memory")
    };
    let key = openssl::pkey::PKey::private_key_from_pkcs8(key.pkcs8_der()).expect("pkcs8");
    let cert = openssl::x509::X509::from_der(&auth.leaf_der).expect("leaf");
    assert!(cert.public_key().expect("pub").public_eq(&key));
    let debug = format!("{config:?}");
    assert!(debug.contains("PrivateKey(<redacted>)"));
    assert!(!debug.contains("pkcs8"));

    // Tenant B is loaded from PKCS#12: same shape.
    let b = &config.tenants[1];
    assert_eq!(
        b.certificates[&CertRole::InsiManu]
            .info
            .common_name
            .as_deref(),
        Some("INSI-MANU")
    );
    assert_eq!(
        b.certificates[&CertRole::InsiManu].intermediates_der.len(),
        1
    );

    let dmp = config.dmp.as_ref().expect("dmp");
    assert_eq!(
        dmp.service_url("registry").as_deref(),
        Some("https://localhost:9443/si-dmp-server/v2/services/registry")
    );
    assert_eq!(
        dmp.services.len(),
        6,
        "registry, repository, patients, habilitations, PatientSpecific, patientCertif"
    );
    assert_eq!(
        dmp.signing.max_authn_age,
        std::time::Duration::from_secs(12 * 3600)
    );
    assert_eq!(dmp.trust.anchors.len(), 1);
    assert_eq!(dmp.timeouts.request, std::time::Duration::from_secs(60));

    let client = &config.clients[0];
    assert_eq!(
        client.token_sha256,
        Some(<[u8; 32]>::from(sha2::Sha256::digest(b"sandbox-token")))
    );
    assert!(
        client.services.contains(&ServiceScope::AllDmp)
            && client.services.contains(&ServiceScope::Insi)
    );
    assert_eq!(client.tenants.len(), 2);
}

#[test]
fn invalid_configuration_lists_only_errors() {
    let m = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = sandbox_text(&m).replace("request = \"60s\"", "request = \"0s\"");
    let path = dir.path().join("p.toml");
    std::fs::write(&path, text).expect("write");
    let err = load(&path).expect_err("zero timeout");
    let passerelle_config::ConfigError::Invalid { problems, .. } = &err;
    assert!(problems.iter().all(|p| p.severity == Severity::Error));
    assert!(err.to_string().contains("dmp.timeouts.request"), "{err}");
}

#[test]
fn certificates_expire_in_time() {
    let m = shared_test_pki().expect("PKI");
    let path = m.path(&m.config);
    let soon = time::OffsetDateTime::now_utc() + time::Duration::days(3 * 365 - 20);
    let inspection = inspect_at(&path, soon);
    assert!(!inspection.has_errors());
    assert_eq!(
        inspection
            .problems
            .iter()
            .filter(|p| p.message.contains("renew it now"))
            .count(),
        10,
        "2 tenants x 5 certificates"
    );
    let later = time::OffsetDateTime::now_utc() + time::Duration::days(3 * 365 + 2);
    let inspection = inspect_at(&path, later);
    assert_eq!(
        inspection
            .problems
            .iter()
            .filter(|p| p.message.contains("expired on") && p.disables)
            .count(),
        10
    );
    // Each expired certificate disables its (tenant, role) pair, not the configuration:
    // `check` reports errors, `run` starts.
    assert!(inspection.has_errors());
    assert!(!inspection.has_blocking_errors());
    assert!(inspection.config.is_some());
    assert!(
        inspection
            .problems
            .iter()
            .filter(|p| p.disables)
            .all(|p| p.to_string().contains("disabled until it is replaced")),
        "{:?}",
        inspection.problems
    );
}

#[test]
fn connection_and_body_limits_have_defaults_and_are_validated() {
    use std::time::Duration;
    let m = shared_test_pki().expect("PKI");
    let config = load(&m.path(&m.config)).expect("valid sandbox");
    let l = config.limits;
    assert_eq!(l.max_connections, None, "derived from the open-files limit");
    assert_eq!(l.idle_timeout, Duration::from_secs(60));
    assert_eq!(l.http2_keep_alive_interval, Duration::from_secs(30));
    assert_eq!(l.http2_keep_alive_timeout, Duration::from_secs(10));
    assert_eq!(l.body_read_timeout, Duration::from_secs(30));
    assert_eq!(l.max_inflight_body_bytes, 4 * l.max_body_bytes);

    let dir = tempfile::tempdir().expect("tempdir");
    let base = sandbox_text(&m);
    let path = dir.path().join("p.toml");
    let with_listener = |keys: &str, limits: &str| {
        base.replacen("[admin]", &format!("{keys}\n\n[admin]"), 1) + "\n[limits]\n" + limits
    };
    // Set values reach the typed configuration.
    std::fs::write(
        &path,
        with_listener(
            "max_connections = 500\nidle_timeout = \"5s\"\nhttp2_keep_alive_interval = \"2s\"\nhttp2_keep_alive_timeout = \"1s\"",
            "body_read_timeout = \"10s\"\nmax_inflight_body_bytes = 134217728\n",
        ),
    )
    .expect("write");
    let l = load(&path).expect("valid").limits;
    assert_eq!(l.max_connections, Some(500));
    assert_eq!(l.idle_timeout, Duration::from_secs(5));
    assert_eq!(l.http2_keep_alive_interval, Duration::from_secs(2));
    assert_eq!(l.http2_keep_alive_timeout, Duration::from_secs(1));
    assert_eq!(l.body_read_timeout, Duration::from_secs(10));
    assert_eq!(l.max_inflight_body_bytes, 128 * 1024 * 1024);

    // Bad values: each named with its file and field.
    std::fs::write(
        &path,
        with_listener(
            "max_connections = 0\nidle_timeout = \"soon\"\nhttp2_keep_alive_interval = \"0s\"",
            "body_read_timeout = \"0s\"\n",
        ),
    )
    .expect("write");
    let err = load(&path).expect_err("invalid limits").to_string();
    for (field, reason) in [
        ("listener.max_connections", "at least 1"),
        (
            "listener.idle_timeout",
            "\"soon\" is not a positive duration",
        ),
        (
            "listener.http2_keep_alive_interval",
            "not a positive duration",
        ),
        ("limits.body_read_timeout", "not a positive duration"),
    ] {
        assert!(
            err.lines().any(|l| l.contains(&path.display().to_string())
                && l.contains(field)
                && l.contains(reason)),
            "{field} not reported:\n{err}"
        );
    }
    std::fs::write(
        &path,
        with_listener("", "max_inflight_body_bytes = 1000000\n"),
    )
    .expect("write");
    let err = load(&path)
        .expect_err("budget below max_body_bytes")
        .to_string();
    assert!(
        err.contains("limits.max_inflight_body_bytes")
            && err.contains("less than limits.max_body_bytes"),
        "{err}"
    );
}

#[test]
fn dmp_policy_defaults_overrides_and_errors() {
    use passerelle_config::{DmpPolicy, PolicyMode};
    let m = shared_test_pki().expect("PKI");
    let config = load(&m.path(&m.config)).expect("valid sandbox");
    // Tenants with geographic entities require them by default.
    assert_eq!(
        config.tenants[0].policy,
        DmpPolicy {
            structure_consistency: PolicyMode::Refuse,
            require_geographic: true,
            cda_structure: PolicyMode::Warn,
        }
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sandbox_text(&m);
    let path = dir.path().join("p.toml");
    // [dmp.policy] for all, the first tenant's [tenants.policy] over it, key by key.
    let first_tenant = base.find("[[tenants]]").expect("tenants");
    let end_of_ids = base[first_tenant..]
        .find("\n[tenants.certificates")
        .map(|i| i + first_tenant)
        .expect("certificates");
    let with = |global: &str, tenant: &str| {
        let mut text = base.clone();
        text.insert_str(end_of_ids, &format!("\n[tenants.policy]\n{tenant}\n"));
        text + "\n[dmp.policy]\n" + global + "\n"
    };
    std::fs::write(
        &path,
        with(
            "structure_consistency = \"warn\"\ncda_structure = \"off\"",
            "require_geographic = false\ncda_structure = \"refuse\"",
        ),
    )
    .expect("write");
    let config = load(&path).expect("valid");
    assert_eq!(
        config.tenants[0].policy,
        DmpPolicy {
            structure_consistency: PolicyMode::Warn,
            require_geographic: false,
            cda_structure: PolicyMode::Refuse,
        }
    );
    assert_eq!(config.tenants[1].policy.cda_structure, PolicyMode::Off);
    assert!(config.tenants[1].policy.require_geographic);
    // A value outside the allowed ones names the field.
    std::fs::write(
        &path,
        with(
            "structure_consistency = \"off\"",
            "cda_structure = \"maybe\"",
        ),
    )
    .expect("write");
    let err = load(&path).expect_err("invalid policy").to_string();
    assert!(err.contains("dmp.policy.structure_consistency"), "{err}");
    assert!(err.contains("tenants[0].policy.cda_structure"), "{err}");
}

/// `[trust.crl_download]`: the distribution points of the configured certificates are
/// discovered, the CA certificates become the CRLs' possible signers, bad settings are
/// named by field, and the folder's copies are read like `crls` files: named by their
/// URL, an orphan and a stale copy warned about.
#[test]
fn crl_download_discovers_validates_and_reads_the_folder() {
    use passerelle_certs_test::{CrlOptions, write_crl};
    use std::time::Duration;
    let m = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sandbox_text(&m);
    let path = dir.path().join("p.toml");
    let with = |keys: &str| {
        base.replacen(
            "\n[dmp]\n",
            &format!("\n[trust.crl_download]\n{keys}\n\n[dmp]\n"),
            1,
        )
    };

    // Defaults: every leaf names the ORG intermediate's CRL; one source, direct.
    std::fs::write(&path, with("")).expect("write");
    let config = load(&path).expect("valid");
    let plan = config.crl_download.expect("plan");
    let cdp = "http://igc-sante.esante.gouv.fr/CRL/ACI-EL-ORG-TEST.crl";
    let urls: Vec<String> = plan.sources.iter().map(|s| s.url.to_string()).collect();
    assert_eq!(urls, [cdp]);
    assert!(plan.sources[0].egress.is_none());
    assert_eq!(plan.directory, dir.path().join("crls"));
    assert_eq!(plan.refresh, Duration::from_secs(24 * 3600));
    assert_eq!(plan.retry, Duration::from_secs(15 * 60));
    assert_eq!(plan.timeout, Duration::from_secs(30));
    let org = openssl::x509::X509::from_pem(
        &std::fs::read(m.path(&m.ca.org_intermediate)).expect("read"),
    )
    .expect("pem");
    assert!(
        plan.issuers.contains(&org.to_der().expect("der")),
        "the ORG intermediate may sign CRLs"
    );
    assert_eq!(
        plan.sources[0].issuer.as_deref(),
        Some(org.subject_name().to_der().expect("name").as_slice()),
        "the leaves' distribution point takes only their issuer's CRL"
    );
    // Two URLs that differ only where the file name is flattened get two files.
    let a = passerelle_config::crl_file_name(&"http://h/a/b.crl".parse().expect("URL"));
    let b = passerelle_config::crl_file_name(&"http://h/a_b.crl".parse().expect("URL"));
    let q = passerelle_config::crl_file_name(&"http://h/a_b.crl?x=1".parse().expect("URL"));
    assert!(
        a != b && b != q && a.starts_with("h_a_b_") && a.ends_with(".crl"),
        "{a} {b} {q}"
    );

    // Bad settings, each named.
    std::fs::write(
        &path,
        with("urls = [\"ldap://ldap.example/cn=crl\", \"https://x.example/a.crl\", \"not a url\", \"http://u:p@x.example/a.crl\"]\nrefresh = \"10s\"\nretry = \"0s\"\nmax_bytes = 10\negress = \"proxy\""),
    )
    .expect("write");
    let err = load(&path).expect_err("invalid").to_string();
    for field in [
        "trust.crl_download.urls[0]",
        "trust.crl_download.urls[1]",
        "trust.crl_download.urls[2]",
        "trust.crl_download.urls[3]",
        "trust.crl_download.refresh",
        "trust.crl_download.retry",
        "trust.crl_download.max_bytes",
        "trust.crl_download.egress",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }

    std::fs::write(&path, with("refresh = \"8d\"")).expect("write");
    let err = load(&path).expect_err("8 days").to_string();
    assert!(err.contains("at most \"7d\""), "{err}");
    std::fs::write(&path, with("refresh = \"1h\"\nretry = \"2h\"")).expect("write");
    let err = load(&path).expect_err("retry > refresh").to_string();
    assert!(err.contains("trust.crl_download.retry"), "{err}");

    // A copy for the distribution point, an orphan, and a stale copy.
    let folder = dir.path().join("crls");
    std::fs::create_dir_all(&folder).expect("dir");
    let copy = folder.join(passerelle_config::crl_file_name(&cdp.parse().expect("URL")));
    let mut options = CrlOptions::new(&m.dir, &copy);
    options.number = 7;
    options.this_update = -30;
    write_crl(&options).expect("crl");
    options.out = folder.join("old.example_gone.crl");
    options.this_update = -7200;
    options.next_update = -3600;
    write_crl(&options).expect("stale crl");
    std::fs::write(&path, with("")).expect("write");
    let inspection = passerelle_config::inspect(&path);
    let config = inspection.config.expect("valid");
    let kept = config
        .crls
        .iter()
        .find(|c| c.file == copy)
        .expect("the copy is in use");
    assert_eq!(kept.url.as_deref(), Some(cdp));
    assert_eq!(kept.source(), cdp);
    let orphan = inspection
        .problems
        .iter()
        .filter(|p| p.file == folder.join("old.example_gone.crl"))
        .map(|p| p.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        orphan.contains("no configured or discovered URL"),
        "{orphan}"
    );
    assert!(orphan.contains("past its nextUpdate"), "{orphan}");
    // The newest CRL that covers a tenant certificate is the one the report names.
    let row = inspection
        .certificates
        .iter()
        .find(|c| c.role == CertRole::DmpAuth)
        .expect("a dmp_auth row");
    let revocation = row.revocation.as_ref().expect("revocation");
    assert_eq!(revocation.url.as_deref(), Some(cdp));
    assert!(revocation.to_string().contains(cdp), "{revocation}");
}

/// The sandbox configuration's text with its paths made absolute: to be written anywhere.
fn sandbox_text(m: &passerelle_certs_test::Manifest) -> String {
    std::fs::read_to_string(m.path(&m.config))
        .expect("read")
        .replace("\"ca/", &format!("\"{}/ca/", m.dir.display()))
        .replace("\"tenants/", &format!("\"{}/tenants/", m.dir.display()))
}

/// `[trust.ocsp]`: every tenant certificate with its issuer and the responder of its
/// Authority Information Access, or the one configured; bad settings named.
#[test]
fn ocsp_targets_every_tenant_certificate() {
    use std::time::Duration;
    let m = shared_test_pki().expect("PKI");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sandbox_text(&m);
    let path = dir.path().join("p.toml");
    let with = |keys: &str| {
        base.replacen(
            "\n[dmp]\n",
            &format!("\n[trust.ocsp]\n{keys}\n\n[dmp]\n"),
            1,
        )
    };
    std::fs::write(&path, with("")).expect("write");
    let config = load(&path).expect("valid");
    let check = config.ocsp.expect("[trust.ocsp]");
    assert_eq!(
        check.targets.len(),
        10,
        "5 certificates for each of 2 tenants"
    );
    assert_eq!(check.refresh, Duration::from_secs(3600));
    assert_eq!(check.retry, Duration::from_secs(300));
    assert_eq!(check.timeout, Duration::from_secs(10));
    let org = openssl::x509::X509::from_pem(
        &std::fs::read(m.path(&m.ca.org_intermediate)).expect("read"),
    )
    .expect("pem");
    for t in &check.targets {
        assert_eq!(
            t.issuer,
            org.to_der().expect("der"),
            "{} {}",
            t.tenant,
            t.role
        );
        let leaf = openssl::x509::X509::from_der(&t.leaf).expect("leaf");
        let aia = leaf.ocsp_responders().expect("AIA");
        assert_eq!(
            t.url,
            url::Url::parse(&aia[0]).expect("URL"),
            "the certificate's own responder"
        );
        assert!(t.egress.is_none());
    }

    std::fs::write(
        &path,
        with("responder = \"http://ocsp.chu.local:8080/\"\nrefresh = \"5m\""),
    )
    .expect("write");
    let check = load(&path).expect("valid").ocsp.expect("[trust.ocsp]");
    assert!(
        check
            .targets
            .iter()
            .all(|t| t.url.as_str() == "http://ocsp.chu.local:8080/")
    );
    assert_eq!(
        check.retry,
        Duration::from_secs(300),
        "5 minutes, not past refresh"
    );

    std::fs::write(
        &path,
        with("responder = \"https://u:p@x/\"\nrefresh = \"10s\"\nretry = \"1h\""),
    )
    .expect("write");
    let err = load(&path).expect_err("invalid").to_string();
    for field in ["trust.ocsp.responder", "trust.ocsp.refresh"] {
        assert!(err.contains(field), "{field} in {err}");
    }
}
