//! Passerelle's configuration: one TOML file, validated fully before anything runs.
//!
//! [`inspect`] reads the file and every file it names, and reports **all** problems at
//! once, each naming the file and the field at fault ([`Problem`]), beside one
//! [`CertificateReport`] per configured certificate. [`load`] is the same check for
//! the proxy: it returns the validated, typed [`Config`] only when no problem is an
//! error. The TOML model is in [`file`](mod@file); identifiers ([`TenantId`],
//! [`StructureId`], [`CertRole`]) are parsed once, here, and typed from then on.
//!
//! Where things are:
//!
//! - `file.rs`: the TOML file as written, before validation (public as [`file`](mod@file)).
//! - `ids.rs`: identifiers parsed once at the edge ([`TenantId`], [`StructureId`],
//!   [`CertRole`]).
//! - `material.rs`: certificate and key files, [`CertificateInfo`], [`PrivateKey`],
//!   the role rules ([`role_problems`]).
//! - `model.rs`: the validated, typed configuration ([`Config`], [`Tenant`],
//!   [`CertMaterial`], [`DmpService`], [`InsiService`], [`MtlsService`], [`Limits`],
//!   [`ListenerTls`], ...).
//! - `report.rs`: what a check reports ([`Severity`], [`Problem`], [`CertificateReport`],
//!   [`Status`]).
//! - `validate/`: the checks. `mod.rs` holds the shared `Validator` and its helpers;
//!   `run.rs` the entry points ([`inspect`], [`inspect_at`], [`load`]), their results
//!   ([`Inspection`], [`ConfigError`]) and the pass over the whole file; then one module
//!   per area: `software`, `trust`, `dmp`, `insi`, `services` (`[[services]]`), `tenants`,
//!   `certificates`, `clients`, `capture` (`[capture]`), `listener` (listener TLS), `limits`.
//!
//! Dependencies run one way: `validate` uses `model` and `report`; `model` uses
//! `report` (for [`Config::warnings`]); neither knows about `validate`.

pub mod file;
mod ids;
mod material;
mod model;
mod report;
mod validate;

pub use ids::{CertRole, IdError, StructureId, StructureKind, TenantId, UNATTRIBUTED, finess_key};
pub use material::{CertificateInfo, KeyMaterial, PrivateKey, rfc2253, role_problems};
pub use model::{
    Audit, AuditSink, Capture, CertMaterial, Config, CrlDownload, CrlInUse, CrlSource, DmpPolicy,
    DmpService, DmpSigning, EgressProxy, InsiService, InternalClient, Limits, ListenerTls,
    MtlsService, OcspCheck, OcspTarget, OnAuditFailure, PolicyMode, PostgresAudit,
    RevocationFailure, RevocationSources, ServiceMethod, ServiceRetry, ServiceScope,
    SignatureDigest, Software, Tenant, Timeouts, UpstreamOcsp, UpstreamRevocation, UpstreamTrust,
    asn1_time, crl_file_name,
};
pub use report::{
    CertificateKey, CertificateReport, Problem, Revocation, RevocationStatus, Severity, Status,
};
pub use validate::{
    Candidate, ConfigError, Inspection, MAX_CAPTURE_WINDOW_DAYS, inspect, inspect_at,
    inspect_candidate, load, shared_write_mode,
};
