//! Egress through the establishment's HTTP forward proxy, against a real one: tinyproxy,
//! started by each test (`scripts/install-deps.sh` installs it). The upstream mutual TLS
//! runs end to end inside the CONNECT tunnel (the mocks see the tenant's certificate);
//! pooled connections and TLS resumption work through it; the proxy's refusals become
//! faults with `SentUpstream` false; `no_proxy` and `egress = "direct"` bypass it. The
//! forward proxy's own log shows the CONNECT lines.

use std::time::Duration;

use passerelle_e2e::forward_proxy::ForwardProxy;
use passerelle_e2e::{Harness, Options};

fn egress(
    proxy: &str,
    extra: &[(&'static str, toml::Value)],
) -> Vec<(&'static str, &'static str, toml::Value)> {
    let mut keys = vec![("egress", "proxy", toml::Value::String(proxy.to_string()))];
    for (k, v) in extra {
        keys.push(("egress", k, v.clone()));
    }
    keys
}

async fn pool(h: &Harness, name: &str) -> serde_json::Value {
    let (_, text) = h.admin("/pools").await;
    let pools: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    pools
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["pool"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no pool {name}: {text}"))
}

/// DMP and INSi through the forward proxy with Basic authentication: the mocks see the
/// tenant's own client certificate (TLS end to end in the tunnel), the second request
/// reuses the pooled connection, and the proxy's log has one CONNECT per connection.
#[tokio::test]
async fn dmp_and_insi_go_through_the_forward_proxy_with_tls_end_to_end() {
    let fp = ForwardProxy::start(Some(("passerelle", "s3cret")));
    let dir = std::env::temp_dir().join(format!(
        "passerelle-egress-pw-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let password = dir.join("egress.password");
    std::fs::write(&password, "s3cret\n").expect("password");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut keys = egress(
        &fp.url(),
        &[
            ("username", "passerelle".into()),
            ("password_file", password.display().to_string().into()),
        ],
    );
    // INSi connections idle for more than 1 s are dropped: the next one resumes TLS.
    keys.push(("insi.timeouts", "idle", "1s".into()));
    let h = Harness::start_with(Options {
        keys,
        ..Options::default()
    })
    .await;
    for _ in 0..2 {
        let reply = h.dmp_query_a().await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let reply = h.insi_search_a().await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // End-to-end mutual TLS: the services saw the tenant's certificates.
    let dmp = h.dmp.stats.to_json();
    let last = dmp["recent"]
        .as_array()
        .and_then(|r| r.last())
        .expect("DMP saw it");
    assert_eq!(
        last["client_subject"],
        h.subject(0, "dmp_auth").as_str(),
        "{last}"
    );
    let insi = pool(&h, "ch-test-a insi insi_auto").await;
    assert_eq!(insi["route"], format!("127.0.0.1:{}", fp.port));
    assert_eq!(insi["requests"], 2);
    assert_eq!(insi["connections"], 1, "one tunnel, kept alive: {insi}");
    assert_eq!(insi["full_handshakes"], 1);
    let registry = pool(&h, "ch-test-a dmp/registry dmp_auth").await;
    assert_eq!(registry["connections"], 1, "{registry}");
    // A new tunnel after the idle timeout: the TLS session is resumed inside it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = h.insi_search_a().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let insi = pool(&h, "ch-test-a insi insi_auto").await;
    assert_eq!(insi["connections"], 2, "{insi}");
    assert_eq!(insi["full_handshakes"], 1, "{insi}");
    assert_eq!(insi["resumed_handshakes"], 1, "{insi}");
    let connects = fp.connects();
    assert_eq!(
        connects.len(),
        3,
        "one CONNECT per connection: {connects:?}"
    );
    let dmp_port = h.dmp.address.port();
    let insi_port = h.insi.address.port();
    assert!(
        connects
            .iter()
            .any(|l| l.contains(&format!("CONNECT localhost:{dmp_port} "))),
        "{connects:?}"
    );
    assert!(
        connects
            .iter()
            .any(|l| l.contains(&format!("CONNECT localhost:{insi_port} "))),
        "{connects:?}"
    );
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "passerelle_upstream_pool_info{{tenant=\"ch-test-a\",service=\"insi\",role=\"insi_auto\",url=\"https://localhost:{insi_port}/lps\",route=\"127.0.0.1:{}\"}} 1",
            fp.port
        )),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxy that wants credentials (none given, or wrong ones): `EgressProxyRefused`
/// naming the status and the settings to fix, nothing sent.
#[tokio::test]
async fn a_proxy_that_refuses_the_tunnel_is_a_clear_fault_and_nothing_was_sent() {
    let fp = ForwardProxy::start(Some(("passerelle", "s3cret")));
    let h = Harness::start_with(Options {
        keys: egress(&fp.url(), &[]),
        ..Options::default()
    })
    .await;
    let reply = h.dmp_query_a().await;
    let text = reply.text();
    assert_eq!(reply.status, 502, "{text}");
    assert!(text.contains("EgressProxyRefused"), "{text}");
    assert!(text.contains("407"), "{text}");
    assert!(text.contains("egress] username"), "{text}");
    assert!(
        text.contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>"),
        "{text}"
    );
    assert_eq!(
        h.dmp.stats.to_json()["recent"]
            .as_array()
            .map_or(0, Vec::len),
        0
    );
    assert_eq!(fp.connects().len(), 1, "the CONNECT was tried");
    drop(h);

    // Wrong credentials: refused too, and the fault says they were not accepted.
    let dir = std::env::temp_dir().join(format!(
        "passerelle-egress-pw-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let password = dir.join("egress.password");
    std::fs::write(&password, "wrong").expect("password");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let h = Harness::start_with(Options {
        keys: egress(
            &fp.url(),
            &[
                ("username", "passerelle".into()),
                ("password_file", password.display().to_string().into()),
            ],
        ),
        ..Options::default()
    })
    .await;
    let reply = h.insi_search_a().await;
    let text = reply.text();
    assert_eq!(reply.status, 502, "{text}");
    // tinyproxy answers 401 to wrong credentials (407 to none).
    assert!(
        text.contains("HTTP 401") || text.contains("HTTP 407"),
        "{text}"
    );
    assert!(text.contains("does not accept"), "{text}");
    assert!(
        !text.contains("wrong"),
        "the password is not echoed: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The proxy is down: `EgressProxyUnreachable`, nothing sent.
#[tokio::test]
async fn a_proxy_that_is_down_is_a_clear_fault() {
    // Port 1 (tcpmux): privileged and unused; a freed ephemeral port could be taken by
    // another test's server meanwhile.
    let port = 1;
    let h = Harness::start_with(Options {
        keys: egress(&format!("http://127.0.0.1:{port}"), &[]),
        ..Options::default()
    })
    .await;
    let reply = h.insi_search_a().await;
    let text = reply.text();
    assert_eq!(reply.status, 502, "{text}");
    assert!(text.contains("EgressProxyUnreachable"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        text.contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>"),
        "{text}"
    );
}

/// `no_proxy` naming the services' host, and `egress = "direct"` for one service, go
/// around the proxy: no CONNECT in its log for them.
#[tokio::test]
async fn no_proxy_and_direct_bypass_the_proxy() {
    let fp = ForwardProxy::start(None);
    let h = Harness::start_with(Options {
        keys: egress(
            &fp.url(),
            &[("no_proxy", toml::Value::Array(vec![".localhost".into()]))],
        ),
        ..Options::default()
    })
    .await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    assert_eq!(h.insi_search_a().await.status, 200);
    assert!(fp.connects().is_empty(), "{:?}", fp.connects());
    assert_eq!(
        pool(&h, "ch-test-a insi insi_auto").await["route"],
        "direct"
    );
    drop(h);

    let mut keys = egress(&fp.url(), &[]);
    keys.push(("dmp", "egress", "direct".into()));
    let h = Harness::start_with(Options {
        keys,
        ..Options::default()
    })
    .await;
    assert_eq!(h.dmp_query_a().await.status, 200);
    assert_eq!(h.insi_search_a().await.status, 200);
    let connects = fp.connects();
    assert_eq!(
        connects.len(),
        1,
        "only INSi went through the proxy: {connects:?}"
    );
    assert!(connects[0].contains(&format!("CONNECT localhost:{} ", h.insi.address.port())));
}

/// A proxy that accepts the connection but never answers CONNECT: a timeout within the
/// connect timeout, naming the tunnel, nothing sent.
#[tokio::test]
async fn a_silent_proxy_times_out_within_the_connect_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("address").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let mut keys = egress(&format!("http://127.0.0.1:{port}"), &[]);
    keys.push(("insi.timeouts", "connect", "1s".into()));
    let h = Harness::start_with(Options {
        keys,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let reply = h.insi_search_a().await;
    let text = reply.text();
    assert_eq!(reply.status, 504, "{text}");
    assert!(text.contains("UpstreamTimeout"), "{text}");
    assert!(
        text.contains("CONNECT tunnel through the egress proxy"),
        "{text}"
    );
    assert!(
        text.contains("<passerelle:SentUpstream>false</passerelle:SentUpstream>"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}
