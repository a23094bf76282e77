//! The JSON API of the internal listener, for internal systems that would rather not
//! write SOAP: `POST /api/insi/search` and `POST /api/insi/vitale` ([`insi`]), and
//! `GET /api/openapi.json` ([`openapi`]), its description. Access control, limits,
//! audit and metrics are the SOAP routes' own: the API is routes of the same pipeline.
//!
//! This module owns the JSON edge: the request body read into a [`Fields`] object (one
//! document, no unknown member, every value typed by [`input`]) and answers written as
//! JSON. Refusals are written by [`crate::fault`], like every other.

pub mod input;
pub mod insi;
pub mod openapi;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value};

use crate::body::ProxyBody;
use crate::fault::ProxyError;

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The members of a JSON request object, taken one by one with their type checked;
/// each refusal names its member.
#[derive(Debug)]
pub struct Fields {
    members: Map<String, Value>,
}

/// What a JSON member holds, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An invalid member.
pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ProxyError {
    ProxyError::InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

impl Fields {
    /// Reads an `application/json` body holding one object whose members are all among
    /// `allowed`.
    pub fn read(content_type: &str, body: &[u8], allowed: &[&str]) -> Result<Self, ProxyError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" {
            return Err(ProxyError::NotJson(content_type.to_string()));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ProxyError::MalformedJson(e.to_string()))?;
        let Value::Object(members) = value else {
            return Err(ProxyError::MalformedJson(format!(
                "the body is {}, not an object",
                kind(&value)
            )));
        };
        if let Some(unknown) = members.keys().find(|k| !allowed.contains(&k.as_str())) {
            // A member name is client text (it could even be patient data): named only
            // when short, never in full.
            let name = if unknown.chars().count() <= 32 {
                unknown.clone()
            } else {
                "(a member name over 32 characters)".to_string()
            };
            return Err(invalid(
                name,
                format!("unknown member: the members are {}", allowed.join(", ")),
            ));
        }
        Ok(Self { members })
    }

    /// A string member, if present (`null` counts as absent).
    pub fn string(&mut self, name: &str) -> Result<Option<String>, ProxyError> {
        match self.members.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(
                name,
                format!("must be a string, not {}", kind(&other)),
            )),
        }
    }

    /// A string member that must be present.
    pub fn required_string(&mut self, name: &str) -> Result<String, ProxyError> {
        self.string(name)?
            .ok_or_else(|| invalid(name, "is required"))
    }

    /// An array of strings, if present; a refusal names the item (`first_names[1]`).
    pub fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, ProxyError> {
        match self.members.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(invalid(
                        format!("{name}[{i}]"),
                        format!("must be a string, not {}", kind(&other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(invalid(
                name,
                format!("must be an array of strings, not {}", kind(&other)),
            )),
        }
    }

    /// A whole number member, if present.
    pub fn integer(&mut self, name: &str) -> Result<Option<i64>, ProxyError> {
        match self.members.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(name, "must be a whole number")),
            Some(other) => Err(invalid(
                name,
                format!("must be a number, not {}", kind(&other)),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_typed_and_refusals_name_them() {
        let code_and_field = |r: Result<Fields, ProxyError>| match r {
            Err(ProxyError::InvalidField { field, .. }) => ("InvalidField", field),
            Err(e) => (e.code(), String::new()),
            Ok(_) => ("ok", String::new()),
        };
        assert_eq!(
            code_and_field(Fields::read("text/plain", b"{}", &[])).0,
            "UnsupportedMediaType"
        );
        assert_eq!(
            code_and_field(Fields::read("application/json", b"{", &[])).0,
            "MalformedJson"
        );
        assert_eq!(
            code_and_field(Fields::read("application/json", b"[1]", &[])).0,
            "MalformedJson"
        );
        assert_eq!(
            code_and_field(Fields::read(
                "application/json; charset=utf-8",
                br#"{"a": 1, "zz": 2}"#,
                &["a"]
            )),
            ("InvalidField", "zz".to_string())
        );
        let mut f = Fields::read(
            "application/json",
            br#"{"s": "x", "n": 3, "l": ["a", 2], "z": null}"#,
            &["s", "n", "l", "z"],
        )
        .expect("object");
        assert_eq!(f.string("s").expect("string").as_deref(), Some("x"));
        assert_eq!(f.string("z").expect("null is absent"), None);
        assert_eq!(f.integer("n").expect("number"), Some(3));
        match f.strings("l") {
            Err(ProxyError::InvalidField { field, .. }) => assert_eq!(field, "l[1]"),
            other => panic!("{other:?}"),
        }
        match f.required_string("s") {
            Err(ProxyError::InvalidField { field, message }) => {
                assert_eq!((field.as_str(), message.as_str()), ("s", "is required"));
            }
            other => panic!("{other:?}"),
        }
    }
}
