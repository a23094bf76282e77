//! Who may use the proxy, default deny: an internal client is recognised by its bearer
//! token (only its SHA-256 is configured) and/or the certificate it presents on the TLS
//! listener (SHA-256 fingerprint or subject); every credential a client declares must
//! be presented. It must connect from one of its source CIDRs, and may act only for
//! its tenants and call only its services. Nothing is sent upstream before these checks
//! pass.

use std::net::IpAddr;

use http::HeaderMap;
use passerelle_config::{InternalClient, ServiceScope, TenantId};

use crate::fault::ProxyError;

/// Header naming the tenant (legal entity) a request acts for.
pub const TENANT_HEADER: &str = "x-passerelle-tenant";

/// A service as the access rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service<'a> {
    Dmp(&'a str),
    /// INSi, over SOAP or the JSON API: one scope.
    Insi,
    /// A `[[services]]` entry by name.
    Svc(&'a str),
}

impl std::fmt::Display for Service<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dmp(name) => write!(f, "dmp/{name}"),
            Self::Insi => f.write_str("insi"),
            Self::Svc(name) => write!(f, "svc/{name}"),
        }
    }
}

/// The certificate an internal client presented on the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub sha256: [u8; 32],
    /// RFC 2253.
    pub subject: String,
}

impl PeerCertificate {
    pub fn from_der(der: &[u8]) -> Self {
        Self {
            sha256: openssl::sha::sha256(der),
            subject: passerelle_config::CertificateInfo::from_der(der)
                .map(|i| i.subject)
                .unwrap_or_default(),
        }
    }
}

/// An authenticated client, allowed for one tenant and one service.
#[derive(Debug, Clone)]
pub struct Grant {
    pub client: String,
    pub tenant: TenantId,
    /// The client's rate limit, requests per second.
    pub rate_per_second: Option<f64>,
}

/// The declared clients, with their token digests.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    clients: Vec<InternalClient>,
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AccessPolicy {
    pub fn new(clients: Vec<InternalClient>) -> Self {
        Self { clients }
    }

    /// Identifies the client and checks source, tenant and service.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        source: IpAddr,
        peer: Option<&PeerCertificate>,
        service: Service<'_>,
    ) -> Result<Grant, ProxyError> {
        // Two credentials or two tenants: which one a reader takes is not defined.
        for (name, header) in [
            (http::header::AUTHORIZATION.as_str(), "Authorization"),
            (TENANT_HEADER, "X-Passerelle-Tenant"),
        ] {
            let count = headers.get_all(name).iter().count();
            if count > 1 {
                return Err(ProxyError::DuplicateHeader { header, count });
            }
        }
        let token = bearer(headers).map(|t| openssl::sha::sha256(t.as_bytes()));
        if token.is_none() && peer.is_none() {
            return Err(ProxyError::MissingCredentials);
        }
        // Every client is examined, each token digest compared in constant time.
        let mut found = None;
        for c in &self.clients {
            let token_ok = c
                .token_sha256
                .map(|d| token.is_some_and(|t| openssl::memcmp::eq(&d, &t)));
            let cert_ok = c
                .cert_sha256
                .map(|d| peer.is_some_and(|p| openssl::memcmp::eq(&d, &p.sha256)));
            let subject_ok = c
                .cert_subject
                .as_ref()
                .map(|s| peer.is_some_and(|p| p.subject == *s));
            let declared = [token_ok, cert_ok, subject_ok];
            let matches =
                declared.iter().any(Option::is_some) && declared.iter().all(|d| d.unwrap_or(true));
            if matches {
                found.get_or_insert(c);
            }
        }
        let client = found.ok_or(ProxyError::UnknownClient)?;
        // IPv4 clients may arrive as IPv4-mapped IPv6 on a dual-stack listener.
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        if !client.source_cidrs.iter().any(|n| n.contains(&source)) {
            return Err(ProxyError::SourceNotAllowed {
                client: client.name.clone(),
                source_ip: source,
            });
        }
        let tenant = match headers.get(TENANT_HEADER) {
            Some(v) => {
                let name = v.to_str().unwrap_or("").trim();
                client
                    .tenants
                    .iter()
                    .find(|t| t.as_str() == name)
                    .cloned()
                    .ok_or_else(|| ProxyError::TenantNotAllowed {
                        client: client.name.clone(),
                        tenant: name.to_string(),
                    })?
            }
            None => match client.tenants.as_slice() {
                [only] => only.clone(),
                _ => {
                    return Err(ProxyError::TenantRequired {
                        client: client.name.clone(),
                    });
                }
            },
        };
        let allowed = client.services.iter().any(|s| match (s, service) {
            (ServiceScope::AllDmp, Service::Dmp(_))
            | (ServiceScope::Insi, Service::Insi)
            | (ServiceScope::AllServices, Service::Svc(_)) => true,
            (ServiceScope::Dmp(allowed), Service::Dmp(name))
            | (ServiceScope::Service(allowed), Service::Svc(name)) => allowed == name,
            _ => false,
        });
        if !allowed {
            return Err(ProxyError::ServiceNotAllowed {
                client: client.name.clone(),
                service: service.to_string(),
            });
        }
        Ok(Grant {
            client: client.name.clone(),
            tenant,
            rate_per_second: client.rate_per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(
        name: &str,
        token: &str,
        tenants: &[&str],
        services: Vec<ServiceScope>,
    ) -> InternalClient {
        InternalClient {
            name: name.into(),
            source_cidrs: vec!["10.0.0.0/8".parse().expect("cidr")],
            token_sha256: Some(openssl::sha::sha256(token.as_bytes())),
            cert_sha256: None,
            cert_subject: None,
            tenants: tenants.iter().map(|t| t.parse().expect("tenant")).collect(),
            services,
            rate_per_second: None,
        }
    }

    fn headers(token: Option<&str>, tenant: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                http::header::AUTHORIZATION,
                format!("Bearer {t}").parse().expect("value"),
            );
        }
        if let Some(t) = tenant {
            h.insert(TENANT_HEADER, t.parse().expect("value"));
        }
        h
    }

    #[test]
    fn default_deny_and_each_refusal() {
        let policy = AccessPolicy::new(vec![
            client("dpi", "secret-dpi", &["a", "b"], vec![ServiceScope::AllDmp]),
            client(
                "lab",
                "secret-lab",
                &["a"],
                vec![ServiceScope::Dmp("registry".into()), ServiceScope::Insi],
            ),
        ]);
        let inside: IpAddr = "10.1.2.3".parse().expect("ip");
        let code = |r: Result<Grant, ProxyError>| r.err().map(|e| e.code());
        let policy_authorize =
            |h: &HeaderMap, ip: IpAddr, s: Service<'_>| policy.authorize(h, ip, None, s);
        assert_eq!(
            code(policy_authorize(
                &headers(None, None),
                inside,
                Service::Insi
            )),
            Some("MissingCredentials")
        );
        assert_eq!(
            code(policy_authorize(
                &headers(Some("nope"), None),
                inside,
                Service::Insi
            )),
            Some("UnknownClient")
        );
        assert_eq!(
            code(policy_authorize(
                &headers(Some("secret-lab"), None),
                "192.168.1.1".parse().expect("ip"),
                Service::Insi
            )),
            Some("SourceNotAllowed")
        );
        assert_eq!(
            code(policy_authorize(
                &headers(Some("secret-dpi"), None),
                inside,
                Service::Dmp("registry")
            )),
            Some("TenantRequired")
        );
        assert_eq!(
            code(policy_authorize(
                &headers(Some("secret-dpi"), Some("c")),
                inside,
                Service::Dmp("registry")
            )),
            Some("TenantNotAllowed")
        );
        assert_eq!(
            code(policy_authorize(
                &headers(Some("secret-dpi"), Some("a")),
                inside,
                Service::Insi
            )),
            Some("ServiceNotAllowed")
        );
        assert_eq!(
            code(policy_authorize(
                &headers(Some("secret-lab"), None),
                inside,
                Service::Dmp("repository")
            )),
            Some("ServiceNotAllowed")
        );
        let g = policy_authorize(
            &headers(Some("secret-lab"), None),
            "::ffff:10.0.0.1".parse().expect("ip"),
            Service::Dmp("registry"),
        )
        .expect("allowed");
        assert_eq!((g.client.as_str(), g.tenant.as_str()), ("lab", "a"));
        let g = policy_authorize(
            &headers(Some("secret-dpi"), Some("b")),
            inside,
            Service::Dmp("patients"),
        )
        .expect("allowed");
        assert_eq!(g.tenant.as_str(), "b");
        assert!(
            AccessPolicy::new(vec![])
                .authorize(&headers(Some("x"), None), inside, None, Service::Insi)
                .is_err()
        );
    }

    #[test]
    fn services_are_granted_by_name_or_all_together() {
        let policy = AccessPolicy::new(vec![
            client(
                "mail",
                "secret-mail",
                &["a"],
                vec![ServiceScope::Service("mssante".into())],
            ),
            client("all", "secret-all", &["a"], vec![ServiceScope::AllServices]),
        ]);
        let inside: IpAddr = "10.1.2.3".parse().expect("ip");
        let code = |token: &str, s: Service<'_>| {
            policy
                .authorize(&headers(Some(token), None), inside, None, s)
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code("secret-mail", Service::Svc("mssante")), None);
        assert_eq!(
            code("secret-mail", Service::Svc("ror")),
            Some("ServiceNotAllowed")
        );
        assert_eq!(
            code("secret-mail", Service::Dmp("mssante")),
            Some("ServiceNotAllowed"),
            "a service scope is not a DMP one"
        );
        assert_eq!(code("secret-all", Service::Svc("ror")), None);
        assert_eq!(code("secret-all", Service::Insi), Some("ServiceNotAllowed"));
    }

    #[test]
    fn certificates_identify_clients_and_every_declared_credential_is_needed() {
        let mut by_cert = client("lab", "unused", &["a"], vec![ServiceScope::Insi]);
        by_cert.token_sha256 = None;
        by_cert.cert_sha256 = Some([7; 32]);
        let mut both = client("dpi", "secret-dpi", &["a"], vec![ServiceScope::Insi]);
        both.cert_subject = Some("CN=dpi,O=CHU".into());
        let policy = AccessPolicy::new(vec![by_cert, both]);
        let inside: IpAddr = "10.0.0.9".parse().expect("ip");
        let lab = PeerCertificate {
            sha256: [7; 32],
            subject: "CN=lab".into(),
        };
        let other = PeerCertificate {
            sha256: [8; 32],
            subject: "CN=dpi,O=CHU".into(),
        };
        let dpi = PeerCertificate {
            sha256: [9; 32],
            subject: "CN=dpi,O=CHU".into(),
        };
        let grant = |h: HeaderMap, p: Option<&PeerCertificate>| {
            policy
                .authorize(&h, inside, p, Service::Insi)
                .map(|g| g.client)
                .map_err(|e| e.code())
        };
        assert_eq!(grant(headers(None, None), Some(&lab)), Ok("lab".into()));
        assert_eq!(grant(headers(None, None), None), Err("MissingCredentials"));
        assert_eq!(
            grant(
                headers(None, None),
                Some(&PeerCertificate {
                    sha256: [1; 32],
                    subject: "CN=x".into()
                })
            ),
            Err("UnknownClient")
        );
        // dpi declares a token and a subject: both are needed.
        assert_eq!(
            grant(headers(Some("secret-dpi"), None), None),
            Err("UnknownClient")
        );
        assert_eq!(
            grant(headers(None, None), Some(&other)),
            Err("UnknownClient")
        );
        assert_eq!(
            grant(headers(Some("secret-dpi"), None), Some(&dpi)),
            Ok("dpi".into())
        );
    }
}
