//! The other services reached over mutual TLS (`[[services]]`: an MSSanté operator's
//! API, ROR, ...) at `/svc/<name>/<path>`: the request's path checked and normalised at
//! the edge ([`ServicePath`]), its method and path against the service's allowed ones
//! ([`check`], phase 2), then the request for the tenant's `org_auth` pool ([`build`],
//! phase 5): the body as it came (JSON, SOAP, a form), `Content-Type`, `Accept` and the
//! service's `forward_headers`, nothing else of the internal system's (never its
//! `Authorization`, its tenant header or its cookies).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use passerelle_config::{CertRole, MtlsService, ServiceMethod, ServiceRetry};
use time::OffsetDateTime;

use crate::exchange::{Exchange, Operation};
use crate::fault::ProxyError;
use crate::state::TenantRuntime;
use crate::upstream::{Outgoing, Retry};

/// A path below a service's URL, as it goes upstream: `/` alone, or `/` then segments
/// (a trailing `/` allowed), none of them empty, `.` or `..` (with or without path
/// parameters: `..;x`), none holding a backslash or an encoded `/`, `\`, `.`
/// or control character (`%2F`, `%5C`, `%2E`, ...). So the path Passerelle checks
/// against the allowed prefixes is the path the service resolves: no `..` can climb out
/// of an allowed prefix, whether the service decodes it or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePath(String);

impl ServicePath {
    /// `raw` is what follows `/svc/<name>` in the request, still percent-encoded.
    pub fn parse(raw: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::BadPath(why.to_string());
        if raw.is_empty() || raw == "/" {
            return Ok(Self("/".into()));
        }
        let Some(rest) = raw.strip_prefix('/') else {
            return Err(bad("the path must start with '/'"));
        };
        for segment in rest.strip_suffix('/').unwrap_or(rest).split('/') {
            if segment.is_empty() {
                return Err(bad("an empty segment ('//')"));
            }
            // `..;x` is `..` to servers that drop path parameters (Tomcat and the like).
            let name = segment.split(';').next().unwrap_or(segment);
            if name == "." || name == ".." {
                return Err(bad("a '.' or '..' segment"));
            }
            let bytes = segment.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'%' => {
                        let decoded = segment
                            .get(i + 1..i + 3)
                            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| bad("a '%' not followed by two hexadecimal digits"))?;
                        if matches!(decoded, b'/' | b'\\' | b'.')
                            || decoded < 0x20
                            || decoded == 0x7f
                        {
                            return Err(bad(
                                "an encoded '/', '\\\\', '.' or control character (%2F, %5C, %2E, ...)",
                            ));
                        }
                        i += 3;
                    }
                    b'\\' => return Err(bad("a backslash")),
                    _ => i += 1,
                }
            }
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request of a `/svc/<name>/<path>` route, as parsed from its request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    /// The `[[services]]` entry.
    pub name: String,
    pub method: http::Method,
    pub path: ServicePath,
    /// The query string, passed on as sent.
    pub query: Option<String>,
}

impl ServiceCall {
    /// `rest` follows `/svc/`: `<name>[/<path>]`.
    pub fn parse(
        method: &http::Method,
        rest: &str,
        query: Option<&str>,
    ) -> Result<Self, ProxyError> {
        let (name, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if name.is_empty() {
            return Err(ProxyError::UnknownService(String::new()));
        }
        Ok(Self {
            name: name.to_string(),
            method: method.clone(),
            path: ServicePath::parse(path)?,
            query: query.map(str::to_string),
        })
    }
}

/// Phase 2 for a service: it is configured, and allows the method and the path. Sets
/// the operation (the method) and the action (`<METHOD> <allowed prefix>`: the rest of
/// the path may name a patient and is neither logged nor audited).
pub fn check<'c>(
    services: &'c [MtlsService],
    call: &ServiceCall,
    exchange: &mut Exchange,
) -> Result<&'c MtlsService, ProxyError> {
    let service = services
        .iter()
        .find(|s| s.name == call.name)
        .ok_or_else(|| ProxyError::UnknownService(call.name.clone()))?;
    let method = ServiceMethod::parse(call.method.as_str())
        .filter(|m| service.methods.contains(m))
        .ok_or_else(|| ProxyError::MethodNotAllowed {
            method: call.method.to_string(),
            route: format!("/svc/{}", service.name),
            allowed: service
                .methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let prefix =
        service
            .allowed_prefix(call.path.as_str())
            .ok_or_else(|| ProxyError::PathNotAllowed {
                service: service.name.clone(),
                allowed: service.path_prefixes.join(", "),
            })?;
    exchange.operation = Operation::Service(method);
    exchange.action = Some(format!("{} {prefix}", method.as_str()));
    Ok(service)
}

/// The one value of a header the internal system sent, if any; two are refused.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<&'h HeaderValue>, ProxyError> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    let count = all.count() + usize::from(first.is_some());
    if count > 1 {
        return Err(ProxyError::DuplicateHeader {
            header: label,
            count,
        });
    }
    Ok(first)
}

/// Phase 5 for a service: the tenant's `org_auth` pool (its certificate usable now),
/// the target under the service's URL, the headers passed on, the body as it came.
pub fn build(
    service: &MtlsService,
    tenant: &TenantRuntime,
    call: &ServiceCall,
    headers: &HeaderMap,
    body: Bytes,
    exchange: &mut Exchange,
) -> Result<Outgoing, ProxyError> {
    let upstream =
        tenant
            .services
            .get(&service.name)
            .ok_or_else(|| ProxyError::CertificateMissing {
                tenant: tenant.id.to_string(),
                role: CertRole::OrgAuth.to_string(),
            })?;
    upstream.credential.check(OffsetDateTime::now_utc())?;
    exchange.service_structure = Some(upstream.structure.clone());
    let content_type = single(headers, &http::header::CONTENT_TYPE, "Content-Type")?
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ProxyError::UnsupportedMediaType("(not visible ASCII)".into()))
        })
        .transpose()?;
    let mut extra = Vec::new();
    if let Some(accept) = single(headers, &http::header::ACCEPT, "Accept")? {
        extra.push((http::header::ACCEPT, accept.clone()));
    }
    for name in &service.forward_headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in headers.get_all(&name) {
            extra.push((name.clone(), value.clone()));
        }
    }
    let mut target = format!("{}{}", upstream.pool.base_path(), call.path.as_str());
    if call.path.as_str() == "/" && !upstream.pool.base_path().is_empty() {
        // `/svc/<name>` alone is the service's URL itself.
        target = upstream.pool.base_path().to_string();
    }
    if let Some(q) = &call.query {
        target.push('?');
        target.push_str(q);
    }
    Ok(Outgoing {
        pool: Arc::clone(&upstream.pool),
        method: call.method.clone(),
        target: Some(target),
        content_type,
        extra,
        chunks: if body.is_empty() {
            Vec::new()
        } else {
            vec![body]
        },
        retry: match service.retry {
            ServiceRetry::Never => Retry::Never,
            ServiceRetry::IfNotSent => Retry::IfNotSent,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_climb_out_of_a_prefix_are_refused() {
        for ok in [
            "",
            "/",
            "/messages",
            "/messages/",
            "/messages/12",
            "/a%20b/c",
            "/x;y=1",
            "/%C3%A9",
        ] {
            assert!(ServicePath::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/messages/../admin",
            "/messages/./x",
            "/messages/..;/admin",
            "/messages/.;x/y",
            "/messages//x",
            "/messages//",
            "/messages/%2e%2e/admin",
            "/messages%2Fadmin",
            "/messages%5cadmin",
            "/a\\b",
            "/a%0Ab",
            "/a%zz",
            "/a%2",
            "/a%+f",
        ] {
            assert_eq!(
                ServicePath::parse(bad).err().map(|e| e.code()),
                Some("BadPath"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_service_name_is_the_first_segment() {
        let call = ServiceCall::parse(&http::Method::GET, "mssante/v1/messages", Some("a=1"))
            .expect("call");
        assert_eq!(call.name, "mssante");
        assert_eq!(call.path.as_str(), "/v1/messages");
        assert_eq!(call.query.as_deref(), Some("a=1"));
        let call = ServiceCall::parse(&http::Method::GET, "mssante", None).expect("call");
        assert_eq!(call.path.as_str(), "/");
        assert!(ServiceCall::parse(&http::Method::GET, "/x", None).is_err());
    }
}
