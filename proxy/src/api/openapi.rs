//! `GET /api/openapi.json`: the OpenAPI 3.1 description of the JSON API, checked in as
//! `proxy/openapi.json` and built into the binary, so the document served is the one
//! the end-to-end test checks every example of against the running server. Served
//! without credentials: it describes the API and holds no data.

use bytes::Bytes;
use http::{HeaderValue, Response};

use crate::body::ProxyBody;

/// The document, as checked in.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

/// The document as an answer.
pub fn response() -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from_static(DOCUMENT.as_bytes())));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_json() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for path in ["/api/insi/search", "/api/insi/vitale", "/api/openapi.json"] {
            assert!(doc["paths"].get(path).is_some(), "{path}");
        }
    }
}
