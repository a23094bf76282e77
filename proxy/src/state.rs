//! What the proxy runs on, built once from a validated [`Config`]: per tenant its ORG
//! SIGN signer and its upstream pools (one per DMP service with ORG AUTH_CLI, one per
//! INSi certificate, one per `[[services]]` entry with its `org_auth` certificate), the
//! access policy, and the bound on concurrent signatures.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dashmap::DashMap;

use passerelle_config::{
    CertMaterial, CertRole, Config, KeyMaterial, OcspCheck, StructureId, Tenant, TenantId,
};
use passerelle_pkcs11::TokenKey;
use passerelle_signing::{Signer, signer_for};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use crate::access::AccessPolicy;
use crate::fault::ProxyError;
pub use crate::ocsp_answer::OcspVerdict;
use crate::server_ocsp::ServerOcsp;
use crate::upstream::{self, PoolKey, PoolSpec, UpstreamPool};

/// Why the runtime state could not be built from a configuration.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    #[error("tenant {tenant}: {role} signer: {reason}")]
    Signer {
        tenant: String,
        role: CertRole,
        reason: String,
    },
}

/// Automated or manual INSi calls, each with its own certificate (CN INSI-AUTO / -MANU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InsiMode {
    Auto,
    Manu,
}

impl InsiMode {
    pub fn role(self) -> CertRole {
        match self {
            Self::Auto => CertRole::InsiAuto,
            Self::Manu => CertRole::InsiManu,
        }
    }

    /// `auto` or `manu`, as in the paths and the audit trail.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manu => "manu",
        }
    }
}

/// A certificate in use, checked on every request of its (tenant, role) pair: an
/// expired, not yet valid or revoked one disables that pair only.
#[derive(Debug, Clone)]
pub struct Credential {
    pub tenant: TenantId,
    pub role: CertRole,
    /// Upper-case hexadecimal, for logs when a reload changes it.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// When and by which CRL, when a configured CRL revokes it.
    pub revoked: Option<String>,
    /// When and by which responder, while OCSP says revoked: shared by every
    /// credential of this serial and kept across reloads; cleared only by a later
    /// verified "good" (a `certificateHold` released, a CA's mistake undone).
    pub ocsp_revoked: RevokedSlot,
    /// Why OCSP has not vouched for it, under `revocation_failure = "hard"` only.
    pub ocsp_unverified: RevokedSlot,
    /// The key's token, when the key is in one (probed by [`crate::tokens`]).
    pub token: Option<Arc<TokenKey>>,
}

impl Credential {
    pub fn of(tenant: &Tenant, material: &CertMaterial, board: &OcspBoard) -> Self {
        Self {
            tenant: tenant.id.clone(),
            role: material.role,
            serial: material.info.serial_hex.clone(),
            not_before: material.info.not_before,
            not_after: material.info.not_after,
            revoked: material.revoked.clone(),
            ocsp_revoked: board.slot(tenant.id.as_str(), material.role, &material.info.serial_hex),
            ocsp_unverified: board.unverified_slot(
                tenant.id.as_str(),
                material.role,
                &material.info.serial_hex,
            ),
            token: match &material.key {
                KeyMaterial::Token(key) => Some(Arc::clone(key)),
                KeyMaterial::File(_) => None,
            },
        }
    }

    /// Why it is revoked, by a CRL or by OCSP.
    pub fn revocation(&self) -> Option<String> {
        self.revoked.clone().or_else(|| self.ocsp_revoked.get())
    }

    /// Refuses a certificate that is revoked, not yet valid, or expired (at start or
    /// while the proxy ran).
    pub fn check(&self, now: OffsetDateTime) -> Result<(), ProxyError> {
        let (tenant, role) = (self.tenant.to_string(), self.role.to_string());
        if let Some(reason) = self.revocation() {
            return Err(ProxyError::CertificateRevoked {
                tenant,
                role,
                reason,
            });
        }
        if let Some(reason) = self.ocsp_unverified.get() {
            return Err(ProxyError::CertificateRevocationUnknown {
                tenant,
                role,
                reason,
            });
        }
        if now < self.not_before {
            return Err(ProxyError::CertificateNotYetValid {
                tenant,
                role,
                not_before: self.not_before.date().to_string(),
            });
        }
        if now > self.not_after {
            return Err(ProxyError::CertificateExpired {
                tenant,
                role,
                not_after: self.not_after.date().to_string(),
            });
        }
        if let Some(reason) = self.token_unavailable() {
            return Err(ProxyError::KeyUnavailable(reason));
        }
        Ok(())
    }

    /// Why the key's token cannot be used now (the last operation or probe failed).
    pub fn token_unavailable(&self) -> Option<String> {
        self.token.as_ref().and_then(|key| key.unavailable())
    }
}

/// The INSi side of a tenant for one mode.
#[derive(Debug)]
pub struct InsiUpstream {
    pub pool: Arc<UpstreamPool>,
    /// `Emetteur` of the INSi contexts: the certificate's OU.
    pub emetteur: String,
    pub credential: Credential,
}

/// The DMP side of a tenant.
#[derive(Debug)]
pub struct DmpUpstream {
    /// One pool per DMP service route name, all with ORG AUTH_CLI.
    pub pools: HashMap<String, Arc<UpstreamPool>>,
    pub auth: Credential,
    pub signer: Arc<dyn Signer>,
    pub sign: Credential,
}

/// A `[[services]]` entry for a tenant: its pool with the tenant's `org_auth`
/// certificate.
#[derive(Debug)]
pub struct ServiceUpstream {
    pub pool: Arc<UpstreamPool>,
    pub credential: Credential,
    /// The certificate's OU: the structure the audit trail records.
    pub structure: String,
}

/// One legal entity at run time.
#[derive(Debug)]
pub struct TenantRuntime {
    pub id: TenantId,
    pub structure_id: StructureId,
    pub geographic_structure_ids: Vec<StructureId>,
    /// Which structures its DMP metadata may name.
    pub policy: passerelle_config::DmpPolicy,
    pub dmp: Option<DmpUpstream>,
    pub insi: BTreeMap<InsiMode, InsiUpstream>,
    /// The `org_auth` certificate, when configured.
    pub org_auth: Option<Credential>,
    /// `[[services]]` name -> its pool with `org_auth` (none without that certificate).
    pub services: HashMap<String, ServiceUpstream>,
}

impl TenantRuntime {
    /// The tenant's legal entity or one of its geographic entities.
    pub fn owns_structure(&self, s: &StructureId) -> bool {
        *s == self.structure_id || self.geographic_structure_ids.contains(s)
    }
}

/// Everything a request needs, shared read-only by all connections.
#[derive(Debug)]
pub struct ProxyState {
    pub config: Arc<Config>,
    pub access: AccessPolicy,
    pub tenants: HashMap<TenantId, TenantRuntime>,
    /// Bounds the signatures in flight on the blocking pool to the cores available.
    pub signing_slots: Arc<Semaphore>,
    /// What OCSP said of our certificates; the same board across reloads.
    pub ocsp: Arc<OcspBoard>,
}

/// OCSP's revocation of one certificate, shared by its credentials.
#[derive(Debug, Clone, Default)]
pub struct RevokedSlot(Arc<std::sync::RwLock<Option<String>>>);

impl RevokedSlot {
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, why: Option<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = why;
    }
}

/// What OCSP said of each tenant certificate: the last answer per (tenant, role), and a
/// revocation slot per certificate that every [`Credential`] of it shares.
#[derive(Debug, Default)]
pub struct OcspBoard {
    revoked: DashMap<(String, CertRole, String), RevokedSlot>,
    /// Hard-fail: the certificates OCSP has not vouched for, and why.
    unverified: DashMap<(String, CertRole, String), RevokedSlot>,
    last: DashMap<(String, CertRole), OcspChecked>,
    /// The upstream servers' certificates.
    pub servers: Arc<ServerOcsp>,
}

/// The last OCSP check of one (tenant, role).
#[derive(Debug, Clone)]
pub struct OcspChecked {
    pub serial: String,
    /// The last verified answer while it is valid, else why there is none.
    pub verdict: OcspVerdict,
    /// When the verdict was given.
    pub at: OffsetDateTime,
    /// Until when a verified answer holds (its `nextUpdate`, else the next check).
    pub valid_until: Option<OffsetDateTime>,
    /// The last failure, when a still-valid answer was kept over it.
    pub last_error: Option<String>,
}

impl OcspBoard {
    /// The revocation slot of one certificate.
    pub fn slot(&self, tenant: &str, role: CertRole, serial: &str) -> RevokedSlot {
        self.revoked
            .entry((tenant.to_string(), role, serial.to_string()))
            .or_default()
            .clone()
    }

    /// The hard-fail slot of one certificate: why OCSP has not vouched for it.
    pub fn unverified_slot(&self, tenant: &str, role: CertRole, serial: &str) -> RevokedSlot {
        self.unverified
            .entry((tenant.to_string(), role, serial.to_string()))
            .or_default()
            .clone()
    }

    /// Applies `revocation_failure` to the certificates to check: under hard-fail, one
    /// with no answer yet is not used until its first "good"; under soft-fail, nothing
    /// is held for want of an answer.
    pub fn apply_policy(&self, check: Option<&OcspCheck>) {
        let hard = check.is_some_and(|c| c.hard_fail);
        if !hard {
            self.unverified.iter().for_each(|s| s.value().set(None));
            return;
        }
        let now = OffsetDateTime::now_utc();
        for t in check.map(|c| c.targets.as_slice()).unwrap_or_default() {
            // Only a "good" still in force vouches (a soft-fail "unknown" or failure
            // kept from before a switch to hard does not).
            let why = match self.last.get(&(t.tenant.to_string(), t.role)) {
                Some(l) if l.serial == t.serial => match &l.verdict {
                    OcspVerdict::Good if l.valid_until.is_some_and(|u| u > now) => None,
                    OcspVerdict::Good => Some("its last OCSP answer has expired".to_string()),
                    OcspVerdict::Revoked(_) => None,
                    OcspVerdict::Unknown => {
                        Some("the OCSP responder does not know this certificate".to_string())
                    }
                    OcspVerdict::Failed(why) => Some(why.clone()),
                },
                _ => Some("no OCSP answer yet".to_string()),
            };
            if why.is_some() {
                self.unverified_slot(t.tenant.as_str(), t.role, &t.serial)
                    .set(why);
            }
        }
    }

    /// Records an answer valid until `valid_until`, or a failure. A revocation
    /// disables every credential of that certificate, a verified "good" lifts it; a
    /// failure leaves a still-valid answer in force (one timeout does not undo a
    /// "good" the responder gave for the day). With `hard`, "unknown" and a failure
    /// with no valid answer held disable it too, until a "good".
    pub fn record(
        &self,
        tenant: &str,
        role: CertRole,
        serial: &str,
        verdict: OcspVerdict,
        valid_until: Option<OffsetDateTime>,
        hard: bool,
    ) {
        let now = OffsetDateTime::now_utc();
        let key = (tenant.to_string(), role);
        if let OcspVerdict::Failed(why) = &verdict
            && let Some(mut held) = self.last.get_mut(&key)
            && held.serial == serial
            && !matches!(held.verdict, OcspVerdict::Failed(_))
            && held.valid_until.is_some_and(|u| u > now)
        {
            held.last_error = Some(why.clone());
            return;
        }
        let unverified = self.unverified_slot(tenant, role, serial);
        match &verdict {
            OcspVerdict::Revoked(why) => {
                self.slot(tenant, role, serial).set(Some(why.clone()));
                unverified.set(None);
            }
            OcspVerdict::Good => {
                self.slot(tenant, role, serial).set(None);
                unverified.set(None);
            }
            OcspVerdict::Unknown => unverified
                .set(hard.then(|| "the OCSP responder does not know this certificate".to_string())),
            OcspVerdict::Failed(why) => unverified.set(hard.then(|| why.clone())),
        }
        self.last.insert(
            key,
            OcspChecked {
                serial: serial.to_string(),
                verdict,
                at: now,
                valid_until,
                last_error: None,
            },
        );
    }

    /// The last check of each (tenant, role), in order.
    pub fn snapshot(&self) -> Vec<((String, CertRole), OcspChecked)> {
        let mut out: Vec<_> = self
            .last
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// What the servers' OCSP answers were obtained under: the settings and every
/// upstream's anchors.
fn server_ocsp_basis(config: &Config) -> (Option<passerelle_config::UpstreamOcsp>, Vec<&[u8]>) {
    let anchors = config
        .dmp
        .iter()
        .map(|d| &d.trust)
        .chain(config.insi.iter().map(|i| &i.trust))
        .chain(config.services.iter().map(|s| &s.trust))
        .flat_map(|t| t.anchors.iter().map(Vec::as_slice))
        .collect();
    (
        config.ocsp.as_ref().and_then(|o| o.upstream.clone()),
        anchors,
    )
}

impl ProxyState {
    pub fn new(config: Config) -> Result<Self, StateError> {
        Self::build(config, None)
    }

    /// Builds the state of `config`, keeping each pool of `previous` whose spec (URL,
    /// trust, certificate and key, timeouts, concurrency) is unchanged: a reload keeps
    /// its idle connections, TLS sessions and counters.
    pub fn build(config: Config, previous: Option<&ProxyState>) -> Result<Self, StateError> {
        let running: HashMap<[u8; 32], Arc<UpstreamPool>> = previous
            .into_iter()
            .flat_map(ProxyState::pools)
            .map(|p| (p.digest(), Arc::clone(p)))
            .collect();
        let ocsp = previous.map_or_else(Arc::default, |p| Arc::clone(&p.ocsp));
        ocsp.apply_policy(config.ocsp.as_ref());
        if previous.is_some_and(|p| server_ocsp_basis(&p.config) != server_ocsp_basis(&config)) {
            // Answers obtained from another responder, or under other anchors, no
            // longer count.
            ocsp.servers.clear();
        }
        let mut tenants = HashMap::new();
        for tenant in &config.tenants {
            tenants.insert(
                tenant.id.clone(),
                tenant_runtime(&config, tenant, &running, &ocsp)?,
            );
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            access: AccessPolicy::new(config.clients.clone()),
            tenants,
            signing_slots: Arc::new(Semaphore::new(cores * 2)),
            ocsp,
            config: Arc::new(config),
        })
    }

    /// Every certificate in use, for expiry checks and metrics.
    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.tenants.values().flat_map(|t| {
            t.dmp
                .iter()
                .flat_map(|d| [&d.auth, &d.sign])
                .chain(t.insi.values().map(|i| &i.credential))
                .chain(t.org_auth.iter())
        })
    }

    /// The (tenant, role) pairs disabled now, with why.
    pub fn degraded(&self, now: OffsetDateTime) -> Vec<(&Credential, ProxyError)> {
        let mut out: Vec<_> = self
            .credentials()
            .filter_map(|c| c.check(now).err().map(|e| (c, e)))
            .collect();
        out.sort_by(|(a, _), (b, _)| (&a.tenant, a.role).cmp(&(&b.tenant, b.role)));
        out
    }

    /// Whether any tenant can be served at all: its DMP side (ORG AUTH_CLI and ORG SIGN
    /// both usable) or one of its INSi certificates.
    pub fn can_serve(&self, now: OffsetDateTime) -> bool {
        self.tenants.values().any(|t| {
            t.dmp
                .as_ref()
                .is_some_and(|d| d.auth.check(now).is_ok() && d.sign.check(now).is_ok())
                || t.insi.values().any(|i| i.credential.check(now).is_ok())
        })
    }

    /// Every pool, for counters.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<UpstreamPool>> {
        self.tenants.values().flat_map(|t| {
            t.dmp
                .iter()
                .flat_map(|d| d.pools.values())
                .chain(t.insi.values().map(|i| &i.pool))
                .chain(t.services.values().map(|s| &s.pool))
        })
    }
}

/// The running pool built from the same spec, or a new one.
fn pool(
    spec: &PoolSpec<'_>,
    running: &HashMap<[u8; 32], Arc<UpstreamPool>>,
) -> Result<Arc<UpstreamPool>, StateError> {
    match running.get(&spec.digest()) {
        Some(p) => Ok(Arc::clone(p)),
        None => Ok(Arc::new(UpstreamPool::build(spec)?)),
    }
}

fn tenant_runtime(
    config: &Config,
    tenant: &Tenant,
    running: &HashMap<[u8; 32], Arc<UpstreamPool>>,
    board: &OcspBoard,
) -> Result<TenantRuntime, StateError> {
    let cert = |role: CertRole| tenant.certificates.get(&role);
    let dmp = match (
        &config.dmp,
        cert(CertRole::DmpAuth),
        cert(CertRole::DmpSign),
    ) {
        (Some(dmp), Some(auth), Some(sign)) => {
            let mut pools = HashMap::new();
            for name in dmp.services.keys() {
                let key = PoolKey {
                    tenant: tenant.id.to_string(),
                    service: format!("dmp/{name}"),
                    role: CertRole::DmpAuth,
                };
                let url = dmp.service_url(name).unwrap_or_default();
                let spec = PoolSpec {
                    key,
                    url: &url,
                    trust: &dmp.trust,
                    cert: auth,
                    timeouts: dmp.timeouts,
                    concurrency: config.limits.upstream_concurrency,
                    egress: dmp.egress.as_ref(),
                    server_ocsp: &board.servers,
                };
                pools.insert(name.clone(), pool(&spec, running)?);
            }
            let signer = signer_for(sign).map_err(|e| StateError::Signer {
                tenant: tenant.id.to_string(),
                role: CertRole::DmpSign,
                reason: e.to_string(),
            })?;
            Some(DmpUpstream {
                pools,
                auth: Credential::of(tenant, auth, board),
                signer,
                sign: Credential::of(tenant, sign, board),
            })
        }
        _ => None,
    };
    let mut insi = BTreeMap::new();
    if let Some(service) = &config.insi {
        for mode in [InsiMode::Auto, InsiMode::Manu] {
            let Some(material) = cert(mode.role()) else {
                continue;
            };
            let key = PoolKey {
                tenant: tenant.id.to_string(),
                service: "insi".into(),
                role: mode.role(),
            };
            let spec = PoolSpec {
                key,
                url: service.url.as_str(),
                trust: &service.trust,
                cert: material,
                timeouts: service.timeouts,
                concurrency: config.limits.upstream_concurrency,
                egress: service.egress.as_ref(),
                server_ocsp: &board.servers,
            };
            insi.insert(
                mode,
                InsiUpstream {
                    pool: pool(&spec, running)?,
                    emetteur: material
                        .info
                        .organizational_unit
                        .clone()
                        .unwrap_or_else(|| tenant.structure_id.to_string()),
                    credential: Credential::of(tenant, material, board),
                },
            );
        }
    }
    let org_auth = cert(CertRole::OrgAuth);
    let mut services = HashMap::new();
    for service in &config.services {
        let Some(material) = cert(service.role) else {
            continue;
        };
        let key = PoolKey {
            tenant: tenant.id.to_string(),
            service: format!("svc/{}", service.name),
            role: service.role,
        };
        let spec = PoolSpec {
            key,
            url: service.url.as_str(),
            trust: &service.trust,
            cert: material,
            timeouts: service.timeouts,
            concurrency: config.limits.upstream_concurrency,
            egress: service.egress.as_ref(),
            server_ocsp: &board.servers,
        };
        services.insert(
            service.name.clone(),
            ServiceUpstream {
                pool: pool(&spec, running)?,
                credential: Credential::of(tenant, material, board),
                structure: material
                    .info
                    .organizational_unit
                    .clone()
                    .unwrap_or_else(|| tenant.structure_id.to_string()),
            },
        );
    }
    Ok(TenantRuntime {
        id: tenant.id.clone(),
        structure_id: tenant.structure_id.clone(),
        geographic_structure_ids: tenant.geographic_structure_ids.clone(),
        policy: tenant.policy,
        dmp,
        insi,
        org_auth: org_auth.map(|m| Credential::of(tenant, m, board)),
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revocation is shared by the serial's credentials and lifted by a later "good";
    /// a failure keeps a still-valid answer, and shows once none is held.
    #[test]
    fn ocsp_answers_are_held_until_they_expire_and_revocations_until_a_good() {
        let board = OcspBoard::default();
        let slot = board.slot("ch-test-a", CertRole::DmpAuth, "0A");
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        board.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0A",
            OcspVerdict::Revoked("revoked".into()),
            Some(later),
            false,
        );
        assert_eq!(slot.get().as_deref(), Some("revoked"));
        board.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0A",
            OcspVerdict::Failed("down".into()),
            None,
            false,
        );
        let (_, held) = &board.snapshot()[0];
        assert_eq!(
            held.verdict.label(),
            "revoked",
            "a failure keeps the valid answer"
        );
        assert_eq!(held.last_error.as_deref(), Some("down"));
        board.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0A",
            OcspVerdict::Good,
            None,
            false,
        );
        assert_eq!(
            slot.get(),
            None,
            "a verified good lifts it (certificateHold released)"
        );
        board.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0A",
            OcspVerdict::Failed("down".into()),
            None,
            false,
        );
        let (_, held) = &board.snapshot()[0];
        assert_eq!(
            held.verdict.label(),
            "error",
            "no valid answer held: the failure shows"
        );
    }

    /// Hard-fail: no answer yet, "unknown" and a failure with nothing valid held keep
    /// the certificate out of use (`CertificateRevocationUnknown`) until a "good";
    /// a failure with a valid "good" held does not. Soft-fail holds nothing.
    #[test]
    fn hard_fail_keeps_a_certificate_out_until_ocsp_vouches_for_it() {
        let board = OcspBoard::default();
        let target = passerelle_config::OcspTarget {
            tenant: "ch-test-a".parse().expect("tenant"),
            role: CertRole::DmpAuth,
            serial: "0B".into(),
            leaf: Vec::new(),
            issuer: Vec::new(),
            trust: Vec::new(),
            url: "http://ocsp.test/".parse().expect("url"),
            egress: None,
        };
        let mut check = OcspCheck {
            targets: vec![target],
            refresh: std::time::Duration::from_secs(3600),
            retry: std::time::Duration::from_secs(300),
            timeout: std::time::Duration::from_secs(10),
            upstream: None,
            hard_fail: true,
        };
        let unverified = board.unverified_slot("ch-test-a", CertRole::DmpAuth, "0B");
        board.apply_policy(Some(&check));
        assert_eq!(unverified.get().as_deref(), Some("no OCSP answer yet"));
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let record = |verdict: OcspVerdict, until: Option<OffsetDateTime>, hard: bool| {
            board.record("ch-test-a", CertRole::DmpAuth, "0B", verdict, until, hard)
        };
        record(OcspVerdict::Unknown, Some(later), true);
        assert!(
            unverified
                .get()
                .is_some_and(|w| w.contains("does not know"))
        );
        record(OcspVerdict::Good, Some(later), true);
        assert_eq!(unverified.get(), None, "a good lets it be used");
        record(OcspVerdict::Failed("down".into()), None, true);
        assert_eq!(unverified.get(), None, "the good held still vouches");
        let other = OcspBoard::default();
        other.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0B",
            OcspVerdict::Failed("down".into()),
            None,
            true,
        );
        let slot = other.unverified_slot("ch-test-a", CertRole::DmpAuth, "0B");
        assert_eq!(slot.get().as_deref(), Some("down"));
        let c = Credential {
            tenant: "ch-test-a".parse().expect("tenant"),
            role: CertRole::DmpAuth,
            serial: "0B".into(),
            not_before: OffsetDateTime::now_utc() - time::Duration::days(1),
            not_after: later,
            revoked: None,
            ocsp_revoked: RevokedSlot::default(),
            ocsp_unverified: slot.clone(),
            token: None,
        };
        let e = c.check(OffsetDateTime::now_utc()).expect_err("hard-fail");
        assert_eq!(e.code(), "CertificateRevocationUnknown");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        check.hard_fail = false;
        other.apply_policy(Some(&check));
        assert_eq!(
            slot.get(),
            None,
            "soft-fail: nothing held for want of an answer"
        );
        c.check(OffsetDateTime::now_utc()).expect("usable again");
    }

    /// A reload from soft to hard applies at once: a soft-fail "unknown" kept from
    /// before does not vouch; a "good" in force does.
    #[test]
    fn switching_to_hard_fail_holds_what_no_good_vouches_for() {
        let target = |serial: &str| passerelle_config::OcspTarget {
            tenant: "ch-test-a".parse().expect("tenant"),
            role: CertRole::DmpAuth,
            serial: serial.into(),
            leaf: Vec::new(),
            issuer: Vec::new(),
            trust: Vec::new(),
            url: "http://ocsp.test/".parse().expect("url"),
            egress: None,
        };
        let later = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let unknown = OcspBoard::default();
        unknown.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0C",
            OcspVerdict::Unknown,
            Some(later),
            false,
        );
        let good = OcspBoard::default();
        good.record(
            "ch-test-a",
            CertRole::DmpAuth,
            "0C",
            OcspVerdict::Good,
            Some(later),
            false,
        );
        let check = OcspCheck {
            targets: vec![target("0C")],
            refresh: std::time::Duration::from_secs(3600),
            retry: std::time::Duration::from_secs(300),
            timeout: std::time::Duration::from_secs(10),
            upstream: None,
            hard_fail: true,
        };
        for (board, held) in [(&unknown, true), (&good, false)] {
            let slot = board.unverified_slot("ch-test-a", CertRole::DmpAuth, "0C");
            assert_eq!(slot.get(), None, "soft-fail holds nothing");
            board.apply_policy(Some(&check));
            assert_eq!(slot.get().is_some(), held, "{:?}", slot.get());
        }
    }

    #[test]
    fn a_certificate_that_expires_while_running_is_refused() {
        let not_after = OffsetDateTime::now_utc();
        let c = Credential {
            tenant: "ch-test-a".parse().expect("tenant"),
            role: CertRole::DmpAuth,
            serial: "01".into(),
            not_before: not_after - time::Duration::days(365),
            not_after,
            revoked: None,
            ocsp_revoked: RevokedSlot::default(),
            ocsp_unverified: RevokedSlot::default(),
            token: None,
        };
        c.check(not_after - time::Duration::seconds(1))
            .expect("still valid");
        let e = c
            .check(not_after + time::Duration::seconds(1))
            .expect_err("expired");
        assert_eq!(e.code(), "CertificateExpired");
        assert!(e.to_string().contains("dmp_auth"), "{e}");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
