//! The checked-in OpenAPI document (`proxy/openapi.json`) against the running server:
//! it is what `GET /api/openapi.json` serves; every request example is sent to
//! Passerelle (in front of the mock INSi; an example's `x-mock-insi-faults` is set on
//! the mock first) and answered with the status and body of the response example of
//! the same name (`request_id` aside); every response example is checked that way; and
//! every answer, and every response example, fits the schema the document gives for
//! its status (a validator for the JSON Schema keywords the document uses).

use std::collections::{BTreeMap, BTreeSet};

use passerelle_e2e::Harness;
use passerelle_mocks::faults::FaultSpec;
use serde_json::Value;

const DOCUMENT: &str = include_str!("../../proxy/openapi.json");

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("non-local $ref {r}"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(doc, target)
        }
        None => v,
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The JSON Schema keywords the document uses: `$ref`, `type` (one or a list), `enum`,
/// `pattern`, `maxLength`, `minimum`, `maximum`, `required`, `properties`,
/// `additionalProperties: false`, `items`, `minItems`, `maxItems`. Errors are pushed
/// with their JSON pointer.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(t) = schema.get("type") {
        let allowed: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = type_of(v);
        if !allowed
            .iter()
            .any(|a| *a == actual || (*a == "number" && actual == "integer"))
        {
            errors.push(format!("{at}: {actual}, expected {allowed:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Value::String(s) = v {
        if let Some(p) = schema.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(p).expect("pattern").is_match(s)
        {
            errors.push(format!("{at}: {s:?} does not match {p}"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && s.chars().count() as u64 > max
        {
            errors.push(format!("{at}: longer than {max}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            errors.push(format!("{at}: {n} < {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            errors.push(format!("{at}: {n} > {max}"));
        }
    }
    if let Value::Array(items) = v {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(format!("{at}: fewer than {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            errors.push(format!("{at}: more than {max} items"));
        }
        if let Some(item) = schema.get("items") {
            for (i, x) in items.iter().enumerate() {
                validate(doc, item, x, &format!("{at}/{i}"), errors);
            }
        }
    }
    if let Value::Object(members) = v {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !members.contains_key(r) {
                errors.push(format!("{at}: {r} is required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (k, x) in members {
            match properties.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, x, &format!("{at}/{k}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: {k} is not a documented member"));
                }
                None => {}
            }
        }
    }
}

fn schema_errors(doc: &Value, schema: &Value, v: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(doc, schema, v, "", &mut errors);
    errors
}

/// The answer without what varies from run to run.
fn without_request_id(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.remove("request_id");
        if let Some(e) = m.get_mut("error").and_then(Value::as_object_mut) {
            e.remove("request_id");
        }
    }
    v
}

/// (status, schema, example value) of the response example named `name`.
fn response_example<'a>(
    doc: &'a Value,
    operation: &'a Value,
    name: &str,
) -> Option<(u16, &'a Value, &'a Value)> {
    let responses = operation["responses"].as_object()?;
    responses.iter().find_map(|(status, response)| {
        let content = &resolve(doc, response)["content"]["application/json"];
        let example = content["examples"].get(name)?;
        Some((
            status.parse().expect("status"),
            &content["schema"],
            &resolve(doc, example)["value"],
        ))
    })
}

#[tokio::test]
async fn every_example_is_what_the_running_server_answers() {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let h = Harness::start().await;

    // Served as checked in, without credentials.
    let reply = h
        .send(
            "GET",
            "/api/openapi.json",
            &[("authorization", "Bearer not-a-client")],
            None,
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), doc);

    let mut checked: BTreeSet<String> = BTreeSet::new();
    let mut sent = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operation") {
            let Some(request) = operation.get("requestBody") else {
                continue;
            };
            let content = &request["content"]["application/json"];
            for (name, example) in content["examples"].as_object().expect("examples") {
                let faults: BTreeMap<String, FaultSpec> = example
                    .get("x-mock-insi-faults")
                    .map(|f| serde_json::from_value(f.clone()).expect("faults"))
                    .unwrap_or_default();
                h.insi.faults.replace(faults).expect("faults");
                let value = &example["value"];
                let (status, schema, expected) = response_example(&doc, operation, name)
                    .unwrap_or_else(|| panic!("{method} {path}: no response example {name:?}"));
                let reply = h
                    .send(
                        &method.to_uppercase(),
                        path,
                        &[("x-passerelle-tenant", "ch-test-a")],
                        Some("application/json"),
                        value.to_string(),
                    )
                    .await;
                sent += 1;
                assert_eq!(
                    reply.status,
                    status,
                    "{method} {path} example {name}: {}",
                    reply.text()
                );
                let answer = reply.json();
                assert_eq!(
                    without_request_id(answer.clone()),
                    without_request_id(expected.clone()),
                    "{method} {path} example {name}"
                );
                assert_eq!(
                    schema_errors(&doc, schema, &answer),
                    Vec::<String>::new(),
                    "{method} {path} example {name}: the answer fits its schema"
                );
                assert_eq!(
                    schema_errors(&doc, schema, expected),
                    Vec::<String>::new(),
                    "{method} {path} example {name}: the response example fits its schema"
                );
                if (200..300).contains(&status) {
                    assert_eq!(
                        schema_errors(&doc, &content["schema"], value),
                        Vec::<String>::new(),
                        "{method} {path} example {name}: the request example fits its schema"
                    );
                }
                checked.insert(name.clone());
            }
        }
    }
    h.insi.faults.replace(BTreeMap::new()).expect("faults");
    assert!(sent >= 10, "{sent} examples sent");

    // No response example goes unchecked.
    let mut documented = BTreeSet::new();
    let mut collect = |responses: &Value| {
        for response in responses.as_object().into_iter().flat_map(|r| r.values()) {
            let examples = &resolve(&doc, response)["content"]["application/json"]["examples"];
            documented.extend(
                examples
                    .as_object()
                    .into_iter()
                    .flat_map(|e| e.keys().cloned()),
            );
        }
    };
    for item in doc["paths"].as_object().expect("paths").values() {
        for operation in item.as_object().expect("operation").values() {
            collect(&operation["responses"]);
        }
    }
    collect(&doc["components"]["responses"]);
    let unchecked: Vec<_> = documented.difference(&checked).collect();
    assert!(
        unchecked.is_empty(),
        "response examples never checked: {unchecked:?}"
    );
}

#[test]
fn the_validator_refuses_what_the_schemas_refuse() {
    let doc: Value = serde_json::from_str(DOCUMENT).expect("JSON");
    let search = serde_json::json!({"$ref": "#/components/schemas/SearchRequest"});
    let ok = serde_json::json!({"birth_name": "DE LA FONTAINE", "first_names": ["JEAN-PIERRE"], "sex": "M", "birth_date": "1950-00-00"});
    assert_eq!(schema_errors(&doc, &search, &ok), Vec::<String>::new());
    for bad in [
        serde_json::json!({"birth_name": "Martin", "first_names": ["JEAN"], "sex": "M", "birth_date": "1950-01-01"}),
        serde_json::json!({"birth_name": "MARTIN", "first_names": [], "sex": "M", "birth_date": "1950-01-01"}),
        serde_json::json!({"birth_name": "MARTIN", "first_names": ["JEAN"], "sex": "X", "birth_date": "1950-01-01"}),
        serde_json::json!({"birth_name": "MARTIN", "first_names": ["JEAN"], "sex": "M"}),
        serde_json::json!({"birth_name": "MARTIN", "first_names": ["JEAN"], "sex": "M", "birth_date": "1950-01-01", "nir": "1"}),
    ] {
        assert!(!schema_errors(&doc, &search, &bad).is_empty(), "{bad}");
    }
}
