//! `passerelle check --online` against the mocks: one TLS handshake per tenant
//! certificate and upstream, each failure reported under the setting to fix, never as
//! a bare TLS error ("BadSignature").

use std::os::unix::fs::PermissionsExt;

use passerelle_e2e::{Harness, Options};
use passerelle_proxy::probe::{Outcome, Probe, probe_all};

async fn probes(h: &Harness) -> Vec<Probe> {
    let config = passerelle_config::load(&h.config_path).expect("configuration loads");
    probe_all(&config, time::OffsetDateTime::now_utc()).await
}

fn find<'a>(probes: &'a [Probe], tenant: &str, role: &str) -> &'a Probe {
    probes
        .iter()
        .find(|p| p.tenant == tenant && p.role == role)
        .unwrap_or_else(|| panic!("no probe for {tenant} {role}: {probes:#?}"))
}

#[tokio::test]
async fn every_certificate_passes_against_the_mocks() {
    let h = Harness::start().await;
    let probes = probes(&h).await;
    // 2 tenants x (DMP with dmp_auth, INSi with insi_auto and insi_manu, the echo
    // service with org_auth).
    assert_eq!(probes.len(), 8, "{probes:#?}");
    for p in &probes {
        assert_eq!(p.outcome, Outcome::Ok, "{p:#?}");
        assert_eq!(p.setting, None);
        assert_eq!(p.tls_version.as_deref(), Some("TLSv1_3"), "{p:#?}");
        assert!(p.message.contains("client certificate accepted"), "{p:#?}");
    }
    let dmp = find(&probes, "ch-test-a", "dmp_auth");
    assert_eq!(dmp.service, "dmp");
    assert!(
        dmp.upstream.ends_with("/si-dmp-server/v2/services"),
        "{dmp:#?}"
    );
    assert_eq!(find(&probes, "ch-test-b", "insi_manu").service, "insi");
    let echo = find(&probes, "ch-test-b", "org_auth");
    assert_eq!(echo.service, "svc/echo");
    assert!(echo.upstream.ends_with("/echo"), "{echo:#?}");
    // The JSON form `check --online --json` prints.
    let json = serde_json::to_value(&probes).expect("JSON");
    assert_eq!(json[0]["outcome"], "ok");
    assert!(json[0].get("setting").is_none());
}

#[tokio::test]
async fn a_wrong_dmp_anchor_is_reported_under_dmp_trust_anchors() {
    // A look-alike root: same name as the real one, another key. At run time this is a
    // TLS failure whose reason reads "BadSignature".
    let h = Harness::start_with(Options {
        dmp_trust_anchor: Some("bad/other-root.foreign-root.pem".into()),
        ..Options::default()
    })
    .await;
    let probes = probes(&h).await;
    for tenant in ["ch-test-a", "ch-test-b"] {
        let p = find(&probes, tenant, "dmp_auth");
        assert_eq!(p.outcome, Outcome::Error, "{p:#?}");
        assert_eq!(p.setting.as_deref(), Some("dmp.trust_anchors"), "{p:#?}");
        assert!(
            p.message
                .contains("the server's certificate is not anchored in dmp.trust_anchors"),
            "{p:#?}"
        );
        assert!(p.message.contains("look-alike"), "{p:#?}");
        assert!(!p.message.contains("BadSignature"), "{p:#?}");
        // INSi has its own anchors, which are right.
        assert_eq!(find(&probes, tenant, "insi_auto").outcome, Outcome::Ok);
    }
}

#[tokio::test]
async fn a_client_certificate_the_service_refuses_is_reported_under_the_tenant_certificate() {
    // Tenant A's ORG AUTH_CLI from a look-alike hierarchy that `[trust]` accepts (its
    // root is added), but the mock DMP does not: it only trusts the real ORG CA.
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    let bad = &pki.bad["other-root"];
    let dir = tenant_a_dmp_auth_from("other-root");
    let foreign_root = bad.foreign_root.clone().expect("foreign root");
    let h = Harness::start_with(Options {
        tenant_a_dmp_auth_dir: Some(dir.clone()),
        keys: vec![(
            "trust",
            "anchors",
            toml::Value::Array(vec![
                pki.ca.root.display().to_string().into(),
                foreign_root.display().to_string().into(),
            ]),
        )],
        ..Options::default()
    })
    .await;
    let probes = probes(&h).await;
    let p = find(&probes, "ch-test-a", "dmp_auth");
    assert_eq!(p.outcome, Outcome::Error, "{p:#?}");
    assert_eq!(
        p.setting.as_deref(),
        Some("tenants[0].certificates.dmp_auth"),
        "{p:#?}"
    );
    assert!(
        p.message.contains("refused this client certificate"),
        "{p:#?}"
    );
    assert!(p.message.contains("does not verify"), "{p:#?}");
    // TLS 1.3: the refusal came after the handshake, on the first read.
    assert_eq!(p.tls_version.as_deref(), Some("TLSv1_3"), "{p:#?}");
    // The others are unaffected.
    assert_eq!(find(&probes, "ch-test-b", "dmp_auth").outcome, Outcome::Ok);
    assert_eq!(find(&probes, "ch-test-a", "insi_auto").outcome, Outcome::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tenant A's dmp_auth replaced by the PKI's `bad/<fixture>` files.
fn tenant_a_dmp_auth_from(fixture: &str) -> std::path::PathBuf {
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    let bad = &pki.bad[fixture];
    let dir = tempfile_dir();
    for (from, to) in [
        (&bad.files.cert, "dmp-auth.cert.pem"),
        (&bad.files.chain, "dmp-auth.chain.pem"),
        (&bad.files.key, "dmp-auth.key.pem"),
    ] {
        std::fs::copy(pki.path(from), dir.join(to)).expect("copy");
    }
    std::fs::set_permissions(
        dir.join("dmp-auth.key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    dir
}

#[tokio::test]
async fn a_disabled_pair_is_skipped() {
    // An expired dmp_auth disables tenant A's DMP pair only; it is not probed.
    let dir = tenant_a_dmp_auth_from("expired");
    let h = Harness::start_with(Options {
        tenant_a_dmp_auth_dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    let probes = probes(&h).await;
    let p = find(&probes, "ch-test-a", "dmp_auth");
    assert_eq!(p.outcome, Outcome::Skipped, "{p:#?}");
    assert!(p.message.contains("expired"), "{p:#?}");
    assert_eq!(find(&probes, "ch-test-b", "dmp_auth").outcome, Outcome::Ok);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_upstream_is_reported_under_its_url() {
    // Port 1 (tcpmux): privileged and unused; a freed ephemeral port could be taken by
    // another test's server meanwhile.
    let closed = 1;
    let h = Harness::start_with(Options {
        dmp_url: Some(format!(
            "https://localhost:{closed}/si-dmp-server/v2/services"
        )),
        ..Options::default()
    })
    .await;
    let probes = probes(&h).await;
    let p = find(&probes, "ch-test-a", "dmp_auth");
    assert_eq!(p.setting.as_deref(), Some("dmp.base_url"), "{p:#?}");
    assert!(p.message.contains("cannot connect to localhost"), "{p:#?}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "passerelle-e2e-online-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// With `[egress]`, the probes go through the forward proxy as the pools would; a proxy
/// that is down is reported under `egress.proxy`.
#[tokio::test]
async fn probes_go_through_the_egress_proxy_and_its_failures_name_it() {
    let fp = passerelle_e2e::forward_proxy::ForwardProxy::start(None);
    let h = Harness::start_with(Options {
        keys: vec![("egress", "proxy", fp.url().into())],
        ..Options::default()
    })
    .await;
    let probes = probes(&h).await;
    assert!(
        probes.iter().all(|p| p.outcome == Outcome::Ok),
        "{probes:#?}"
    );
    assert_eq!(fp.connects().len(), probes.len(), "{:?}", fp.connects());
    drop(fp);
    let probes = self::probes(&h).await;
    for p in &probes {
        assert_eq!(p.outcome, Outcome::Error, "{p:#?}");
        assert_eq!(p.setting.as_deref(), Some("egress.proxy"), "{p:#?}");
    }
}
