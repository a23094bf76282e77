//! Connection reuse: over 1,000 sequential requests the upstream TLS handshakes stay
//! within the pool size (counted by the proxy and by the mock); internal clients may
//! speak HTTP/1.1 keep-alive or cleartext HTTP/2.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use passerelle_e2e::messages::{find_documents, insi_search_bare, vihf_headers};
use passerelle_e2e::{Harness, SOAP_CT, TOKEN};

fn request(path: &str, body: &str, extra: &[(&str, String)]) -> http::Request<Full<Bytes>> {
    let mut r = http::Request::post(path)
        .header(http::header::HOST, "passerelle")
        .header(http::header::CONTENT_TYPE, SOAP_CT)
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("x-passerelle-tenant", "ch-test-a");
    for (k, v) in extra {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

#[tokio::test]
async fn thousand_sequential_requests_need_one_handshake_per_pool() {
    let h = Harness::start().await;
    let mut sender = passerelle_e2e::http1(h.proxy().address).await;
    let insi = insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14");
    for i in 0..1000 {
        sender.ready().await.expect("ready");
        let response = sender
            .send_request(request("/insi/auto", &insi, &[]))
            .await
            .expect("response");
        let reply = passerelle_e2e::read_reply(response).await;
        assert_eq!(reply.status, 200, "request {i}");
        let body = reply.body;
        assert!(
            body.windows(13).any(|w| w == b"<CodeCR>00</C"),
            "request {i}"
        );
    }
    let vihf: Vec<(&str, String)> = vihf_headers(&h.eg(0));
    for i in 0..100 {
        sender.ready().await.expect("ready");
        let response = sender
            .send_request(request("/dmp/registry", &find_documents(), &vihf))
            .await
            .expect("response");
        assert_eq!(response.status(), 200, "DMP request {i}");
        response.into_body().collect().await.expect("body");
    }
    let state = h.proxy().state();
    let mut used = 0;
    for pool in state.pools() {
        let handshakes = pool.stats.handshakes();
        let requests = pool.stats.requests.load(Ordering::Relaxed);
        if requests > 0 {
            used += 1;
            // Sequential requests: a pool of one connection, so one handshake.
            assert_eq!(
                handshakes,
                1,
                "{}: {handshakes} handshakes for {requests} requests",
                pool.name()
            );
        }
    }
    assert_eq!(used, 2, "the INSI-AUTO pool and the DMP registry pool");
    assert_eq!(h.insi.stats.to_json()["handshakes"], 1);
    assert_eq!(h.dmp.stats.to_json()["handshakes"], 1);
}

#[tokio::test]
async fn cleartext_http2_clients_are_served() {
    let h = Harness::start().await;
    let tcp = tokio::net::TcpStream::connect(h.proxy().address)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    let insi = insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14");
    let mut responses = Vec::new();
    for _ in 0..8 {
        responses.push(sender.send_request(request("/insi/manu", &insi, &[])));
    }
    for r in responses {
        let response = r.await.expect("response");
        assert_eq!(response.version(), http::Version::HTTP_2);
        let reply = passerelle_e2e::read_reply(response).await;
        assert_eq!(reply.status, 200);
        let body = reply.body;
        assert!(String::from_utf8_lossy(&body).contains("<CodeCR>00</CodeCR>"));
    }
}
