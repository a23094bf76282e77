//! One structure everywhere (domain.md §2): a certificate held by the legal entity (EJ)
//! serves its geographic entities (EG), and the DMP metadata names the EG that acts —
//! in the VIHF (`Identifiant_Structure`), the submission set and each document entry
//! (`authorInstitution`), and the CDA (`representedOrganization`). The DMP checks that
//! the structure belongs to the certificate's legal entity; Passerelle checks before
//! anything is signed, by the tenant's `[dmp.policy]`:
//! - every structure named in the VIHF and the XDS metadata is the tenant's EJ or one
//!   of its EGs (`ForeignStructure`, naming where it was found: always refused);
//! - with `require_geographic` (default when the tenant lists EGs), the EJ is refused
//!   where an EG is expected (`GeographicRequired`);
//! - `structure_consistency`: the VIHF's structure is the submission set's
//!   (`StructureMismatch`, or a warning);
//! - `cda_structure`: a CDA's `representedOrganization` outside the tenant is refused,
//!   warned (default: documents may come from other establishments) or not checked.
//!
//! Warnings are logged (structure ids, no patient data) and counted.

use passerelle_config::{PolicyMode, StructureId};

use super::submission::LotPlan;
use crate::fault::ProxyError;
use crate::state::TenantRuntime;

/// A rule let through by the policy: its metric label and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructureWarning {
    /// `vihf_submission_set_mismatch` or `cda_foreign_structure`.
    pub kind: &'static str,
    pub message: String,
}

fn parse(tenant: &TenantRuntime, text: &str, place: &str) -> Result<StructureId, ProxyError> {
    text.parse().map_err(|_| ProxyError::ForeignStructure {
        structure: text.to_string(),
        place: place.to_string(),
        tenant: tenant.id.to_string(),
    })
}

/// The EJ where an EG is expected, or a structure outside the tenant.
fn expect_geographic(
    tenant: &TenantRuntime,
    structure: &StructureId,
    place: &str,
) -> Result<(), ProxyError> {
    if !tenant.owns_structure(structure) {
        return Err(ProxyError::ForeignStructure {
            structure: structure.to_string(),
            place: place.to_string(),
            tenant: tenant.id.to_string(),
        });
    }
    if tenant.policy.require_geographic
        && !tenant.geographic_structure_ids.is_empty()
        && *structure == tenant.structure_id
    {
        return Err(ProxyError::GeographicRequired {
            structure: structure.to_string(),
            place: place.to_string(),
            tenant: tenant.id.to_string(),
            geographic: tenant
                .geographic_structure_ids
                .iter()
                .map(StructureId::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(())
}

/// Checks the VIHF's structure and, for a submission, its metadata and documents.
pub fn check(
    tenant: &TenantRuntime,
    vihf_structure: &str,
    lot: Option<&LotPlan>,
) -> Result<Vec<StructureWarning>, ProxyError> {
    let place = "VIHF Identifiant_Structure";
    let vihf = parse(tenant, vihf_structure, place)?;
    expect_geographic(tenant, &vihf, place)?;
    let Some(lot) = lot else {
        return Ok(Vec::new());
    };
    let mut warnings = Vec::new();
    let set_place = "submission set authorInstitution";
    let mut set = Vec::new();
    for text in lot.set_institutions() {
        let s = parse(tenant, text, set_place)?;
        expect_geographic(tenant, &s, set_place)?;
        set.push(s);
    }
    // Where EGs are required the submission set must name one: without it the
    // consistency with the VIHF could not be checked at all.
    if set.is_empty()
        && tenant.policy.require_geographic
        && !tenant.geographic_structure_ids.is_empty()
    {
        return Err(ProxyError::GeographicRequired {
            structure: "no structure".into(),
            place: set_place.to_string(),
            tenant: tenant.id.to_string(),
            geographic: tenant
                .geographic_structure_ids
                .iter()
                .map(StructureId::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for d in &lot.documents {
        let place = format!("document entry {} authorInstitution", d.entry_id);
        for text in &d.institutions {
            let s = parse(tenant, text, &place)?;
            expect_geographic(tenant, &s, &place)?;
        }
    }
    if !set.is_empty() && !set.contains(&vihf) {
        let set_text = set
            .iter()
            .map(StructureId::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match tenant.policy.structure_consistency {
            PolicyMode::Refuse => {
                return Err(ProxyError::StructureMismatch {
                    vihf: vihf.to_string(),
                    set: set_text,
                });
            }
            PolicyMode::Warn | PolicyMode::Off => warnings.push(StructureWarning {
                kind: "vihf_submission_set_mismatch",
                message: format!(
                    "the VIHF's Identifiant_Structure {vihf} is not the submission set's authorInstitution ({set_text})"
                ),
            }),
        }
    }
    if tenant.policy.cda_structure != PolicyMode::Off {
        for (entry, organizations) in lot.cda_organizations() {
            for org in organizations {
                let owned = org
                    .parse::<StructureId>()
                    .is_ok_and(|s| tenant.owns_structure(&s));
                if owned {
                    continue;
                }
                let place = format!("document entry {entry} CDA representedOrganization");
                match tenant.policy.cda_structure {
                    PolicyMode::Refuse => {
                        return Err(ProxyError::ForeignStructure {
                            structure: org,
                            place,
                            tenant: tenant.id.to_string(),
                        });
                    }
                    _ => warnings.push(StructureWarning {
                        kind: "cda_foreign_structure",
                        message: format!(
                            "{place} {org} is not one of tenant {}'s structures",
                            tenant.id
                        ),
                    }),
                }
            }
        }
    }
    Ok(warnings)
}
