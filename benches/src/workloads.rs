//! The three scenarios, each as sent to the services directly (messages signed in
//! advance: the floor) and as sent to a proxy (Passerelle signs; nginx forwards).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use passerelle_e2e::messages::{self, Doc};
use passerelle_soap::xds::ITI18;

use crate::load::Workload;

const SOAP_CT: &str = "application/soap+xml; charset=utf-8";
const TOKEN: &str = "sandbox-token";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// Who the request is addressed to.
#[derive(Debug, Clone)]
pub enum Via {
    /// Straight to the service (mutual TLS on the connection).
    Direct,
    /// Through Passerelle: token, tenant, routes.
    Passerelle,
    /// Through nginx (INSi only): the service's own path.
    Nginx,
}

fn post(
    path: &str,
    content_type: &str,
    via: &Via,
    extra: &[(&str, String)],
    body: Bytes,
) -> http::Request<Full<Bytes>> {
    let mut r = http::Request::post(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, content_type);
    if matches!(via, Via::Passerelle) {
        r = r
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header("x-passerelle-tenant", "ch-test-a");
    }
    for (k, v) in extra {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(body)).expect("valid request")
}

/// `insi`: a traits search with its contexts, forwarded unchanged (RECSANSVITALE).
#[derive(Debug)]
pub struct InsiSearch {
    via: Via,
    body: Bytes,
}

impl InsiSearch {
    pub fn new(via: Via) -> Self {
        let body =
            std::fs::read(format!("{EXAMPLES}/insi-rechercher-traits.xml")).expect("example");
        Self {
            via,
            body: Bytes::from(body),
        }
    }
}

impl Workload for InsiSearch {
    fn request(&self, _: u64) -> http::Request<Full<Bytes>> {
        let path = match self.via {
            Via::Passerelle => "/insi/auto",
            Via::Direct | Via::Nginx => "/lps",
        };
        post(path, SOAP_CT, &self.via, &[], self.body.clone())
    }

    fn check(&self, _: u16, body: &[u8]) -> Result<(), &'static str> {
        contains(body, b"<CodeCR>00</CodeCR>")
    }
}

fn contains(body: &[u8], needle: &[u8]) -> Result<(), &'static str> {
    if body.windows(needle.len()).any(|w| w == needle) {
        Ok(())
    } else {
        Err("unexpected_answer")
    }
}

/// `dmp-query`: TD3.1 under `structure` (the tenant's FINESS EG). Directly: one VIHF
/// signed in advance. Through Passerelle: the `X-Vihf-*` headers, and a VIHF built and
/// signed per request.
#[derive(Debug)]
pub struct DmpQuery {
    via: Via,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
}

impl DmpQuery {
    pub fn direct(structure: &str, signer: &dyn passerelle_signing::Signer) -> Self {
        let query = messages::find_documents();
        let body = query
            .split("<soap:Body>")
            .nth(1)
            .and_then(|b| b.split("</soap:Body>").next())
            .expect("query body");
        let vihf = messages::signed_vihf(structure, signer);
        Self {
            via: Via::Direct,
            body: Bytes::from(messages::direct_dmp_request(
                "registry",
                ITI18,
                Some(&vihf),
                body,
            )),
            headers: Vec::new(),
        }
    }

    pub fn passerelle(structure: &str) -> Self {
        Self {
            via: Via::Passerelle,
            body: Bytes::from(messages::find_documents()),
            headers: messages::vihf_headers(structure),
        }
    }
}

impl Workload for DmpQuery {
    fn request(&self, _: u64) -> http::Request<Full<Bytes>> {
        let path = match self.via {
            Via::Passerelle => "/dmp/registry",
            _ => "/si-dmp-server/v2/services/registry",
        };
        post(path, SOAP_CT, &self.via, &self.headers, self.body.clone())
    }

    fn check(&self, _: u16, body: &[u8]) -> Result<(), &'static str> {
        contains(body, b"ResponseStatusType:Success")
    }
}

/// The two 50 KB documents of a `dmp-submit` request: a CDA-like XML report and a PDF.
pub fn two_documents(i: u64) -> Vec<Doc> {
    let mut cda = String::from(
        "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><title>Compte rendu</title><component>",
    );
    while cda.len() < 50 * 1024 - 64 {
        cda.push_str("<section><text>Examen clinique sans particularité.</text></section>");
    }
    cda.push_str("</component></ClinicalDocument>");
    vec![
        Doc {
            entry_id: "Document01".into(),
            unique_id: format!("1.2.250.1.999.7.{i}.1"),
            mime: "text/xml",
            content: cda.into_bytes(),
        },
        Doc {
            entry_id: "Document02".into(),
            unique_id: format!("1.2.250.1.999.7.{i}.2"),
            mime: "application/pdf",
            content: (0..50 * 1024u32).map(|b| (b % 251) as u8).collect(),
        },
    ]
}

/// One large PDF of `bytes` bytes (`dmp-submit-64m`: the largest ITI-41 submission
/// the default body limit takes, for the proxy's memory per body byte).
pub fn one_large_document(i: u64, bytes: usize) -> Vec<Doc> {
    vec![Doc {
        entry_id: "Document01".into(),
        unique_id: format!("1.2.250.1.999.7.{i}.1"),
        mime: "application/pdf",
        content: (0..bytes).map(|b| (b % 251) as u8).collect(),
    }]
}

/// `dmp-submit`: TD2.1 with two 50 KB documents, each request its own submission set,
/// authored at `structure` (the tenant's FINESS EG, as the VIHF). Directly: `count` submissions signed in advance (VIHF + lot). Through Passerelle:
/// unsigned, the proxy signs both.
pub struct DmpSubmit {
    via: Via,
    prepared: Vec<(String, Bytes)>,
    headers: Vec<(&'static str, String)>,
    /// The structure (FINESS EG) of the VIHF and of the XDS authorInstitution.
    structure: String,
    run: String,
    /// The documents of request `i` (through Passerelle).
    documents: Arc<dyn Fn(u64) -> Vec<Doc> + Send + Sync>,
}

impl std::fmt::Debug for DmpSubmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmpSubmit")
            .field("prepared", &self.prepared.len())
            .finish_non_exhaustive()
    }
}

impl DmpSubmit {
    pub fn direct(structure: &str, signer: &dyn passerelle_signing::Signer, count: u64) -> Self {
        let run = uuid::Uuid::new_v4().as_u128() % 1_000_000_007;
        let prepared = (0..count)
            .map(|i| {
                messages::signed_submission(
                    &format!("1.2.250.1.999.8.{run}.{i}"),
                    &two_documents(i),
                    structure,
                    signer,
                )
            })
            .collect();
        Self {
            via: Via::Direct,
            prepared,
            headers: Vec::new(),
            structure: structure.to_string(),
            run: run.to_string(),
            documents: Arc::new(two_documents),
        }
    }

    pub fn passerelle(structure: &str) -> Self {
        Self::passerelle_with(structure, two_documents)
    }

    /// Through Passerelle, with other documents than [`two_documents`].
    pub fn passerelle_with(
        structure: &str,
        documents: impl Fn(u64) -> Vec<Doc> + Send + Sync + 'static,
    ) -> Self {
        Self {
            via: Via::Passerelle,
            prepared: Vec::new(),
            headers: messages::vihf_headers(structure),
            structure: structure.to_string(),
            run: (uuid::Uuid::new_v4().as_u128() % 1_000_000_007).to_string(),
            documents: Arc::new(documents),
        }
    }

    pub fn prepared(&self) -> u64 {
        self.prepared.len() as u64
    }
}

impl Workload for DmpSubmit {
    fn request(&self, i: u64) -> http::Request<Full<Bytes>> {
        match self.via {
            Via::Passerelle => {
                let (ct, body) = messages::submission(
                    &format!("1.2.250.1.999.9.{}.{i}", self.run),
                    &(self.documents)(i),
                    &self.structure,
                );
                post("/dmp/repository", &ct, &self.via, &self.headers, body)
            }
            _ => {
                let (ct, body) = &self.prepared[(i as usize) % self.prepared.len().max(1)];
                post(
                    "/si-dmp-server/v2/services/repository",
                    ct,
                    &self.via,
                    &[],
                    body.clone(),
                )
            }
        }
    }

    fn check(&self, _: u16, body: &[u8]) -> Result<(), &'static str> {
        contains(body, b"ResponseStatusType:Success")
    }
}

/// A mix of workloads: request `i` goes to part `i mod total weight` (by weight, in
/// order), and its answer is judged by that part. Deterministic, so each window of a
/// long run holds the same mix.
pub struct Mixed {
    parts: Vec<(u64, &'static str, Arc<dyn Workload>)>,
    total: u64,
}

impl std::fmt::Debug for Mixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.parts.iter().map(|(w, name, _)| (w, name)))
            .finish()
    }
}

impl Mixed {
    /// `parts`: (weight, name, workload); weights of 0 are left out.
    pub fn new(parts: Vec<(u64, &'static str, Arc<dyn Workload>)>) -> Self {
        let parts: Vec<_> = parts.into_iter().filter(|p| p.0 > 0).collect();
        let total = parts.iter().map(|p| p.0).sum::<u64>().max(1);
        Self { parts, total }
    }

    /// The part request `i` belongs to.
    pub fn part(&self, i: u64) -> Option<(&'static str, &dyn Workload)> {
        let mut slot = i % self.total;
        for (weight, name, w) in &self.parts {
            if slot < *weight {
                return Some((*name, w.as_ref()));
            }
            slot -= weight;
        }
        None
    }
}

impl Workload for Mixed {
    fn request(&self, i: u64) -> http::Request<Full<Bytes>> {
        match self.part(i) {
            Some((_, w)) => w.request(i),
            None => http::Request::new(Full::new(Bytes::new())),
        }
    }

    fn check(&self, _: u16, _: &[u8]) -> Result<(), &'static str> {
        Err("unexpected_answer")
    }

    fn check_answer(&self, i: u64, status: u16, body: &[u8]) -> Result<(), &'static str> {
        match self.part(i) {
            Some((_, w)) => w.check_answer(i, status, body),
            None => Err("unexpected_answer"),
        }
    }
}

/// The workloads are shared by the generator's connections.
pub fn shared<W: Workload + 'static>(w: W) -> Arc<dyn Workload> {
    Arc::new(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Named(&'static str);

    impl Workload for Named {
        fn request(&self, _: u64) -> http::Request<Full<Bytes>> {
            http::Request::new(Full::new(Bytes::from_static(self.0.as_bytes())))
        }
        fn check(&self, _: u16, body: &[u8]) -> Result<(), &'static str> {
            if body == self.0.as_bytes() {
                Ok(())
            } else {
                Err("unexpected_answer")
            }
        }
    }

    #[test]
    fn a_mix_sends_by_weight_and_judges_by_the_sender() {
        let mix = Mixed::new(vec![
            (3, "a", shared(Named("a"))),
            (0, "never", shared(Named("never"))),
            (1, "b", shared(Named("b"))),
        ]);
        let names: Vec<_> = (0..8).filter_map(|i| mix.part(i).map(|p| p.0)).collect();
        assert_eq!(names, ["a", "a", "a", "b", "a", "a", "a", "b"]);
        assert_eq!(mix.check_answer(3, 200, b"b"), Ok(()));
        assert_eq!(mix.check_answer(3, 200, b"a"), Err("unexpected_answer"));
        assert_eq!(mix.check_answer(4, 200, b"a"), Ok(()));
    }
}
