//! `[trust.ocsp]`: every tenant certificate with its issuer and the responder to ask
//! (the `responder` setting, else the certificate's Authority Information Access), and
//! how the upstream servers' certificates are asked; `[trust] revocation` and
//! `revocation_failure`, the policy that says which sources apply.

use openssl::x509::X509;

use super::Validator;
use super::egress::Egress;
use crate::file::{OcspSection, TrustSection};
use crate::model::{
    OcspCheck, OcspTarget, RevocationFailure, RevocationSources, Tenant, UpstreamOcsp,
    UpstreamRevocation, UpstreamTrust,
};

const FIELD: &str = "trust.ocsp";

/// `[trust] revocation` and `revocation_failure`, read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub(super) sources: RevocationSources,
    pub(super) failure: RevocationFailure,
}

impl Validator {
    /// The policy, and the `[trust.ocsp]` settings in force: the section, or its
    /// defaults when the policy names OCSP without one.
    pub(super) fn revocation_policy(&mut self, t: &TrustSection) -> (Policy, Option<OcspSection>) {
        let sources = t.revocation.unwrap_or(if t.ocsp.is_some() {
            RevocationSources::Both
        } else {
            RevocationSources::Crl
        });
        if sources == RevocationSources::Ocsp {
            self.warning(
                "trust.revocation",
                "\"ocsp\" asks about end certificates only: a revoked intermediate CA goes unseen; \"both\" with the CAs' CRLs ([trust.crl_download]) covers it",
            );
        }
        if sources == RevocationSources::Crl && t.ocsp.is_some() {
            self.error(
                "trust.revocation",
                "\"crl\", but [trust.ocsp] is set: say \"both\" (or \"ocsp\"), or remove [trust.ocsp]",
            );
        }
        let section = t
            .ocsp
            .clone()
            .or_else(|| sources.ocsp().then(OcspSection::default));
        let policy = Policy {
            sources,
            failure: t.revocation_failure,
        };
        (policy, section)
    }

    /// With `revocation = "ocsp"`, CRLs are not consulted: a configured one is an error
    /// rather than a silent no-op. `fields`: each CRL setting and whether it is set.
    pub(super) fn no_crl_under_ocsp(&mut self, policy: Policy, fields: &[(String, bool)]) {
        if policy.sources != RevocationSources::Ocsp {
            return;
        }
        for (field, set) in fields {
            if *set {
                self.error(
                    field,
                    "set, but trust.revocation = \"ocsp\" consults no CRL: remove it, or say revocation = \"both\"",
                );
            }
        }
    }

    /// Gives every upstream the policy. Hard-fail with CRLs and not one CRL for an
    /// upstream would refuse every connection: an error, unless `[trust.crl_download]`
    /// is to fetch them (then a warning until the first copy).
    pub(super) fn upstream_revocation(
        &mut self,
        policy: Policy,
        ocsp: Option<&OcspCheck>,
        downloads: bool,
        upstreams: Vec<(String, &mut UpstreamTrust)>,
    ) {
        let revocation = UpstreamRevocation {
            crl: policy.sources.crl(),
            ocsp: ocsp.and_then(|o| o.upstream.clone()),
            failure: policy.failure,
        };
        for (section, trust) in upstreams {
            if !revocation.crl {
                trust.crls.clear();
            }
            if revocation.crl && revocation.hard() && trust.crls.is_empty() {
                let message = format!(
                    "trust.revocation_failure = \"hard\" with CRLs, and no CRL for {section}'s servers: every connection is refused until one is there (set its crls, or let [trust.crl_download] fetch it)"
                );
                if downloads {
                    self.warning("trust.revocation_failure", message);
                } else {
                    self.error("trust.revocation_failure", message);
                }
            }
            trust.revocation = revocation.clone();
        }
    }

    /// A tenant certificate OCSP cannot ask about: a warning, an error under hard-fail.
    fn unchecked(&mut self, hard: bool, message: String) {
        if hard {
            self.error(
                FIELD,
                format!(
                    "{message}; with trust.revocation_failure = \"hard\" it could never be used"
                ),
            );
        } else {
            self.warning(FIELD, message);
        }
    }

    /// An OCSP responder URL: http:// (the answers are signed), a host, no credentials.
    fn responder_url(&mut self, key: &str, value: Option<&str>) -> Option<url::Url> {
        match value.map(url::Url::parse) {
            None => None,
            Some(Ok(u))
                if u.scheme() == "http"
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Some(u)
            }
            Some(Ok(_)) => {
                self.error(
                    &format!("{FIELD}.{key}"),
                    "must be an http:// URL with a host and no credentials (OCSP answers are signed)",
                );
                None
            }
            Some(Err(e)) => {
                self.error(&format!("{FIELD}.{key}"), format!("not a URL: {e}"));
                None
            }
        }
    }

    pub(super) fn ocsp(
        &mut self,
        o: &OcspSection,
        policy: Policy,
        tenants: &[Tenant],
        anchors: &[X509],
        egress: Option<&Egress>,
    ) -> Option<OcspCheck> {
        let refresh = self.duration(&format!("{FIELD}.refresh"), &o.refresh);
        let retry = match &o.retry {
            Some(r) => self.duration(&format!("{FIELD}.retry"), r),
            None => refresh.map(|r| r.min(std::time::Duration::from_secs(300))),
        };
        let timeout = self.duration(&format!("{FIELD}.timeout"), &o.timeout);
        let minute = std::time::Duration::from_secs(60);
        if timeout.is_some_and(|t| t > minute) {
            self.error(
                &format!("{FIELD}.timeout"),
                "at most \"1m\": the certificates are asked one after the other",
            );
        }
        if refresh.is_some_and(|r| r < minute || r > 7 * 24 * 60 * minute) {
            self.error(&format!("{FIELD}.refresh"), "between \"1m\" and \"7d\"");
        }
        if let (Some(retry), Some(refresh)) = (retry, refresh)
            && (retry < std::time::Duration::from_secs(1) || retry > refresh)
        {
            self.error(
                &format!("{FIELD}.retry"),
                format!("between \"1s\" and refresh ({})", o.refresh),
            );
        }
        let responder = self.responder_url("responder", o.responder.as_deref());
        let server_responder =
            self.responder_url("server_responder", o.server_responder.as_deref());
        let anchors_der: Vec<Vec<u8>> = anchors.iter().filter_map(|a| a.to_der().ok()).collect();
        let mut targets = Vec::new();
        for tenant in tenants {
            for material in tenant.certificates.values() {
                let Ok(leaf) = X509::from_der(&material.leaf_der) else {
                    continue;
                };
                let issuer = material
                    .intermediates_der
                    .iter()
                    .chain(material.anchor_der.as_ref())
                    .filter_map(|d| X509::from_der(d).ok())
                    .find(|ca| ca.issued(&leaf) == openssl::x509::X509VerifyResult::OK);
                let where_ = format!("tenants.{}.certificates.{}", tenant.id, material.role);
                // Under hard-fail, a certificate OCSP cannot be asked about would escape
                // the rule: an error.
                let hard = policy.failure == RevocationFailure::Hard;
                let Some(issuer) = issuer else {
                    self.unchecked(
                        hard,
                        format!("{where_}: its issuer is not in its chain: not checked with OCSP"),
                    );
                    continue;
                };
                let url = responder.clone().or_else(|| {
                    leaf.ocsp_responders()
                        .ok()?
                        .iter()
                        .filter_map(|u| url::Url::parse(u).ok())
                        .find(|u| u.scheme() == "http" && u.host().is_some())
                });
                let Some(url) = url else {
                    self.unchecked(hard, format!("{where_}: names no http:// OCSP responder: not checked with OCSP (set trust.ocsp.responder)"));
                    continue;
                };
                let egress = self.egress_route(FIELD, o.egress.as_deref(), &url, egress);
                let Ok(issuer_der) = issuer.to_der() else {
                    continue;
                };
                let mut trust = vec![issuer_der.clone()];
                trust.extend(material.intermediates_der.iter().cloned());
                trust.extend(anchors_der.iter().cloned());
                targets.push(OcspTarget {
                    tenant: tenant.id.clone(),
                    role: material.role,
                    serial: material.info.serial_hex.clone(),
                    leaf: material.leaf_der.clone(),
                    issuer: issuer_der,
                    trust,
                    url,
                    egress,
                });
            }
        }
        // The servers' responders are known at the handshake only (their AIA): the
        // forward proxy's no_proxy list applies to `server_responder` alone.
        let upstream_egress = match &server_responder {
            Some(url) => self.egress_route(FIELD, o.egress.as_deref(), url, egress),
            None if o.egress.as_deref() == Some("direct") => None,
            None => egress.map(|e| e.proxy.clone()),
        };
        let (refresh, retry, timeout) = (refresh?, retry?, timeout?);
        Some(OcspCheck {
            targets,
            refresh,
            retry,
            timeout,
            hard_fail: policy.failure == RevocationFailure::Hard,
            upstream: policy.sources.ocsp().then(|| UpstreamOcsp {
                responder: server_responder,
                refresh,
                retry,
                timeout,
                egress: upstream_egress,
            }),
        })
    }
}
