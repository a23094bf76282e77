//! `cargo bench -p passerelle-mocks --bench insi_throughput`
//!
//! Requests/s of the mock INSi alone: the server on one single-threaded runtime (one
//! core), a keep-alive mutual-TLS client on another thread with 16 connections, for
//! a bounded time. Prints the rate; it is not a pass/fail test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use passerelle_mocks::faults::Faults;
use passerelle_mocks::insi::traits_request;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const CONNECTIONS: usize = 16;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);

fn main() {
    let m = passerelle_certs_test::shared_test_pki().expect("PKI");
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/insi/xsd");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_pki = m.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let any = "127.0.0.1:0".parse().expect("addr");
            let running =
                passerelle_mocks::start_insi(&server_pki, &spec, any, any, Faults::default())
                    .await
                    .expect("start");
            addr_tx.send(running.address).expect("send addr");
            std::future::pending::<()>().await;
        });
    });
    let addr = addr_rx.recv().expect("address");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(m.path(&m.ca.root))
        .expect("root")
        .flatten()
    {
        roots.add(c).expect("root");
    }
    let t = &m.tenants[0];
    let chain: Vec<_> = CertificateDer::pem_file_iter(m.path(&t.insi_auto.chain))
        .expect("chain")
        .flatten()
        .collect();
    let key = PrivateKeyDer::from_pem_file(m.path(&t.insi_auto.key)).expect("key");
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client auth"),
    );
    let body = Bytes::from(traits_request(
        &t.structure_id,
        "MARTIN",
        "CLAIRE",
        "F",
        "2007-05-14",
    ));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let elapsed = rt.block_on(async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let (config, body, count, errors) =
                (config.clone(), body.clone(), count.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tcp.set_nodelay(true).expect("nodelay");
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(ServerName::try_from("localhost").expect("name"), tcp)
                    .await
                    .expect("tls");
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .expect("http");
                tokio::spawn(conn);
                let deadline = started + WARM_UP + MEASURE;
                while Instant::now() < deadline {
                    let req = http::Request::post("/lps")
                        .header("host", "localhost")
                        .header("content-type", "application/soap+xml;charset=utf-8")
                        .body(Full::new(body.clone()))
                        .expect("request");
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status().is_success();
                            let _ = resp.into_body().collect().await;
                            if Instant::now() > started + WARM_UP {
                                if ok {
                                    count.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        MEASURE
    });
    let n = count.load(Ordering::Relaxed);
    println!(
        "mock-insi, server on 1 core, {CONNECTIONS} keep-alive mTLS connections, {:.0} s: {n} requests, {:.0} req/s, {} errors",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );
}
