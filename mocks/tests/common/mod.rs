//! A plain mutual-TLS HTTP/1.1 client (hyper + rustls) presenting certs-test material.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

pub fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec")
}

/// Client TLS trusting the test root, presenting `chain` + `key` when given.
pub fn client_config(root: &Path, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root).expect("root").flatten() {
        roots.add(c).expect("add root");
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(chain)
                .expect("chain")
                .flatten()
                .collect();
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// One SOAP POST on a fresh connection; `Err` when TLS or HTTP fails.
pub async fn post(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let (status, _, bytes) = post_raw(
        addr,
        config,
        path,
        "application/soap+xml;charset=utf-8",
        Bytes::from(body.to_string()),
    )
    .await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Plain HTTP request to the admin port.
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// `xmllint --noout --schema` on a document.
pub fn xmllint(xml: &str, xsd: &Path) -> (bool, String) {
    use std::io::Write;
    let mut f = tempfile_path();
    f.1.write_all(xml.as_bytes()).expect("write");
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .arg(&f.0)
        .output()
        .expect("xmllint");
    let _ = std::fs::remove_file(&f.0);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tempfile_path() -> (PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("mock-{}.xml", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).expect("create");
    (path, file)
}

/// One POST with a given Content-Type; returns status, response Content-Type and body.
pub async fn post_raw(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> Result<(u16, String, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", "localhost")
        .header("content-type", content_type)
        .body(Full::new(body))
        .expect("request");
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, ct, bytes))
}
