//! The mock INSi driven by a plain mutual-TLS client: the good request is answered,
//! each bad case gets its specific refusal, responses validate against the CNAM XSDs.

mod common;

use std::sync::Arc;

use common::{admin, client_config, post, spec, xmllint};
use passerelle_certs_test::{Manifest, shared_test_pki};
use passerelle_mocks::faults::Faults;
use passerelle_mocks::insi::traits_request;
use passerelle_mocks::server::Running;
use passerelle_mocks::soap::Envelope;
use rustls_pki_types::pem::PemObject;

async fn start(m: &Manifest) -> Running {
    let any = "127.0.0.1:0".parse().expect("addr");
    passerelle_mocks::start_insi(m, &spec().join("insi/xsd"), any, any, Faults::default())
        .await
        .expect("start")
}

fn client(m: &Manifest, leaf: &passerelle_certs_test::LeafFiles) -> Arc<rustls::ClientConfig> {
    client_config(
        &m.path(&m.ca.root),
        Some((&m.path(&leaf.chain), &m.path(&leaf.key))),
    )
}

/// The RESULTAT element of a response, standalone, validated against INSi_RESULTAT_INS.xsd.
fn assert_valid_result(body: &str) -> String {
    let env = Envelope::parse(body).expect("response envelope");
    let (e, scope) = env.body_element().expect("body");
    let alone = passerelle_mocks::soap::standalone(e, &scope);
    let (ok, out) = xmllint(
        &alone,
        &spec().join("insi/xsd/ServiceIdentiteCertifiee/INSi_RESULTAT_INS.xsd"),
    );
    assert!(ok, "{out}\n{alone}");
    alone
}

/// The siram:Erreur detail of a fault, validated against schema_faultSOAP_V01_01.xsd.
fn assert_valid_fault(body: &str, code: &str) {
    let env = Envelope::parse(body).expect("fault envelope");
    let (fault, scope) = env.body_element().expect("fault");
    let detail = fault
        .elements()
        .find(|e| e.local == "Detail")
        .expect("Detail");
    let erreur = detail.elements().next().expect("Erreur");
    let alone = passerelle_mocks::soap::standalone(erreur, &scope);
    let (ok, out) = xmllint(&alone, &spec().join("insi/xsd/schema_faultSOAP_V01_01.xsd"));
    assert!(ok, "{out}\n{alone}");
    assert!(alone.contains(&format!("code=\"{code}\"")), "{alone}");
}

#[tokio::test]
async fn search_by_traits_answers_cr00_cr01_cr02_with_either_insi_certificate() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let t = &m.tenants[0];
    for leaf in [&t.insi_auto, &t.insi_manu] {
        let (status, body) = post(
            mock.address,
            client(&m, leaf),
            "/lps",
            &traits_request(&t.structure_id, "MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await
        .expect("request");
        assert_eq!(status, 200, "{body}");
        let result = assert_valid_result(&body);
        assert!(result.contains("<CodeCR>00</CodeCR>"), "{result}");
        assert!(
            result.contains("<NumIdentifiant>2070585756270</NumIdentifiant><Cle>97</Cle>"),
            "{result}"
        );
        assert!(result.contains("<OID>1.2.250.1.213.1.4.10</OID>") && result.contains("<TIQ>"));
        assert!(
            body.contains("rechercherInsAvecTraitsIdentiteResponse") && body.contains("RelatesTo")
        );
    }
    let auto = client(&m, &t.insi_auto);
    let (_, body) = post(
        mock.address,
        auto.clone(),
        "/lps",
        &traits_request(&t.structure_id, "INCONNU", "PERSONNE", "M", "1950-01-01"),
    )
    .await
    .expect("cr01");
    assert!(assert_valid_result(&body).contains("<CodeCR>01</CodeCR>"));
    let (_, body) = post(
        mock.address,
        auto,
        "/lps",
        &traits_request(&t.structure_id, "DUPONT", "JEAN", "M", "1980-01-01"),
    )
    .await
    .expect("cr02");
    assert!(assert_valid_result(&body).contains("<CodeCR>02</CodeCR>"));

    assert_eq!(
        mock.stats.count("rechercherInsAvecTraitsIdentite", "cr00"),
        2
    );
    let (status, stats) = admin(mock.admin_address, "GET", "/stats", "").await;
    assert_eq!(status, 200);
    let clients = stats["clients"].as_object().expect("clients");
    assert!(clients.contains_key(&format!(
        "CN=INSI-AUTO,OU={},O={},ST={},C=FR",
        t.structure_id, t.legal_name, t.department
    )));
    assert!(clients.keys().any(|k| k.starts_with("CN=INSI-MANU,")));
    assert_eq!(
        stats["operations"]["rechercherInsAvecTraitsIdentite"]["cr02"],
        1
    );
}

#[tokio::test]
async fn first_names_match_the_first_alone_or_the_whole_list_and_history_is_answered() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let t = &m.tenants[0];
    let auto = client(&m, &t.insi_auto);
    let code = |body: &str| {
        let result = assert_valid_result(body);
        let start = result.find("<CodeCR>").expect("CodeCR") + "<CodeCR>".len();
        (result[start..start + 2].to_string(), result)
    };
    for (name, first, sex, date, want) in [
        ("MARTIN", "CLAIRE", "F", "2007-05-14", "00"),
        ("MARTIN", "CLAIRE ANNE", "F", "2007-05-14", "00"),
        // Another order, a second first name alone, a wrong one: not this identity.
        ("MARTIN", "ANNE CLAIRE", "F", "2007-05-14", "01"),
        ("MARTIN", "ANNE", "F", "2007-05-14", "01"),
        ("MARTIN", "CLAIRE MARIE", "F", "2007-05-14", "01"),
        // Namesakes: the first first name finds both, the whole list one.
        ("LEGRAND", "MARIE", "F", "1985-06-30", "02"),
        ("LEGRAND", "MARIE LOUISE", "F", "1985-06-30", "00"),
    ] {
        let (_, body) = post(
            mock.address,
            auto.clone(),
            "/lps",
            &traits_request(&t.structure_id, name, first, sex, date),
        )
        .await
        .expect("request");
        assert_eq!(code(&body).0, want, "{name} {first}: {body}");
    }
    // A former INS comes back as INSHISTO, valid against the CNAM XSD.
    let (_, body) = post(
        mock.address,
        auto,
        "/lps",
        &traits_request(&t.structure_id, "ROUSSEAU", "LOUIS", "M", "1972-03-12"),
    )
    .await
    .expect("request");
    let (cr, result) = code(&body);
    assert_eq!(cr, "00");
    assert!(
        result.contains("<INSHISTO><IdIndividu><NumIdentifiant>1720399350019</NumIdentifiant>"),
        "{result}"
    );
}

#[tokio::test]
async fn no_client_certificate_or_foreign_root_fails_the_handshake() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let request = traits_request("x", "MARTIN", "CLAIRE", "F", "2007-05-14");
    let none = client_config(&m.path(&m.ca.root), None);
    assert!(post(mock.address, none, "/lps", &request).await.is_err());
    let foreign = &m.bad["other-root"].files;
    assert!(
        post(mock.address, client(&m, foreign), "/lps", &request)
            .await
            .is_err()
    );
    // A DMP AUTH_CLI is chained correctly: TLS passes, the INSi access level does not.
    let (status, body) = post(
        mock.address,
        client(&m, &m.tenants[0].dmp_auth),
        "/lps",
        &request,
    )
    .await
    .expect("tls ok");
    assert_eq!(status, 500);
    assert!(body.contains("Niveau d'accès insuffisant"));
}

#[tokio::test]
async fn wrong_insi_common_names_get_desir_560() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    for case in ["insi-lowercase-cn", "insi-space-cn"] {
        let (status, body) = post(
            mock.address,
            client(&m, &m.bad[case].files),
            "/lps",
            &traits_request("x", "MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await
        .expect("request");
        assert_eq!(status, 500, "{case}");
        assert!(
            body.contains("siram:siram_30") && body.contains("Niveau d'accès insuffisant"),
            "{body}"
        );
        assert_valid_fault(&body, "desir_560");
    }
    assert_eq!(mock.stats.count("unknown", "access_level"), 2);
}

#[tokio::test]
async fn malformed_requests_get_specific_faults() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let t = &m.tenants[0];
    let c = client(&m, &t.insi_auto);
    let good = traits_request(&t.structure_id, "MARTIN", "CLAIRE", "F", "2007-05-14");
    let without = |start: &str, end: &str| {
        let i = good.find(start).expect("start");
        let j = good[i..].find(end).expect("end") + i + end.len();
        format!("{}{}", &good[..i], &good[j..])
    };
    let cases = [
        (
            without("<ctxlps:ContexteLPS", "</ctxlps:ContexteLPS>"),
            "ctxlps:ContexteLPS is missing",
        ),
        (
            without("<ctxbam:ContexteBAM", "</ctxbam:ContexteBAM>"),
            "ctxbam:ContexteBAM is missing",
        ),
        (
            without("<wsa:Action", "</wsa:Action>"),
            "wsa:Action is missing",
        ),
        (
            without("<wsa:MessageID", "</wsa:MessageID>"),
            "wsa:MessageID is missing",
        ),
        (
            good.replace(
                ":rechercherInsAvecTraitsIdentite</wsa:Action>",
                ":rechercherInsAvecCarteVitale</wsa:Action>",
            ),
            "wsa:Action is",
        ),
        (
            good.replace("<NomNaissance>MARTIN</NomNaissance>", "<Bogus>1</Bogus>"),
            "does not validate against the CNAM XSD",
        ),
        (
            good.replace("<ctxbam:COUVERTURE/>", ""),
            "ContexteBAM does not validate",
        ),
        (
            "<!DOCTYPE x [<!ENTITY e \"y\">]><x>&e;</x>".to_string(),
            "not a SOAP envelope",
        ),
        ("not xml".to_string(), "not a SOAP envelope"),
    ];
    for (request, expected) in cases {
        let (status, body) = post(mock.address, c.clone(), "/lps", &request)
            .await
            .expect("request");
        assert_eq!(status, 500, "{expected}: {body}");
        assert!(body.contains(expected), "expected {expected:?} in {body}");
        assert_valid_fault(&body, "insi_101");
    }
    let (status, _) = post(mock.address, c, "/other", &good)
        .await
        .expect("request");
    assert_eq!(status, 404);
}

#[tokio::test]
async fn fault_injection_is_set_and_changed_at_runtime() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let t = &m.tenants[0];
    let c = client(&m, &t.insi_auto);
    let good = traits_request(&t.structure_id, "MARTIN", "CLAIRE", "F", "2007-05-14");

    let (status, _) = admin(
        mock.admin_address,
        "PUT",
        "/faults",
        r#"{"rechercherInsAvecTraitsIdentite": {"error_rate": 1.0}}"#,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = post(mock.address, c.clone(), "/lps", &good)
        .await
        .expect("request");
    assert_eq!(status, 500);
    assert!(
        body.contains("siram:siram_40") && body.contains("soap:Receiver"),
        "{body}"
    );
    assert_valid_fault(&body, "insi_102");

    admin(
        mock.admin_address,
        "PUT",
        "/faults",
        r#"{"*": {"latency_ms": 300}}"#,
    )
    .await;
    let started = std::time::Instant::now();
    let (status, _) = post(mock.address, c.clone(), "/lps", &good)
        .await
        .expect("request");
    assert_eq!(status, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    admin(
        mock.admin_address,
        "PUT",
        "/faults",
        r#"{"*": {"reset_after_bytes": 100}}"#,
    )
    .await;
    let err = post(mock.address, c.clone(), "/lps", &good)
        .await
        .expect_err("cut body");
    assert!(err.starts_with("body"), "{err}");

    admin(
        mock.admin_address,
        "PUT",
        "/faults",
        r#"{"*": {"slow_body_bytes_per_sec": 4000}}"#,
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = post(mock.address, c.clone(), "/lps", &good)
        .await
        .expect("slow");
    assert_eq!(status, 200);
    assert!(
        started.elapsed()
            >= std::time::Duration::from_millis(100 * (body.len() as u64 / 400).saturating_sub(1))
    );

    let (status, err) = admin(
        mock.admin_address,
        "PUT",
        "/faults",
        r#"{"*": {"error_rate": 3}}"#,
    )
    .await;
    assert_eq!(status, 400, "{err}");
    let (_, faults) = admin(mock.admin_address, "GET", "/faults", "").await;
    assert_eq!(faults["*"]["slow_body_bytes_per_sec"], 4000);
    let (status, health) = admin(mock.admin_address, "GET", "/health", "").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    assert_eq!(
        mock.stats
            .count("rechercherInsAvecTraitsIdentite", "injected_fault"),
        1
    );
}

#[tokio::test]
async fn search_by_carte_vitale_answers_by_nir() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let t = &m.tenants[0];
    let traits = traits_request(&t.structure_id, "X", "Y", "F", "2007-05-14");
    let body_start = traits.find("<RECSANSVITALE").expect("body");
    let body_end = traits.find("</soap:Body>").expect("end");
    let vitale = |nir: &str| {
        format!(
            "{}<RECVITALE xmlns=\"http://www.cnamts.fr/INSiRecVit\"><MatriculeIndividu><NumIdentifiant>{nir}</NumIdentifiant></MatriculeIndividu><DateNaissance>2007-05-14</DateNaissance></RECVITALE>{}",
            &traits[..body_start],
            &traits[body_end..]
        )
        .replace(":rechercherInsAvecTraitsIdentite</wsa:Action>", ":rechercherInsAvecCarteVitale</wsa:Action>")
    };
    let c = client(&m, &t.insi_manu);
    let (status, body) = post(mock.address, c.clone(), "/lps", &vitale("2070585756270"))
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");
    let result = assert_valid_result(&body);
    assert!(
        result.contains("<CodeCR>00</CodeCR>") && result.contains("<Cle>97</Cle>"),
        "{result}"
    );
    let (_, body) = post(mock.address, c, "/lps", &vitale("1999999999999"))
        .await
        .expect("request");
    assert!(assert_valid_result(&body).contains("<CodeCR>01</CodeCR>"));
    assert_eq!(mock.stats.count("rechercherInsAvecCarteVitale", "cr00"), 1);
}

#[tokio::test]
async fn tls12_and_tls13_are_both_served() {
    let m = shared_test_pki().expect("PKI");
    let mock = start(&m).await;
    let t = &m.tenants[0];
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let chain: Vec<_> =
            rustls_pki_types::pem::PemObject::pem_file_iter(m.path(&t.insi_auto.chain))
                .expect("chain")
                .flatten()
                .collect::<Vec<rustls_pki_types::CertificateDer<'static>>>();
        let key: rustls_pki_types::PrivateKeyDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_file(m.path(&t.insi_auto.key)).expect("key");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(m.path(&m.ca.root))
            .expect("root")
            .flatten()
        {
            roots.add(c).expect("root");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
        let (status, body) = post(
            mock.address,
            Arc::new(config),
            "/lps",
            &traits_request(&t.structure_id, "MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await
        .expect("request");
        assert_eq!(status, 200, "{version:?}: {body}");
    }
}
