//! `[egress]`: the establishment's HTTP forward proxy, and which service goes through it
//! (`[dmp] egress`, `[insi] egress`, `no_proxy`).

use std::net::IpAddr;

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::Validator;
use crate::file;
use crate::model::EgressProxy;

/// A `no_proxy` entry.
#[derive(Debug, Clone)]
enum Bypass {
    /// This host, and its subdomains (`example.fr` and `.example.fr` alike).
    Domain(String),
    /// An address in this network (for URLs naming an IP address).
    Network(IpNet),
}

/// `[egress]`, validated.
#[derive(Debug, Clone)]
pub(super) struct Egress {
    pub(super) proxy: EgressProxy,
    bypass: Vec<Bypass>,
}

impl Egress {
    fn bypasses(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: Option<IpAddr> = host.parse().ok();
        self.bypass.iter().any(|b| match b {
            Bypass::Domain(d) => {
                let host = host.to_ascii_lowercase();
                host == *d || host.ends_with(&format!(".{d}"))
            }
            Bypass::Network(n) => ip.is_some_and(|ip| n.contains(&ip)),
        })
    }
}

impl Validator {
    pub(super) fn egress(&mut self, e: &file::EgressSection) -> Option<Egress> {
        let url = match url::Url::parse(&e.proxy) {
            Ok(u) => u,
            Err(err) => {
                self.error("egress.proxy", format!("{:?} is not a URL: {err}", e.proxy));
                return None;
            }
        };
        if url.scheme() != "http" {
            self.error(
                "egress.proxy",
                format!(
                    "{:?}: only http:// forward proxies are supported (the national services' TLS runs inside the CONNECT tunnel)",
                    e.proxy
                ),
            );
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.error(
                "egress.proxy",
                "no credentials in the URL: use egress.username and egress.password_file",
            );
            return None;
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            self.error(
                "egress.proxy",
                format!("{:?}: give only http://host:port", e.proxy),
            );
            return None;
        }
        let Some(host) = url
            .host_str()
            .map(|h| h.trim_matches(['[', ']']).to_string())
        else {
            self.error("egress.proxy", format!("{:?} has no host", e.proxy));
            return None;
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let credentials = match (&e.username, &e.password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => {
                let path = self.resolve(file);
                self.check_secret_permissions("egress.password_file", &path);
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let text = Zeroizing::new(text);
                        let password = text.trim_end_matches(['\r', '\n']);
                        if user.is_empty() || user.contains(':') {
                            self.error(
                                "egress.username",
                                "must be non-empty and without ':' (Basic authentication)",
                            );
                            return None;
                        }
                        Some((user.clone(), password.to_string()))
                    }
                    Err(err) => {
                        self.problem(
                            crate::report::Severity::Error,
                            Some(&path),
                            "egress.password_file",
                            format!("cannot read: {err}"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    "egress",
                    "username and password_file go together (Basic authentication to the proxy)",
                );
                return None;
            }
        };
        let mut bypass = Vec::new();
        for (i, entry) in e.no_proxy.iter().enumerate() {
            let entry = entry.trim();
            if let Ok(net) = entry.parse::<IpNet>() {
                bypass.push(Bypass::Network(net));
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                bypass.push(Bypass::Network(IpNet::from(ip)));
            } else {
                let domain = entry.trim_start_matches('.').to_ascii_lowercase();
                let ok = !domain.is_empty()
                    && domain
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
                if ok {
                    bypass.push(Bypass::Domain(domain));
                } else {
                    self.error(
                        &format!("egress.no_proxy[{i}]"),
                        format!(
                            "{entry:?} is neither a host or domain (dmp.example.fr, .example.fr) nor an address or network (10.0.0.0/8)"
                        ),
                    );
                }
            }
        }
        Some(Egress {
            proxy: EgressProxy::new(host, port, credentials),
            bypass,
        })
    }

    /// The proxy a service at `url` goes through (`None`: direct), from its `egress`
    /// choice (`proxy`, `direct`, or unset: the proxy unless `no_proxy` names the host).
    pub(super) fn egress_route(
        &mut self,
        section: &str,
        choice: Option<&str>,
        url: &url::Url,
        egress: Option<&Egress>,
    ) -> Option<EgressProxy> {
        let field = format!("{section}.egress");
        match (choice, egress) {
            (Some("direct"), _) | (None, None) => None,
            (Some("proxy"), Some(e)) => Some(e.proxy.clone()),
            (Some("proxy"), None) => {
                self.error(
                    &field,
                    "\"proxy\" needs an [egress] section naming the proxy",
                );
                None
            }
            (None, Some(e)) => (!e.bypasses(url.host_str().unwrap_or(""))).then(|| e.proxy.clone()),
            (Some(other), _) => {
                self.error(&field, format!("{other:?} is not \"proxy\" or \"direct\""));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_hosts_domains_and_networks() {
        let e = Egress {
            proxy: EgressProxy::new("proxy".into(), 3128, None),
            bypass: vec![
                Bypass::Domain("sante.local".into()),
                Bypass::Network("10.0.0.0/8".parse().expect("net")),
            ],
        };
        assert!(e.bypasses("sante.local"));
        assert!(e.bypasses("dmp.SANTE.local"));
        assert!(!e.bypasses("notsante.local"));
        assert!(e.bypasses("10.1.2.3"));
        assert!(!e.bypasses("11.1.2.3"));
        assert!(!e.bypasses("lps2.dmp.gouv.fr"));
    }
}
