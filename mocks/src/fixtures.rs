//! Requests written from the DMP WSDL/XSD annex, one per operation (`fixtures/dmp/`,
//! checked by `fixtures/dmp/check.sh`), for the tests that drive every operation
//! through the mock and through Passerelle. They are not built by Passerelle's code.

/// One operation's fixture.
#[derive(Debug, Clone, Copy)]
pub struct OperationFixture {
    /// File stem under `fixtures/dmp/requests` and `responses`.
    pub name: &'static str,
    /// DMP service path.
    pub service: &'static str,
    /// Every Action spelling the operation is called with (WSDL `wsaw:Action`,
    /// `soapAction`, WS-Addressing default).
    pub actions: &'static [&'static str],
    /// The SOAP Body's element, as a standalone document.
    pub request: &'static str,
    /// Schema of the answer's body, relative to `fixtures/dmp`.
    pub response_schema: &'static str,
    /// Whether it only reads.
    pub reads_only: bool,
}

macro_rules! request {
    ($name:literal) => {
        include_str!(concat!("../fixtures/dmp/requests/", $name, ".xml"))
    };
}

/// Every operation except ITI-41, which the tests build with its documents and lot.
pub const DMP_OPERATIONS: [OperationFixture; 14] = [
    OperationFixture {
        name: "iti18",
        service: "registry",
        actions: &["urn:ihe:iti:2007:RegistryStoredQuery"],
        request: request!("iti18"),
        response_schema: "schemas/XDS.b_DocumentRegistry.xsd",
        reads_only: true,
    },
    OperationFixture {
        name: "iti57",
        service: "registry",
        actions: &["urn:ihe:iti:2010:UpdateDocumentSet"],
        request: request!("iti57"),
        response_schema: "schemas/XDS.b_DocumentRegistry.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "iti43",
        service: "repository",
        actions: &["urn:ihe:iti:2007:RetrieveDocumentSet"],
        request: request!("iti43"),
        response_schema: "schemas/XDS.b_DocumentRepository-XOP.xsd",
        reads_only: true,
    },
    OperationFixture {
        name: "prpa_in201307",
        service: "patients",
        actions: &["urn:hl7-org:v3:PRPA_IN201307UV02"],
        request: request!("prpa_in201307"),
        response_schema: "schemas/GestionDossierPatientPartage.xsd",
        reads_only: true,
    },
    OperationFixture {
        name: "prpa_in201311",
        service: "patients",
        actions: &["urn:hl7-org:v3:PRPA_IN201311UV02"],
        request: request!("prpa_in201311"),
        response_schema: "schemas/GestionDossierPatientPartage.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "prpa_in201314",
        service: "patients",
        actions: &["urn:hl7-org:v3:PRPA_IN201314UV02"],
        request: request!("prpa_in201314"),
        response_schema: "schemas/GestionDossierPatientPartage.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "prpa_in201305",
        service: "patients",
        actions: &["urn:hl7-org:v3:PRPA_IN201305UV02"],
        request: request!("prpa_in201305"),
        response_schema: "schemas/PDQSupplier.xsd",
        reads_only: true,
    },
    OperationFixture {
        name: "setAuthorization",
        service: "habilitations",
        actions: &[
            "urn:si-dmp-habilitations:HabilitationsEndPoint:setAuthorization",
            "urn:hl7-org:v3:setAuthorization",
        ],
        request: request!("setAuthorization"),
        response_schema: "schemas/Habilitations.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "listAuthorizationByPatient",
        service: "habilitations",
        actions: &[
            "urn:si-dmp-habilitations:HabilitationsEndPoint:listAuthorizationByPatient",
            "urn:hl7-org:v3:listAuthorizationByPatient",
        ],
        request: request!("listAuthorizationByPatient"),
        response_schema: "schemas/Habilitations.xsd",
        reads_only: true,
    },
    OperationFixture {
        name: "patientList",
        service: "PatientSpecific",
        actions: &["urn:si-dmp-patients:PatientSpecificEndPoint:patientList"],
        request: request!("patientList"),
        response_schema: "schemas/PatientsSpecific.xsd",
        reads_only: true,
    },
    OperationFixture {
        name: "createPatientAccess",
        service: "PatientSpecific",
        actions: &["urn:si-dmp-patients:PatientSpecificEndPoint:createPatientAccess"],
        request: request!("createPatientAccess"),
        response_schema: "schemas/PatientsSpecific-access-supplement.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "patientOTPUpdate",
        service: "PatientSpecific",
        actions: &["urn:si-dmp-patients:PatientSpecificEndPoint:patientOTPUpdate"],
        request: request!("patientOTPUpdate"),
        response_schema: "schemas/PatientsSpecific-access-supplement.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "updatePatientAccess",
        service: "PatientSpecific",
        actions: &["urn:si-dmp-patients:PatientSpecificEndPoint:updatePatientAccess"],
        request: request!("updatePatientAccess"),
        response_schema: "schemas/PatientsSpecific-access-supplement.xsd",
        reads_only: false,
    },
    OperationFixture {
        name: "identityCertification",
        service: "patientCertif",
        actions: &["urn:si-dmp-patients:PatientCertificationEndPoint:identityCertification"],
        request: request!("identityCertification"),
        response_schema: "schemas/patientCertif.xsd",
        reads_only: true,
    },
];

/// The folder of the DMP fixtures (schemas for the answers).
pub fn dmp_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dmp")
}

/// The request's body element without its XML declaration (to embed in an envelope).
pub fn body_element(request: &str) -> &str {
    let text = request.trim_start_matches('\u{feff}').trim_start();
    match text.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(text, |(_, b)| b.trim_start()),
        None => text,
    }
}

/// XDS classification scheme of the submission set's author.
pub const SUBMISSION_SET_AUTHOR_SCHEME: &str = passerelle_soap::xds::SET_AUTHOR_SCHEME;
/// XDS classification scheme of a document entry's author.
pub const DOCUMENT_AUTHOR_SCHEME: &str = passerelle_soap::xds::DOCUMENT_AUTHOR_SCHEME;

/// The author of the test submissions as the DMP's XDS metadata carries it: the
/// physician of the test VIHFs (XCN, RPPS), his role and specialty, working at
/// `structure` (`authorInstitution`, XON: the prefixed FINESS EG the VIHF names),
/// as a `rim:Classification` of `object` under `scheme`
/// ([`SUBMISSION_SET_AUTHOR_SCHEME`] or [`DOCUMENT_AUTHOR_SCHEME`]).
pub fn author_classification(scheme: &str, object: &str, structure: &str) -> String {
    let slot = |name: &str, value: &str| {
        format!(
            r#"<rim:Slot name="{name}"><rim:ValueList><rim:Value>{value}</rim:Value></rim:ValueList></rim:Slot>"#
        )
    };
    format!(
        r#"<rim:Classification classificationScheme="{scheme}" classifiedObject="{object}" id="urn:uuid:{id}" nodeRepresentation="" objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification">{slots}</rim:Classification>"#,
        id = uuid::Uuid::new_v4(),
        slots = [
            slot(
                "authorInstitution",
                &format!(
                    "CENTRE HOSPITALIER TEST^^^^^&amp;1.2.250.1.71.4.2.2&amp;ISO^IDNST^^^{structure}"
                ),
            ),
            slot(
                "authorPerson",
                "899900063480^LIBRE^MAX^^^^^^&amp;1.2.250.1.71.4.2.1&amp;ISO^D^^^IDNPS",
            ),
            slot("authorRole", "10^Médecin^1.2.250.1.71.1.2.7"),
            slot(
                "authorSpecialty",
                "G15_10/SM26^Qualifié en médecine générale^1.2.250.1.213.1.1.4.5",
            ),
        ]
        .concat(),
    )
}
