//! `passerelle check --online`: one TLS handshake per (tenant, certificate role,
//! upstream) the proxy would open, with that tenant's certificate and the upstream's
//! anchors, built by the same [`upstream::client_config`] as the pools. Each failure
//! is reported under the setting to fix: the upstream's anchors or CRLs, its URL, or
//! the tenant's certificate.
//!
//! Nothing is sent: with TLS 1.3 the server judges our certificate after our last
//! handshake message, so a refusal only shows on the first read. After the handshake
//! the probe reads, without writing, until the server either sends a session ticket
//! (it accepted the certificate: tickets come after it checked it), refuses with an
//! alert, closes, or stays silent for [`VERDICT_WAIT`] (no refusal: ok). With TLS 1.2
//! the handshake itself ends after the server checked the certificate.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use passerelle_config::{CertMaterial, CertRole, Config, EgressProxy, Timeouts};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::{AlertDescription, CertificateError, ClientConfig, NamedGroup};
use rustls_pki_types::ServerName;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::state::Credential;
use crate::upstream::{self, UpstreamTarget};

/// How long a probe waits, after a TLS 1.3 handshake, for the server to refuse the
/// client certificate (capped by the service's `tls` timeout).
pub const VERDICT_WAIT: Duration = Duration::from_secs(2);

/// What became of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Error,
    /// Not probed: the pair is disabled at run time (expired, revoked, not yet valid).
    Skipped,
}

/// One handshake: who, with which certificate, to where, and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub tenant: String,
    /// `dmp_auth`, `insi_auto`, `insi_manu`.
    pub role: String,
    /// `dmp`, `insi` or `svc/<name>`.
    pub service: String,
    pub upstream: String,
    pub outcome: Outcome,
    /// The setting to fix (`dmp.trust_anchors`, `insi.url`,
    /// `tenants[0].certificates.dmp_auth`, ...), for an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// What happened, for people.
    pub message: String,
    /// The TLS library's own words, for an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `TLSv1_3`, `TLSv1_2`, once a handshake completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
}

/// The settings a probe's failures are reported under.
#[derive(Debug, Clone)]
struct Settings {
    url: String,
    trust: String,
    crls: String,
    certificate: String,
}

/// One handshake to make.
struct Job {
    probe: Probe,
    settings: Settings,
    /// Why the proxy disables this pair (then it is not probed).
    skip: Option<String>,
    tls: Result<Arc<ClientConfig>, String>,
    target: Result<UpstreamTarget, String>,
    timeouts: Timeouts,
    /// The forward proxy the pool tunnels through, as the proxy would.
    egress: Option<EgressProxy>,
}

/// Probes every (tenant, role, upstream) the proxy would use, all at once; results in
/// configuration order (tenants, then DMP, INSi auto and manu, each `[[services]]` entry).
pub async fn probe_all(config: &Config, now: OffsetDateTime) -> Vec<Probe> {
    let mut jobs = Vec::new();
    for (index, tenant) in config.tenants.iter().enumerate() {
        let cert = |role| tenant.certificates.get(&role);
        let mut add = |service: String,
                       url: &str,
                       settings: (String, String, String),
                       trust,
                       timeouts,
                       egress: Option<&EgressProxy>,
                       material: &CertMaterial| {
            let role = material.role;
            let name = format!("{} {service} {role}", tenant.id);
            jobs.push(Job {
                probe: Probe {
                    tenant: tenant.id.to_string(),
                    role: role.to_string(),
                    service,
                    upstream: url.to_string(),
                    outcome: Outcome::Ok,
                    setting: None,
                    message: String::new(),
                    detail: None,
                    tls_version: None,
                },
                settings: Settings {
                    url: settings.0,
                    trust: settings.1,
                    crls: settings.2,
                    certificate: format!("tenants[{index}].certificates.{role}"),
                },
                // The pair the proxy disables is not probed: the same check it makes.
                skip: Credential::of(tenant, material, &crate::state::OcspBoard::default())
                    .check(now)
                    .err()
                    .map(|e| e.to_string()),
                tls: upstream::client_config(&name, trust, material, None)
                    .map_err(|e| e.to_string()),
                target: UpstreamTarget::parse(url).map_err(|e| e.to_string()),
                timeouts,
                egress: egress.cloned(),
            });
        };
        // As the proxy builds its pools: DMP with dmp_auth when dmp_sign is there too
        // (every DMP service lives under base_url: one host, one handshake), INSi with
        // each INSi certificate.
        let named = |section: &str| {
            (
                format!("{section}.url"),
                format!("{section}.trust_anchors"),
                format!("{section}.crls"),
            )
        };
        if let (Some(dmp), Some(auth), Some(_)) = (
            &config.dmp,
            cert(CertRole::DmpAuth),
            cert(CertRole::DmpSign),
        ) {
            add(
                "dmp".into(),
                dmp.base_url.as_str(),
                (
                    "dmp.base_url".into(),
                    "dmp.trust_anchors".into(),
                    "dmp.crls".into(),
                ),
                &dmp.trust,
                dmp.timeouts,
                dmp.egress.as_ref(),
                auth,
            );
        }
        if let Some(insi) = &config.insi {
            for role in [CertRole::InsiAuto, CertRole::InsiManu] {
                if let Some(material) = cert(role) {
                    add(
                        "insi".into(),
                        insi.url.as_str(),
                        named("insi"),
                        &insi.trust,
                        insi.timeouts,
                        insi.egress.as_ref(),
                        material,
                    );
                }
            }
        }
        // Each [[services]] entry with the tenant's certificate for it (org_auth).
        for (i, service) in config.services.iter().enumerate() {
            if let Some(material) = cert(service.role) {
                add(
                    format!("svc/{}", service.name),
                    service.url.as_str(),
                    named(&format!("services[{i}]")),
                    &service.trust,
                    service.timeouts,
                    service.egress.as_ref(),
                    material,
                );
            }
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    let count = jobs.len();
    for (i, job) in jobs.into_iter().enumerate() {
        tasks.spawn(async move { (i, run(job).await) });
    }
    let mut results: Vec<Option<Probe>> = vec![None; count];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, probe)) = done {
            results[i] = Some(probe);
        }
    }
    results.into_iter().flatten().collect()
}

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

async fn run(job: Job) -> Probe {
    let Job {
        mut probe,
        settings,
        skip,
        tls,
        target,
        timeouts,
        egress,
    } = job;
    if let Some(reason) = skip {
        probe.outcome = Outcome::Skipped;
        probe.message =
            format!("not probed: the certificate is {reason}, Passerelle disables this pair");
        return probe;
    }
    let tls = match tls {
        Ok(tls) => tls,
        Err(reason) => {
            let setting = if reason.contains("trust anchor") {
                settings.trust.to_string()
            } else {
                settings.certificate.clone()
            };
            return fail(probe, setting, "cannot build the TLS configuration", reason);
        }
    };
    let target = match target {
        Ok(t) => t,
        Err(reason) => return fail(probe, settings.url.clone(), "not a usable URL", reason),
    };
    match handshake(&tls, &target, timeouts, egress.as_ref()).await {
        Ok(version) => {
            probe.message = match version.as_deref() {
                Some("TLSv1_3") => "handshake complete, client certificate accepted".into(),
                _ => "handshake complete (client certificate checked during it)".into(),
            };
            probe.tls_version = version;
            probe
        }
        Err(Failure::Plain { what, error }) => fail(probe, settings.url.clone(), &what, error),
        Err(Failure::Egress { what, error }) => fail(probe, "egress.proxy".into(), &what, error),
        Err(Failure::Tls { version, error }) => {
            probe.tls_version = version;
            let (setting, what) = classify(&error, &settings, &target, &probe.upstream);
            let detail = error.to_string();
            fail(probe, setting, &what, detail)
        }
        Err(Failure::Closed { version }) => {
            probe.tls_version = version;
            fail(
                probe,
                settings.certificate.clone(),
                "the server closed the connection right after the handshake, without a word: it most likely refused this client certificate",
                "connection closed".into(),
            )
        }
    }
}

fn fail(mut probe: Probe, setting: String, what: &str, detail: String) -> Probe {
    probe.outcome = Outcome::Error;
    probe.message = what.to_string();
    probe.setting = Some(setting);
    probe.detail = Some(detail);
    probe
}

enum Failure {
    /// Before TLS: TCP connect or a timeout.
    Plain { what: String, error: String },
    /// The `[egress]` forward proxy gave no tunnel.
    Egress { what: String, error: String },
    /// TLS refused, by us (the server's certificate) or by the server (an alert).
    Tls {
        version: Option<String>,
        error: rustls::Error,
    },
    /// The server closed the connection after the handshake without an alert.
    Closed { version: Option<String> },
}

async fn handshake(
    tls: &Arc<ClientConfig>,
    target: &UpstreamTarget,
    timeouts: Timeouts,
    egress: Option<&EgressProxy>,
) -> Result<Option<String>, Failure> {
    let (host, port) = target.address();
    let tcp = match egress {
        Some(proxy) => crate::egress::tunnel(proxy, host, port, timeouts.connect)
            .await
            .map_err(|e| Failure::Egress {
                what: format!("no tunnel to {host}:{port} through the egress proxy"),
                error: e.to_string(),
            })?,
        None => tokio::time::timeout(timeouts.connect, TcpStream::connect((host, port)))
            .await
            .map_err(|_| Failure::Plain {
                what: format!(
                    "no TCP connection to {host}:{port} within {} (connect timeout)",
                    secs(timeouts.connect)
                ),
                error: "timeout".into(),
            })?
            .map_err(|e| Failure::Plain {
                what: format!("cannot connect to {host}:{port}"),
                error: e.to_string(),
            })?,
    };
    // The pool's configuration, with a session store that says when a ticket arrives.
    let tickets = Arc::new(TicketSignal::default());
    let mut config = (**tls).clone();
    config.resumption = Resumption::store(tickets.clone());
    let connector = TlsConnector::from(Arc::new(config));
    let mut stream = tokio::time::timeout(
        timeouts.tls,
        connector.connect(target.server_name().clone(), tcp),
    )
    .await
    .map_err(|_| Failure::Plain {
        what: format!(
            "no TLS handshake with {host}:{port} within {} (tls timeout): is it a TLS service?",
            secs(timeouts.tls)
        ),
        error: "timeout".into(),
    })?
    .map_err(|e| tls_failure(e, None))?;
    let version = stream
        .get_ref()
        .1
        .protocol_version()
        .map(|v| format!("{v:?}"));
    if stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
        let mut buf = [0u8; 512];
        let wait = VERDICT_WAIT.min(timeouts.tls);
        tokio::select! {
            _ = tickets.arrived.notified() => {}
            read = tokio::time::timeout(wait, stream.read(&mut buf)) => match read {
                // Silent: no refusal within the wait.
                Err(_) => {}
                Ok(Ok(0)) => return Err(Failure::Closed { version }),
                // Data we did not ask for: the server took us in.
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(tls_failure(e, version)),
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    Ok(version)
}

fn tls_failure(e: io::Error, version: Option<String>) -> Failure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(error) => Failure::Tls {
            version,
            error: error.clone(),
        },
        None if version.is_some() && e.kind() == io::ErrorKind::UnexpectedEof => {
            Failure::Closed { version }
        }
        None => Failure::Plain {
            what: "the connection failed during the TLS handshake (the server may have refused the client certificate without saying so)".into(),
            error: e.to_string(),
        },
    }
}

/// The setting at fault for a TLS error, and what to tell.
fn classify(
    error: &rustls::Error,
    s: &Settings,
    target: &UpstreamTarget,
    url: &str,
) -> (String, String) {
    let host = target.address().0;
    match error {
        rustls::Error::InvalidCertificate(e) => server_certificate(e, s, host, url),
        rustls::Error::AlertReceived(alert) => refused(*alert, s, host),
        rustls::Error::InvalidCertRevocationList(_) => (
            s.crls.clone(),
            format!("a CRL of {} cannot be used", s.crls),
        ),
        other => (s.url.clone(), format!("TLS with {host} failed: {other}")),
    }
}

/// We refused the server's certificate.
fn server_certificate(
    e: &CertificateError,
    s: &Settings,
    host: &str,
    url: &str,
) -> (String, String) {
    use CertificateError as E;
    let not_anchored = |why: &str| {
        (
            s.trust.to_string(),
            format!(
                "the server's certificate is not anchored in {}: {why}; name the root of the service's chain there (IGC-Santé, never the web PKI)",
                s.trust
            ),
        )
    };
    match e {
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            let presented = match e {
                E::NotValidForNameContext { presented, .. } => {
                    format!(" (it names {})", presented.join(", "))
                }
                _ => String::new(),
            };
            (
                s.url.clone(),
                format!(
                    "the server's certificate is not valid for {host}{presented}: {} must use the host name its certificate carries",
                    s.url
                ),
            )
        }
        E::Expired | E::ExpiredContext { .. } | E::NotValidYet | E::NotValidYetContext { .. } => (
            s.url.clone(),
            format!(
                "the server's certificate is outside its validity dates (expired, or not valid yet; check this host's clock): is {url} the right service?"
            ),
        ),
        E::Revoked => (
            s.crls.clone(),
            format!(
                "the server's certificate is revoked according to {}",
                s.crls
            ),
        ),
        E::UnknownRevocationStatus
        | E::ExpiredRevocationList
        | E::ExpiredRevocationListContext { .. } => (
            s.crls.clone(),
            format!(
                "the server certificate's revocation status cannot be told from {} (missing or outdated CRL)",
                s.crls
            ),
        ),
        E::UnknownIssuer => {
            not_anchored("its chain ends at an issuer that is not among the anchors")
        }
        E::BadSignature => not_anchored(
            "its chain reaches a certificate with an anchor's name that the anchor's key did not sign (a look-alike, or another generation of that root)",
        ),
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => (
            s.url.clone(),
            format!(
                "the certificate {url} presents is not a TLS server certificate (extended key usage)"
            ),
        ),
        other => not_anchored(&format!("{other:?}")),
    }
}

/// The server refused the handshake, usually our certificate.
fn refused(alert: AlertDescription, s: &Settings, host: &str) -> (String, String) {
    use AlertDescription as A;
    let certificate = |why: &str| {
        (
            s.certificate.clone(),
            format!("{host} refused this client certificate ({alert:?}): {why}"),
        )
    };
    match alert {
        A::UnknownCA => certificate(
            "it does not trust its issuer (a test certificate against a production service, or the reverse?)",
        ),
        A::CertificateExpired => certificate("it says the certificate expired or is not valid yet"),
        A::CertificateRevoked => certificate("it says the certificate is revoked"),
        A::CertificateRequired => certificate("it received no certificate"),
        A::DecryptError => certificate(
            "its chain does not verify against the CAs the service trusts (a look-alike or another generation of its issuer?)",
        ),
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown | A::AccessDenied => {
            certificate(
                "the service does not accept it (another kind of certificate, or not registered for this service?)",
            )
        }
        A::HandshakeFailure => {
            certificate("most often the client certificate; otherwise no TLS parameters in common")
        }
        A::UnrecognisedName => (
            s.url.clone(),
            format!("{host} does not serve the host name of {} (SNI)", s.url),
        ),
        A::ProtocolVersion | A::InsufficientSecurity => (
            s.url.clone(),
            format!(
                "{host} shares no TLS version or cipher suite with Passerelle (TLS 1.2 or 1.3, ECDHE with AES-GCM or ChaCha20)"
            ),
        ),
        other => (
            s.url.clone(),
            format!("{host} ended the handshake ({other:?})"),
        ),
    }
}

/// A session store that tells when the server sends a TLS 1.3 ticket: it does so only
/// once it has checked and accepted our certificate.
#[derive(Debug)]
struct TicketSignal {
    inner: ClientSessionMemoryCache,
    arrived: Notify,
}

impl Default for TicketSignal {
    fn default() -> Self {
        Self {
            inner: ClientSessionMemoryCache::new(4),
            arrived: Notify::new(),
        }
    }
}

impl ClientSessionStore for TicketSignal {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.inner.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.inner.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.inner.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.inner.insert_tls13_ticket(server_name, value);
        // A permit is kept if nobody waits yet.
        self.arrived.notify_one();
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            url: "dmp.base_url".into(),
            trust: "dmp.trust_anchors".into(),
            crls: "dmp.crls".into(),
            certificate: "tenants[1].certificates.dmp_auth".into(),
        }
    }

    fn setting_of(error: rustls::Error) -> (String, String) {
        let target = UpstreamTarget::parse("https://dmp.example:9443/x").expect("url");
        classify(&error, &settings(), &target, "https://dmp.example:9443/x")
    }

    #[test]
    fn each_tls_failure_names_its_setting() {
        use rustls::Error as R;
        let cert = |e| R::InvalidCertificate(e);
        for (error, setting, words) in [
            (
                cert(CertificateError::UnknownIssuer),
                "dmp.trust_anchors",
                "not anchored in dmp.trust_anchors",
            ),
            (
                cert(CertificateError::BadSignature),
                "dmp.trust_anchors",
                "look-alike",
            ),
            (
                cert(CertificateError::NotValidForName),
                "dmp.base_url",
                "not valid for dmp.example",
            ),
            (
                cert(CertificateError::Expired),
                "dmp.base_url",
                "validity dates",
            ),
            (
                cert(CertificateError::Revoked),
                "dmp.crls",
                "revoked according to dmp.crls",
            ),
            (
                R::AlertReceived(AlertDescription::UnrecognisedName),
                "dmp.base_url",
                "(SNI)",
            ),
            (
                R::AlertReceived(AlertDescription::ProtocolVersion),
                "dmp.base_url",
                "no TLS version",
            ),
            (
                R::AlertReceived(AlertDescription::UnknownCA),
                "tenants[1].certificates.dmp_auth",
                "does not trust its issuer",
            ),
            (
                R::AlertReceived(AlertDescription::CertificateRequired),
                "tenants[1].certificates.dmp_auth",
                "received no certificate",
            ),
            (
                R::AlertReceived(AlertDescription::BadCertificate),
                "tenants[1].certificates.dmp_auth",
                "refused this client certificate",
            ),
        ] {
            let shown = format!("{error:?}");
            let (got, message) = setting_of(error);
            assert_eq!(got, setting, "{shown}: {message}");
            assert!(message.contains(words), "{shown}: {message}");
        }
    }
}
