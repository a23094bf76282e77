//! `[[tenants]]`: identifiers, geographic entities, and each tenant's certificates
//! (one [`CertificateReport`] row per certificate, cross-tenant uniqueness, DMP
//! AUTH/SIGN pairing).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::Validator;
use super::trust::TenantTrust;
use crate::file::ConfigFile;
use crate::ids::{CertRole, StructureId, StructureKind, TenantId};
use crate::material::insi_role_of;
use crate::model::{CertMaterial, Tenant};
use crate::report::{CertificateKey, CertificateReport, Severity, Status};

impl Validator {
    pub(super) fn tenants(&mut self, raw: &ConfigFile, trust: &TenantTrust) -> Vec<Tenant> {
        if raw.tenants.is_empty() {
            self.error(
                "tenants",
                "no tenant: declare at least one [[tenants]] with its certificates",
            );
        }
        let mut tenants = Vec::new();
        let mut seen_ids = BTreeSet::new();
        let mut seen_structures: HashMap<String, String> = HashMap::new();
        // Certificate fingerprint -> where it is used: one certificate, one tenant, one role.
        let mut seen_certs: HashMap<String, String> = HashMap::new();
        for (index, t) in raw.tenants.iter().enumerate() {
            let field = format!("tenants[{index}]");
            let id = match t.id.parse::<TenantId>() {
                Ok(id) if id.as_str() == crate::UNATTRIBUTED => {
                    self.error(
                        &format!("{field}.id"),
                        format!("{id:?} is reserved (the metrics' label of requests not attributed to a tenant): choose another id"),
                    );
                    None
                }
                Ok(id) => {
                    if !seen_ids.insert(id.clone()) {
                        self.error(
                            &format!("{field}.id"),
                            format!("tenant id {id} is declared twice"),
                        );
                    }
                    Some(id)
                }
                Err(e) => {
                    self.error(&format!("{field}.id"), e.to_string());
                    None
                }
            };
            let structure = match t.structure_id.parse::<StructureId>() {
                Ok(s) => {
                    self.finess_key(&format!("{field}.structure_id"), &s);
                    if let Some(other) = seen_structures.insert(s.to_string(), t.id.clone()) {
                        self.warning(
                            &format!("{field}.structure_id"),
                            format!("structure {s} is also the legal entity of tenant {other}"),
                        );
                    }
                    Some(s)
                }
                Err(e) => {
                    self.error(&format!("{field}.structure_id"), e.to_string());
                    None
                }
            };
            let mut geographic = Vec::new();
            for (g, value) in t.geographic_structure_ids.iter().enumerate() {
                let gfield = format!("{field}.geographic_structure_ids[{g}]");
                match value.parse::<StructureId>() {
                    Ok(s) if Some(&s) == structure.as_ref() => self.warning(
                        &gfield,
                        format!("{s} is the legal entity itself; list only geographic entities"),
                    ),
                    Ok(s) if geographic.contains(&s) => {
                        self.warning(&gfield, format!("{s} is listed twice"))
                    }
                    Ok(s) => {
                        self.finess_key(&gfield, &s);
                        geographic.push(s)
                    }
                    Err(e) => self.error(&gfield, e.to_string()),
                }
            }

            let mut certificates = BTreeMap::new();
            let candidate = self.candidate.clone();
            // `passerelle install` checks its candidate files in place of the configured
            // ones, with every other rule (uniqueness, DMP pairing) unchanged.
            let sources = [
                (CertRole::DmpAuth, &t.certificates.dmp_auth),
                (CertRole::DmpSign, &t.certificates.dmp_sign),
                (CertRole::InsiAuto, &t.certificates.insi_auto),
                (CertRole::InsiManu, &t.certificates.insi_manu),
                (CertRole::OrgAuth, &t.certificates.org_auth),
            ]
            .map(|(role, source)| match &candidate {
                Some(c) if c.tenant == t.id && c.role == role => (role, Some(&c.source)),
                _ => (role, source.as_ref()),
            });
            if sources.iter().all(|(_, s)| s.is_none()) {
                self.error(
                    &format!("{field}.certificates"),
                    "no certificate: a tenant needs dmp_auth + dmp_sign, insi_auto, insi_manu or org_auth",
                );
            }
            if t.certificates.org_auth.is_some() && raw.services.is_empty() {
                self.warning(
                    &format!("{field}.certificates.org_auth"),
                    "no [[services]] entry uses it: it is loaded but never presented",
                );
            }
            for (role, source) in sources {
                let Some(source) = source else { continue };
                let cfield = format!("{field}.certificates.{}", role.config_key());
                let key = CertificateKey {
                    tenant: t.id.clone(),
                    role,
                };
                let before = self.problems.len();
                let (material, revocation) =
                    self.certificate(&cfield, role, source, trust, structure.as_ref());
                if let Some(m) = &material {
                    let place = format!("tenant {} {}", t.id, role);
                    if let Some(other) = seen_certs.insert(m.info.sha256.clone(), place) {
                        self.problem(
                            Severity::Error,
                            Some(&m.source),
                            &cfield,
                            format!("the same certificate is already configured for {other}: one certificate serves one tenant and one role"),
                        );
                    }
                }
                for p in &mut self.problems[before..] {
                    p.certificate = Some(key.clone());
                }
                let status = self.problems[before..]
                    .iter()
                    .map(|p| p.severity)
                    .max()
                    .map_or(Status::Ok, |s| match s {
                        Severity::Warning => Status::Warning,
                        Severity::Error => Status::Error,
                    });
                let info = material.as_ref().map(|m| &m.info);
                self.certificates.push(CertificateReport {
                    tenant: t.id.clone(),
                    role,
                    file: self.resolve(
                        source
                            .cert
                            .as_deref()
                            .or(source.pkcs12.as_deref())
                            .unwrap_or(Path::new("")),
                    ),
                    subject_cn: info.and_then(|i| i.common_name.clone()),
                    subject_ou: info.and_then(|i| i.organizational_unit.clone()),
                    issuer_cn: info.and_then(|i| i.issuer_common_name.clone()),
                    serial: info.map(|i| i.serial_hex.clone()),
                    not_after: info.map(|i| i.not_after),
                    days_left: info.map(|i| i.days_left(self.now)),
                    status,
                    revocation,
                });
                if let Some(m) = material {
                    certificates.insert(role, m);
                }
            }
            // The DMP compares the VIHF Issuer (SIGN subject) with the TLS client subject.
            // An INSi certificate in a DMP role is already reported on its own field.
            let insi_cn = |m: &CertMaterial| insi_role_of(&m.info).is_some();
            match (certificates.get(&CertRole::DmpAuth), certificates.get(&CertRole::DmpSign)) {
                (Some(auth), Some(sign))
                    if auth.info.subject != sign.info.subject
                        && !insi_cn(auth)
                        && !insi_cn(sign) =>
                {
                    self.error(
                        &format!("{field}.certificates.dmp_sign"),
                        format!(
                            "subject {:?} differs from dmp_auth's {:?}: the DMP expects the ORG SIGN and ORG AUTH_CLI certificates to carry the same DN",
                            sign.info.subject, auth.info.subject
                        ),
                    )
                }
                _ => {}
            }
            let has = |role| sources.iter().any(|(r, s)| *r == role && s.is_some());
            if has(CertRole::DmpAuth) != has(CertRole::DmpSign) {
                self.error(
                    &format!("{field}.certificates"),
                    "DMP access needs both dmp_auth (TLS) and dmp_sign (VIHF and lot signatures)",
                );
            }
            let policy = self.dmp_policy(
                &format!("{field}.policy"),
                raw.dmp.as_ref().map(|d| &d.policy),
                &t.policy,
                !geographic.is_empty(),
            );
            if let (Some(id), Some(structure)) = (id, structure) {
                tenants.push(Tenant {
                    id,
                    policy,
                    structure_id: structure,
                    geographic_structure_ids: geographic,
                    certificates,
                });
            }
        }
        tenants
    }

    /// A FINESS structure id whose 9th character is not its check key.
    fn finess_key(&mut self, field: &str, id: &StructureId) {
        if id.kind() != StructureKind::Finess {
            return;
        }
        let number = id.number();
        match id.expected_finess_key() {
            Some(key) if number.ends_with(key) => {}
            Some(key) => self.error(
                field,
                format!(
                    "FINESS {number} fails its check key: its 9th character is {:?}, the key of {} is {key:?} (Luhn over the first 8 characters): check the number against the FINESS register",
                    number.chars().nth(8).unwrap_or(' '),
                    &number[..8]
                ),
            ),
            None => self.warning(
                field,
                format!(
                    "FINESS {number}: its check key cannot be verified (letters other than the A / B of Corsica's 2A / 2B)"
                ),
            ),
        }
    }
}
