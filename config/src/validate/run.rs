//! One check from start to end: the entry points ([`load`], [`inspect`],
//! [`inspect_at`]), what they return ([`Inspection`], [`ConfigError`]), and
//! `Validator::run`, which reads and parses the file (unknown keys included) then
//! calls each area's validator in order and assembles the [`Config`].

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::Validator;
use crate::file::ConfigFile;
use crate::model::Config;
use crate::report::{CertificateReport, Problem, Severity};

/// Everything [`inspect`] found.
#[derive(Debug)]
pub struct Inspection {
    /// The validated configuration, present when no problem is an error.
    pub config: Option<Config>,
    pub certificates: Vec<CertificateReport>,
    pub problems: Vec<Problem>,
}

impl Inspection {
    /// Any error, including those that only disable a certificate's (tenant, role)
    /// pair: `passerelle check` exits 1 on these.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// An error that prevents `run` (or a reload): every error but the disabling ones.
    pub fn has_blocking_errors(&self) -> bool {
        self.problems.iter().any(Problem::blocks)
    }
}

/// Why [`load`] refused a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {} error(s) in the configuration:\n{}", path.display(), problems.len(),
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        /// The errors (warnings are left out).
        problems: Vec<Problem>,
    },
}

/// Validates the configuration at `path` and every file it names; returns it when no
/// problem is an error (warnings travel in [`Config::warnings`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let inspection = inspect(path);
    match inspection.config {
        Some(config) => Ok(config),
        None => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: inspection
                .problems
                .into_iter()
                .filter(|p| p.severity == Severity::Error)
                .collect(),
        }),
    }
}

/// Reads and checks the configuration at `path`, collecting every problem.
pub fn inspect(path: &Path) -> Inspection {
    inspect_at(path, OffsetDateTime::now_utc())
}

/// [`inspect`] as if the time were `now` (for tests of expiry rules).
pub fn inspect_at(path: &Path, now: OffsetDateTime) -> Inspection {
    inspect_with(path, now, None)
}

/// Certificate files to check in place of those the configuration names for one
/// tenant and role: what `passerelle install` validates before replacing anything.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The tenant id, as written in the configuration.
    pub tenant: String,
    pub role: crate::ids::CertRole,
    /// The candidate files (absolute paths, or relative to the configuration).
    pub source: crate::file::CertSource,
}

/// [`inspect_at`] with `candidate`'s files in place of its (tenant, role)'s: every
/// rule of `passerelle check` applies to them (role, key usages, CN, OU, anchors,
/// validity, CRLs, uniqueness, DMP pairing). Problems about the candidate carry its
/// [`CertificateKey`](crate::CertificateKey) like any other.
pub fn inspect_candidate(path: &Path, now: OffsetDateTime, candidate: Candidate) -> Inspection {
    inspect_with(path, now, Some(candidate))
}

fn inspect_with(path: &Path, now: OffsetDateTime, candidate: Option<Candidate>) -> Inspection {
    let mut v = Validator {
        config_path: path.to_path_buf(),
        base: path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        now,
        problems: Vec::new(),
        certificates: Vec::new(),
        allow_insecure_keys: false,
        expiry_warning_days: 30,
        candidate,
        downloaded_crls: Vec::new(),
        crls_in_use: Vec::new(),
    };
    let config = v.run();
    let config = if v.problems.iter().any(Problem::blocks) {
        None
    } else {
        config.map(|mut c| {
            c.warnings = v.problems.clone();
            c
        })
    };
    Inspection {
        config,
        certificates: v.certificates,
        problems: v.problems,
    }
}

impl Validator {
    fn run(&mut self) -> Option<Config> {
        let text = match std::fs::read_to_string(&self.config_path) {
            Ok(t) => t,
            Err(e) => {
                self.error("(file)", format!("cannot read the configuration: {e}"));
                return None;
            }
        };
        let mut unknown = Vec::new();
        let parsed: Result<ConfigFile, String> = toml::Deserializer::parse(&text)
            .map_err(|e| e.to_string())
            .and_then(|de| {
                serde_ignored::deserialize(de, |path| unknown.push(field_path(&path)))
                    .map_err(|e| e.to_string())
            });
        for key in unknown {
            self.error(
                &key,
                "unknown key (check its spelling against the configuration reference)",
            );
        }
        let raw = match parsed {
            Ok(raw) => raw,
            Err(message) => {
                self.error("(syntax)", message.trim_end().replace('\n', "\n    "));
                return None;
            }
        };
        self.allow_insecure_keys = raw.security.allow_insecure_key_permissions;
        self.expiry_warning_days = raw.security.expiry_warning_days;

        let listener = self.socket_addr("listener.address", &raw.listener.address);
        let admin = self.socket_addr("admin.address", &raw.admin.address);
        if let (Some(l), Some(a)) = (listener, admin)
            && l == a
            && l.port() != 0
        {
            self.error(
                "admin.address",
                format!("same address as listener.address ({l})"),
            );
        }
        // None: invalid; Some(None): no token asked.
        let admin_token = match &raw.admin.token_sha256 {
            None => Some(None),
            Some(t) => self.sha256_hex("admin.token_sha256", t).map(Some),
        };
        let audit = self.audit(&raw.audit);
        let software = self.software(&raw.software);
        let trust = self.tenant_trust(&raw.trust);
        let egress = raw.egress.as_ref().and_then(|e| self.egress(e));
        let (policy, ocsp_section) = self.revocation_policy(&raw.trust);
        let mut dmp = raw.dmp.as_ref().and_then(|d| self.dmp(d, egress.as_ref()));
        let mut insi = raw
            .insi
            .as_ref()
            .and_then(|i| self.insi(i, egress.as_ref()));
        let mut services = self.services(&raw.services, egress.as_ref());
        let tenants = self.tenants(&raw, &trust);
        let crl_download = raw.trust.crl_download.as_ref().and_then(|d| {
            let known = super::crl_download::Known {
                anchors: &trust.anchors,
                intermediates: &trust.intermediates,
                tenants: &tenants,
                upstreams: dmp
                    .iter()
                    .map(|d| &d.trust)
                    .chain(insi.iter().map(|i| &i.trust))
                    .chain(services.iter().map(|s| &s.trust))
                    .collect(),
            };
            self.crl_download(d, &known, egress.as_ref())
        });
        let ocsp = ocsp_section
            .as_ref()
            .and_then(|o| self.ocsp(o, policy, &tenants, &trust.anchors, egress.as_ref()));
        for target in ocsp.iter().flat_map(|o| &o.targets) {
            let row = self
                .certificates
                .iter_mut()
                .find(|r| r.tenant == target.tenant.as_str() && r.role == target.role);
            if let Some(revocation) = row.and_then(|r| r.revocation.as_mut()) {
                revocation.ocsp = Some(target.url.to_string());
            }
        }
        let mut crl_fields = vec![
            ("trust.crls".to_string(), !raw.trust.crls.is_empty()),
            (
                "trust.crl_download".to_string(),
                raw.trust.crl_download.is_some(),
            ),
        ];
        crl_fields.extend(
            raw.dmp
                .iter()
                .map(|d| ("dmp.crls".into(), !d.crls.is_empty())),
        );
        crl_fields.extend(
            raw.insi
                .iter()
                .map(|i| ("insi.crls".into(), !i.crls.is_empty())),
        );
        crl_fields.extend(
            raw.services
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("services[{i}].crls"), !s.crls.is_empty())),
        );
        self.no_crl_under_ocsp(policy, &crl_fields);
        let upstreams = dmp
            .iter_mut()
            .map(|d| ("[dmp]".to_string(), &mut d.trust))
            .chain(
                insi.iter_mut()
                    .map(|i| ("[insi]".to_string(), &mut i.trust)),
            )
            .chain(
                services
                    .iter_mut()
                    .map(|s| (format!("service {:?}", s.name), &mut s.trust)),
            )
            .collect();
        self.upstream_revocation(
            policy,
            ocsp.as_ref(),
            raw.trust.crl_download.is_some(),
            upstreams,
        );
        let clients = self.clients(&raw, &tenants);
        // None: invalid; Some(None): no [capture].
        let capture = match &raw.capture {
            None => Some(None),
            Some(c) => self.capture(c, &clients, &tenants).map(Some),
        };
        if let Some(Some(admin)) = admin_token
            && let Some(c) = clients.iter().find(|c| c.token_sha256 == Some(admin))
        {
            self.error(
                "admin.token_sha256",
                format!(
                    "the same token as client {:?}: give the admin listener its own token (`passerelle token new`), or that client reads the metrics and readiness",
                    c.name
                ),
            );
        }
        let max_clock_skew = self.duration("security.max_clock_skew", &raw.security.max_clock_skew);
        let listener_tls = raw.listener.tls.as_ref().and_then(|t| self.listener_tls(t));
        if raw
            .listener
            .tls
            .as_ref()
            .is_none_or(|t| t.client_ca.is_empty())
            && clients
                .iter()
                .any(|c| c.cert_sha256.is_some() || c.cert_subject.is_some())
        {
            self.warning(
                "clients",
                "a client is identified by its certificate, but listener.tls.client_ca is not set: it cannot connect",
            );
        }

        Some(Config {
            path: self.config_path.clone(),
            listener: listener?,
            admin: admin?,
            admin_token_sha256: admin_token?,
            software: software?,
            dmp,
            insi,
            services,
            tenants,
            clients,
            security: raw.security.clone(),
            max_clock_skew: max_clock_skew?,
            listener_tls,
            limits: self.limits(&raw)?,
            audit: audit?,
            capture: capture?,
            crl_download,
            ocsp,
            crls: std::mem::take(&mut self.crls_in_use),
            warnings: Vec::new(),
        })
    }
}

/// Formats a serde_ignored path as the configuration reference writes fields:
/// `tenants[0].certificates.dmp_auth.cert`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        P::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}
