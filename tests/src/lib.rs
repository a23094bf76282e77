//! End-to-end harness: the test PKI, the mock DMP, the mock INSi and the mock echo
//! service (the `[[services]]` entry `echo`, reached with each tenant's `org_auth`
//! certificate) on ephemeral ports, and a Passerelle configured for them, all over real
//! sockets in one process; plus an internal-system client and the sample messages the
//! tests send.

pub mod binaries;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use passerelle_certs_test::{ConfigAddresses, Manifest, shared_test_pki};
use passerelle_mocks::dmp::MockDmp;
use passerelle_mocks::faults::Faults;
use passerelle_mocks::server::Running;
use passerelle_proxy::{Proxy, ProxyState, RunningProxy};

/// The sandbox client's bearer token (its SHA-256 is in the generated configuration).
pub const TOKEN: &str = "sandbox-token";
pub const SOAP_CT: &str = "application/soap+xml; charset=utf-8";
/// The test patient's INS (mock INSi's MARTIN CLAIRE), as HL7 CX.
pub const PATIENT: &str = "207058575627097^^^&1.2.250.1.213.1.4.10&ISO^NH";

/// The shared specifications (`../shared/spec`).
pub fn spec() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec")
}

/// What the harness changes in the sandbox configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replaces the DMP base URL (e.g. a closed port for "upstream down").
    pub dmp_url: Option<String>,
    /// `[dmp.timeouts]` and `[insi.timeouts]` request timeout.
    pub request_timeout: Option<&'static str>,
    /// `[limits] max_body_bytes`.
    pub limits_max_body: Option<u64>,
    /// Replaces the DMP server trust anchors (path relative to the PKI directory).
    pub dmp_trust_anchor: Option<String>,
    /// Extra `[listener]` keys.
    pub listener: Vec<(&'static str, toml::Value)>,
    /// Replaces the `[[clients]]` array.
    pub clients: Option<toml::Value>,
    /// Any other key: (dotted table path such as `software`, `dmp.signing` or
    /// `services[0]`, key, value).
    pub keys: Vec<(&'static str, &'static str, toml::Value)>,
    /// Tenant A's ORG AUTH_CLI from `dmp-auth.{cert,chain,key}.pem` in this directory
    /// (for renewal tests, which change the files).
    pub tenant_a_dmp_auth_dir: Option<PathBuf>,
    /// Tenants (by index) configured without their `org_auth` certificate.
    pub without_org_auth: Vec<usize>,
    /// The DER OCSP response the mock INSi staples (empty: none).
    pub insi_staple: Vec<u8>,
    /// Tenant A's certificate tables replaced, by role (`dmp_sign`, ...): e.g. a key in
    /// a token.
    pub tenant_a_certificates: Vec<(&'static str, toml::Table)>,
    /// Runs Passerelle as a `passerelle run` child process with this environment added,
    /// instead of inside the test process (a PKCS#11 module reads its settings from the
    /// environment of the process that loads it).
    pub process_env: Option<Vec<(String, String)>>,
}

/// Mocks and proxy, stopped on drop.
pub struct Harness {
    pub pki: Manifest,
    pub proxy: Option<RunningProxy>,
    /// Passerelle as a child process ([`Options::process_env`]).
    pub process: Option<binaries::Passerelle>,
    pub dmp: Running,
    pub dmp_service: Arc<MockDmp>,
    pub insi: Running,
    /// The mock echo service behind `/svc/echo/...`.
    pub echo: Running,
    pub config_path: PathBuf,
    pub audit_path: PathBuf,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("config", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
        if let Some(dir) = self.audit_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A response as the internal system sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of a JSON refusal, if it is one.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["error"]["code"].as_str().map(str::to_string)
    }

    /// The `passerelle:<Code>` of a fault answer, if it is one.
    pub fn fault_code(&self) -> Option<String> {
        let text = self.text();
        let start = text.find("passerelle:Code>")? + "passerelle:Code>".len();
        let end = text[start..].find('<')?;
        Some(text[start..start + end].to_string())
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let pki = shared_test_pki().expect("test PKI");
        let any = "127.0.0.1:0".parse().expect("address");
        let (dmp, dmp_service) =
            passerelle_mocks::start_dmp(&pki, &spec().join("dmp"), any, any, Faults::default())
                .await
                .expect("mock DMP");
        let insi = passerelle_mocks::start_insi_stapling(
            &pki,
            &spec().join("insi/xsd"),
            any,
            any,
            Faults::default(),
            options.insi_staple.clone(),
        )
        .await
        .expect("mock INSi");
        let echo = passerelle_mocks::start_echo(&pki, any, any, Faults::default())
            .await
            .expect("mock echo");
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let audit_path = std::env::temp_dir()
            .join(format!("passerelle-e2e-audit-{run_id}"))
            .join("audit.jsonl");
        let config_path = pki
            .write_config(
                &format!("e2e-{run_id}.toml"),
                &ConfigAddresses {
                    listener: "127.0.0.1:0".into(),
                    admin: "127.0.0.1:0".into(),
                    dmp_port: dmp.address.port(),
                    insi_port: insi.address.port(),
                    echo_port: Some(echo.address.port()),
                    audit: Some(audit_path.clone()),
                },
            )
            .expect("write configuration");
        // The options below edit that configuration.
        let text = std::fs::read_to_string(&config_path).expect("configuration");
        let mut doc: toml::Table = text.parse().expect("TOML");
        let set = |doc: &mut toml::Table, table: &str, key: &str, value: toml::Value| {
            if let Some(toml::Value::Table(t)) = doc.get_mut(table) {
                t.insert(key.to_string(), value);
            }
        };
        if let Some(url) = &options.dmp_url {
            set(&mut doc, "dmp", "base_url", url.clone().into());
        }
        if let Some(t) = options.request_timeout {
            for service in ["dmp", "insi"] {
                let mut timeouts = toml::Table::new();
                timeouts.insert("request".into(), t.into());
                timeouts.insert("connect".into(), "2s".into());
                timeouts.insert("tls".into(), "2s".into());
                set(&mut doc, service, "timeouts", toml::Value::Table(timeouts));
            }
        }
        if let Some(anchor) = &options.dmp_trust_anchor {
            set(
                &mut doc,
                "dmp",
                "trust_anchors",
                toml::Value::Array(vec![anchor.clone().into()]),
            );
        }
        if let Some(max) = options.limits_max_body {
            let mut limits = toml::Table::new();
            limits.insert("max_body_bytes".into(), toml::Value::Integer(max as i64));
            doc.insert("limits".into(), toml::Value::Table(limits));
        }
        for (key, value) in &options.listener {
            set(&mut doc, "listener", key, value.clone());
        }
        if let Some(dir) = &options.tenant_a_dmp_auth_dir
            && let Some(toml::Value::Array(tenants)) = doc.get_mut("tenants")
            && let Some(toml::Value::Table(a)) = tenants.first_mut()
            && let Some(toml::Value::Table(certs)) = a.get_mut("certificates")
        {
            let mut auth = toml::Table::new();
            for (key, file) in [
                ("cert", "dmp-auth.cert.pem"),
                ("chain", "dmp-auth.chain.pem"),
                ("key", "dmp-auth.key.pem"),
            ] {
                auth.insert(key.into(), dir.join(file).display().to_string().into());
            }
            certs.insert("dmp_auth".into(), toml::Value::Table(auth));
        }
        if let Some(toml::Value::Array(tenants)) = doc.get_mut("tenants")
            && let Some(toml::Value::Table(a)) = tenants.first_mut()
            && let Some(toml::Value::Table(certs)) = a.get_mut("certificates")
        {
            for (role, table) in &options.tenant_a_certificates {
                certs.insert(role.to_string(), toml::Value::Table(table.clone()));
            }
        }
        if let Some(toml::Value::Array(tenants)) = doc.get_mut("tenants") {
            for i in &options.without_org_auth {
                if let Some(toml::Value::Table(t)) = tenants.get_mut(*i)
                    && let Some(toml::Value::Table(certs)) = t.get_mut("certificates")
                {
                    certs.remove("org_auth");
                }
            }
        }
        if let Some(clients) = &options.clients {
            doc.insert("clients".into(), clients.clone());
        }
        for (path, key, value) in &options.keys {
            let mut table = &mut doc;
            for part in path.split('.') {
                // `services[0]`: an element of an array of tables.
                let (name, index) = match part.split_once('[') {
                    Some((name, i)) => (
                        name,
                        Some(i.trim_end_matches(']').parse::<usize>().expect("index")),
                    ),
                    None => (part, None),
                };
                let mut next = table
                    .entry(name.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(i) = index {
                    next = match next {
                        toml::Value::Array(a) => a.get_mut(i).unwrap_or_else(|| panic!("{path}")),
                        _ => panic!("{path}: {name} is not an array"),
                    };
                }
                table = match next {
                    toml::Value::Table(t) => t,
                    _ => panic!("{path} is not a table"),
                };
            }
            table.insert(key.to_string(), value.clone());
        }
        std::fs::write(&config_path, toml::to_string(&doc).expect("TOML")).expect("write config");
        let (proxy, process) = match &options.process_env {
            Some(env) => (
                None,
                Some(binaries::Passerelle::start_with_env(
                    &config_path.display().to_string(),
                    env,
                )),
            ),
            None => {
                let config = passerelle_config::load(&config_path).expect("configuration loads");
                let proxy = Arc::new(
                    Proxy::new(ProxyState::new(config).expect("proxy state")).expect("audit trail"),
                );
                let listener = tokio::net::TcpListener::bind(any).await.expect("bind");
                let admin = tokio::net::TcpListener::bind(any)
                    .await
                    .expect("bind admin");
                let proxy = passerelle_proxy::start(proxy, listener, admin, Duration::from_secs(5))
                    .expect("proxy starts");
                (Some(proxy), None)
            }
        };
        Self {
            pki,
            proxy,
            process,
            dmp,
            dmp_service,
            insi,
            echo,
            config_path,
            audit_path,
        }
    }

    pub fn proxy(&self) -> &RunningProxy {
        self.proxy.as_ref().expect("proxy running")
    }

    /// The internal listener, in this process or a child's.
    pub fn address(&self) -> std::net::SocketAddr {
        match &self.process {
            Some(process) => process.address,
            None => self.proxy().address,
        }
    }

    /// The admin listener, in this process or a child's.
    pub fn admin_address(&self) -> std::net::SocketAddr {
        match &self.process {
            Some(process) => process.admin,
            None => self.proxy().admin_address,
        }
    }

    /// The audit trail's exchanges so far: the lines of requests that may have reached
    /// the national service.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.audit_all()
            .into_iter()
            .filter(|l| l["sent_upstream"] == true)
            .collect()
    }

    /// The audit trail's refused attempts so far (nothing sent upstream).
    pub fn audit_refusals(&self) -> Vec<serde_json::Value> {
        self.audit_all()
            .into_iter()
            .filter(|l| l["sent_upstream"] == false)
            .collect()
    }

    /// Every line of the audit trail so far.
    pub fn audit_all(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// The admin listener's `path`, as text.
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let address = self.admin_address();
        let mut sender = http1(address).await;
        let request = http::Request::get(path)
            .header(http::header::HOST, address.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let reply = read_reply(sender.send_request(request).await.expect("admin response")).await;
        (reply.status, reply.text())
    }

    /// Sends a POST to the proxy as an internal system, with the sandbox token unless
    /// `headers` has its own Authorization.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            all.push(("authorization".into(), format!("Bearer {TOKEN}")));
        }
        post(self.address(), path, &all, content_type, body.into()).await
    }

    /// A JSON POST to the JSON API as an internal system, for `tenant`, with the sandbox
    /// token.
    pub async fn post_json(&self, path: &str, tenant: &str, body: &serde_json::Value) -> Reply {
        self.post(
            path,
            &[("x-passerelle-tenant", tenant)],
            "application/json",
            body.to_string(),
        )
        .await
    }

    /// Any request to the proxy, with the sandbox token unless `headers` has its own
    /// Authorization, and a Content-Type only when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let address = self.address();
        let mut sender = http1(address).await;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, address.to_string());
        if let Some(ct) = content_type {
            request = request.header(http::header::CONTENT_TYPE, ct);
        }
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            request = request.header("authorization", format!("Bearer {TOKEN}"));
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = sender
            .send_request(request.body(Full::new(body.into())).expect("request"))
            .await
            .expect("response");
        read_reply(response).await
    }

    /// A DMP RegistryStoredQuery (TD3.1) as tenant A's geographic establishment.
    pub async fn dmp_query_a(&self) -> Reply {
        let vihf = messages::vihf_headers(&self.eg(0));
        let mut headers: Vec<(&str, &str)> = vihf.iter().map(|(k, v)| (*k, v.as_str())).collect();
        headers.push(("x-passerelle-tenant", "ch-test-a"));
        self.post(
            "/dmp/registry",
            &headers,
            SOAP_CT,
            messages::find_documents(),
        )
        .await
    }

    /// An INSi traits search on `/insi/auto` for tenant A (contexts left to Passerelle).
    pub async fn insi_search_a(&self) -> Reply {
        self.post(
            "/insi/auto",
            &[("x-passerelle-tenant", "ch-test-a")],
            SOAP_CT,
            messages::insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await
    }

    /// The tenant's first geographic establishment (FINESS EG, prefixed): the structure a
    /// DMP request of that tenant names (VIHF `Identifiant_Structure`, XDS
    /// `authorInstitution`), never its legal entity.
    pub fn eg(&self, tenant: usize) -> String {
        self.pki.tenants[tenant].geographic_structure_ids[0].clone()
    }

    /// The tenant's subject DN of `role` as the mocks record it.
    pub fn subject(&self, tenant: usize, role: &str) -> String {
        let t = &self.pki.tenants[tenant];
        match role {
            "dmp_auth" => t.dmp_auth.subject.clone(),
            "insi_auto" => t.insi_auto.subject.clone(),
            "insi_manu" => t.insi_manu.subject.clone(),
            "org_auth" => t.org_auth.subject.clone(),
            other => panic!("no role {other}"),
        }
    }
}

/// A keep-alive HTTP/1.1 connection to `address`, as an internal system opens it.
pub async fn http1(
    address: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the proxy");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    sender
}

/// One HTTP/1.1 POST over a fresh connection.
pub async fn post(
    address: std::net::SocketAddr,
    path: &str,
    headers: &[(String, String)],
    content_type: &str,
    body: Bytes,
) -> Reply {
    let mut sender = http1(address).await;
    let mut request = http::Request::post(path)
        .header(http::header::HOST, address.to_string())
        .header(http::header::CONTENT_TYPE, content_type);
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = sender
        .send_request(request.body(Full::new(body)).expect("request"))
        .await
        .expect("response");
    read_reply(response).await
}

/// The status, headers and whole body of a response.
pub async fn read_reply(response: http::Response<hyper::body::Incoming>) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A temporary file, removed on drop.
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "passerelle-e2e-{}.xml",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, contents).expect("temp file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `xmllint --schema` on `xml`; returns (valid, output).
/// A TCP port free on the loopback now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// [`xmlsec1_verify`] of the VIHF (`saml:Assertion`, `ID` attribute) in an envelope.
pub fn xmlsec1_verify_vihf(pki: &Manifest, envelope: &[u8]) -> String {
    xmlsec1_verify(
        pki,
        envelope,
        &[
            "--id-attr:ID",
            "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
        ],
    )
}

/// `xmlsec1 --verify` (Debian's, libxmlsec1) with the test root and the ORG
/// intermediate only; its stdout. Panics when the signature does not verify.
pub fn xmlsec1_verify(pki: &Manifest, document: &[u8], extra: &[&str]) -> String {
    let file = TempFile::new(document);
    let out = std::process::Command::new("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(pki.path(&pki.ca.root))
        .arg("--untrusted-pem")
        .arg(pki.path(&pki.ca.org_intermediate))
        .args(extra)
        .arg(&file.0)
        .output()
        .expect("xmlsec1 installed");
    assert!(
        out.status.success(),
        "xmlsec1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn xmllint(xml: &str, xsd: &std::path::Path) -> (bool, String) {
    let file = TempFile::new(xml.as_bytes());
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(xsd)
        .arg(&file.0)
        .output()
        .expect("xmllint (libxml2-utils) installed");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sample messages the internal systems send.
pub mod forward_proxy;
pub mod ocsp_responder;

pub mod messages {
    use super::PATIENT;
    use passerelle_soap::xds::{
        ITI18, ITI41, ITI43, PATIENT_ID_SCHEME, RIM, SUBMISSION_UNIQUE_ID_SCHEME, UNIQUE_ID_SCHEME,
        WSSE,
    };

    /// A SOAP 1.2 DMP request. WS-Addressing MessageID/To are left for the proxy to add.
    pub fn dmp_request(action: &str, security: Option<&str>, body: &str) -> String {
        format!(
            r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing"><soap:Header><wsa:Action soap:mustUnderstand="true">{action}</wsa:Action>{security}</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"#,
            security = security
                .map(|v| format!("<wsse:Security xmlns:wsse=\"{WSSE}\">{v}</wsse:Security>"))
                .unwrap_or_default(),
        )
    }

    /// A DMP request as sent straight to the service (no Passerelle): every
    /// WS-Addressing header filled, `To` the service's URL as the client names it
    /// (`Host: localhost`), `Action` and `ReplyTo` mustUnderstand.
    pub fn direct_dmp_request(
        service: &str,
        action: &str,
        security: Option<&str>,
        body: &str,
    ) -> String {
        dmp_request(action, security, body).replace(
            "</wsa:Action>",
            &format!(
                "</wsa:Action><wsa:MessageID>urn:uuid:{}</wsa:MessageID><wsa:To>https://localhost/si-dmp-server/v2/services/{service}</wsa:To><wsa:ReplyTo soap:mustUnderstand=\"true\"><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>",
                uuid::Uuid::new_v4()
            ),
        )
    }

    /// TD3.1: the patient's documents.
    pub fn find_documents() -> String {
        dmp_request(
            ITI18,
            None,
            &format!(
                r#"<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0" xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/><rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"><rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>'{}'</rim:Value></rim:ValueList></rim:Slot><rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot></rim:AdhocQuery></query:AdhocQueryRequest>"#,
                PATIENT.replace('&', "&amp;")
            ),
        )
    }

    /// TD3.2: one document's bytes.
    pub fn retrieve(repository: &str, unique_id: &str) -> String {
        dmp_request(
            ITI43,
            None,
            &format!(
                r#"<xdsb:RetrieveDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><xdsb:DocumentRequest><xdsb:RepositoryUniqueId>{repository}</xdsb:RepositoryUniqueId><xdsb:DocumentUniqueId>{unique_id}</xdsb:DocumentUniqueId></xdsb:DocumentRequest></xdsb:RetrieveDocumentSetRequest>"#
            ),
        )
    }

    /// A document of a submission.
    #[derive(Debug, Clone)]
    pub struct Doc {
        pub entry_id: String,
        pub unique_id: String,
        pub mime: &'static str,
        pub content: Vec<u8>,
    }

    /// Three documents: CDA-like XML, a 40 KB binary, plain text.
    pub fn three_documents(tag: &str) -> Vec<Doc> {
        vec![
            Doc {
                entry_id: "Document01".into(),
                unique_id: format!("1.2.250.1.999.{tag}.1"),
                mime: "text/xml",
                content: b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\n  <!-- compte rendu -->\n  <title>CR</title>\n</ClinicalDocument>".to_vec(),
            },
            Doc {
                entry_id: "Document02".into(),
                unique_id: format!("1.2.250.1.999.{tag}.2"),
                mime: "application/pdf",
                content: (0..40_000u32).map(|i| (i % 251) as u8).collect(),
            },
            Doc {
                entry_id: "Document03".into(),
                unique_id: format!("1.2.250.1.999.{tag}.3"),
                mime: "text/plain",
                content: "compte rendu, accentué".as_bytes().to_vec(),
            },
        ]
    }

    pub use passerelle_mocks::fixtures::{
        DOCUMENT_AUTHOR_SCHEME, SUBMISSION_SET_AUTHOR_SCHEME, author_classification,
    };

    /// TD2.1 without lot signature (the proxy adds it): the ebRIM metadata of the
    /// submission set and documents, authored at `structure` (the EG of the VIHF), and
    /// the documents as MTOM parts.
    pub fn submission(set_uid: &str, docs: &[Doc], structure: &str) -> (String, bytes::Bytes) {
        submission_with(set_uid, docs, structure, None)
    }

    /// TD2.1 as the DMP receives it, signed in advance with `signer` (ORG SIGN): the
    /// VIHF of `structure` in `wsse:Security`, the metadata authored at `structure`, the
    /// lot signature document, its metadata and associations. What direct access to the
    /// DMP has to send.
    pub fn signed_submission(
        set_uid: &str,
        docs: &[Doc],
        structure: &str,
        signer: &dyn passerelle_signing::Signer,
    ) -> (String, bytes::Bytes) {
        submission_with(set_uid, docs, structure, Some(signer))
    }

    fn submission_with(
        set_uid: &str,
        docs: &[Doc],
        structure: &str,
        signer: Option<&dyn passerelle_signing::Signer>,
    ) -> (String, bytes::Bytes) {
        let mut metadata = String::new();
        let mut doc_elements = String::new();
        let mut parts = Vec::new();
        let confidentiality = |id: &str| {
            format!(
                r#"<rim:Classification classificationScheme="urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f" classifiedObject="{id}" id="urn:uuid:{}" nodeRepresentation="N" objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"><rim:Slot name="codingScheme"><rim:ValueList><rim:Value>2.16.840.1.113883.5.25</rim:Value></rim:ValueList></rim:Slot><rim:Name><rim:LocalizedString value="Normal"/></rim:Name></rim:Classification>"#,
                uuid::Uuid::new_v4()
            )
        };
        for (i, d) in docs.iter().enumerate() {
            metadata.push_str(&format!(
                r#"<rim:ExtrinsicObject id="{id}" mimeType="{mime}" objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">{author}{conf}<rim:ExternalIdentifier id="urn:uuid:{u1}" identificationScheme="{PATIENT_ID_SCHEME}" registryObject="{id}" value="{patient}"><rim:Name><rim:LocalizedString value="XDSDocumentEntry.patientId"/></rim:Name></rim:ExternalIdentifier><rim:ExternalIdentifier id="urn:uuid:{u2}" identificationScheme="{UNIQUE_ID_SCHEME}" registryObject="{id}" value="{uid}"><rim:Name><rim:LocalizedString value="XDSDocumentEntry.uniqueId"/></rim:Name></rim:ExternalIdentifier></rim:ExtrinsicObject><rim:Association associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember" id="urn:uuid:{u3}" sourceObject="SubmissionSet01" targetObject="{id}"><rim:Slot name="SubmissionSetStatus"><rim:ValueList><rim:Value>Original</rim:Value></rim:ValueList></rim:Slot></rim:Association>"#,
                id = d.entry_id,
                mime = d.mime,
                uid = d.unique_id,
                author = author_classification(DOCUMENT_AUTHOR_SCHEME, &d.entry_id, structure),
                conf = confidentiality(&d.entry_id),
                patient = PATIENT.replace('&', "&amp;"),
                u1 = uuid::Uuid::new_v4(),
                u2 = uuid::Uuid::new_v4(),
                u3 = uuid::Uuid::new_v4(),
            ));
            let cid = format!("doc{i}@sih.example");
            doc_elements.push_str(&format!(
                r#"<xdsb:Document id="{}"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:{}"/></xdsb:Document>"#,
                d.entry_id,
                cid.replace('@', "%40")
            ));
            parts.push(passerelle_soap::mtom::Attachment {
                content_id: cid,
                mime_type: d.mime.to_string(),
                content: bytes::Bytes::from(d.content.clone()),
            });
        }
        let mut security = None;
        if let Some(signer) = signer {
            use passerelle_signing::lot::LotMetadataInput;
            use passerelle_signing::{DigestAlgorithm, DocumentDigest, LotRequest};
            let now = time::OffsetDateTime::now_utc();
            let lot = passerelle_signing::sign_lot(
                &LotRequest {
                    submission_set_unique_id: set_uid.to_string(),
                    signature_unique_id: format!("{set_uid}.99"),
                    documents: docs
                        .iter()
                        .map(|d| {
                            DocumentDigest::compute(
                                &d.unique_id,
                                d.mime,
                                &d.content,
                                DigestAlgorithm::Sha256,
                            )
                            .expect("digest")
                        })
                        .collect(),
                    digest: DigestAlgorithm::Sha256,
                    signing_time: now,
                },
                signer,
            )
            .expect("lot signature");
            let meta = passerelle_signing::lot_metadata(
                &LotMetadataInput {
                    submission_set_entry_id: "SubmissionSet01".into(),
                    signature_entry_id: "SignatureDocument".into(),
                    patient_id: PATIENT.into(),
                    creation_time: now,
                    // As Passerelle does: the first document's author and
                    // confidentiality, for the signature document.
                    copied_classifications: docs
                        .iter()
                        .take(1)
                        .flat_map(|d| {
                            [
                                author_classification(
                                    DOCUMENT_AUTHOR_SCHEME,
                                    &d.entry_id,
                                    structure,
                                ),
                                confidentiality(&d.entry_id),
                            ]
                        })
                        .map(|c| {
                            passerelle_signing::xml::parse(&c.replacen(
                                "<rim:Classification ",
                                &format!("<rim:Classification xmlns:rim=\"{RIM}\" "),
                                1,
                            ))
                            .expect("classification")
                        })
                        .collect(),
                },
                &lot,
            );
            for e in [&meta.extrinsic_object, &meta.has_member, &meta.signs] {
                metadata.push_str(&e.to_xml());
            }
            doc_elements.push_str(r#"<xdsb:Document id="SignatureDocument"><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:signature%40sih.example"/></xdsb:Document>"#);
            parts.push(passerelle_soap::mtom::Attachment {
                content_id: "signature@sih.example".into(),
                mime_type: "text/xml".into(),
                content: bytes::Bytes::from(lot.xml),
            });
            security = Some(signed_vihf(structure, signer));
        }
        let body = format!(
            r#"<xdsb:ProvideAndRegisterDocumentSetRequest xmlns:xdsb="urn:ihe:iti:xds-b:2007"><lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"><rim:RegistryObjectList xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"><rim:RegistryPackage id="SubmissionSet01" objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage">{set_author}<rim:ExternalIdentifier id="urn:uuid:{u}" identificationScheme="{SUBMISSION_UNIQUE_ID_SCHEME}" registryObject="SubmissionSet01" value="{set_uid}"><rim:Name><rim:LocalizedString value="XDSSubmissionSet.uniqueId"/></rim:Name></rim:ExternalIdentifier></rim:RegistryPackage>{metadata}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>{doc_elements}</xdsb:ProvideAndRegisterDocumentSetRequest>"#,
            u = uuid::Uuid::new_v4(),
            set_author =
                author_classification(SUBMISSION_SET_AUTHOR_SCHEME, "SubmissionSet01", structure),
        );
        // Signed: sent straight to the service, so WS-Addressing is complete.
        let envelope = if signer.is_some() {
            direct_dmp_request("repository", ITI41, security.as_deref(), &body)
        } else {
            dmp_request(ITI41, security.as_deref(), &body)
        };
        passerelle_soap::mtom::build(&envelope, &parts)
    }

    /// A VIHF of `structure` for the test patient, signed now with `signer`.
    pub fn signed_vihf(structure: &str, signer: &dyn passerelle_signing::Signer) -> String {
        let mut ctx = passerelle_signing::VihfContext::from_json(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/vihf-context.json"
            ))
            .expect("example context"),
        )
        .expect("context");
        ctx.structure_id = structure.to_string();
        let software = passerelle_signing::SoftwareIdentity {
            name: "PASSERELLE".into(),
            version: "0.1.0".into(),
            homologation_id: "TEST-HOMOLOGATION-0000".into(),
            lps_id: None,
        };
        passerelle_signing::sign_vihf(&ctx, &software, signer, time::OffsetDateTime::now_utc())
            .expect("VIHF")
            .xml()
    }

    /// The `X-Vihf-*` headers of a physician of `structure` acting for the test patient.
    pub fn vihf_headers(structure: &str) -> Vec<(&'static str, String)> {
        vec![
            ("x-vihf-subject-id", "899900063480".into()),
            ("x-vihf-subject-name", "MAX%20LIBRE".into()),
            ("x-vihf-role", "10^M%C3%A9decin".into()),
            ("x-vihf-sector", "SA01".into()),
            ("x-vihf-structure", structure.into()),
            ("x-vihf-patient", PATIENT.replace('&', "%26")),
        ]
    }

    /// An INSi traits search without any context header: the proxy fills them in.
    pub fn insi_search_bare(name: &str, first: &str, sex: &str, birth_date: &str) -> String {
        format!(
            r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body><RECSANSVITALE xmlns="http://www.cnamts.fr/INSiRecSans"><NomNaissance>{name}</NomNaissance><Prenom>{first}</Prenom><Sexe>{sex}</Sexe><DateNaissance>{birth_date}</DateNaissance></RECSANSVITALE></soap:Body></soap:Envelope>"#
        )
    }

    /// A VIHF as an internal system may send it: complete, unsigned.
    pub fn unsigned_vihf(structure: &str, mode: &str) -> String {
        format!(
            r#"<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xs="http://www.w3.org/2001/XMLSchema" ID="_{id}" IssueInstant="2020-01-01T00:00:00Z" Version="2.0"><saml2:Issuer>SIH</saml2:Issuer><saml2:Subject><saml2:NameID>899900063480</saml2:NameID></saml2:Subject><saml2:AuthnStatement AuthnInstant="{authn}"><saml2:AuthnContext><saml2:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml2:AuthnContextClassRef></saml2:AuthnContext></saml2:AuthnStatement><saml2:AttributeStatement>{attrs}</saml2:AttributeStatement></saml2:Assertion>"#,
            id = uuid::Uuid::new_v4(),
            authn = (time::OffsetDateTime::now_utc() - time::Duration::minutes(5))
                .format(&time::format_description::well_known::Rfc3339)
                .expect("date"),
            attrs = [
                ("Identifiant_Structure", structure.to_string()),
                ("Secteur_Activite", "SA01^1.2.250.1.71.4.2.4".into()),
                ("urn:oasis:names:tc:xspa:1.0:subject:subject-id", "MAX LIBRE".into()),
                ("urn:oasis:names:tc:xacml:2.0:subject:role", r#"<Role xmlns="urn:hl7-org:v3" code="10" codeSystem="1.2.250.1.71.1.2.7" displayName="Médecin" xsi:type="CE"/>"#.into()),
                ("VIHF_Version", "3.0".into()),
                ("Authentification_mode", mode.to_string()),
                ("urn:oasis:names:tc:xacml:2.0:resource:resource-id", PATIENT.replace('&', "&amp;")),
                ("Ressource_URN", "urn:dmp".into()),
                ("urn:oasis:names:tc:xspa:1.0:subject:purposeofuse", r#"<PurposeOfUse xmlns="urn:hl7-org:v3" code="normal" codeSystem="1.2.250.1.213.1.1.4.248" displayName="Accès normal" xsi:type="CE"/>"#.into()),
                ("LPS_Nom", "SIH".into()),
                ("LPS_Version", "1".into()),
            ]
            .iter()
            .map(|(n, v)| if v.starts_with('<') {
                format!(r#"<saml2:Attribute Name="{n}"><saml2:AttributeValue>{v}</saml2:AttributeValue></saml2:Attribute>"#)
            } else {
                format!(r#"<saml2:Attribute Name="{n}"><saml2:AttributeValue xsi:type="xs:string">{v}</saml2:AttributeValue></saml2:Attribute>"#)
            })
            .collect::<String>()
        )
    }
}
