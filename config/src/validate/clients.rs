//! `[[clients]]`: the internal systems allowed to use the proxy, their credentials,
//! sources, tenants, services and rates.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::Validator;
use crate::file::ConfigFile;
use crate::ids::TenantId;
use crate::model::{InternalClient, ServiceScope, Tenant};

/// Two clients with one credential: the first would win silently. Records `field` as
/// the first to declare `(name, key)`, or reports it against the first one.
fn unique(
    v: &mut Validator,
    seen: &mut BTreeMap<(String, [u8; 32]), String>,
    name: &str,
    key: [u8; 32],
    field: &str,
) -> bool {
    match seen.entry((name.to_string(), key)) {
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(field.to_string());
            true
        }
        std::collections::btree_map::Entry::Occupied(first) => {
            v.error(
                field,
                format!(
                    "the same {name} as {}: each client needs its own credential, or requests would be taken for the first one's",
                    first.get()
                ),
            );
            false
        }
    }
}

impl Validator {
    pub(super) fn clients(&mut self, raw: &ConfigFile, tenants: &[Tenant]) -> Vec<InternalClient> {
        if raw.clients.is_empty() {
            self.warning(
                "clients",
                "no internal client declared: every request will be refused (access is default-deny)",
            );
        }
        let mut names = BTreeSet::new();
        // (key, digest) -> the field that declared it first.
        let mut credentials: BTreeMap<(String, [u8; 32]), String> = BTreeMap::new();
        let mut out = Vec::new();
        for (index, c) in raw.clients.iter().enumerate() {
            let field = format!("clients[{index}]");
            let mut ok = true;
            if c.name.trim().is_empty() {
                self.error(&format!("{field}.name"), "must not be empty");
                ok = false;
            } else if c.name == crate::UNATTRIBUTED {
                self.error(
                    &format!("{field}.name"),
                    format!("{:?} is reserved (the metrics' label of requests not attributed to a client): choose another name", c.name),
                );
                ok = false;
            } else if !names.insert(c.name.clone()) {
                self.error(
                    &format!("{field}.name"),
                    format!("client {:?} is declared twice", c.name),
                );
                ok = false;
            }
            let mut cidrs = Vec::new();
            for (i, s) in c.source_cidrs.iter().enumerate() {
                match s
                    .parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    Ok(n) => cidrs.push(n),
                    Err(_) => {
                        self.error(
                            &format!("{field}.source_cidrs[{i}]"),
                            format!("{s:?} is not a CIDR such as \"10.1.0.0/16\""),
                        );
                        ok = false;
                    }
                }
            }
            if let Some(rate) = c.rate_per_second
                && !(rate.is_finite() && rate > 0.0)
            {
                self.error(
                    &format!("{field}.rate_per_second"),
                    format!("{rate} is not a positive number of requests per second"),
                );
            }
            if c.source_cidrs.is_empty() {
                self.warning(
                    &format!("{field}.source_cidrs"),
                    "empty: this client can connect from nowhere",
                );
            }
            let mut digest = |v: &mut Self, name: &str, value: &Option<String>| {
                let value = value.as_ref()?;
                let field = format!("{field}.{name}");
                let d = v.sha256_hex(&field, value);
                ok &= d.is_some();
                if let Some(d) = d {
                    ok &= unique(v, &mut credentials, name, d, &field);
                }
                d
            };
            let token = digest(self, "token_sha256", &c.token_sha256);
            let cert = digest(self, "cert_sha256", &c.cert_sha256);
            if let Some(subject) = &c.cert_subject {
                let key = openssl::sha::sha256(subject.trim().as_bytes());
                let field = format!("{field}.cert_subject");
                ok &= unique(self, &mut credentials, "cert_subject", key, &field);
            }
            if c.token_sha256.is_none() && c.cert_sha256.is_none() && c.cert_subject.is_none() {
                self.error(
                    &field,
                    "no credential: set token_sha256, cert_sha256 or cert_subject (an anonymous client is never admitted)",
                );
                ok = false;
            }
            let mut client_tenants = Vec::new();
            if c.tenants.is_empty() {
                self.error(
                    &format!("{field}.tenants"),
                    "empty: name the tenants this client may act for",
                );
                ok = false;
            }
            for (i, t) in c.tenants.iter().enumerate() {
                match t.parse::<TenantId>() {
                    Ok(id) if tenants.iter().any(|x| x.id == id) => client_tenants.push(id),
                    Ok(_) | Err(_) if raw.tenants.iter().any(|x| &x.id == t) => {}
                    _ => {
                        self.error(
                            &format!("{field}.tenants[{i}]"),
                            format!("no tenant has id {t:?}"),
                        );
                        ok = false;
                    }
                }
            }
            let mut services = Vec::new();
            if c.services.is_empty() {
                self.error(
                    &format!("{field}.services"),
                    "empty: list \"dmp\", \"dmp/<service>\", \"insi\", \"svc\" or \"svc/<name>\"",
                );
                ok = false;
            }
            for (i, s) in c.services.iter().enumerate() {
                let sfield = format!("{field}.services[{i}]");
                let scope = match s.as_str() {
                    "dmp" => Some(ServiceScope::AllDmp),
                    "insi" => Some(ServiceScope::Insi),
                    "svc" => Some(ServiceScope::AllServices),
                    other => other
                        .strip_prefix("dmp/")
                        .map(|n| ServiceScope::Dmp(n.to_string()))
                        .or_else(|| {
                            other
                                .strip_prefix("svc/")
                                .map(|n| ServiceScope::Service(n.to_string()))
                        }),
                };
                match scope {
                    Some(ServiceScope::Dmp(name))
                        if raw
                            .dmp
                            .as_ref()
                            .is_some_and(|d| !d.services.contains_key(&name)) =>
                    {
                        self.error(
                            &sfield,
                            format!("no DMP service is named {name:?} in [dmp.services]"),
                        );
                        ok = false;
                    }
                    Some(ServiceScope::AllDmp | ServiceScope::Dmp(_)) if raw.dmp.is_none() => {
                        self.error(
                            &sfield,
                            "DMP access granted but no [dmp] section is configured",
                        );
                        ok = false;
                    }
                    Some(ServiceScope::Service(name))
                        if !raw.services.iter().any(|x| x.name == name) =>
                    {
                        self.error(&sfield, format!("no [[services]] entry is named {name:?}"));
                        ok = false;
                    }
                    Some(ServiceScope::AllServices) if raw.services.is_empty() => {
                        self.error(
                            &sfield,
                            "access to every [[services]] entry granted, but none is configured",
                        );
                        ok = false;
                    }
                    Some(ServiceScope::Insi) if raw.insi.is_none() => {
                        self.error(
                            &sfield,
                            "INSi access granted but no [insi] section is configured",
                        );
                        ok = false;
                    }
                    Some(scope) => services.push(scope),
                    None => {
                        self.error(
                            &sfield,
                            format!(
                                "{s:?} is not a service: use \"dmp\", \"dmp/<service>\", \"insi\", \"svc\" or \"svc/<name>\""
                            ),
                        );
                        ok = false;
                    }
                }
            }
            if ok {
                out.push(InternalClient {
                    name: c.name.clone(),
                    source_cidrs: cidrs,
                    token_sha256: token,
                    cert_sha256: cert,
                    cert_subject: c.cert_subject.clone(),
                    tenants: client_tenants,
                    services,
                    rate_per_second: c.rate_per_second,
                });
            }
        }
        out
    }
}
