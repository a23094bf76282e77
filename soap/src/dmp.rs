//! The DMP's operations as a closed set (domain.md §4, WSDL annex v2.01.04 in
//! `../shared/spec/dmp/wsdl`): which service path serves each one, every WS-Addressing
//! Action spelling it is known under, and whether it only reads (may be re-sent when
//! provably unsent) or changes state (never re-sent).
//!
//! Several operations are spelled two ways: the WSDL's `soapAction` (for example
//! `urn:hl7-org:v3:setAuthorization` in `Habilitations.wsdl`) and the WS-Addressing
//! default Action `<targetNamespace>:<portType>:<input>` that the official examples and
//! working clients send (`urn:si-dmp-habilitations:HabilitationsEndPoint:setAuthorization`).
//! Both are accepted and forwarded as the internal system wrote them.

use std::fmt;

use crate::xds::{ITI18, ITI41, ITI43, ITI57};

/// A DMP service (the last segment of `.../si-dmp-server/v2/services/<path>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DmpService {
    Registry,
    Repository,
    Patients,
    Habilitations,
    PatientSpecific,
    PatientCertif,
}

impl DmpService {
    pub const ALL: [DmpService; 6] = [
        Self::Registry,
        Self::Repository,
        Self::Patients,
        Self::Habilitations,
        Self::PatientSpecific,
        Self::PatientCertif,
    ];

    /// The service path as the DMP spells it.
    pub fn path(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Repository => "repository",
            Self::Patients => "patients",
            Self::Habilitations => "habilitations",
            Self::PatientSpecific => "PatientSpecific",
            Self::PatientCertif => "patientCertif",
        }
    }

    /// The service of a path (exact spelling).
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.path() == path)
    }

    /// The operations it serves.
    pub fn operations(self) -> impl Iterator<Item = DmpOperation> {
        DmpOperation::ALL
            .into_iter()
            .filter(move |o| o.service() == self)
    }
}

impl fmt::Display for DmpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// One operation of the DMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DmpOperation {
    /// TD3.1, ITI-18 RegistryStoredQuery.
    Iti18,
    /// TD3.3, ITI-57 UpdateDocumentSet.
    Iti57,
    /// TD2.1 / TD2.2, ITI-41 ProvideAndRegisterDocumentSet-b.
    Iti41,
    /// TD3.2, ITI-43 RetrieveDocumentSet.
    Iti43,
    /// TD0.2 / TD1.3a, patient demographics (DMP existence, consultation).
    PatientGet,
    /// TD1.1, patient add (DMP creation).
    PatientAdd,
    /// TD1.3b / TD1.4, patient revise (DMP update, closure).
    PatientRevise,
    /// TD0.5, patient search without INS (PDQ).
    PatientQuery,
    /// TD0.3, set or remove an authorisation.
    SetAuthorization,
    /// TD1.6, authorisations of a patient.
    ListAuthorizationByPatient,
    /// TD0.4, DMPs the professional is authorised on.
    PatientList,
    /// TD1.5a, patient web access creation.
    CreatePatientAccess,
    /// TD1.5b, one-time-password channel update.
    PatientOtpUpdate,
    /// TD1.5d, patient web access update.
    UpdatePatientAccess,
    /// Identity certification (`patientCertif.wsdl`).
    IdentityCertification,
}

impl DmpOperation {
    pub const ALL: [DmpOperation; 15] = [
        Self::Iti18,
        Self::Iti57,
        Self::Iti41,
        Self::Iti43,
        Self::PatientGet,
        Self::PatientAdd,
        Self::PatientRevise,
        Self::PatientQuery,
        Self::SetAuthorization,
        Self::ListAuthorizationByPatient,
        Self::PatientList,
        Self::CreatePatientAccess,
        Self::PatientOtpUpdate,
        Self::UpdatePatientAccess,
        Self::IdentityCertification,
    ];

    pub fn service(self) -> DmpService {
        match self {
            Self::Iti18 | Self::Iti57 => DmpService::Registry,
            Self::Iti41 | Self::Iti43 => DmpService::Repository,
            Self::PatientGet | Self::PatientAdd | Self::PatientRevise | Self::PatientQuery => {
                DmpService::Patients
            }
            Self::SetAuthorization | Self::ListAuthorizationByPatient => DmpService::Habilitations,
            Self::PatientList
            | Self::CreatePatientAccess
            | Self::PatientOtpUpdate
            | Self::UpdatePatientAccess => DmpService::PatientSpecific,
            Self::IdentityCertification => DmpService::PatientCertif,
        }
    }

    /// Every Action spelling, the usual one first.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Self::Iti18 => &[ITI18],
            Self::Iti57 => &[ITI57],
            Self::Iti41 => &[ITI41],
            Self::Iti43 => &[ITI43],
            Self::PatientGet => &["urn:hl7-org:v3:PRPA_IN201307UV02"],
            Self::PatientAdd => &["urn:hl7-org:v3:PRPA_IN201311UV02"],
            Self::PatientRevise => &["urn:hl7-org:v3:PRPA_IN201314UV02"],
            Self::PatientQuery => &["urn:hl7-org:v3:PRPA_IN201305UV02"],
            Self::SetAuthorization => &[
                "urn:si-dmp-habilitations:HabilitationsEndPoint:setAuthorization",
                "urn:hl7-org:v3:setAuthorization",
            ],
            Self::ListAuthorizationByPatient => &[
                "urn:si-dmp-habilitations:HabilitationsEndPoint:listAuthorizationByPatient",
                "urn:hl7-org:v3:listAuthorizationByPatient",
            ],
            Self::PatientList => &["urn:si-dmp-patients:PatientSpecificEndPoint:patientList"],
            Self::CreatePatientAccess => {
                &["urn:si-dmp-patients:PatientSpecificEndPoint:createPatientAccess"]
            }
            Self::PatientOtpUpdate => {
                &["urn:si-dmp-patients:PatientSpecificEndPoint:patientOTPUpdate"]
            }
            Self::UpdatePatientAccess => {
                &["urn:si-dmp-patients:PatientSpecificEndPoint:updatePatientAccess"]
            }
            Self::IdentityCertification => {
                &["urn:si-dmp-patients:PatientCertificationEndPoint:identityCertification"]
            }
        }
    }

    /// The SOAP Body's element (namespace, local name), as the WSDL annex declares it
    /// (the three web-access operations, absent from the annex, follow its pattern).
    pub fn body_element(self) -> (&'static str, &'static str) {
        const HL7: &str = "urn:hl7-org:v3";
        const PATIENTS: &str = "urn:si-dmp-patients";
        const HABILITATIONS: &str = "urn:si-dmp-habilitations";
        match self {
            Self::Iti18 => (crate::xds::QUERY, "AdhocQueryRequest"),
            Self::Iti57 => (crate::xds::LCM, "SubmitObjectsRequest"),
            Self::Iti41 => (crate::xds::XDSB, "ProvideAndRegisterDocumentSetRequest"),
            Self::Iti43 => (crate::xds::XDSB, "RetrieveDocumentSetRequest"),
            Self::PatientGet => (HL7, "PRPA_IN201307UV02"),
            Self::PatientAdd => (HL7, "PRPA_IN201311UV02"),
            Self::PatientRevise => (HL7, "PRPA_IN201314UV02"),
            Self::PatientQuery => (HL7, "PRPA_IN201305UV02"),
            Self::SetAuthorization => (HABILITATIONS, "setAuthorization"),
            Self::ListAuthorizationByPatient => (HABILITATIONS, "listAuthorizationByPatient"),
            Self::PatientList => (PATIENTS, "patientList"),
            Self::CreatePatientAccess => (PATIENTS, "createPatientAccess"),
            Self::PatientOtpUpdate => (PATIENTS, "patientOTPUpdate"),
            Self::UpdatePatientAccess => (PATIENTS, "updatePatientAccess"),
            Self::IdentityCertification => (PATIENTS, "identityCertification"),
        }
    }

    /// The operation an Action names on `service`.
    pub fn from_action(service: DmpService, action: &str) -> Option<Self> {
        service.operations().find(|o| o.actions().contains(&action))
    }

    /// Whether it only reads. Reads may be re-sent when the connection failed before
    /// anything was written; everything else changes state and is never re-sent.
    pub fn reads_only(self) -> bool {
        matches!(
            self,
            Self::Iti18
                | Self::Iti43
                | Self::PatientGet
                | Self::PatientQuery
                | Self::ListAuthorizationByPatient
                | Self::PatientList
                | Self::IdentityCertification
        )
    }

    /// A short stable name (metric label, logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::Iti18 => "iti18",
            Self::Iti57 => "iti57",
            Self::Iti41 => "iti41",
            Self::Iti43 => "iti43",
            Self::PatientGet => "prpa_in201307",
            Self::PatientAdd => "prpa_in201311",
            Self::PatientRevise => "prpa_in201314",
            Self::PatientQuery => "prpa_in201305",
            Self::SetAuthorization => "setAuthorization",
            Self::ListAuthorizationByPatient => "listAuthorizationByPatient",
            Self::PatientList => "patientList",
            Self::CreatePatientAccess => "createPatientAccess",
            Self::PatientOtpUpdate => "patientOTPUpdate",
            Self::UpdatePatientAccess => "updatePatientAccess",
            Self::IdentityCertification => "identityCertification",
        }
    }
}

impl fmt::Display for DmpOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_names_one_operation() {
        let mut seen = std::collections::HashSet::new();
        for op in DmpOperation::ALL {
            assert!(!op.actions().is_empty(), "{op}");
            for a in op.actions() {
                assert!(seen.insert(*a), "{a} listed twice");
                assert_eq!(DmpOperation::from_action(op.service(), a), Some(op));
            }
        }
        for s in DmpService::ALL {
            assert_eq!(DmpService::from_path(s.path()), Some(s));
            assert!(s.operations().next().is_some(), "{s}");
        }
    }

    #[test]
    fn only_reads_are_retryable() {
        let writes: Vec<_> = DmpOperation::ALL
            .into_iter()
            .filter(|o| !o.reads_only())
            .map(DmpOperation::name)
            .collect();
        assert_eq!(
            writes,
            [
                "iti57",
                "iti41",
                "prpa_in201311",
                "prpa_in201314",
                "setAuthorization",
                "createPatientAccess",
                "patientOTPUpdate",
                "updatePatientAccess"
            ]
        );
        // An Action of another service is not an operation of this one.
        assert_eq!(DmpOperation::from_action(DmpService::Registry, ITI41), None);
    }
}
