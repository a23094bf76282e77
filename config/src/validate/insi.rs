//! `[insi]`: the INSi endpoint, its trust and timeouts.

use super::Validator;
use crate::file;
use crate::model::InsiService;

impl Validator {
    pub(super) fn insi(
        &mut self,
        i: &file::InsiSection,
        egress: Option<&super::egress::Egress>,
    ) -> Option<InsiService> {
        let url = self.https_url("insi.url", &i.url);
        let route = url
            .as_ref()
            .and_then(|u| self.egress_route("insi", i.egress.as_deref(), u, egress));
        let trust = self.upstream_trust("insi", &i.trust_anchors, &i.crls);
        let timeouts = self.timeouts("insi", &i.timeouts);
        Some(InsiService {
            url: url?,
            trust,
            timeouts: timeouts?,
            egress: route,
        })
    }
}
