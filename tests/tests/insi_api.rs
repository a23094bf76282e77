//! The INSi JSON API end to end: `POST /api/insi/search` and `/api/insi/vitale` through
//! Passerelle to the XSD-validating mock INSi. Found, not found, several, the first-name
//! fallback (all first names, then each alone), input refused at the edge with the
//! field named and nothing sent, a CNAM fault as a JSON error with its codes, the
//! contexts completed as the SOAP route completes them, access control, and the audit
//! line of a JSON search equal to the SOAP search's.

use std::collections::BTreeMap;

use passerelle_e2e::messages::insi_search_bare;
use passerelle_e2e::{Harness, Options, Reply, SOAP_CT, spec, xmllint};
use passerelle_mocks::faults::FaultSpec;
use passerelle_soap::Envelope;
use passerelle_soap::envelope::standalone;
use passerelle_soap::insi::{CTXBAM_NS, CTXLPS_NS};
use serde_json::{Value, json};

const TENANT: &str = "ch-test-a";

async fn search(h: &Harness, body: Value) -> Reply {
    h.post_json("/api/insi/search", TENANT, &body).await
}

fn martin(first_names: &[&str], mode: &str) -> Value {
    json!({
        "birth_name": "MARTIN",
        "first_names": first_names,
        "sex": "F",
        "birth_date": "2007-05-14",
        "mode": mode,
    })
}

/// What the mock received, oldest first: the `Prenom` of each traits search.
fn prenoms_sent(h: &Harness) -> Vec<String> {
    h.insi
        .stats
        .recent_bodies()
        .iter()
        .map(|b| {
            let env = Envelope::parse(std::str::from_utf8(&b.body).expect("UTF-8")).expect("env");
            let (body, _) = env.body_element().expect("body");
            passerelle_soap::envelope::find_text(body, "Prenom").unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn found_with_every_first_name_in_one_request_completed_like_the_soap_route() {
    let h = Harness::start().await;
    let reply = search(&h, martin(&["CLAIRE", "ANNE"], "auto")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.content_type(), "application/json");
    let v = reply.json();
    assert_eq!(v["result"], "found");
    assert_eq!(v["cr"], "00");
    assert_eq!(v["attempts"], 1);
    assert_eq!(
        v["ins"],
        json!({"nir": "2070585756270", "key": "97", "oid": "1.2.250.1.213.1.4.10"})
    );
    assert_eq!(v["traits"]["first_names"], json!(["CLAIRE", "ANNE"]));
    assert_eq!(v["traits"]["birth_place"], "85756");
    assert_eq!(v["history"], json!([]));
    assert_eq!(
        v["request_id"].as_str(),
        reply
            .headers
            .get("x-request-id")
            .and_then(|h| h.to_str().ok())
    );
    assert_eq!(prenoms_sent(&h), ["CLAIRE ANNE"]);

    // What went upstream: RECSANSVITALE and the contexts Passerelle adds to a SOAP
    // request without them, valid against the CNAM XSDs, with the INSI-AUTO certificate.
    let sent = h.insi.stats.recent_bodies().pop().expect("body");
    let env = Envelope::parse(std::str::from_utf8(&sent.body).expect("UTF-8")).expect("env");
    let xsd = spec().join("insi/xsd");
    for (ns, local, file) in [
        (
            CTXLPS_NS,
            "ContexteLPS",
            "CTX/ROOT_ctxlps_CTXLPS_V01_00.xsd",
        ),
        (
            CTXBAM_NS,
            "ContexteBAM",
            "CTX/ROOT_ctxbam_CTXBAM_V01_02.xsd",
        ),
    ] {
        let (block, scope) = env.header(ns, local).expect(local);
        let (ok, out) = xmllint(&standalone(block, &scope), &xsd.join(file));
        assert!(ok, "{local}: {out}");
    }
    let (body, scope) = env.body_element().expect("body");
    let (ok, out) = xmllint(
        &standalone(body, &scope),
        &xsd.join("ServiceIdentiteCertifiee/INSi_RECSANS_INS.xsd"),
    );
    assert!(ok, "{out}");
    let stats = h.insi.stats.to_json();
    assert_eq!(stats["clients"][h.subject(0, "insi_auto")], 1, "{stats}");
}

#[tokio::test]
async fn first_name_fallback_tries_each_first_name_alone_in_turn() {
    let h = Harness::start().await;
    // INSi knows MARTIN CLAIRE ANNE: "ANNE CLAIRE" and "ANNE" find nobody, "CLAIRE" her.
    let reply = search(&h, martin(&["ANNE", "CLAIRE"], "manu")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["result"], "found");
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["first_names_sent"], json!(["CLAIRE"]));
    assert_eq!(v["ins"]["nir"], "2070585756270");
    assert_eq!(prenoms_sent(&h), ["ANNE CLAIRE", "ANNE", "CLAIRE"]);
    assert_eq!(
        h.insi.stats.to_json()["clients"][h.subject(0, "insi_manu")],
        3
    );
    // Each request sent is an audit line of this request, with its own MessageID; only
    // the one that found her names the INS.
    let lines: Vec<Value> = h
        .audit_lines()
        .into_iter()
        .filter(|l| l["request_id"] == v["request_id"])
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let ids: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["message_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 3, "one MessageID per request");
    assert_eq!(
        lines
            .iter()
            .map(|l| l["patient_ins"].as_str().expect("ins"))
            .collect::<Vec<_>>(),
        ["", "", "207058575627097"]
    );
    for l in &lines {
        assert_eq!(l["insi_mode"], "manu");
        assert_eq!(l["action"], "rechercherInsAvecTraitsIdentite");
        assert_eq!(l["outcome"], "ok");
    }

    // The first-name order does not matter when every first name is given: found at once.
    let reply = search(&h, martin(&["CLAIRE", "ANNE"], "manu")).await;
    assert_eq!(reply.json()["attempts"], 1);
}

#[tokio::test]
async fn several_identities_stop_the_search_and_more_first_names_tell_them_apart() {
    let h = Harness::start().await;
    let dupont = json!({
        "birth_name": "DUPONT", "first_names": ["JEAN"], "sex": "M",
        "birth_date": "1980-01-01", "mode": "auto",
    });
    let v = search(&h, dupont.clone()).await.json();
    assert_eq!(
        (v["result"].as_str(), v["cr"].as_str()),
        (Some("several"), Some("02"))
    );
    assert_eq!(v["attempts"], 1);
    assert!(v.get("ins").is_none() && v.get("traits").is_none(), "{v}");
    // The birth place tells the two homonyms apart.
    let mut with_place = dupont;
    with_place["birth_place"] = json!("69123");
    let v = search(&h, with_place).await.json();
    assert_eq!(v["result"], "found");
    assert_eq!(v["ins"]["nir"], "1800169123002");

    // Two namesakes MARIE: their second first names tell them apart, in one request.
    let legrand = |names: &[&str]| {
        json!({
            "birth_name": "LEGRAND", "first_names": names, "sex": "F",
            "birth_date": "1985-06-30", "mode": "auto",
        })
    };
    let v = search(&h, legrand(&["MARIE"])).await.json();
    assert_eq!(
        (v["result"].as_str(), v["attempts"].as_u64()),
        (Some("several"), Some(1))
    );
    let v = search(&h, legrand(&["MARIE", "LOUISE"])).await.json();
    assert_eq!(v["result"], "found");
    assert_eq!(v["ins"]["nir"], "2850633063017");
    assert_eq!(v["attempts"], 1);
    // A CR 02 is never followed by fewer first names: "MARIE JEANNE LOUISE" finds
    // nobody, "MARIE" alone finds both: several, and "JEANNE", "LOUISE" are not tried.
    let v = search(&h, legrand(&["MARIE", "JEANNE", "LOUISE"]))
        .await
        .json();
    assert_eq!(v["result"], "several");
    assert_eq!(v["attempts"], 2);
}

#[tokio::test]
async fn not_found_after_every_first_name_and_a_former_ins_in_history() {
    let h = Harness::start().await;
    let v = search(
        &h,
        json!({
            "birth_name": "INCONNU", "first_names": ["PIERRE", "PAUL"], "sex": "M",
            "birth_date": "1950-00-00", "mode": "auto",
        }),
    )
    .await
    .json();
    assert_eq!(v["result"], "not_found");
    assert_eq!(v["cr"], "01");
    assert_eq!(v["attempts"], 3);
    assert_eq!(prenoms_sent(&h), ["PIERRE PAUL", "PIERRE", "PAUL"]);

    let v = search(
        &h,
        json!({
            "birth_name": "ROUSSEAU", "first_names": ["LOUIS"], "sex": "M",
            "birth_date": "1972-03-12", "birth_place": "75056", "mode": "auto",
        }),
    )
    .await
    .json();
    assert_eq!(v["result"], "found");
    assert_eq!(
        v["history"],
        json!([{"nir": "1720399350019", "key": "59", "oid": "1.2.250.1.213.1.4.10"}])
    );
}

#[tokio::test]
async fn invalid_input_is_refused_at_the_edge_naming_the_field_and_nothing_is_sent() {
    let h = Harness::start().await;
    let base = martin(&["CLAIRE"], "auto");
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = base.clone();
        b.as_object_mut().expect("object").remove(key);
        b
    };
    for (body, field) in [
        (with("sex", json!("X")), "sex"),
        (with("sex", json!(1)), "sex"),
        (with("birth_date", json!("14/05/2007")), "birth_date"),
        (with("birth_date", json!("2007-02-30")), "birth_date"),
        (with("birth_date", json!("2999-01-01")), "birth_date"),
        (with("birth_name", json!("Martin")), "birth_name"),
        (with("birth_name", json!("MARTÍN")), "birth_name"),
        (with("birth_name", json!("MARTIN<X/>")), "birth_name"),
        (
            with("first_names", json!(["CLAIRE", "Hélène"])),
            "first_names[1]",
        ),
        (
            with("first_names", json!(["CLAIRE ANNE"])),
            "first_names[0]",
        ),
        (with("first_names", json!([])), "first_names"),
        (with("first_names", json!("CLAIRE")), "first_names"),
        (with("birth_place", json!("7505")), "birth_place"),
        (with("mode", json!("AUTO")), "mode"),
        (with("nir", json!("2070585756270")), "nir"),
        (without("birth_date"), "birth_date"),
        (without("first_names"), "first_names"),
    ] {
        let reply = search(&h, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        let e = &reply.json()["error"];
        assert_eq!(e["code"], "InvalidField", "{body}: {e}");
        assert_eq!(e["field"], field, "{body}: {e}");
        assert_eq!(e["sent_upstream"], false);
        assert_eq!(e["retryable"], false);
        assert!(
            e["message"].as_str().expect("message").starts_with(field),
            "{e}"
        );
    }
    // Not JSON, not an object, not application/json.
    for (ct, body, status, code) in [
        (
            "application/json",
            "{\"birth_name\": ",
            400,
            "MalformedJson",
        ),
        ("application/json", "[]", 400, "MalformedJson"),
        (SOAP_CT, "{}", 415, "UnsupportedMediaType"),
    ] {
        let reply = h
            .post(
                "/api/insi/search",
                &[("x-passerelle-tenant", TENANT)],
                ct,
                body,
            )
            .await;
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(reply.error_code().as_deref(), Some(code));
    }
    // The carte Vitale's key is checked against its NIR.
    let reply = h
        .post_json(
            "/api/insi/vitale",
            TENANT,
            &json!({"nir": "2070585756270", "nir_key": "12", "birth_date": "2007-05-14"}),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["field"], "nir_key");
    assert!(
        h.insi.stats.recent_bodies().is_empty(),
        "nothing sent upstream"
    );
    assert!(h.audit_lines().is_empty(), "nothing audited: nothing sent");
}

#[tokio::test]
async fn a_cnam_fault_is_a_json_error_with_its_codes_and_whether_to_retry() {
    let h = Harness::start().await;
    h.insi
        .faults
        .replace(BTreeMap::from([(
            "rechercherInsAvecTraitsIdentite".to_string(),
            FaultSpec {
                error_rate: 1.0,
                ..FaultSpec::default()
            },
        )]))
        .expect("faults");
    let reply = search(&h, martin(&["CLAIRE", "ANNE"], "auto")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    let e = &reply.json()["error"];
    assert_eq!(e["code"], "InsiFault");
    assert_eq!(e["retryable"], true);
    assert_eq!(e["sent_upstream"], true);
    assert_eq!(e["cnam"]["siram"], "siram_40");
    assert_eq!(
        reply
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("5"),
        "a retryable fault says when to try again"
    );
    assert_eq!(e["cnam"]["code"], "insi_102");
    assert_eq!(e["cnam"]["status"], 500);
    assert_eq!(e["cnam"]["reason"], "Service temporairement indisponible");
    // The fault ends the search: no other first name is tried.
    assert_eq!(h.insi.stats.recent_bodies().len(), 1);
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 1, "the request that reached INSi is audited");
    assert_eq!(lines[0]["outcome"], "upstream_fault");
    assert_eq!(lines[0]["upstream_status"], 500);
    let (_, metrics) = h.admin("/metrics").await;
    assert!(
        metrics.contains(
            r#"service="insi",action="rechercherInsAvecTraitsIdentite",outcome="upstream_fault"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn vitale_finds_by_nir_and_birth_date() {
    let h = Harness::start().await;
    let reply = h
        .post_json(
            "/api/insi/vitale",
            TENANT,
            &json!({"nir": "2070585756270", "birth_date": "2007-05-14", "birth_rank": 1, "mode": "auto"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["result"], "found");
    assert_eq!(v["ins"]["key"], "97");
    assert!(v.get("first_names_sent").is_none());
    let sent = h.insi.stats.recent_bodies().pop().expect("body");
    assert_eq!(sent.operation, "rechercherInsAvecCarteVitale");
    let env = Envelope::parse(std::str::from_utf8(&sent.body).expect("UTF-8")).expect("env");
    let (body, scope) = env.body_element().expect("body");
    let (ok, out) = xmllint(
        &standalone(body, &scope),
        &spec().join("insi/xsd/ServiceIdentiteCertifiee/INSi_RECVITALE_INS.xsd"),
    );
    assert!(ok, "{out}");
    let lines = h.audit_lines();
    assert_eq!(lines[0]["action"], "rechercherInsAvecCarteVitale");
    assert_eq!(lines[0]["patient_ins"], "207058575627097");
}

#[tokio::test]
async fn access_control_is_the_soap_routes_and_refusals_are_json() {
    let h = Harness::start_with(Options {
        clients: Some(toml::Value::Array(vec![toml::Value::Table(
            format!(
                "name = \"dpi\"\nsource_cidrs = [\"127.0.0.0/8\"]\ntoken_sha256 = \"{}\"\ntenants = [\"ch-test-a\"]\nservices = [\"dmp\"]\n",
                passerelle_certs_test::SANDBOX_TOKEN_SHA256
            )
            .parse::<toml::Table>()
            .expect("client"),
        )])),
        ..Options::default()
    })
    .await;
    let body = martin(&["CLAIRE"], "auto");
    let reply = search(&h, body.clone()).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.error_code().as_deref(), Some("ServiceNotAllowed"));
    let reply = h
        .post(
            "/api/insi/search",
            &[("authorization", "Bearer nope")],
            "application/json",
            body.to_string(),
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code().as_deref(), Some("UnknownClient"));
    assert!(reply.headers.contains_key(http::header::WWW_AUTHENTICATE));
    let reply = h.post_json("/api/insi/search", "ch-test-b", &body).await;
    assert_eq!(reply.error_code().as_deref(), Some("TenantNotAllowed"));
    // The wrong method on an API route.
    let reply = h.send("GET", "/api/insi/search", &[], None, "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.error_code().as_deref(), Some("MethodNotAllowed"));
    assert_eq!(
        reply
            .headers
            .get(http::header::ALLOW)
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    assert!(h.insi.stats.recent_bodies().is_empty());
    // The description is public.
    let reply = h
        .send(
            "GET",
            "/api/openapi.json",
            &[("authorization", "Bearer nope")],
            None,
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["openapi"], "3.1.0");
}

/// The audit line's fields that differ between two requests whatever they are (the
/// chain link included).
const PER_REQUEST: [&str; 5] = [
    "time",
    "request_id",
    "message_id",
    "latency_ms",
    "prev_sha256",
];

#[tokio::test]
async fn the_audit_line_of_a_json_search_equals_the_soap_ones() {
    let h = Harness::start().await;
    let soap = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", TENANT)],
            SOAP_CT,
            insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(soap.status, 200, "{}", soap.text());
    let json = search(&h, martin(&["CLAIRE"], "auto")).await;
    assert_eq!(json.status, 200, "{}", json.text());
    let lines = h.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let strip = |l: &Value| {
        let mut m = l.as_object().expect("object").clone();
        for k in PER_REQUEST {
            assert!(m.remove(k).is_some(), "{k} in {l}");
        }
        m
    };
    assert_eq!(strip(&lines[0]), strip(&lines[1]));
    assert_eq!(lines[1]["patient_ins"], "207058575627097");
    assert_eq!(lines[1]["service"], "insi");
    assert_eq!(
        lines[1]["structure"],
        h.pki.tenants[0].structure_id.as_str()
    );
    assert!(
        lines[1]["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with("uuid:"))
    );
}
