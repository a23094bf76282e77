//! `[insi]`: the INSi endpoint, its trust and timeouts.

use super::Validator;
use crate::file;
use crate::model::InsiService;

impl Validator {
    pub(super) fn insi(&mut self, i: &file::InsiSection) -> Option<InsiService> {
        let url = self.https_url("insi.url", &i.url);
        let trust = self.upstream_trust("insi", &i.trust_anchors, &i.crls);
        let timeouts = self.timeouts("insi", &i.timeouts);
        Some(InsiService {
            url: url?,
            trust,
            timeouts: timeouts?,
        })
    }
}
