//! The `[[services]]` routes end to end: `/svc/echo/<path>` through Passerelle to the
//! mock echo server, which answers with what it received. Each tenant's request leaves
//! with that tenant's own `org_auth` certificate (the echo shows the subject) and never
//! another's; any body goes as it came; methods and paths outside the allowed ones are
//! refused before anything is sent; the internal system's credentials never leave;
//! audit, metrics and pools are those of the other routes.

use passerelle_e2e::{Harness, Options, Reply};
use serde_json::{Value, json};

async fn echo(
    h: &Harness,
    method: &str,
    path: &str,
    tenant: &str,
    ct: Option<&str>,
    body: &str,
) -> Reply {
    h.send(
        method,
        path,
        &[("x-passerelle-tenant", tenant)],
        ct,
        body.to_string(),
    )
    .await
}

/// The only headers the echo shows when nothing leaks: the service's own Host.
fn host(h: &Harness) -> Value {
    json!({ "host": format!("localhost:{}", h.echo.address.port()) })
}

fn echo_requests(h: &Harness) -> u64 {
    h.echo.stats.to_json()["clients"]
        .as_object()
        .map_or(0, |c| c.values().filter_map(Value::as_u64).sum())
}

#[tokio::test]
async fn each_tenant_reaches_the_service_with_its_own_certificate_and_any_body() {
    let h = Harness::start().await;
    for (index, tenant) in ["ch-test-a", "ch-test-b"].into_iter().enumerate() {
        let subject = h.subject(index, "org_auth");
        for (ct, body) in [
            (
                "application/json",
                r#"{"to": "dr.house@mssante.fr", "subject": "CR"}"#,
            ),
            (
                "application/soap+xml; charset=utf-8",
                r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><x xmlns="urn:x"/></s:Body></s:Envelope>"#,
            ),
            ("application/x-www-form-urlencoded", "a=1&b=%C3%A9t%C3%A9"),
        ] {
            let reply = echo(
                &h,
                "POST",
                "/svc/echo/messages/12?folder=inbox",
                tenant,
                Some(ct),
                body,
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let v = reply.json();
            assert_eq!(v["client"]["subject"], subject.as_str(), "{v}");
            assert_eq!(
                v["client"]["organizational_unit"],
                h.pki.tenants[index].structure_id.as_str()
            );
            assert_eq!(v["method"], "POST");
            assert_eq!(v["path"], "/echo/messages/12");
            assert_eq!(v["query"], "folder=inbox");
            assert_eq!(v["content_type"], ct);
            assert_eq!(v["body"], body, "forwarded as it came");
            // The internal system's token and tenant header stay with Passerelle; Host is
            // the service's.
            assert_eq!(v["headers"], host(&h), "{v}");
        }
    }
    // A GET without a body, with Accept passed on.
    let reply = h
        .send(
            "GET",
            "/svc/echo/forms",
            &[
                ("x-passerelle-tenant", "ch-test-a"),
                ("accept", "application/json"),
                ("cookie", "s=1"),
            ],
            None,
            "",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(
        (v["method"].as_str(), v["path"].as_str()),
        (Some("GET"), Some("/echo/forms"))
    );
    assert_eq!(v["accept"], "application/json");
    assert_eq!(v["body"], "");
    assert_eq!(v["headers"], host(&h), "no cookie: {v}");

    // Each tenant's certificate, and only it, in the echo's statistics.
    let stats = h.echo.stats.to_json();
    assert_eq!(stats["clients"][h.subject(0, "org_auth")], 4, "{stats}");
    assert_eq!(stats["clients"][h.subject(1, "org_auth")], 3, "{stats}");
    assert_eq!(
        stats["clients"].as_object().map(|c| c.len()),
        Some(2),
        "{stats}"
    );

    // One pool per (tenant, service) with the org_auth role.
    let (_, pools) = h.admin("/pools").await;
    let pools: Value = serde_json::from_str(&pools).expect("JSON");
    for tenant in ["ch-test-a", "ch-test-b"] {
        let name = format!("{tenant} svc/echo org_auth");
        assert!(
            pools
                .as_array()
                .expect("pools")
                .iter()
                .any(|p| p["pool"] == name.as_str()),
            "{name}: {pools}"
        );
    }
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics.contains(r#"passerelle_requests_total{tenant="ch-test-a",client="sandbox",service="svc/echo",action="POST",outcome="ok"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"passerelle_certificate_usable{tenant="ch-test-b",role="org_auth"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn methods_and_paths_outside_the_allowed_ones_are_refused_before_anything_is_sent() {
    let h = Harness::start().await;
    let a = "ch-test-a";
    for (method, path, status, code) in [
        ("PUT", "/svc/echo/messages/12", 405, "MethodNotAllowed"),
        ("DELETE", "/svc/echo/messages/12", 405, "MethodNotAllowed"),
        ("POST", "/svc/echo/admin", 403, "PathNotAllowed"),
        ("POST", "/svc/echo/messagesX", 403, "PathNotAllowed"),
        ("POST", "/svc/echo", 403, "PathNotAllowed"),
        ("POST", "/svc/echo/messages/../admin", 400, "BadPath"),
        ("POST", "/svc/echo/messages/%2e%2e/admin", 400, "BadPath"),
        ("POST", "/svc/echo/messages%2F..%2Fadmin", 400, "BadPath"),
        ("POST", "/svc/echo/messages//x", 400, "BadPath"),
        // A service not in the client's scope (unknown ones never are): refused by access
        // control, which names no configuration.
        ("POST", "/svc/unknown/messages", 403, "ServiceNotAllowed"),
    ] {
        let reply = echo(&h, method, path, a, Some("application/json"), "{}").await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        assert_eq!(reply.error_code().as_deref(), Some(code), "{method} {path}");
        assert_eq!(reply.json()["error"]["sent_upstream"], false);
    }
    let reply = echo(&h, "PUT", "/svc/echo/messages", a, None, "").await;
    assert_eq!(
        reply
            .headers
            .get(http::header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
    assert_eq!(echo_requests(&h), 0, "nothing reached the service");
    assert!(h.audit_lines().is_empty());
}

#[tokio::test]
async fn nothing_leaks_between_tenants() {
    let h = Harness::start_with(Options {
        clients: Some(toml::Value::Array(vec![toml::Value::Table(
            format!(
                "name = \"mail\"\nsource_cidrs = [\"127.0.0.0/8\"]\ntoken_sha256 = \"{}\"\ntenants = [\"ch-test-a\"]\nservices = [\"svc/echo\"]\n",
                passerelle_certs_test::SANDBOX_TOKEN_SHA256
            )
            .parse::<toml::Table>()
            .expect("client"),
        )])),
        without_org_auth: vec![1],
        ..Options::default()
    })
    .await;
    // The client is tenant A's only: tenant B is refused, whatever it sends.
    let reply = echo(
        &h,
        "POST",
        "/svc/echo/messages",
        "ch-test-b",
        Some("text/plain"),
        "x",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_code().as_deref(), Some("TenantNotAllowed"));
    // No tenant header: the client's only tenant.
    let reply = h
        .send("POST", "/svc/echo/messages", &[], Some("text/plain"), "x")
        .await;
    assert_eq!(
        reply.json()["client"]["subject"],
        h.subject(0, "org_auth").as_str()
    );
    // Many requests at once, all tenant A's: every one with A's certificate.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let address = h.proxy().address;
        tasks.push(tokio::spawn(async move {
            passerelle_e2e::post(
                address,
                &format!("/svc/echo/messages/{i}"),
                &[(
                    "authorization".into(),
                    format!("Bearer {}", passerelle_e2e::TOKEN),
                )],
                "text/plain",
                bytes::Bytes::from(format!("message {i}")),
            )
            .await
        }));
    }
    for t in tasks {
        let reply = t.await.expect("task");
        assert_eq!(
            reply.json()["client"]["subject"],
            h.subject(0, "org_auth").as_str()
        );
    }
    let stats = h.echo.stats.to_json();
    assert_eq!(
        stats["clients"].as_object().map(|c| c.len()),
        Some(1),
        "{stats}"
    );
    assert!(stats["clients"].get(h.subject(1, "org_auth")).is_none());
    // A tenant without an org_auth certificate: refused, never another's certificate.
    let h = Harness::start_with(Options {
        without_org_auth: vec![1],
        ..Options::default()
    })
    .await;
    let reply = echo(
        &h,
        "POST",
        "/svc/echo/messages",
        "ch-test-b",
        Some("text/plain"),
        "x",
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.error_code().as_deref(), Some("CertificateMissing"));
    assert_eq!(echo_requests(&h), 0);
}

#[tokio::test]
async fn access_and_audit_are_the_other_routes_and_hold_no_patient_field() {
    let h = Harness::start_with(Options {
        clients: Some(toml::Value::Array(vec![toml::Value::Table(
            format!(
                "name = \"dpi\"\nsource_cidrs = [\"127.0.0.0/8\"]\ntoken_sha256 = \"{}\"\ntenants = [\"ch-test-a\"]\nservices = [\"insi\"]\n",
                passerelle_certs_test::SANDBOX_TOKEN_SHA256
            )
            .parse::<toml::Table>()
            .expect("client"),
        )])),
        ..Options::default()
    })
    .await;
    let reply = echo(
        &h,
        "POST",
        "/svc/echo/messages",
        "ch-test-a",
        Some("text/plain"),
        "x",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error_code().as_deref(), Some("ServiceNotAllowed"));
    let reply = h
        .send(
            "POST",
            "/svc/echo/messages",
            &[("authorization", "Bearer nope")],
            Some("text/plain"),
            "x",
        )
        .await;
    assert_eq!(reply.error_code().as_deref(), Some("UnknownClient"));
    assert_eq!(echo_requests(&h), 0);

    let h = Harness::start().await;
    let reply = echo(
        &h,
        "POST",
        "/svc/echo/messages/207058575627097",
        "ch-test-a",
        Some("text/plain"),
        "x",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 1);
    let l = &lines[0];
    assert_eq!(l["service"], "svc/echo");
    // The allowed prefix, never the rest of the path (it may name a patient).
    assert_eq!(l["action"], "POST /messages");
    assert_eq!(l["structure"], h.pki.tenants[0].structure_id.as_str());
    assert_eq!(l["client"], "sandbox");
    assert_eq!(l["outcome"], "ok");
    assert_eq!(l["upstream_status"], 200);
    for field in [
        "patient_ins",
        "patient_ins_oid",
        "actor_id",
        "purpose",
        "insi_mode",
    ] {
        assert_eq!(l[field], "", "{field}: {l}");
    }
    assert!(!l.to_string().contains("207058575627097"), "{l}");
}

/// Before authentication nothing tells which services exist, nor their methods or paths:
/// every unauthenticated request gets the same refusal.
#[tokio::test]
async fn an_unauthenticated_client_learns_nothing_of_the_services() {
    let h = Harness::start().await;
    let mut codes = Vec::new();
    for (method, path) in [
        ("POST", "/svc/nosuch/x"),
        ("POST", "/svc/echo/admin"),
        ("DELETE", "/svc/echo/messages"),
        ("POST", "/svc/echo/messages"),
    ] {
        let reply = h
            .send(
                method,
                path,
                &[("authorization", "Bearer not-a-client")],
                Some("application/json"),
                "{}".to_string(),
            )
            .await;
        assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text());
        assert!(!reply.text().contains("path_prefixes"), "{}", reply.text());
        codes.push(reply.text().contains("UnknownClient"));
    }
    assert!(codes.iter().all(|c| *c), "one answer for all");
    assert_eq!(echo_requests(&h), 0);
}
