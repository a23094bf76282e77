//! Mock echo service (`/echo/...`): a generic mutual-TLS server for the `[[services]]`
//! routes. It answers every request, whatever its method, path and body, with a JSON
//! description of what it received: the client certificate (subject, serial), the
//! method, path and query, the `Content-Type` and `Accept` headers, the headers it was
//! asked to show (any `x-echo-*` header, and `authorization` and `cookie` when present,
//! so that tests can prove they never arrive), and the body (as text when it is UTF-8,
//! and in base64).
//!
//! Like the other mocks it requires a client certificate chained to the ORG
//! intermediate (the TLS layer refuses any other), and records each request in its
//! statistics by method.

use base64::Engine;
use bytes::Bytes;
use http::StatusCode;

use crate::server::{MockRequest, MockResponse, Service};

/// Where the echo answers; anything else is a 404 (a path the proxy must not reach).
pub const BASE_PATH: &str = "/echo";

/// The mock echo service.
#[derive(Debug, Default)]
pub struct MockEcho;

/// Headers shown back besides `x-echo-*`: the ones that must never arrive.
const SHOWN: [&str; 5] = [
    "authorization",
    "cookie",
    "x-passerelle-tenant",
    "x-request-id",
    "host",
];

impl Service for MockEcho {
    fn handle(&self, req: &MockRequest) -> MockResponse {
        let operation = req.method.as_str().to_string();
        let under_base = req.path == BASE_PATH
            || req
                .path
                .strip_prefix(BASE_PATH)
                .is_some_and(|rest| rest.starts_with('/'));
        if !under_base {
            return MockResponse {
                status: StatusCode::NOT_FOUND,
                content_type: "application/json".into(),
                body: Bytes::from(
                    serde_json::json!({"error": format!("the echo answers under {BASE_PATH}/")})
                        .to_string(),
                ),
                operation,
                outcome: "not_found".into(),
            };
        }
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut shown = serde_json::Map::new();
        for (name, value) in &req.headers {
            let name = name.as_str();
            if name.starts_with("x-echo-") || SHOWN.contains(&name) {
                shown.insert(
                    name.to_string(),
                    serde_json::Value::String(value.to_str().unwrap_or("").to_string()),
                );
            }
        }
        let answer = serde_json::json!({
            "client": {
                "subject": req.client.subject,
                "serial": req.client.serial_hex,
                "organizational_unit": req.client.organizational_unit,
            },
            "method": req.method.as_str(),
            "path": req.path,
            "query": req.query,
            "content_type": header("content-type"),
            "accept": header("accept"),
            "headers": shown,
            "body": std::str::from_utf8(&req.body).ok(),
            "body_base64": base64::engine::general_purpose::STANDARD.encode(&req.body),
        });
        MockResponse {
            status: StatusCode::OK,
            content_type: "application/json".into(),
            body: Bytes::from(answer.to_string()),
            operation,
            outcome: "ok".into(),
        }
    }

    fn unavailable(&self, operation: &str) -> MockResponse {
        MockResponse {
            status: StatusCode::SERVICE_UNAVAILABLE,
            content_type: "application/json".into(),
            body: Bytes::from(
                serde_json::json!({"error": "fault injection: unavailable"}).to_string(),
            ),
            operation: operation.to_string(),
            outcome: "injected_fault".into(),
        }
    }
}
