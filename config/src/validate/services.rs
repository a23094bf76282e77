//! `[[services]]`: the other services reached over mutual TLS with each tenant's
//! `org_auth` certificate: names, URLs, the certificate role, methods, path prefixes,
//! headers passed on, trust, timeouts and retry policy.

use std::collections::BTreeSet;

use super::Validator;
use crate::file::ServiceSection;
use crate::ids::CertRole;
use crate::model::{MtlsService, ServiceMethod, ServiceRetry};

/// Request headers that never go to a generic service: the internal system's
/// credentials and tenant, cookies, and what belongs to one connection or to the
/// request Passerelle writes itself.
const NEVER_FORWARDED: [&str; 16] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "x-passerelle-tenant",
    "content-type",
    "accept",
    "expect",
    "proxy-connection",
];

/// Header name prefixes never passed on: Passerelle's own request headers (the DMP
/// identity headers carry the patient's INS).
const NEVER_FORWARDED_PREFIXES: [&str; 3] = ["x-passerelle-", "x-vihf-", "proxy-"];

/// A header name as RFC 9110 writes a token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A path prefix: `/`, or `/` then segments of unreserved characters (no `.` or `..`
/// segment, no empty one, no percent-encoding, no trailing `/`).
fn prefix_problem(p: &str) -> Option<&'static str> {
    if p == "/" {
        return None;
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Some("must start with '/'");
    };
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Some("has an empty segment or ends with '/'");
        }
        if segment == "." || segment == ".." {
            return Some("has a '.' or '..' segment");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b))
        {
            return Some(
                "may hold only letters, digits and -._~!$&'()*+,;=:@ between '/' (no '%', '?' or '#')",
            );
        }
    }
    None
}

impl Validator {
    pub(super) fn services(
        &mut self,
        raw: &[ServiceSection],
        egress: Option<&super::egress::Egress>,
    ) -> Vec<MtlsService> {
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (index, s) in raw.iter().enumerate() {
            let field = format!("services[{index}]");
            let mut ok = true;
            let valid_name = !s.name.is_empty()
                && s.name.len() <= 63
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid_name {
                self.error(
                    &format!("{field}.name"),
                    format!(
                        "{:?} must be 1 to 63 characters of a-z, 0-9, '-' or '_' (it becomes /svc/<name> and a metric label)",
                        s.name
                    ),
                );
                ok = false;
            } else if !names.insert(s.name.clone()) {
                self.error(
                    &format!("{field}.name"),
                    format!("service {:?} is declared twice", s.name),
                );
                ok = false;
            }
            let url = self.https_url(&format!("{field}.url"), &s.url);
            if url.as_ref().is_some_and(|u| u.fragment().is_some()) {
                self.error(&format!("{field}.url"), "must not have a fragment ('#')");
                ok = false;
            }
            let role = match s.certificate.as_str() {
                "org_auth" => Some(CertRole::OrgAuth),
                other => {
                    self.error(
                        &format!("{field}.certificate"),
                        format!(
                            "{other:?}: a service is reached with the tenant's \"org_auth\" certificate (the DMP's and INSi's certificates serve only them: one certificate per teleservice)"
                        ),
                    );
                    None
                }
            };
            let mut methods = Vec::new();
            if s.methods.is_empty() {
                self.error(
                    &format!("{field}.methods"),
                    "empty: list the HTTP methods allowed, e.g. [\"POST\"]",
                );
                ok = false;
            }
            for (i, m) in s.methods.iter().enumerate() {
                match ServiceMethod::parse(m) {
                    Some(m) if methods.contains(&m) => self.warning(
                        &format!("{field}.methods[{i}]"),
                        format!("{} is listed twice", m.as_str()),
                    ),
                    Some(m) => methods.push(m),
                    None => {
                        self.error(
                            &format!("{field}.methods[{i}]"),
                            format!(
                                "{m:?} is not one of {} (upper case)",
                                ServiceMethod::ALL.map(ServiceMethod::as_str).join(", ")
                            ),
                        );
                        ok = false;
                    }
                }
            }
            if s.path_prefixes.is_empty() {
                self.error(
                    &format!("{field}.path_prefixes"),
                    "empty: list the paths allowed under url (\"/\" allows every path)",
                );
                ok = false;
            }
            for (i, p) in s.path_prefixes.iter().enumerate() {
                if let Some(problem) = prefix_problem(p) {
                    self.error(
                        &format!("{field}.path_prefixes[{i}]"),
                        format!("{p:?} {problem}"),
                    );
                    ok = false;
                }
            }
            let mut forward_headers = Vec::new();
            for (i, h) in s.forward_headers.iter().enumerate() {
                let lower = h.to_ascii_lowercase();
                if !is_token(&lower) {
                    self.error(
                        &format!("{field}.forward_headers[{i}]"),
                        format!("{h:?} is not a header name"),
                    );
                    ok = false;
                } else if NEVER_FORWARDED.contains(&lower.as_str())
                    || NEVER_FORWARDED_PREFIXES
                        .iter()
                        .any(|p| lower.starts_with(p))
                {
                    self.error(
                        &format!("{field}.forward_headers[{i}]"),
                        format!(
                            "{h:?} is never passed on: the internal system's credentials, tenant and cookies stay with Passerelle, and Passerelle writes the connection's own headers (Content-Type and Accept always go)"
                        ),
                    );
                    ok = false;
                } else if !forward_headers.contains(&lower) {
                    forward_headers.push(lower);
                }
            }
            let retry = match s.retry.as_str() {
                "none" => Some(ServiceRetry::Never),
                "if_not_sent" => Some(ServiceRetry::IfNotSent),
                other => {
                    self.error(
                        &format!("{field}.retry"),
                        format!("{other:?} must be \"none\" or \"if_not_sent\""),
                    );
                    None
                }
            };
            let trust = self.upstream_trust(&field, &s.trust_anchors, &s.crls);
            let timeouts = self.timeouts(&field, &s.timeouts);
            let route = url
                .as_ref()
                .and_then(|u| self.egress_route(&field, s.egress.as_deref(), u, egress));
            if let (true, Some(url), Some(role), Some(retry), Some(timeouts)) =
                (ok, url, role, retry, timeouts)
            {
                out.push(MtlsService {
                    name: s.name.clone(),
                    url,
                    role,
                    methods,
                    path_prefixes: s.path_prefixes.clone(),
                    forward_headers,
                    trust,
                    timeouts,
                    retry,
                    egress: route,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_whole_clean_segments() {
        for ok in ["/", "/messages", "/v1/messages", "/a-b_c.d~e"] {
            assert_eq!(prefix_problem(ok), None, "{ok}");
        }
        for bad in [
            "messages",
            "/messages/",
            "//x",
            "/a/../b",
            "/a/./b",
            "/a%2Fb",
            "/a?b",
            "/a b",
        ] {
            assert!(prefix_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn internal_and_hop_by_hop_headers_are_never_forwarded() {
        for name in [
            "X-Vihf-Patient",
            "x-passerelle-tenant",
            "X-Passerelle-Anything",
            "Proxy-Authorization",
            "Proxy-Connection",
            "Expect",
            "Cookie",
        ] {
            let lower = name.to_ascii_lowercase();
            assert!(
                NEVER_FORWARDED.contains(&lower.as_str())
                    || NEVER_FORWARDED_PREFIXES
                        .iter()
                        .any(|p| lower.starts_with(p)),
                "{name}"
            );
        }
        assert!(
            !NEVER_FORWARDED_PREFIXES
                .iter()
                .any(|p| "x-correlation-id".starts_with(p))
        );
    }
}
