//! `[trust.ocsp]`: every tenant certificate with its issuer and the responder to ask
//! (the `responder` setting, else the certificate's Authority Information Access).

use openssl::x509::X509;

use super::Validator;
use super::egress::Egress;
use crate::file::OcspSection;
use crate::model::{OcspCheck, OcspTarget, Tenant};

const FIELD: &str = "trust.ocsp";

impl Validator {
    pub(super) fn ocsp(
        &mut self,
        o: &OcspSection,
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
        let responder = match o.responder.as_deref().map(url::Url::parse) {
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
                    &format!("{FIELD}.responder"),
                    "must be an http:// URL with a host and no credentials (OCSP answers are signed)",
                );
                None
            }
            Some(Err(e)) => {
                self.error(&format!("{FIELD}.responder"), format!("not a URL: {e}"));
                None
            }
        };
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
                let Some(issuer) = issuer else {
                    self.warning(
                        FIELD,
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
                    self.warning(
                        FIELD,
                        format!("{where_}: names no http:// OCSP responder: not checked with OCSP (set trust.ocsp.responder)"),
                    );
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
        Some(OcspCheck {
            targets,
            refresh: refresh?,
            retry: retry?,
            timeout: timeout?,
        })
    }
}
