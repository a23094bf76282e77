//! `[dmp]`: the DMP endpoint, its services, trust, timeouts and signing choices.

use super::Validator;
use crate::file;
use crate::model::{DmpPolicy, DmpService, DmpSigning, PolicyMode, SignatureDigest};

impl Validator {
    pub(super) fn dmp(
        &mut self,
        d: &file::DmpSection,
        egress: Option<&super::egress::Egress>,
    ) -> Option<DmpService> {
        let base_url = self.https_url("dmp.base_url", &d.base_url);
        let route = base_url
            .as_ref()
            .and_then(|u| self.egress_route("dmp", d.egress.as_deref(), u, egress));
        for (name, path) in &d.services {
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok_name {
                self.error(
                    &format!("dmp.services.{name}"),
                    "service names may hold only letters, digits, '-' and '_' (they become /dmp/<name>)",
                );
            }
            if path.is_empty() || path.contains(['/', '?', '#', ' ']) {
                self.error(
                    &format!("dmp.services.{name}"),
                    format!("{path:?} must be one path segment such as \"registry\""),
                );
            }
        }
        if d.services.is_empty() {
            self.error("dmp.services", "no DMP service declared");
        }
        let trust = self.upstream_trust("dmp", &d.trust_anchors, &d.crls);
        let timeouts = self.timeouts("dmp", &d.timeouts);
        let signing = self.dmp_signing(&d.signing);
        Some(DmpService {
            base_url: base_url?,
            services: d.services.clone(),
            trust,
            timeouts: timeouts?,
            signing: signing?,
            egress: route,
        })
    }

    fn digest(&mut self, field: &str, value: &str) -> Option<SignatureDigest> {
        match value {
            "sha256" => Some(SignatureDigest::Sha256),
            "sha1" => Some(SignatureDigest::Sha1),
            other => {
                self.error(
                    field,
                    format!("{other:?} is not a digest: \"sha256\" or \"sha1\""),
                );
                None
            }
        }
    }

    fn dmp_signing(&mut self, s: &file::DmpSigningSection) -> Option<DmpSigning> {
        const AUTH_MODE: [&str; 2] = ["Authentification_mode", "Authentification_Mode"];
        if !AUTH_MODE.contains(&s.auth_mode_attribute.as_str()) {
            self.error(
                "dmp.signing.auth_mode_attribute",
                format!(
                    "{:?} must be \"Authentification_mode\" or \"Authentification_Mode\"",
                    s.auth_mode_attribute
                ),
            );
        }
        if s.vihf_version.trim().is_empty() {
            self.error(
                "dmp.signing.vihf_version",
                "must not be empty (e.g. \"3.0\")",
            );
        }
        let vihf_digest = self.digest("dmp.signing.vihf_digest", &s.vihf_digest);
        let lot_digest = self.digest("dmp.signing.lot_digest", &s.lot_digest);
        let max_authn_age = self.duration("dmp.signing.max_authn_age", &s.max_authn_age);
        Some(DmpSigning {
            vihf_version: s.vihf_version.clone(),
            auth_mode_attribute: s.auth_mode_attribute.clone(),
            vihf_digest: vihf_digest?,
            lot_digest: lot_digest?,
            inclusive_prefixes: s.inclusive_prefixes.clone(),
            lot_signature_passthrough: s.lot_signature_passthrough,
            max_authn_age: max_authn_age?,
        })
    }

    /// `[dmp.policy]` overridden key by key by the tenant's `policy`, resolved:
    /// `require_geographic` defaults to whether the tenant lists geographic entities.
    pub(super) fn dmp_policy(
        &mut self,
        field: &str,
        global: Option<&file::DmpPolicySection>,
        tenant: &file::DmpPolicySection,
        has_geographic: bool,
    ) -> DmpPolicy {
        let pick = |f: fn(&file::DmpPolicySection) -> Option<String>| {
            f(tenant)
                .map(|v| (field.to_string(), v))
                .or_else(|| global.and_then(f).map(|v| ("dmp.policy".to_string(), v)))
        };
        let mode = |v: &mut Self,
                    key: &str,
                    value: Option<(String, String)>,
                    default: PolicyMode,
                    off: bool| {
            match value.as_ref().map(|(f, v)| (f.as_str(), v.as_str())) {
                None => default,
                Some((_, "refuse")) => PolicyMode::Refuse,
                Some((_, "warn")) => PolicyMode::Warn,
                Some((_, "off")) if off => PolicyMode::Off,
                Some((f, other)) => {
                    let allowed = if off {
                        "\"refuse\", \"warn\" or \"off\""
                    } else {
                        "\"refuse\" or \"warn\""
                    };
                    v.error(
                        &format!("{f}.{key}"),
                        format!("{other:?} must be {allowed}"),
                    );
                    default
                }
            }
        };
        let consistency = pick(|p| p.structure_consistency.clone());
        let cda = pick(|p| p.cda_structure.clone());
        DmpPolicy {
            structure_consistency: mode(
                self,
                "structure_consistency",
                consistency,
                PolicyMode::Refuse,
                false,
            ),
            cda_structure: mode(self, "cda_structure", cda, PolicyMode::Warn, true),
            require_geographic: tenant
                .require_geographic
                .or(global.and_then(|g| g.require_geographic))
                .unwrap_or(has_geographic),
        }
    }
}
