//! The internal listener over TLS: internal systems identified by the certificate they
//! present (fingerprint), by their token, or refused.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use passerelle_e2e::messages::insi_search_bare;
use passerelle_e2e::{Harness, Options, SOAP_CT, TOKEN};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn sha256_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .replace(':', "")
        .to_lowercase()
}

fn tls_client(
    h: &Harness,
    leaf: Option<&passerelle_certs_test::LeafFiles>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(h.pki.path(&h.pki.ca.root)).expect("root"))
        .expect("add root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match leaf {
        Some(l) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(h.pki.path(&l.chain))
                    .expect("chain")
                    .collect::<Result<_, _>>()
                    .expect("certs");
            let key = PrivateKeyDer::from_pem_file(h.pki.path(&l.key)).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn post_tls(
    h: &Harness,
    connector: &tokio_rustls::TlsConnector,
    token: Option<&str>,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(h.proxy().address)
        .await
        .expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(conn);
    let mut req = http::Request::post("/insi/auto")
        .header("host", "localhost")
        .header("content-type", SOAP_CT)
        .header("x-passerelle-tenant", "ch-test-a");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = Bytes::from(insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"));
    let response = sender
        .send_request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    let reply = passerelle_e2e::read_reply(response).await;
    (reply.status, reply.text())
}

#[tokio::test]
async fn clients_are_identified_by_certificate_or_token_over_tls() {
    let pki = passerelle_certs_test::shared_test_pki().expect("PKI");
    // The internal system's certificate (any leaf under the client CA will do here).
    let sih = pki.tenants[1].insi_manu.clone();
    let stranger = pki.tenants[1].dmp_auth.clone();
    let mut tls = toml::Table::new();
    tls.insert(
        "cert".into(),
        pki.path(&pki.server.chain).display().to_string().into(),
    );
    tls.insert(
        "key".into(),
        pki.path(&pki.server.key).display().to_string().into(),
    );
    tls.insert(
        "client_ca".into(),
        toml::Value::Array(vec![pki.path(&pki.ca.root).display().to_string().into()]),
    );
    let mut by_cert = toml::Table::new();
    by_cert.insert("name".into(), "lab-by-cert".into());
    by_cert.insert(
        "source_cidrs".into(),
        toml::Value::Array(vec!["127.0.0.0/8".into()]),
    );
    by_cert.insert("cert_sha256".into(), sha256_of(&pki.path(&sih.cert)).into());
    by_cert.insert(
        "tenants".into(),
        toml::Value::Array(vec!["ch-test-a".into()]),
    );
    by_cert.insert("services".into(), toml::Value::Array(vec!["insi".into()]));
    let mut by_token = toml::Table::new();
    by_token.insert("name".into(), "dpi-by-token".into());
    by_token.insert(
        "source_cidrs".into(),
        toml::Value::Array(vec!["127.0.0.0/8".into()]),
    );
    by_token.insert(
        "token_sha256".into(),
        "24b9cd79145e7e5dbc8a202c85b29f5c13a1b7a9bf060a5d9dfa6c1e756c0a92".into(),
    );
    by_token.insert(
        "tenants".into(),
        toml::Value::Array(vec!["ch-test-a".into()]),
    );
    by_token.insert("services".into(), toml::Value::Array(vec!["insi".into()]));
    let h = Harness::start_with(Options {
        listener: vec![("tls", toml::Value::Table(tls))],
        clients: Some(toml::Value::Array(vec![
            toml::Value::Table(by_cert),
            toml::Value::Table(by_token),
        ])),
        ..Options::default()
    })
    .await;

    let (status, body) = post_tls(&h, &tls_client(&h, Some(&sih)), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<CodeCR>00</CodeCR>"));
    let (status, body) = post_tls(&h, &tls_client(&h, None), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("passerelle:MissingCredentials"), "{body}");
    let (status, body) = post_tls(&h, &tls_client(&h, Some(&stranger)), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("passerelle:UnknownClient"), "{body}");
    let (status, body) = post_tls(&h, &tls_client(&h, None), Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h.insi
            .stats
            .count("rechercherInsAvecTraitsIdentite", "cr00"),
        2
    );
}
