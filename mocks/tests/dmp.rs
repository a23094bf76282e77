//! The mock DMP driven by a plain mutual-TLS client: VIHF checks (values read by
//! libxml2's XPath), the SOAP/HTTP binding, ITI-41 with lot signature over MTOM, ITI-18,
//! ITI-43, ITI-57, canned HL7v3; responses validated against the ebRS / XDS.b XSDs.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{client_config, post_raw, spec, xmllint};
use passerelle_certs_test::{Manifest, shared_test_pki};
use passerelle_config::{CertRole, Config};
use passerelle_mocks::dmp::{self, MockDmp};
use passerelle_mocks::faults::Faults;
use passerelle_mocks::fixtures::{DMP_OPERATIONS, body_element, dmp_dir};
use passerelle_mocks::mtom;
use passerelle_mocks::server::Running;
use passerelle_mocks::soap::{Envelope, standalone};
use passerelle_signing::lot::LotMetadataInput;
use passerelle_signing::{
    DigestAlgorithm, DocumentDigest, LotRequest, SoftwareIdentity, SoftwareSigner, VihfContext,
    lot_metadata, sign_lot, sign_vihf,
};

const PATIENT: &str = "207058575627097^^^&1.2.250.1.213.1.4.10&ISO^NH";

struct Fixture {
    pki: Manifest,
    config: Config,
    mock: Running,
    service: Arc<MockDmp>,
}

async fn fixture() -> Fixture {
    fixture_retaining(passerelle_mocks::dmp::DEFAULT_RETAIN).await
}

/// A mock keeping the last `retain` submission sets and exchanges.
async fn fixture_retaining(retain: usize) -> Fixture {
    let pki = shared_test_pki().expect("PKI");
    let config = passerelle_config::load(&pki.path(&pki.config)).expect("config");
    let any = "127.0.0.1:0".parse().expect("addr");
    let (mock, service) = passerelle_mocks::start_dmp_retaining(
        &pki,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/dmp"),
        any,
        any,
        Faults::default(),
        retain,
    )
    .await
    .expect("start");
    // The strict reading of WS-Addressing's mustUnderstand (off by default, for the proxy).
    service.require_must_understand(true);
    Fixture {
        pki,
        config,
        mock,
        service,
    }
}

impl Fixture {
    fn tls(&self, tenant: usize) -> Arc<rustls::ClientConfig> {
        let leaf = &self.pki.tenants[tenant].dmp_auth;
        client_config(
            &self.pki.path(&self.pki.ca.root),
            Some((&self.pki.path(&leaf.chain), &self.pki.path(&leaf.key))),
        )
    }

    fn signer(&self, tenant: usize) -> SoftwareSigner {
        SoftwareSigner::from_material(&self.config.tenants[tenant].certificates[&CertRole::DmpSign])
            .expect("signer")
    }

    /// A VIHF of tenant `signer` for `structure`, issued `age` ago.
    fn vihf(&self, signer: usize, structure: &str, age: time::Duration) -> String {
        let mut ctx = VihfContext::from_json(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/vihf-context.json"
            ))
            .expect("example"),
        )
        .expect("context");
        ctx.structure_id = structure.to_string();
        let software = SoftwareIdentity {
            name: "PASSERELLE".into(),
            version: "0.1.0".into(),
            homologation_id: "H".into(),
            lps_id: None,
        };
        sign_vihf(
            &ctx,
            &software,
            &self.signer(signer),
            time::OffsetDateTime::now_utc() - age,
        )
        .expect("vihf")
        .xml()
    }

    /// The tenant's legal entity (FINESS EJ, prefixed): refused where the DMP expects
    /// the geographic entity that acts, since the tenant has some.
    fn structure(&self, tenant: usize) -> String {
        self.pki.tenants[tenant].structure_id.clone()
    }

    /// The tenant's first geographic entity (FINESS EG, prefixed): the structure of its
    /// VIHF and of its XDS `authorInstitution`.
    fn eg(&self, tenant: usize) -> String {
        self.pki.tenants[tenant].geographic_structure_ids[0].clone()
    }

    async fn send(
        &self,
        tls_tenant: usize,
        service: &str,
        content_type: &str,
        body: Bytes,
    ) -> (u16, String, Bytes) {
        post_raw(
            self.mock.address,
            self.tls(tls_tenant),
            &format!("{}{service}", dmp::BASE_PATH),
            content_type,
            body,
        )
        .await
        .expect("request")
    }

    /// [`Fixture::send`] with extra request headers (`SOAPAction`).
    async fn send_with(
        &self,
        service: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> (u16, Bytes) {
        post_with(
            self.mock.address,
            self.tls(0),
            &format!("{}{service}", dmp::BASE_PATH),
            headers,
            body,
        )
        .await
    }
}

/// One POST with the headers given (none added but `Host`); status and body.
async fn post_with(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, Bytes) {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("tls");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("http");
    tokio::spawn(conn);
    let mut req = http::Request::post(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

const SOAP_CT: &str = "application/soap+xml; charset=utf-8";

/// The service path that serves `action` (the test's own table, from domain.md §4).
fn service_of(action: &str) -> &'static str {
    match action {
        dmp::ITI18 | dmp::ITI57 => "registry",
        dmp::ITI41 | dmp::ITI43 => "repository",
        _ => "patients",
    }
}

/// A SOAP 1.2 request with WS-Addressing (`To` = the service's URL as the client names
/// it: `Host: localhost`) and the VIHF alone in wsse:Security.
fn request(action: &str, vihf: Option<&str>, body: &str) -> String {
    request_to(service_of(action), action, vihf, body)
}

fn request_to(service: &str, action: &str, vihf: Option<&str>, body: &str) -> String {
    format!(
        r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing"><soap:Header><wsa:Action soap:mustUnderstand="true">{action}</wsa:Action><wsa:MessageID>urn:uuid:{id}</wsa:MessageID><wsa:To>https://localhost{base}{service}</wsa:To><wsa:ReplyTo soap:mustUnderstand="true"><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>{security}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#,
        base = dmp::BASE_PATH,
        id = uuid::Uuid::new_v4(),
        security = vihf
            .map(|v| format!(
                "<wsse:Security xmlns:wsse=\"{}\">{v}</wsse:Security>",
                dmp::WSSE
            ))
            .unwrap_or_default(),
    )
}

fn find_documents_query() -> String {
    format!(
        r#"<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/><rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"><rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>'{}'</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"#,
        PATIENT.replace('&', "&amp;")
    )
}

struct Doc {
    id: &'static str,
    unique_id: String,
    mime: &'static str,
    content: Vec<u8>,
}

fn documents(tag: &str) -> Vec<Doc> {
    vec![
        Doc {
            id: "Document01",
            unique_id: format!("1.2.250.1.999.{tag}.1"),
            mime: "text/xml",
            content:
                b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>CR</title></ClinicalDocument>"
                    .to_vec(),
        },
        Doc {
            id: "Document02",
            unique_id: format!("1.2.250.1.999.{tag}.2"),
            mime: "application/pdf",
            content: (0..40_000u32).map(|i| (i % 251) as u8).collect(),
        },
        Doc {
            id: "Document03",
            unique_id: format!("1.2.250.1.999.{tag}.3"),
            mime: "text/plain",
            content: b"compte rendu".to_vec(),
        },
    ]
}

use passerelle_mocks::fixtures::{
    DOCUMENT_AUTHOR_SCHEME, SUBMISSION_SET_AUTHOR_SCHEME as SET_AUTHOR_SCHEME,
    author_classification,
};

/// An ITI-41 MTOM request: documents, their metadata authored at `structure` (the EG of
/// the VIHF), and (unless `sign` is false) the lot signature document with its metadata
/// and associations. `tamper` flips a byte of document 2 after signing.
fn submission(
    f: &Fixture,
    vihf: &str,
    structure: &str,
    set_uid: &str,
    docs: &[Doc],
    sign: bool,
    tamper: bool,
) -> (String, Bytes) {
    submission_with(f, vihf, structure, set_uid, docs, sign, tamper, true)
}

/// [`submission`]; `declare_transforms` false signs the XML document's digest without
/// declaring its c14n transform (the old, non-standard lot signature).
#[allow(clippy::too_many_arguments)]
fn submission_with(
    f: &Fixture,
    vihf: &str,
    structure: &str,
    set_uid: &str,
    docs: &[Doc],
    sign: bool,
    tamper: bool,
    declare_transforms: bool,
) -> (String, Bytes) {
    let eo = |d: &Doc| {
        format!(
            r#"<rim:ExtrinsicObject id="{id}" mimeType="{mime}" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">{author}<rim:ExternalIdentifier id="urn:uuid:{u1}" identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" registryObject="{id}" value="{patient}"><rim:Name><rim:LocalizedString value="XDSDocumentEntry.patientId"/></rim:Name></rim:ExternalIdentifier><rim:ExternalIdentifier id="urn:uuid:{u2}" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" registryObject="{id}" value="{uid}"><rim:Name><rim:LocalizedString value="XDSDocumentEntry.uniqueId"/></rim:Name></rim:ExternalIdentifier></rim:ExtrinsicObject><rim:Association associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember" id="urn:uuid:{u3}" sourceObject="SubmissionSet01" targetObject="{id}"><rim:Slot name="SubmissionSetStatus"><rim:ValueList><rim:Value>Original</rim:Value></rim:ValueList></rim:Slot></rim:Association>"#,
            id = d.id,
            mime = d.mime,
            uid = d.unique_id,
            author = author_classification(DOCUMENT_AUTHOR_SCHEME, d.id, structure),
            patient = PATIENT.replace('&', "&amp;"),
            u1 = uuid::Uuid::new_v4(),
            u2 = uuid::Uuid::new_v4(),
            u3 = uuid::Uuid::new_v4(),
        )
    };
    let mut metadata: String = docs.iter().map(eo).collect();
    let mut parts: Vec<mtom::Attachment> = Vec::new();
    let mut doc_elements = String::new();
    for (i, d) in docs.iter().enumerate() {
        let cid = format!("doc{i}@test");
        let mut content = d.content.clone();
        if tamper && i == 1 {
            content[100] ^= 0xff;
        }
        parts.push(mtom::Attachment {
            content_id: cid.clone(),
            mime_type: d.mime.to_string(),
            content: Bytes::from(content),
        });
        doc_elements.push_str(&format!(r#"<xdsb:Document id="{}"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:{}"/></xdsb:Document>"#, d.id, cid.replace('@', "%40")));
    }
    if sign {
        let signed = sign_lot(
            &LotRequest {
                submission_set_unique_id: set_uid.to_string(),
                signature_unique_id: format!("{set_uid}.99"),
                documents: docs
                    .iter()
                    .map(|d| {
                        let mut digest = DocumentDigest::compute(
                            &d.unique_id,
                            d.mime,
                            &d.content,
                            DigestAlgorithm::Sha256,
                        )
                        .expect("digest");
                        digest.xml &= declare_transforms;
                        digest
                    })
                    .collect(),
                digest: DigestAlgorithm::Sha256,
                signing_time: time::OffsetDateTime::now_utc(),
            },
            &f.signer(0),
        )
        .expect("lot");
        let meta = lot_metadata(
            &LotMetadataInput {
                submission_set_entry_id: "SubmissionSet01".into(),
                signature_entry_id: "SignatureDocument".into(),
                patient_id: PATIENT.into(),
                creation_time: time::OffsetDateTime::now_utc(),
                // As Passerelle does: the first document's author.
                copied_classifications: docs
                    .iter()
                    .take(1)
                    .map(|d| {
                        passerelle_signing::xml::parse(
                            &author_classification(DOCUMENT_AUTHOR_SCHEME, d.id, structure)
                                .replacen(
                                    "<rim:Classification ",
                                    "<rim:Classification xmlns:rim=\"urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0\" ",
                                    1,
                                ),
                        )
                        .expect("classification")
                    })
                    .collect(),
            },
            &signed,
        );
        metadata.push_str(&meta.extrinsic_object.to_xml());
        metadata.push_str(&meta.has_member.to_xml());
        metadata.push_str(&meta.signs.to_xml());
        parts.push(mtom::Attachment {
            content_id: "sig@test".into(),
            mime_type: "text/xml".into(),
            content: Bytes::from(signed.xml),
        });
        doc_elements.push_str(r#"<xdsb:Document id="SignatureDocument"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:sig@test"/></xdsb:Document>"#);
    }
    let body = format!(
        r#"<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryPackage id="SubmissionSet01" objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage">{set_author}<rim:ExternalIdentifier id="urn:uuid:{u}" identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8" registryObject="SubmissionSet01" value="{set_uid}"><rim:Name><rim:LocalizedString value="XDSSubmissionSet.uniqueId"/></rim:Name></rim:ExternalIdentifier></rim:RegistryPackage>{metadata}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>{doc_elements}</xdsb:ProvideAndRegisterDocumentSetRequest>"#,
        u = uuid::Uuid::new_v4(),
        set_author = author_classification(SET_AUTHOR_SCHEME, "SubmissionSet01", structure),
    );
    mtom::build(&request(dmp::ITI41, Some(vihf), &body), &parts)
}

/// The body element of a response, validated against `xsd` (relative to shared/spec/dmp/schema).
fn assert_valid_body(body: &[u8], xsd: &str) -> String {
    let env = Envelope::parse(std::str::from_utf8(body).expect("utf8")).expect("envelope");
    let (e, scope) = env.body_element().expect("body");
    let alone = standalone(e, &scope);
    let (ok, out) = xmllint(&alone, &spec().join("dmp/schema").join(xsd));
    assert!(ok, "{out}\n{alone}");
    alone
}

fn fault_reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).into_owned();
    assert!(text.contains("<soap:Fault>"), "{text}");
    text
}

#[tokio::test]
async fn submission_then_query_then_retrieve() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let docs = documents("41");
    let (ct, body) = submission(
        &f,
        &vihf,
        &f.eg(0),
        "1.2.250.1.999.41.100",
        &docs,
        true,
        false,
    );
    let (status, _, resp) = f.send(0, "repository", &ct, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let rr = assert_valid_body(&resp, "ebRS/rs.xsd");
    assert!(rr.contains("ResponseStatusType:Success"), "{rr}");
    let stored = f.service.documents();
    assert_eq!(stored.len(), 4, "3 documents + the signature document");
    assert!(
        stored
            .iter()
            .all(|d| d.client_subject == f.pki.tenants[0].dmp_auth.subject)
    );

    // ITI-18 lists them; ITI-43 returns the bytes over MTOM.
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let (status, _, resp) = f
        .send(
            0,
            "registry",
            SOAP_CT,
            Bytes::from(request(dmp::ITI18, Some(&vihf), &find_documents_query())),
        )
        .await;
    assert_eq!(status, 200);
    let list = assert_valid_body(&resp, "ebRS/query.xsd");
    for d in &docs {
        assert!(list.contains(&d.unique_id), "{} not listed", d.unique_id);
    }
    let retrieve = format!(
        r#"<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{}</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"#,
        dmp::REPOSITORY_UNIQUE_ID,
        docs[1].unique_id
    );
    let (status, ct, resp) = f
        .send(
            0,
            "repository",
            SOAP_CT,
            Bytes::from(request(dmp::ITI43, Some(&vihf), &retrieve)),
        )
        .await;
    assert_eq!(status, 200);
    let m = mtom::parse(&ct, &resp).expect("MTOM response");
    let env = Envelope::parse(std::str::from_utf8(&m.root).expect("utf8")).expect("envelope");
    let (e, scope) = env.body_element().expect("body");
    // XOP: validate the reconstructed infoset, the attachment back in as base64.
    let alone = standalone(e, &scope);
    let start = alone.find("<xop:Include").expect("xop:Include");
    let end = start + alone[start..].find("/>").expect("end") + 2;
    let href = &alone[start..end];
    let cid = mtom::cid(
        href.split("href=\"")
            .nth(1)
            .and_then(|h| h.split('"').next())
            .expect("href"),
    );
    use base64::Engine;
    let infoset = format!(
        "{}{}{}",
        &alone[..start],
        base64::engine::general_purpose::STANDARD.encode(&m.parts[&cid]),
        &alone[end..]
    );
    let (ok, out) = xmllint(
        &infoset,
        &spec().join("dmp/schema/IHE/XDS.b_DocumentRepository.xsd"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        m.parts.values().next().map(|b| b.to_vec()),
        Some(docs[1].content.clone())
    );

    // ITI-57 succeeds.
    let update = r#"<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"/></lcm:SubmitObjectsRequest>"#;
    let (status, _, resp) = f
        .send(
            0,
            "registry",
            SOAP_CT,
            Bytes::from(request(dmp::ITI57, Some(&vihf), update)),
        )
        .await;
    assert_eq!(status, 200);
    assert!(assert_valid_body(&resp, "ebRS/rs.xsd").contains("Success"));
}

#[tokio::test]
async fn duplicate_submission_gets_xds_duplicate_error() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    for expected in [
        "ResponseStatusType:Success",
        "XDSDuplicateUniqueIdInRegistry",
    ] {
        let (ct, body) = submission(
            &f,
            &vihf,
            &f.eg(0),
            "1.2.250.1.999.42.100",
            &documents("42"),
            true,
            false,
        );
        let (status, _, resp) = f.send(0, "repository", &ct, body).await;
        assert_eq!(status, 200);
        let rr = assert_valid_body(&resp, "ebRS/rs.xsd");
        assert!(rr.contains(expected), "{rr}");
    }
    assert_eq!(f.service.submissions().len(), 1);
    assert_eq!(
        f.mock
            .stats
            .count("ProvideAndRegisterDocumentSet-b", "duplicate"),
        1
    );
}

/// Submits set `set` (its documents numbered after it: "1.2.250.1.999.44.1" holds
/// 44.1.1, 44.1.2...) and returns the RegistryResponse.
async fn submit_set(f: &Fixture, vihf: &str, set: &str) -> String {
    let tag = set.trim_start_matches("1.2.250.1.999.");
    let (ct, body) = submission(f, vihf, &f.eg(0), set, &documents(tag), true, false);
    let (status, _, resp) = f.send(0, "repository", &ct, body).await;
    assert_eq!(status, 200);
    assert_valid_body(&resp, "ebRS/rs.xsd")
}

/// A long run keeps the mock's memory bounded: the oldest submission set goes, with its
/// documents, and can then be submitted again; the recorded exchanges are bounded too.
#[tokio::test]
async fn only_the_last_submission_sets_are_kept() {
    let f = fixture_retaining(2).await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    for set in [
        "1.2.250.1.999.44.1",
        "1.2.250.1.999.44.2",
        "1.2.250.1.999.44.3",
    ] {
        let rr = submit_set(&f, &vihf, set).await;
        assert!(rr.contains("ResponseStatusType:Success"), "{set}: {rr}");
    }
    assert_eq!(
        f.service.submissions(),
        ["1.2.250.1.999.44.2", "1.2.250.1.999.44.3"]
    );
    let documents = f.service.documents();
    assert_eq!(
        documents.len(),
        8,
        "two sets of 3 documents + the signature"
    );
    assert!(
        documents
            .iter()
            .all(|d| d.submission_set != "1.2.250.1.999.44.1")
    );
    // Still known: a duplicate. Forgotten: accepted again.
    assert!(
        submit_set(&f, &vihf, "1.2.250.1.999.44.3")
            .await
            .contains("XDSDuplicateUniqueIdInRegistry")
    );
    assert!(
        submit_set(&f, &vihf, "1.2.250.1.999.44.1")
            .await
            .contains("ResponseStatusType:Success")
    );
    assert_eq!(f.service.exchanges().len(), 2);
}

#[tokio::test]
async fn lot_signature_missing_or_not_matching_is_refused() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let (ct, body) = submission(
        &f,
        &vihf,
        &f.eg(0),
        "1.2.250.1.999.43.100",
        &documents("43"),
        false,
        false,
    );
    let (status, _, resp) = f.send(0, "repository", &ct, body).await;
    assert_eq!(status, 500);
    assert!(fault_reason(&resp).contains("lot signature missing"));
    let (ct, body) = submission(
        &f,
        &vihf,
        &f.eg(0),
        "1.2.250.1.999.44.100",
        &documents("44"),
        true,
        true,
    );
    let (status, _, resp) = f.send(0, "repository", &ct, body).await;
    assert_eq!(status, 500);
    let reason = fault_reason(&resp);
    assert!(
        reason.contains("lot signature")
            && reason.contains("urn:oid:1.2.250.1.999.44.2")
            && reason.contains("does not match"),
        "{reason}"
    );
    assert!(f.service.documents().is_empty(), "nothing recorded");
}

#[tokio::test]
async fn lot_reference_without_declared_transform_is_refused() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let mut docs = documents("45");
    // Raw bytes that differ from their canonical form (declaration, quotes, CRLF).
    docs[0].content =
        b"<?xml version='1.0' encoding='UTF-8'?>\r\n<ClinicalDocument xmlns='urn:hl7-org:v3'><title >CR</title></ClinicalDocument>\r\n".to_vec();
    let (ct, body) = submission_with(
        &f,
        &vihf,
        &f.eg(0),
        "1.2.250.1.999.45.100",
        &docs,
        true,
        false,
        false,
    );
    let (status, _, resp) = f.send(0, "repository", &ct, body).await;
    assert_eq!(status, 500);
    let reason = fault_reason(&resp);
    assert!(
        reason.contains("urn:oid:1.2.250.1.999.45.1") && reason.contains("declares no Transforms"),
        "{reason}"
    );
    assert!(f.service.documents().is_empty(), "nothing recorded");
    // The same lot with the transform declared is accepted.
    let (ct, body) = submission(
        &f,
        &vihf,
        &f.eg(0),
        "1.2.250.1.999.45.100",
        &docs,
        true,
        false,
    );
    let (status, _, resp) = f.send(0, "repository", &ct, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
}

#[tokio::test]
async fn vihf_checks_refuse_with_the_failed_check() {
    let f = fixture().await;
    let query = find_documents_query();
    let good = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let cases: Vec<(usize, String, &str)> = vec![
        (0, request(dmp::ITI18, None, &query), "VIHF missing"),
        (
            0,
            request(
                dmp::ITI18,
                Some(&good.replace("MAX LIBRE", "MAX LIBRF")),
                &query,
            ),
            "VIHF signature",
        ),
        (
            0,
            request(
                dmp::ITI18,
                Some(&f.vihf(0, &f.structure(1), time::Duration::ZERO)),
                &query,
            ),
            "does not belong to the legal entity",
        ),
        (
            0,
            request(
                dmp::ITI18,
                Some(&f.vihf(0, &f.structure(0), time::Duration::ZERO)),
                &query,
            ),
            "is the legal entity, which has geographic entities",
        ),
        (
            1,
            request(dmp::ITI18, Some(&good), &query),
            "is not the TLS client certificate's subject",
        ),
        (
            0,
            request(
                dmp::ITI18,
                Some(&f.vihf(0, &f.eg(0), time::Duration::minutes(10))),
                &query,
            ),
            "IssueInstant",
        ),
        (
            0,
            request_to("registry", dmp::ITI41, Some(&good), &query),
            "is not an operation of the registry service",
        ),
        (
            0,
            request(
                dmp::ITI18,
                Some(&format!("{good}<wsu:Timestamp xmlns:wsu=\"urn:x\"/>")),
                &query,
            ),
            "must hold the VIHF assertion alone",
        ),
    ];
    for (tls, req, expected) in cases {
        let (status, _, resp) = f.send(tls, "registry", SOAP_CT, Bytes::from(req)).await;
        assert_eq!(status, 500, "{expected}");
        let text = fault_reason(&resp);
        assert!(text.contains(expected), "expected {expected:?}: {text}");
    }
    // The tenant's other geographic entity is accepted too.
    let eg = f.pki.tenants[0].geographic_structure_ids[1].clone();
    let (status, _, _) = f
        .send(
            0,
            "registry",
            SOAP_CT,
            Bytes::from(request(
                dmp::ITI18,
                Some(&f.vihf(0, &eg, time::Duration::ZERO)),
                &query,
            )),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn every_wsdl_operation_is_answered_with_a_schema_valid_body() {
    let f = fixture().await;
    let catalog = f.service.catalog();
    // Every operation read from the WSDL annex has a fixture, and the reverse.
    let mut from_wsdl: Vec<String> = catalog
        .operations
        .iter()
        .flat_map(|o| o.actions.iter().cloned())
        .filter(|a| a != dmp::ITI41)
        .collect();
    from_wsdl.sort();
    let mut fixtures: Vec<String> = DMP_OPERATIONS
        .iter()
        .flat_map(|o| o.actions.iter().map(|a| a.to_string()))
        .collect();
    fixtures.sort();
    assert_eq!(from_wsdl, fixtures);
    let mut sent = 0;
    for op in DMP_OPERATIONS {
        for action in op.actions {
            let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
            let req = request_to(op.service, action, Some(&vihf), body_element(op.request));
            let (status, _, resp) = f.send(0, op.service, SOAP_CT, Bytes::from(req)).await;
            assert_eq!(status, 200, "{action}: {}", String::from_utf8_lossy(&resp));
            let text = if op.name == "iti43" {
                // MTOM answer: the root part is the envelope.
                let m = mtom::parse(
                    &format!("multipart/related; boundary=\"{}\"", boundary_of(&resp)),
                    &resp,
                )
                .expect("mtom");
                String::from_utf8(m.root.to_vec()).expect("utf8")
            } else {
                String::from_utf8(resp.to_vec()).expect("utf8")
            };
            let env = Envelope::parse(&text).expect("envelope");
            let (e, scope) = env.body_element().expect("body");
            let alone = standalone(e, &scope);
            if op.name != "iti43" {
                let (ok, out) = xmllint(&alone, &dmp_dir().join(op.response_schema));
                assert!(ok, "{action}: {out}\n{alone}");
            }
            sent += 1;
        }
    }
    let exchanges = f.service.exchanges();
    assert_eq!(exchanges.len(), sent);
    assert!(exchanges.iter().any(
        |e| e.operation == "setAuthorization" && e.action == "urn:hl7-org:v3:setAuthorization"
    ));
}

/// The MIME boundary of a multipart body (its first line).
fn boundary_of(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("--"))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[tokio::test]
async fn addressing_body_and_action_are_checked_as_the_wsdl_says() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let good = request(dmp::ITI18, Some(&vihf), &find_documents_query());
    let to = format!(
        "<wsa:To>https://localhost{}registry</wsa:To>",
        dmp::BASE_PATH
    );
    assert!(good.contains(&to));
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace(&to, &format!("{to}{to}")),
            "wsa:To appears 2 times",
        ),
        (good.replace(&to, "<wsa:To/>"), "wsa:To is empty"),
        (good.replace(&to, ""), "wsa:To is missing"),
        (
            good.replace(&to, "<wsa:To>https://localhost/elsewhere</wsa:To>"),
            "is not this service's URL",
        ),
        (
            good.replacen(
                "<wsa:MessageID>",
                "<wsa:MessageID>x</wsa:MessageID><wsa:MessageID>",
                1,
            ),
            "wsa:MessageID appears 2 times",
        ),
        (
            good.replace(
                "http://www.w3.org/2005/08/addressing/anonymous",
                "http://sih.example/callback",
            ),
            "not the anonymous endpoint",
        ),
        (
            good.replace(dmp::ITI18, "urn:ihe:iti:2007:RegistryStoredQueryX"),
            "is not an operation of the registry service's WSDL",
        ),
        (
            good.replace("returnType=\"LeafClass\"", "returnType=\"Everything\""),
            "is not valid against",
        ),
        (
            good.replace("query:AdhocQueryRequest", "query:AdhocQueryResponse"),
            "takes {urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0}AdhocQueryRequest",
        ),
    ];
    for (req, expected) in cases {
        let (status, _, resp) = f.send(0, "registry", SOAP_CT, Bytes::from(req)).await;
        assert_eq!(status, 500, "{expected}");
        let text = fault_reason(&resp);
        assert!(text.contains(expected), "expected {expected:?}: {text}");
    }
    assert!(f.service.exchanges().is_empty(), "nothing accepted");
    let (status, _, _) = f
        .send(0, "registry", SOAP_CT, Bytes::from(good.clone()))
        .await;
    assert_eq!(status, 200);

    let soap11 = soap11(&good);
    let (status, body) = f
        .send_with(
            "registry",
            &[("content-type", "text/xml"), ("soapaction", dmp::ITI18)],
            Bytes::from(soap11),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = f.send(0, "nope", SOAP_CT, Bytes::from("x")).await;
    assert_eq!(status, 404);
}

/// `request` as SOAP 1.1: the envelope namespace, and `mustUnderstand="1"` (SOAP 1.1
/// takes 0|1).
fn soap11(soap12: &str) -> String {
    soap12
        .replace(
            "http://www.w3.org/2003/05/soap-envelope",
            "http://schemas.xmlsoap.org/soap/envelope/",
        )
        .replace("mustUnderstand=\"true\"", "mustUnderstand=\"1\"")
}

/// Request headers, body, and the refusal expected (empty: accepted).
type Case<'a> = (Vec<(&'a str, String)>, Bytes, &'a str);

/// Sends each `(headers, body)` and expects a fault naming `expected` (or 200 when
/// `expected` is empty).
async fn expect_all(f: &Fixture, service: &str, cases: Vec<Case<'_>>) {
    for (headers, body, expected) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, resp) = f.send_with(service, &headers, body).await;
        let text = String::from_utf8_lossy(&resp);
        if expected.is_empty() {
            assert_eq!(status, 200, "{headers:?}: {text}");
        } else {
            assert_eq!(status, 500, "{headers:?} ({expected}): {text}");
            let text = fault_reason(&resp);
            assert!(
                text.contains(expected),
                "{headers:?}: expected {expected:?}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn content_type_and_soap_action_follow_the_soap_version() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let soap12 = Bytes::from(request(dmp::ITI18, Some(&vihf), &find_documents_query()));
    let soap11 = Bytes::from(soap11(&request(
        dmp::ITI18,
        Some(&vihf),
        &find_documents_query(),
    )));
    let ct = |v: &str| vec![("content-type", v.to_string())];
    let ct_action = |v: &str, a: &str| {
        vec![
            ("content-type", v.to_string()),
            ("soapaction", a.to_string()),
        ]
    };
    let iti18 = dmp::ITI18;
    let cases = vec![
        // SOAP 1.2: application/soap+xml, charset utf-8, action = wsa:Action.
        (ct(SOAP_CT), soap12.clone(), ""),
        (ct("Application/SOAP+XML;charset=UTF-8"), soap12.clone(), ""),
        (
            ct(&format!("application/soap+xml; action=\"{iti18}\"")),
            soap12.clone(),
            "",
        ),
        (
            ct("text/xml; charset=utf-8"),
            soap12.clone(),
            "Content-Type text/xml does not match the envelope: a SOAP 1.2 request is application/soap+xml",
        ),
        (
            ct("application/xml"),
            soap12.clone(),
            "Content-Type application/xml does not match the envelope",
        ),
        (
            ct("application/soap+xml; charset=ISO-8859-1"),
            soap12.clone(),
            "Content-Type: charset \"ISO-8859-1\" is not utf-8",
        ),
        (
            ct("application/soap+xml; action=\"urn:hl7-org:v3:PRPA_IN201311UV02\""),
            soap12.clone(),
            "Content-Type: action parameter \"urn:hl7-org:v3:PRPA_IN201311UV02\" is not the wsa:Action",
        ),
        (
            ct("application/soap+xml; charset"),
            soap12.clone(),
            "is not a media type",
        ),
        (
            ct("application/soap+xml; charset=utf-8; charset=utf-8"),
            soap12.clone(),
            "parameter charset is given twice",
        ),
        (vec![], soap12.clone(), "the content-type header is missing"),
        // SOAP 1.1: text/xml and a SOAPAction equal to wsa:Action, quoted or not.
        (
            ct_action("text/xml; charset=utf-8", iti18),
            soap11.clone(),
            "",
        ),
        (
            ct_action("text/xml", &format!("\"{iti18}\"")),
            soap11.clone(),
            "",
        ),
        (
            ct("text/xml"),
            soap11.clone(),
            "the soapaction header is missing",
        ),
        (
            ct_action("text/xml", "\"urn:ihe:iti:2007:RetrieveDocumentSet\""),
            soap11.clone(),
            "SOAPAction \"\\\"urn:ihe:iti:2007:RetrieveDocumentSet\\\"\" is not the wsa:Action",
        ),
        (
            ct_action("text/xml", "\"\""),
            soap11.clone(),
            "is not the wsa:Action",
        ),
        (
            ct_action(SOAP_CT, iti18),
            soap11.clone(),
            "Content-Type application/soap+xml does not match the envelope: a SOAP 1.1 request is text/xml",
        ),
        (
            ct_action(&format!("text/xml; action=\"{}\"", dmp::ITI43), iti18),
            soap11.clone(),
            "action parameter",
        ),
    ];
    expect_all(&f, "registry", cases).await;
    // Two SOAPAction headers.
    let (status, resp) = f
        .send_with(
            "registry",
            &[
                ("content-type", "text/xml"),
                ("soapaction", iti18),
                ("soapaction", iti18),
            ],
            soap11,
        )
        .await;
    assert_eq!(status, 500);
    assert!(fault_reason(&resp).contains("the soapaction header is given 2 times"));
    assert_eq!(
        f.mock.stats.count("RegistryStoredQuery", "content_type"),
        9,
        "each refusal is counted under the check that failed"
    );
}

/// `bytes` with the first `from` replaced by `to`.
fn replace_first(bytes: &[u8], from: &str, to: &str) -> Bytes {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not found"));
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&bytes[at + from.len()..]);
    Bytes::from(out)
}

#[tokio::test]
async fn mtom_labels_follow_the_soap_version() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let (ct, body) = submission(
        &f,
        &vihf,
        &f.eg(0),
        "1.2.250.1.999.46.100",
        &documents("46"),
        true,
        false,
    );
    assert!(ct.contains("start-info=\"application/soap+xml\""), "{ct}");
    let root_type =
        "Content-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml\"";
    let action = dmp::ITI41;
    let with = |c: String| vec![("content-type", c)];
    let cases = vec![
        (
            with(ct.replace("type=\"application/xop+xml\"", "type=\"text/xml\"")),
            body.clone(),
            "MTOM: the Content-Type's type parameter must be application/xop+xml",
        ),
        (
            with(ct.replace("; start-info=\"application/soap+xml\"", "")),
            body.clone(),
            "MTOM: the start-info parameter is missing",
        ),
        (
            with(ct.replace("start-info=\"application/soap+xml\"", "start-info=\"text/xml\"")),
            body.clone(),
            "MTOM: the start-info parameter is text/xml, but the envelope is SOAP 1.2",
        ),
        (
            with(ct.replace(
                "start-info=\"application/soap+xml\"",
                "start-info=\"application/soap+xml; action=\\\"urn:ihe:iti:2007:RetrieveDocumentSet\\\"\"",
            )),
            body.clone(),
            "MTOM the start-info parameter: action parameter \"urn:ihe:iti:2007:RetrieveDocumentSet\"",
        ),
        (
            with(ct.clone()),
            replace_first(
                &body,
                root_type,
                "Content-Type: application/xop+xml; charset=UTF-8; type=\"text/xml\"",
            ),
            "MTOM: the root part's type parameter is text/xml, but the envelope is SOAP 1.2",
        ),
        (
            with(ct.clone()),
            replace_first(
                &body,
                root_type,
                "Content-Type: application/xop+xml; charset=UTF-8",
            ),
            "MTOM: the root part's type parameter is missing",
        ),
        (
            with(ct.clone()),
            replace_first(
                &body,
                root_type,
                "Content-Type: application/soap+xml; charset=UTF-8",
            ),
            "MTOM: the root part is application/soap+xml, not application/xop+xml",
        ),
        (
            with(ct.clone()),
            replace_first(
                &body,
                root_type,
                "Content-Type: application/xop+xml; charset=ISO-8859-1; type=\"application/soap+xml\"",
            ),
            "MTOM root part Content-Type: charset \"ISO-8859-1\" is not utf-8",
        ),
        (
            with(ct.clone()),
            replace_first(
                &body,
                root_type,
                "Content-Type: application/xop+xml; charset=UTF-8; type=\"application/soap+xml; action=\\\"urn:x\\\"\"",
            ),
            "MTOM the root part's type parameter: action parameter \"urn:x\"",
        ),
        // The same labels with the action spelled out are accepted.
        (
            with(ct.replace(
                "start-info=\"application/soap+xml\"",
                &format!("start-info=\"application/soap+xml; action=\\\"{action}\\\"\""),
            )),
            replace_first(
                &body,
                root_type,
                &format!(
                    "Content-Type: application/xop+xml; charset=utf-8; type=\"application/soap+xml; action=\\\"{action}\\\"\""
                ),
            ),
            "",
        ),
    ];
    expect_all(&f, "repository", cases).await;
    assert_eq!(f.service.submissions().len(), 1);
}

#[tokio::test]
async fn action_and_reply_to_must_be_understood() {
    let f = fixture().await;
    let vihf = f.vihf(0, &f.eg(0), time::Duration::ZERO);
    let good = request(dmp::ITI18, Some(&vihf), &find_documents_query());
    let action = "<wsa:Action soap:mustUnderstand=\"true\">";
    let reply_to = "<wsa:ReplyTo soap:mustUnderstand=\"true\">";
    assert!(good.contains(action) && good.contains(reply_to));
    let soap12 = |b: String| (vec![("content-type", SOAP_CT.to_string())], Bytes::from(b));
    let as11 = |b: String| {
        (
            vec![
                ("content-type", "text/xml".to_string()),
                ("soapaction", dmp::ITI18.to_string()),
            ],
            Bytes::from(soap11(&b)),
        )
    };
    let mut cases = Vec::new();
    for (request, expected) in [
        (soap12(good.clone()), ""),
        (
            soap12(good.replace(action, "<wsa:Action soap:mustUnderstand=\"1\">")),
            "",
        ),
        (
            soap12(good.replace(action, "<wsa:Action soap:mustUnderstand=\" true \">")),
            "",
        ),
        (
            soap12(good.replace(action, "<wsa:Action>")),
            "wsa:Action must carry mustUnderstand=\"true\" or \"1\" in the envelope's namespace, found none",
        ),
        (
            soap12(good.replace(action, "<wsa:Action soap:mustUnderstand=\"false\">")),
            "wsa:Action must carry mustUnderstand=\"true\" or \"1\" in the envelope's namespace, found \"false\"",
        ),
        (
            soap12(good.replace(action, "<wsa:Action mustUnderstand=\"true\">")),
            "wsa:Action must carry mustUnderstand",
        ),
        (
            soap12(good.replace(
                action,
                "<wsa:Action xmlns:s11=\"http://schemas.xmlsoap.org/soap/envelope/\" s11:mustUnderstand=\"1\">",
            )),
            "wsa:Action must carry mustUnderstand",
        ),
        (
            soap12(good.replace(reply_to, "<wsa:ReplyTo>")),
            "wsa:ReplyTo must carry mustUnderstand",
        ),
        (
            soap12(good.replace(reply_to, "<wsa:ReplyTo soap:mustUnderstand=\"0\">")),
            "wsa:ReplyTo must carry mustUnderstand",
        ),
        (as11(good.clone()), ""),
        (
            // SOAP 1.1 takes 0|1 only.
            as11(good.replace(action, "<wsa:Action soap:mustUnderstand=\"TRUE\">"))
                .clone(),
            "wsa:Action must carry mustUnderstand=\"1\" in the envelope's namespace, found \"TRUE\"",
        ),
        (
            as11(good.replace(reply_to, "<wsa:ReplyTo>")),
            "wsa:ReplyTo must carry mustUnderstand=\"1\"",
        ),
    ] {
        cases.push((request.0, request.1, expected));
    }
    expect_all(&f, "registry", cases).await;
    // SOAP 1.1 `true`: refused as strict, accepted with the check off (its default).
    let (status, _) = f
        .send_with(
            "registry",
            &[("content-type", "text/xml"), ("soapaction", dmp::ITI18)],
            Bytes::from(soap11(&good).replace("mustUnderstand=\"1\"", "mustUnderstand=\"true\"")),
        )
        .await;
    assert_eq!(status, 500);
    f.service.require_must_understand(false);
    let (status, _) = f
        .send_with(
            "registry",
            &[("content-type", SOAP_CT)],
            Bytes::from(good.replace(action, "<wsa:Action>")),
        )
        .await;
    assert_eq!(status, 200, "the mustUnderstand check is off");
}

/// A VIHF written by hand, in the shape of domain.md §5, for tenant 0's first geographic
/// entity.
/// `edit` changes the unsigned text; the result is signed by tenant 0's ORG SIGN key
/// with the signing crate's public XML-DSig blocks (enveloped, exclusive c14n,
/// RSA-SHA256), so that any shape can be tried whatever the re-signer accepts.
fn hand_vihf(f: &Fixture, edit: impl FnOnce(String) -> String) -> String {
    use passerelle_signing::Signer;
    let signer = f.signer(0);
    let now = passerelle_signing::vihf::saml_instant(time::OffsetDateTime::now_utc());
    let string = |name: &str, value: &str| {
        format!(
            r#"<saml2:Attribute Name="{name}"><saml2:AttributeValue xsi:type="xs:string">{value}</saml2:AttributeValue></saml2:Attribute>"#
        )
    };
    let attributes = [
        string("Identifiant_Structure", &f.eg(0)),
        string("Secteur_Activite", "SA07^1.2.250.1.71.4.2.4"),
        string("urn:oasis:names:tc:xspa:1.0:subject:subject-id", "MAX LIBRE"),
        r#"<saml2:Attribute Name="urn:oasis:names:tc:xacml:2.0:subject:role"><saml2:AttributeValue><Role xmlns="urn:hl7-org:v3" code="10" codeSystem="1.2.250.1.71.1.2.7" displayName="Médecin" xsi:type="CE"/></saml2:AttributeValue></saml2:Attribute>"#.to_string(),
        string("VIHF_Version", "3.0"),
        string("Authentification_mode", "INDIRECTE"),
        string(
            "urn:oasis:names:tc:xacml:2.0:resource:resource-id",
            &PATIENT.replace('&', "&amp;"),
        ),
        string("Ressource_URN", "urn:dmp"),
        r#"<saml2:Attribute Name="urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"><saml2:AttributeValue><PurposeOfUse xmlns="urn:hl7-org:v3" code="normal" codeSystem="1.2.250.1.213.1.1.4.248" displayName="Accès normal" xsi:type="CE"/></saml2:AttributeValue></saml2:Attribute>"#.to_string(),
        string("LPS_Nom", "TEST"),
        string("LPS_Version", "1.0"),
        string("LPS_ID_HOMOLOGATION_DMP", "H"),
    ]
    .concat();
    let text = format!(
        r#"<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="_{id}" IssueInstant="{now}" Version="2.0"><saml2:Issuer Format="urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName">{issuer}</saml2:Issuer><saml2:Subject><saml2:NameID>899900063480</saml2:NameID></saml2:Subject><saml2:AuthnStatement AuthnInstant="{now}"><saml2:AuthnContext><saml2:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified</saml2:AuthnContextClassRef></saml2:AuthnContext></saml2:AuthnStatement><saml2:AttributeStatement>{attributes}</saml2:AttributeStatement></saml2:Assertion>"#,
        id = uuid::Uuid::new_v4(),
        issuer = signer.certificate().subject,
    );
    sign_assertion(&signer, &edit(text))
}

/// Signs an assertion as `sign_vihf` does (signature right after Issuer), from the
/// signing crate's public building blocks.
fn sign_assertion(signer: &SoftwareSigner, text: &str) -> String {
    use passerelle_signing::dsig::{self, DSIG_NS, ENVELOPED, ReferenceSpec};
    use passerelle_signing::xml::{self, C14n, Element, Node, Scope};
    let mut root = xml::parse(text).expect("assertion");
    let id = root.attribute("ID").expect("ID").to_string();
    let digest = DigestAlgorithm::Sha256;
    let canonical = xml::canonicalize(&root, &Scope::new(), &C14n::EXCLUSIVE, None);
    let reference = ReferenceSpec {
        uri: format!("#{id}"),
        reference_type: None,
        transforms: vec![ENVELOPED, C14n::EXCLUSIVE.uri()],
        digest,
        digest_value: digest.digest(canonical.as_bytes()),
    };
    let signed_info = dsig::signed_info(&C14n::EXCLUSIVE, digest, &[reference]);
    let scope = dsig::dsig_scope(&xml::scope_of(&root, &Scope::new()));
    let value = dsig::signature_value(signer, digest, &signed_info, &scope, &C14n::EXCLUSIVE)
        .expect("signature");
    let signature = Element::new(None, "Signature")
        .ns(None, DSIG_NS)
        .child(signed_info)
        .child(value)
        .child(dsig::key_info(signer));
    let issuer = root
        .children
        .iter()
        .position(|n| matches!(n, Node::Element(e) if e.local == "Issuer"))
        .expect("Issuer");
    root.children.insert(issuer + 1, Node::Element(signature));
    root.to_xml()
}

#[tokio::test]
async fn vihf_values_are_read_as_a_standard_xpath_reader_does() {
    let f = fixture().await;
    let query = find_documents_query();
    let own = f.eg(0);
    let foreign = f.structure(1);
    let structure_attr = format!(
        r#"<saml2:Attribute Name="Identifiant_Structure"><saml2:AttributeValue xsi:type="xs:string">{own}</saml2:AttributeValue></saml2:Attribute>"#
    );
    let name_id = "<saml2:NameID>899900063480</saml2:NameID>";
    let mode = r#"<saml2:Attribute Name="Authentification_mode"><saml2:AttributeValue xsi:type="xs:string">INDIRECTE</saml2:AttributeValue></saml2:Attribute>"#;
    let patient_attr = {
        let t = hand_vihf(&f, |t| t);
        let start = t
            .find(r#"<saml2:Attribute Name="urn:oasis:names:tc:xacml:2.0:resource:resource-id">"#)
            .expect("resource-id");
        let end = start + t[start..].find("</saml2:Attribute>").expect("end") + 18;
        t[start..end].to_string()
    };
    let confirmation = |inner: &str| {
        format!(
            r#"<saml2:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:sender-vouches"><saml2:SubjectConfirmationData>{inner}</saml2:SubjectConfirmationData></saml2:SubjectConfirmation>"#
        )
    };
    type Edit = Box<dyn FnOnce(String) -> String>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("hand-made token", Box::new(|t| t), ""),
        (
            "mixed-content NameID",
            Box::new(move |t| {
                t.replace(
                    name_id,
                    r#"<saml2:NameID>8999<x:y xmlns:x="urn:x">0006</x:y>3480</saml2:NameID>"#,
                )
            }),
            "VIHF Subject/NameID has mixed content: its string value \"899900063480\" is not its own text \"89993480\"",
        ),
        (
            "second NameID in a SubjectConfirmation",
            Box::new(move |t| {
                t.replace(
                    name_id,
                    &format!(
                        "{name_id}<saml2:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:sender-vouches\"><saml2:NameID>810000000000</saml2:NameID></saml2:SubjectConfirmation>"
                    ),
                )
            }),
            "VIHF Subject/NameID must occur exactly once in the assertion, as /Assertion/Subject/NameID: found 2 NameID element(s), 1 there",
        ),
        (
            "Identifiant_Structure also under SubjectConfirmationData",
            {
                let extra = confirmation(&structure_attr.replace(&own, &foreign));
                Box::new(move |t| t.replace(name_id, &format!("{name_id}{extra}")))
            },
            "VIHF attribute Identifiant_Structure occurs 2 times in the assertion: exactly once is allowed",
        ),
        (
            "Identifiant_Structure only under SubjectConfirmationData",
            {
                let attr = structure_attr.clone();
                let extra = confirmation(&attr);
                Box::new(move |t| {
                    t.replace(&attr, "")
                        .replace(name_id, &format!("{name_id}{extra}"))
                })
            },
            "VIHF attribute Identifiant_Structure is not in /Assertion/AttributeStatement",
        ),
        (
            "mixed-content Identifiant_Structure",
            {
                let (head, tail) = own.split_at(3);
                let mixed = format!(
                    r#"<saml2:AttributeValue xsi:type="xs:string">{head}<x:y xmlns:x="urn:x">{tail}</x:y></saml2:AttributeValue>"#
                );
                let plain = format!(
                    r#"<saml2:AttributeValue xsi:type="xs:string">{own}</saml2:AttributeValue>"#
                );
                Box::new(move |t| t.replacen(&plain, &mixed, 1))
            },
            "VIHF attribute Identifiant_Structure: AttributeValue has mixed content",
        ),
        (
            "coded role with text beside it",
            Box::new(|t| {
                t.replace(
                    "<saml2:AttributeValue><Role ",
                    "<saml2:AttributeValue>10<Role ",
                )
            }),
            "VIHF attribute urn:oasis:names:tc:xacml:2.0:subject:role: a coded AttributeValue must hold exactly one element and no text, found 1 element(s) and text \"10\"",
        ),
        (
            "both mode spellings",
            Box::new(move |t| {
                t.replace(
                    mode,
                    &format!(
                        "{mode}{}",
                        mode.replace("Authentification_mode", "Authentification_Mode")
                    ),
                )
            }),
            "VIHF carries both Authentification_mode and Authentification_Mode",
        ),
        (
            "Authentification_Mode alone",
            Box::new(move |t| {
                t.replace(
                    mode,
                    &mode.replace("Authentification_mode", "Authentification_Mode"),
                )
            }),
            "",
        ),
        (
            "mode NORMALE",
            Box::new(move |t| t.replace(mode, &mode.replace("INDIRECTE", "NORMALE"))),
            "VIHF authentication mode is \"NORMALE\", expected INDIRECTE",
        ),
        (
            "Identifiant_Structure with two values",
            {
                let attr = structure_attr.clone();
                let two = attr.replace(
                    "</saml2:AttributeValue>",
                    &format!(
                        r#"</saml2:AttributeValue><saml2:AttributeValue xsi:type="xs:string">{foreign}</saml2:AttributeValue>"#
                    ),
                );
                Box::new(move |t| t.replace(&attr, &two))
            },
            "VIHF attribute Identifiant_Structure must carry exactly one saml2:AttributeValue and nothing else, found 2",
        ),
        (
            "Identifiant_Structure with a decoy value in another namespace",
            {
                let attr = structure_attr.clone();
                let decoy = attr.replace(
                    r#"Name="Identifiant_Structure">"#,
                    &format!(
                        r#"Name="Identifiant_Structure"><x:AttributeValue xmlns:x="urn:x">{foreign}</x:AttributeValue>"#
                    ),
                );
                Box::new(move |t| t.replace(&attr, &decoy))
            },
            "found 1 AttributeValue(s) among 2 element(s)",
        ),
        (
            "resource-id twice",
            {
                let attr = patient_attr.clone();
                Box::new(move |t| t.replace(&attr, &format!("{attr}{attr}")))
            },
            "VIHF attribute urn:oasis:names:tc:xacml:2.0:resource:resource-id occurs 2 times",
        ),
        (
            "VIHF_Version in a second AttributeStatement",
            Box::new(|t| {
                t.replace(
                    "</saml2:AttributeStatement>",
                    r#"</saml2:AttributeStatement><saml2:AttributeStatement><saml2:Attribute Name="VIHF_Version"><saml2:AttributeValue xsi:type="xs:string">4.0</saml2:AttributeValue></saml2:Attribute></saml2:AttributeStatement>"#,
                )
            }),
            "VIHF attribute VIHF_Version occurs 2 times",
        ),
        (
            "LPS_Nom missing",
            Box::new(|t| {
                t.replace(
                    r#"<saml2:Attribute Name="LPS_Nom"><saml2:AttributeValue xsi:type="xs:string">TEST</saml2:AttributeValue></saml2:Attribute>"#,
                    "",
                )
            }),
            "VIHF attribute LPS_Nom is missing or empty",
        ),
        (
            "empty Secteur_Activite",
            Box::new(|t| t.replace("SA07^1.2.250.1.71.4.2.4", " ")),
            "VIHF attribute Secteur_Activite is missing or empty",
        ),
    ];
    for (what, edit, expected) in cases {
        let token = hand_vihf(&f, edit);
        let (status, _, resp) = f
            .send(
                0,
                "registry",
                SOAP_CT,
                Bytes::from(request(dmp::ITI18, Some(&token), &query)),
            )
            .await;
        let text = String::from_utf8_lossy(&resp);
        if expected.is_empty() {
            assert_eq!(status, 200, "{what}: {text}");
        } else {
            assert_eq!(status, 500, "{what}: {text}");
            assert!(
                text.contains(expected),
                "{what}: expected {expected:?}: {text}"
            );
        }
    }
    // What the mock read, recorded with the exchange.
    let accepted = f.service.exchanges();
    assert_eq!(accepted.len(), 2);
    let identity = &accepted[0].identity;
    assert_eq!(identity.actor_id, "899900063480");
    assert_eq!(identity.structure, own);
    assert_eq!(identity.patient, PATIENT);
    assert_eq!(identity.mode, "INDIRECTE");
    assert_eq!(identity.version, "3.0");
}
