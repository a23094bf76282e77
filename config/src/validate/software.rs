//! `[software]`: the software identity carried in VIHF tokens and INSi contexts.

use super::Validator;
use crate::file;
use crate::model::Software;

impl Validator {
    pub(super) fn software(&mut self, s: &file::SoftwareSection) -> Option<Software> {
        for (field, value) in [
            ("software.lps_name", &s.lps_name),
            ("software.lps_version", &s.lps_version),
        ] {
            if value.trim().is_empty() {
                self.error(field, "must not be empty");
            }
        }
        if s.dmp_homologation_id.trim().is_empty() {
            self.warning(
                "software.dmp_homologation_id",
                "empty: the DMP expects the CNDA homologation number in LPS_ID_HOMOLOGATION_DMP",
            );
        }
        if s.insi_idam.trim().is_empty() {
            self.warning(
                "software.insi_idam",
                "empty: INSi contexts carry the IDAM given by the CNAM",
            );
        }
        let instance_id = match uuid::Uuid::parse_str(&s.instance_id) {
            Ok(u) => Some(u),
            Err(_) => {
                self.error(
                    "software.instance_id",
                    format!(
                        "{:?} is not a UUID (generate one with `uuidgen`)",
                        s.instance_id
                    ),
                );
                None
            }
        };
        let lps_id = match s.lps_id.as_deref().map(str::trim) {
            Some("") => {
                self.error(
                    "software.lps_id",
                    "empty: remove the key, or give the LPS_ID to emit (e.g. \"01.01.01.01\")",
                );
                None
            }
            other => other.map(str::to_string),
        };
        Some(Software {
            lps_name: s.lps_name.clone(),
            lps_version: s.lps_version.clone(),
            dmp_homologation_id: s.dmp_homologation_id.clone(),
            lps_id,
            insi_idam: s.insi_idam.clone(),
            instance_id: instance_id?,
        })
    }
}
